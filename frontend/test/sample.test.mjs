import assert from 'node:assert/strict';
import test from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { firstSequence, TextSampler } from '../src/sampler.js';

await tf.setBackend('cpu');

function charLstm(inputShape) {
  const model = tf.sequential();
  model.add(tf.layers.lstm({ units: 4, returnSequences: true, batchInputShape: inputShape, recurrentInitializer: 'glorotUniform' }));
  model.add(tf.layers.lstm({ units: 3, recurrentInitializer: 'glorotUniform' }));
  model.add(tf.layers.dense({ units: inputShape[2], activation: 'softmax' }));
  return model;
}

// Each character is picked from the model's output on everything written so far:
// the text a stateful sampler must reproduce, computed the slow way.
function referenceText(model, seed, length, alphabet, randoms) {
  const ids = seed.slice();
  let text = '';
  for (let i = 0; i < length; i += 1) {
    const probs = tf.tidy(() => model.predict(tf.oneHot(tf.tensor2d([ids], undefined, 'int32'), alphabet.length).toFloat()).dataSync());
    const weights = Array.from(probs, (p) => p ** (1 / 0.6));
    let pick = randoms[i] * weights.reduce((a, b) => a + b, 0);
    let id = 0;
    while (id < weights.length - 1 && (pick -= weights[id]) > 0) id += 1;
    text += alphabet[id];
    ids.push(id);
  }
  return text;
}

test('the stateful sampler writes what the model predicts from the seed and every character since', async () => {
  const alphabet = 'abcdefghijklmnop';
  const sampler = new TextSampler(tf);
  const model = charLstm([null, 5, alphabet.length]);
  // large weights make each pick depend on the whole state, not only on the last character
  model.setWeights(tf.tidy(() => model.getWeights().map((w) => tf.mul(w, 4))));
  const anyLength = charLstm([null, null, alphabet.length]);
  anyLength.setWeights(model.getWeights());
  const seed = [0, 3, 11, 5, 14];
  const randoms = Array.from({ length: 24 }, (_, i) => ((i * 7919) % 100) / 100);
  const expected = referenceText(anyLength, seed, 24, alphabet, randoms);
  let i = 0;
  assert.equal(await sampler.sample(model, seed, 24, alphabet, () => randoms[i++]), expected);

  // a new version: the sampler takes the new weights and starts from a clean state
  const scaled = model.getWeights().map((w) => tf.mul(w, 1.5));
  model.setWeights(scaled);
  anyLength.setWeights(scaled);
  scaled.forEach((t) => t.dispose());
  const tensors = tf.memory().numTensors;
  i = 0;
  assert.equal(await sampler.sample(model, seed, 24, alphabet, () => randoms[i++]), referenceText(anyLength, seed, 24, alphabet, randoms));
  assert.equal(tf.memory().numTensors, tensors, 'sampling leaks no tensors');
});

test('sampling a model that is not Sequential says why', async () => {
  const input = tf.input({ shape: [5, 3] });
  const model = tf.model({ inputs: input, outputs: tf.layers.lstm({ units: 2 }).apply(input) });
  await assert.rejects(new TextSampler(tf).sample(model, [0, 1, 2, 0, 1], 4, 'abc'), /need a Sequential model/);
});

test('the seed is the first sequence of a batch of token ids, and only of token ids', () => {
  const dataset = { x: { shape: [2, 3], dtype: 'uint8', one_hot: 16 }, y: { shape: [2], dtype: 'uint8' } };
  assert.deepEqual(firstSequence(Uint8Array.from([4, 5, 6, 7, 8, 9, 1, 2]), { dataset }), [4, 5, 6]);
  const floats = { x: { shape: [2, 3], dtype: 'float32' }, y: { shape: [2], dtype: 'int32' } };
  assert.equal(firstSequence(new Uint8Array(32), { dataset: floats }), null);
});
