import assert from 'node:assert/strict';
import test from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { microBatches } from '../src/trainer.js';
import { lstmTrainer } from './helpers.mjs';

await tf.setBackend('cpu');

const VOCAB = 6;
const spec = (microBatch) => ({
  loss: 'sparseCategoricalCrossentropy', weights: [],
  dataset: { micro_batch: microBatch, x: { shape: [8, 5], dtype: 'uint8', one_hot: VOCAB }, y: { shape: [8], dtype: 'uint8' } },
});

const trainer = () => lstmTrainer(tf, 5, VOCAB);

const batch = Uint8Array.from({ length: 8 * 5 + 8 }, (_, i) => (i * 7 + 3) % VOCAB);

test('micro-batches are views of the batch with their share', () => {
  const parts = microBatches({ x: batch.subarray(0, 40), y: batch.subarray(40) }, spec(2).dataset);
  assert.equal(parts.length, 4);
  assert.deepEqual(parts[1].x.layout.shape, [2, 5]);
  assert.deepEqual(Array.from(parts[1].x.values), Array.from(batch.subarray(10, 20)));
  assert.deepEqual(Array.from(parts[3].y.values), Array.from(batch.subarray(46, 48)));
  assert.equal(parts[0].share, 0.25);
});

test('a gradient computed a micro-batch at a time is the whole batch\'s gradient', async () => {
  const t = trainer();
  const whole = await t.gradient(batch, spec(8));
  let pauses = 0;
  const tensors = tf.memory().numTensors;
  const parts = await t.gradient(batch, spec(2), async () => { pauses += 1; });
  assert.equal(pauses, 3, 'the loop may heartbeat between micro-batches');
  assert.equal(tf.memory().numTensors, tensors, 'no tensors leak');
  assert.ok(Math.abs(parts.loss - whole.loss) < 1e-6, `${parts.loss} vs ${whole.loss}`);
  whole.grads.forEach((g, k) => g.forEach((v, j) => assert.ok(Math.abs(parts.grads[k][j] - v) < 1e-6, `weight ${k}[${j}]`)));
  assert.ok(Math.abs(t.evaluate(batch, spec(2)) - t.evaluate(batch, spec(8))) < 1e-6);
});

test('a held-out answer is the mean loss over the batches, and the mean accuracy for a classifier', async () => {
  const t = trainer();
  const other = Uint8Array.from(batch, (v, i) => (v + i) % VOCAB);
  const answer = await t.heldOut([batch, other], spec(8));
  const loss = (t.evaluate(batch, spec(8)) + t.evaluate(other, spec(8))) / 2;
  const accuracy = (t.accuracy(batch, spec(8)) + t.accuracy(other, spec(8))) / 2;
  assert.ok(Math.abs(answer.loss - loss) < 1e-6 && Math.abs(answer.accuracy - accuracy) < 1e-9);
  assert.ok(answer.loss > 0 && answer.accuracy >= 0 && answer.accuracy <= 1);
  t.evaluate = () => 2; // a regression model's loss: no accuracy is reported
  assert.deepEqual(await t.heldOut([batch], { ...spec(8), loss: 'meanSquaredError' }), { loss: 2 });
});
