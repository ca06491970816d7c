// Gradient wire formats, byte for byte the same as chalicelib/domain/codecs.py.
// A gradient is a list of Float32Arrays (one per weight, manifest order),
// encoded into one little-endian byte string whose length follows from the sizes.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> IEEE half bits, round to nearest even (as numpy's astype(float16)). */
export function toHalfBits(value) {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (half & 1))) half += 1;
    return sign | half;
  }
  let half = sign | (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half += 1;
  return half;
}

/** IEEE half bits -> number. */
export function fromHalfBits(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

const total = (tensors) => tensors.reduce((n, t) => n + t.length, 0);

/** A codec that writes every value in `width` bytes, little-endian, with no header. */
function fixedWidth(width, write, read) {
  return {
    size: (sizes) => width * sizes.reduce((a, b) => a + b, 0),
    encode(tensors) {
      const out = new Uint8Array(width * total(tensors));
      const view = new DataView(out.buffer);
      let offset = 0;
      for (const t of tensors) for (const v of t) { write(view, offset, v); offset += width; }
      return out;
    },
    decode(bytes, sizes) {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      let offset = 0;
      return sizes.map((n) => Float32Array.from({ length: n }, () => { const v = read(view, offset); offset += width; return v; }));
    },
  };
}

export const CODECS = {
  fp32: fixedWidth(4, (view, at, v) => view.setFloat32(at, v, true), (view, at) => view.getFloat32(at, true)),
  fp16: fixedWidth(2, (view, at, v) => view.setUint16(at, toHalfBits(v), true),
    (view, at) => fromHalfBits(view.getUint16(at, true))),
  int8: {
    // One float32 scale per tensor (max|x| / 127), then q = floor(x / scale + 0.5) per value.
    size: (sizes) => 4 * sizes.length + sizes.reduce((a, b) => a + b, 0),
    encode(tensors) {
      const out = new Uint8Array(4 * tensors.length + total(tensors));
      const view = new DataView(out.buffer);
      let offset = 4 * tensors.length;
      tensors.forEach((t, i) => {
        let peak = 0;
        for (const v of t) peak = Math.max(peak, Math.abs(v));
        const scale = Math.fround(peak / 127);
        view.setFloat32(4 * i, scale, true);
        const usable = scale !== 0 && Number.isFinite(scale);
        for (const v of t) {
          const q = usable ? Math.min(127, Math.max(-127, Math.floor(v / scale + 0.5))) : 0;
          view.setInt8(offset, q);
          offset += 1;
        }
      });
      return out;
    },
    decode(bytes, sizes) {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      let offset = 4 * sizes.length;
      return sizes.map((n, i) => {
        const scale = view.getFloat32(4 * i, true);
        return Float32Array.from({ length: n }, () => Math.fround(view.getInt8(offset++) * scale));
      });
    },
  },
};

export function getCodec(name) {
  const codec = CODECS[name];
  if (!codec) throw new Error(`unknown gradient codec ${name}`);
  return codec;
}
