import assert from 'node:assert/strict';
import test from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { Trainer } from '../src/trainer.js';

await tf.setBackend('cpu');

// Dense -> BatchNormalization -> softmax: the layer's moving statistics are the spec's `state` weights.
function normalized() {
  const model = tf.sequential();
  model.add(tf.layers.dense({ units: 3, inputShape: [4], name: 'dense' }));
  model.add(tf.layers.batchNormalization({ name: 'norm' }));
  model.add(tf.layers.activation({ activation: 'softmax' }));
  const trainer = new Trainer(tf);
  trainer.model = model;
  const state = { 'norm/moving_mean': 'mean', 'norm/moving_variance': 'variance' };
  const specs = model.weights.map((w) => ({ name: w.originalName, ...(state[w.originalName] ? { state: state[w.originalName] } : {}) }));
  trainer.bind(specs);
  return { trainer, specs };
}

const dataset = { x: { shape: [8, 4], dtype: 'float32' }, y: { shape: [8], dtype: 'int32' } };
const batch = (seed) => {
  const x = Float32Array.from({ length: 32 }, (_, i) => Math.sin(i * 1.7 + seed) * 3 + 2);
  const y = Int32Array.from({ length: 8 }, (_, i) => (i + seed) % 3);
  const bytes = new Uint8Array(32 * 4 + 8 * 4);
  bytes.set(new Uint8Array(x.buffer), 0);
  bytes.set(new Uint8Array(y.buffer), 32 * 4);
  return bytes;
};
const spec = (specs, steps) => ({ loss: 'sparseCategoricalCrossentropy', weights: specs, dataset,
  ...(steps ? { local_steps: { steps, optimizer: { name: 'sgd', learning_rate: 0.1 } } } : {}) });
const values = (model) => Object.fromEntries(model.weights.map((w) => [w.originalName, Array.from(w.read().dataSync())]));

test("a statistic's entry is the change its layer made to it, and the model keeps the version's", async () => {
  for (const steps of [0, 3]) {
    const { trainer, specs } = normalized();
    const before = values(trainer.model);
    const { grads } = steps
      ? await trainer.localSteps([batch(1), batch(2), batch(3)], spec(specs, steps))
      : await trainer.gradient(batch(1), spec(specs, 0));
    assert.deepEqual(values(trainer.model), before, 'the model is the version leased again');
    // the same training by hand, and where it left the moving statistics
    const { trainer: reference } = normalized();
    reference.model.setWeights(trainer.model.getWeights());
    const optimizer = tf.train.sgd(0.1);
    for (const seed of steps ? [1, 2, 3] : [1]) {
      const { x, y } = { x: batch(seed).slice(0, 128), y: batch(seed).slice(128) };
      const xs = tf.tensor(new Float32Array(x.buffer), [8, 4]);
      const ys = tf.oneHot(tf.tensor(new Int32Array(y.buffer), [8], 'int32'), 3).toFloat();
      const cost = () => tf.metrics.categoricalCrossentropy(ys, reference.model.apply(xs, { training: true })).mean();
      if (steps) optimizer.minimize(cost, false, reference.model.trainableWeights.map((w) => w.val));
      else tf.variableGrads(cost, reference.model.trainableWeights.map((w) => w.val));
    }
    const after = values(reference.model);
    specs.forEach((s, k) => {
      if (!s.state) return;
      assert.ok(grads[k].some((v) => Math.abs(v) > 1e-4), `${s.name} moved (${steps} steps)`);
      grads[k].forEach((v, j) => assert.ok(Math.abs(v - (before[s.name][j] - after[s.name][j])) < 1e-5, s.name));
    });
  }
});

test('a weight the spec calls a statistic must be one its layer updates itself, and the other way round', () => {
  const { trainer, specs } = normalized();
  assert.throws(() => trainer.bind(specs.map((s) => ({ name: s.name }))), /norm\/moving_mean is not trainable/);
  assert.throws(() => trainer.bind(specs.map((s) => ({ ...s, state: 'mean' }))), /dense\/kernel is not a statistic/);
});

test('a task that fails midway leaves the version\'s weights and statistics in the model, and no tensor', async () => {
  const { trainer, specs } = normalized();
  const before = values(trainer.model);
  const tensors = tf.memory().numTensors;
  const refused = async () => { throw new Error('heartbeat refused'); };
  const halves = { ...spec(specs, 0), dataset: { ...dataset, micro_batch: 4 } };
  await assert.rejects(trainer.gradient(batch(1), halves, refused), /heartbeat refused/);
  assert.deepEqual(values(trainer.model), before);
  await assert.rejects(trainer.localSteps([batch(1), batch(2)], spec(specs, 2), undefined, refused), /heartbeat refused/);
  assert.deepEqual(values(trainer.model), before);
  assert.equal(tf.memory().numTensors, tensors);
});
