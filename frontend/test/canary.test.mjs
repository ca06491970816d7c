import assert from 'node:assert/strict';
import test from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { candidates, chooseBackend, relativeDifference, tinyBatch } from '../src/canary.js';

// Real TF.js backends for the canary to judge: one whose MatMul returns zeros
// (silently wrong gradients), one without the kernel an Embedding's gradient needs.
function cpuLike(name, { without = [], zero = [] } = {}) {
  tf.registerBackend(name, () => new MathBackendCPU());
  for (const kernel of tf.getKernelsForBackend('cpu')) {
    if (without.includes(kernel.kernelName)) continue;
    const kernelFunc = zero.includes(kernel.kernelName)
      ? (args) => { const out = kernel.kernelFunc(args); args.backend.data.get(out.dataId).values.fill(0); return out; }
      : kernel.kernelFunc;
    tf.registerKernel({ ...kernel, backendName: name, kernelFunc });
  }
}
cpuLike('zeroing', { zero: ['BatchMatMul'] });
cpuLike('lacking', { without: ['UnsortedSegmentSum'] });

/** A trial as the worker runs one: the gradient of a small model on fixed data, on the backend set now. */
function trialOf(build, x, y, ms = 1) {
  return async () => {
    const model = build();
    const xs = tf.tensor(x.values, x.shape, x.dtype);
    const ys = tf.tensor(y.values, y.shape, 'int32');
    const { grads } = tf.variableGrads(() => tf.metrics.categoricalCrossentropy(
      tf.oneHot(ys, 5).toFloat(), model.apply(xs)).mean(), model.trainableWeights.map((w) => w.val));
    const out = Object.values(grads).map((g) => g.dataSync().slice());
    model.dispose();
    return { grads: out, ms: typeof ms === 'function' ? ms(tf.getBackend()) : ms };
  };
}

const seeded = { kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) };
const dense = () => tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 5, activation: 'softmax', ...seeded })] });
const embedding = () => tf.sequential({ layers: [
  tf.layers.embedding({ inputDim: 7, outputDim: 4, inputLength: 2, embeddingsInitializer: tf.initializers.randomUniform({ minval: -1, maxval: 1, seed: 2 }) }),
  tf.layers.flatten(), tf.layers.dense({ units: 5, activation: 'softmax', ...seeded })] });
const denseData = [{ values: [0.1, 0.2, 0.3, -1, 0.5, 2], shape: [2, 3], dtype: 'float32' }, { values: [1, 4], shape: [2] }];
const embeddingData = [{ values: [1, 2, 3, 6], shape: [2, 2], dtype: 'int32' }, { values: [0, 3], shape: [2] }];

test('a backend whose gradient is wrong is skipped, with how far off it was', async () => {
  const choice = await chooseBackend(tf, ['zeroing', 'cpu'], trialOf(dense, ...denseData));
  assert.equal(choice.name, 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
  assert.match(choice.skipped.zeroing, /differs from the cpu backend's by [0-9.]+e-1 \(tolerance 0.01\)/);
  assert.deepEqual(Object.keys(choice.ms), ['cpu']);
});

test('a backend that lacks a kernel the model needs is skipped with the kernel named', async () => {
  const choice = await chooseBackend(tf, ['lacking', 'cpu'], trialOf(embedding, ...embeddingData));
  assert.equal(choice.name, 'cpu');
  assert.match(choice.skipped.lacking, /UnsortedSegmentSum/);
});

test('of the backends that pass, the fastest per step is used; one that cannot start is skipped', async () => {
  const faster = (name) => ({ lacking: 5, cpu: 9 })[name];
  const choice = await chooseBackend(tf, ['nonesuch', 'cpu', 'lacking'], trialOf(dense, ...denseData, faster));
  assert.equal(choice.name, 'lacking'); // dense needs no missing kernel; faster
  assert.deepEqual(choice.ms, { cpu: 9, lacking: 5 });
  assert.match(choice.skipped.nonesuch, /not available/);
  assert.equal(tf.getBackend(), 'lacking');
});

test('no backend that can train it: an error that says why, with the reason no_backend', async () => {
  await assert.rejects(chooseBackend(tf, ['zeroing'], trialOf(dense, ...denseData)),
    (err) => err.reason === 'no_backend' && /zeroing: its gradient differs/.test(err.message));
});

test('the candidates, the tiny batch and the difference', () => {
  assert.deepEqual(candidates(true), ['webgpu', 'wasm', 'webgl', 'cpu']);
  assert.deepEqual(candidates(false), ['wasm', 'webgl', 'cpu']);
  const dataset = { x: { shape: [3, 2], dtype: 'float32' }, y: { shape: [3], dtype: 'uint8' }, micro_batch: 1 };
  const bytes = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer.byteLength + 3);
  bytes.set(new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer));
  bytes.set([7, 8, 9], 24);
  const tiny = tinyBatch(bytes, dataset, 2);
  assert.deepEqual(Array.from(new Float32Array(tiny.bytes.slice(0, 16).buffer)), [1, 2, 3, 4]);
  assert.deepEqual(Array.from(tiny.bytes.slice(16)), [7, 8]);
  assert.deepEqual(tiny.dataset, { x: { shape: [2, 2], dtype: 'float32' }, y: { shape: [2], dtype: 'uint8' } });
  assert.equal(relativeDifference([Float32Array.from([3, 4])], [Float32Array.from([3, 4])]), 0);
  assert.equal(relativeDifference([Float32Array.from([3, 4])], [Float32Array.from([0, 0])]), 1);
  assert.equal(relativeDifference([Float32Array.from([0])], [Float32Array.from([0])]), 0);
});
