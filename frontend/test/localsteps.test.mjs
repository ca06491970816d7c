import assert from 'node:assert/strict';
import test from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { lstmTrainer } from './helpers.mjs';
import { setLearningRate } from '../src/trainer.js';

await tf.setBackend('cpu');

const VOCAB = 5;
const dataset = { micro_batch: 4, x: { shape: [4, 3], dtype: 'uint8', one_hot: VOCAB }, y: { shape: [4], dtype: 'uint8' } };
const spec = (optimizer) => ({ loss: 'sparseCategoricalCrossentropy', weights: [], dataset, local_steps: { steps: 3, optimizer } });
const batch = (seed) => Uint8Array.from({ length: 4 * 3 + 4 }, (_, i) => (i * 7 + seed) % VOCAB);

const trainer = () => lstmTrainer(tf, 3, VOCAB);

test('one local SGD step of rate 1 uploads the gradient itself, and the model goes back to the version leased', async () => {
  const t = trainer();
  const before = t.model.getWeights().map((w) => w.arraySync());
  const { grads } = await t.gradient(batch(1), { ...spec(), dataset });
  const local = await t.localSteps([batch(1)], spec({ name: 'sgd', learning_rate: 1 }));
  local.grads.forEach((g, k) => g.forEach((v, j) => assert.ok(Math.abs(v - grads[k][j]) < 1e-5)));
  assert.deepEqual(t.model.getWeights().map((w) => w.arraySync()), before);
});

test('local steps follow the optimizer over the batches in turn, between steps awaited, no tensor leaked', async () => {
  const t = trainer();
  const tensors = tf.memory().numTensors;
  let pauses = 0;
  const { loss, grads } = await t.localSteps([batch(1), batch(2), batch(3)], spec({ name: 'adam', learning_rate: 0.1 }),
    undefined, async () => { pauses += 1; });
  assert.equal(pauses, 2);
  assert.equal(tf.memory().numTensors, tensors, 'local steps leak no tensors');
  assert.ok(Number.isFinite(loss) && grads.some((g) => g.some((v) => v !== 0)));
  // the same steps by hand: the model after them is θ_leased − pseudo-gradient
  const reference = trainer();
  reference.model.setWeights(t.model.getWeights());
  const optimizer = tf.train.adam(0.1);
  for (const seed of [1, 2, 3]) {
    const bytes = batch(seed);
    optimizer.minimize(() => reference.loss(spec(), reference.inputs({ values: bytes.subarray(12), layout: dataset.y }),
      reference.model.apply(reference.inputs({ values: bytes.subarray(0, 12), layout: dataset.x }), { training: true })));
  }
  const start = t.model.getWeights().map((w) => w.dataSync());
  reference.model.getWeights().forEach((w, k) => w.dataSync().forEach((v, j) => assert.ok(Math.abs(start[k][j] - grads[k][j] - v) < 1e-5)));
});

test('with keep_state the local optimizer carries its moments into the next task; without, it starts fresh', async () => {
  const adam = { name: 'adam', learning_rate: 0.1 };
  const step = (t, optimizer, seed) => {
    const bytes = batch(seed);
    optimizer.minimize(() => t.loss(spec(), t.inputs({ values: bytes.subarray(12), layout: dataset.y }),
      t.model.apply(t.inputs({ values: bytes.subarray(0, 12), layout: dataset.x }), { training: true })));
  };
  for (const keep of [true, false]) {
    const t = trainer();
    const leased = t.model.getWeights().map((w) => w.clone());
    const task = { ...spec(adam), local_steps: { steps: 1, optimizer: adam, keep_state: keep } };
    await t.localSteps([batch(1)], task);
    const { grads } = await t.localSteps([batch(2)], task); // the next task, on the same version
    // by hand: one optimizer over both tasks, the model back at the version leased between them
    const reference = trainer();
    reference.model.setWeights(leased);
    const optimizer = tf.train.adam(0.1);
    if (keep) {
      step(reference, optimizer, 1);
      reference.model.setWeights(leased);
    }
    step(reference, optimizer, 2);
    const start = leased.map((w) => w.dataSync());
    const worst = Math.max(...reference.model.getWeights().map((w, k) => Math.max(...Array.from(w.dataSync(),
      (v, j) => Math.abs(start[k][j] - grads[k][j] - v)))));
    assert.ok(worst < 1e-5, `keep_state ${keep}: off by ${worst}`);
  }
});

test("the task's inner learning rate replaces the optimizer's, for a fresh and for a kept optimizer", async () => {
  for (const [name, keep] of [['sgd', false], ['adam', false], ['adam', true], ['momentum', true]]) {
    const settings = { name, learning_rate: 0.5, momentum: 0.9, use_nesterov: false };
    const task = { ...spec(settings), local_steps: { steps: 2, optimizer: settings, keep_state: keep } };
    const t = trainer();
    const leased = t.model.getWeights().map((w) => w.clone());
    if (keep) await t.localSteps([batch(3)], task, 0.5); // a first task at the optimizer's own rate
    const { grads } = await t.localSteps([batch(1), batch(2)], task, 0.05);
    // by hand: the same optimizer, its rate 0.05 for the second task
    const reference = trainer();
    reference.model.setWeights(leased);
    const optimizer = { sgd: () => tf.train.sgd(0.5), adam: () => tf.train.adam(0.5), momentum: () => tf.train.momentum(0.5, 0.9) }[name]();
    const step = (seed) => {
      const bytes = batch(seed);
      optimizer.minimize(() => reference.loss(spec(), reference.inputs({ values: bytes.subarray(12), layout: dataset.y }),
        reference.model.apply(reference.inputs({ values: bytes.subarray(0, 12), layout: dataset.x }), { training: true })));
    };
    if (keep) { step(3); reference.model.setWeights(leased); }
    setLearningRate(optimizer, 0.05);
    step(1);
    step(2);
    const start = leased.map((w) => w.dataSync());
    const worst = Math.max(...reference.model.getWeights().map((w, k) => Math.max(...Array.from(w.dataSync(),
      (v, j) => Math.abs(start[k][j] - grads[k][j] - v)))));
    assert.ok(worst < 1e-5, `${name}${keep ? ', kept' : ''}: ${worst}`);
    // and not the optimizer's own rate
    const own = await trainer().localSteps([batch(1), batch(2)], { ...task, local_steps: { ...task.local_steps, keep_state: false } });
    assert.ok(own.grads.some((g, k) => g.some((v, j) => Math.abs(v - grads[k][j]) > 1e-4)));
  }
});
