// Which TF.js backend trains a job in this browser: each candidate runs one
// forward and backward pass on a few samples of the job's own batch and one
// timed step on the whole batch. A backend that cannot start or lacks a
// kernel is skipped, as is one whose gradient differs from the cpu backend's
// by more than TOLERANCE (WebGPU and WebGL have known silent failures, such as
// all-zero RNN gradients on some devices); of the rest the fastest is used.
import { sizeOf, TYPED } from './trainer.js';

// Relative L2 difference allowed between a backend's gradient and cpu's: float32
// backends agree to about 1e-6 here; a broken one is off by order 1.
export const TOLERANCE = 1e-2;
// Samples of the job's batch the gradients are compared on.
export const CANARY_SAMPLES = 4;


/** The backends worth trying here, fastest first where each works. */
export function candidates(hasWebGpu) {
  return [...(hasWebGpu ? ['webgpu'] : []), 'wasm', 'webgl', 'cpu'];
}

/** The first `n` samples of a batch file (a Uint8Array), and the dataset layout that reads them. */
export function tinyBatch(bytes, dataset, n = CANARY_SAMPLES) {
  const count = Math.min(n, dataset.x.shape[0]);
  const part = (layout, offset) => {
    const per = sizeOf(layout.shape.slice(1)) * TYPED[layout.dtype].BYTES_PER_ELEMENT;
    return { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset + offset, count * per),
      size: sizeOf(layout.shape) * TYPED[layout.dtype].BYTES_PER_ELEMENT };
  };
  const x = part(dataset.x, 0);
  const y = part(dataset.y, x.size);
  const out = new Uint8Array(x.bytes.length + y.bytes.length);
  out.set(x.bytes);
  out.set(y.bytes, x.bytes.length);
  const shrink = (layout) => ({ ...layout, shape: [count, ...layout.shape.slice(1)] });
  const { micro_batch: _, ...rest } = dataset;
  return { bytes: out, dataset: { ...rest, x: shrink(dataset.x), y: shrink(dataset.y) } };
}

/** ‖a − b‖ / max(‖a‖, ‖b‖) over every tensor (0 when both are zero). */
export function relativeDifference(a, b) {
  let diff = 0;
  let na = 0;
  let nb = 0;
  a.forEach((t, k) => {
    for (let i = 0; i < t.length; i += 1) {
      diff += (t[i] - b[k][i]) ** 2;
      na += t[i] ** 2;
      nb += b[k][i] ** 2;
    }
  });
  const scale = Math.sqrt(Math.max(na, nb));
  return scale === 0 ? 0 : Math.sqrt(diff) / scale;
}

async function setBackend(tf, name) {
  try {
    return await tf.setBackend(name);
  } catch {
    return false;
  }
}

/**
 * Try each candidate with `trial()` (on the backend set now: {grads, ms}) and
 * leave TF.js on the fastest whose gradient matches cpu's. Returns {name, ms:
 * {backend: ms per step}, skipped: {backend: why}}; throws (reason
 * 'no_backend') when none can train the model.
 */
export async function chooseBackend(tf, names, trial, tolerance = TOLERANCE) {
  const ms = {};
  const skipped = {};
  if (!(await setBackend(tf, 'cpu'))) throw new Error('the cpu backend, the reference, did not start');
  const reference = await trial();
  for (const name of names) {
    let result = reference;
    if (name !== 'cpu') {
      if (!(await setBackend(tf, name))) { skipped[name] = 'not available in this browser'; continue; }
      try {
        result = await trial();
      } catch (err) {
        skipped[name] = String(err.message || err);
        continue;
      }
    }
    const diff = relativeDifference(result.grads, reference.grads);
    if (!(diff <= tolerance)) {
      skipped[name] = `its gradient differs from the cpu backend's by ${diff.toExponential(1)} (tolerance ${tolerance})`;
      continue;
    }
    ms[name] = result.ms;
  }
  const best = Object.keys(ms).sort((p, q) => ms[p] - ms[q])[0];
  if (!best) {
    const why = Object.entries(skipped).map(([n, r]) => `${n}: ${r}`).join('; ');
    throw Object.assign(new Error(`no TF.js backend here can train this model (${why})`), { reason: 'no_backend' });
  }
  await tf.setBackend(best);
  return { name: best, ms, skipped };
}
