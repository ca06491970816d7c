import assert from 'node:assert/strict';
import test from 'node:test';
import { CODECS, fromHalfBits, getCodec, toHalfBits } from '../src/codecs.js';

const sizes = [5, 3];
const tensors = [Float32Array.from([0.5, -1, 0.25, 3.75, -0.001]), Float32Array.from([0, 1e-8, 65504])];

test('every codec has the exact size it promises and round-trips', () => {
  for (const [name, codec] of Object.entries(CODECS)) {
    const bytes = codec.encode(tensors);
    assert.equal(bytes.byteLength, codec.size(sizes), name);
    const back = codec.decode(bytes, sizes);
    tensors.forEach((t, i) => t.forEach((v, j) => {
      const peak = Math.max(...t.map(Math.abs));
      const tolerance = { fp32: 0, fp16: Math.abs(v) * 2 ** -10 + 2 ** -24, int8: peak / 254 + 1e-12 }[name];
      assert.ok(Math.abs(back[i][j] - v) <= tolerance, `${name} ${v} -> ${back[i][j]}`);
    }));
  }
});

test('half conversion rounds to nearest even and saturates to infinity', () => {
  assert.equal(toHalfBits(1), 0x3c00);
  assert.equal(toHalfBits(-2), 0xc000);
  assert.equal(toHalfBits(65504), 0x7bff);
  assert.equal(toHalfBits(1e6), 0x7c00);
  assert.equal(toHalfBits(2 ** -24), 0x0001);
  assert.equal(toHalfBits(2 ** -25), 0x0000); // a tie: rounds to even (zero)
  assert.equal(toHalfBits(1 + 2 ** -11), 0x3c00); // tie between 1 and the next half: even
  assert.equal(toHalfBits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(fromHalfBits(0x3555), 0.333251953125);
});

test('int8 layout: scales first, then floor(x / scale + 0.5)', () => {
  const bytes = CODECS.int8.encode([Float32Array.from([0.5, -1, 0.25]), new Float32Array(2)]);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getFloat32(0, true), Math.fround(1 / 127));
  assert.equal(view.getFloat32(4, true), 0);
  assert.deepEqual(Array.from(new Int8Array(bytes.buffer, 8)), [64, -127, 32, 0, 0]);
});

test('unknown codecs are refused', () => {
  assert.throws(() => getCodec('bf16'), /unknown gradient codec/);
});
