import assert from 'node:assert/strict';
import test from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { Trainer } from '../src/trainer.js';

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
  const trainer = new Trainer(tf);
  trainer.model = charLstm([null, 5, alphabet.length]);
  // large weights make each pick depend on the whole state, not only on the last character
  trainer.model.setWeights(tf.tidy(() => trainer.model.getWeights().map((w) => tf.mul(w, 4))));
  const anyLength = charLstm([null, null, alphabet.length]);
  anyLength.setWeights(trainer.model.getWeights());
  const seed = [0, 3, 11, 5, 14];
  const randoms = Array.from({ length: 24 }, (_, i) => ((i * 7919) % 100) / 100);
  const expected = referenceText(anyLength, seed, 24, alphabet, randoms);
  let i = 0;
  assert.equal(await trainer.sample(seed, 24, alphabet, () => randoms[i++]), expected);

  // a new version: the sampler takes the new weights and starts from a clean state
  const scaled = trainer.model.getWeights().map((w) => tf.mul(w, 1.5));
  trainer.model.setWeights(scaled);
  anyLength.setWeights(scaled);
  scaled.forEach((t) => t.dispose());
  const tensors = tf.memory().numTensors;
  i = 0;
  assert.equal(await trainer.sample(seed, 24, alphabet, () => randoms[i++]), referenceText(anyLength, seed, 24, alphabet, randoms));
  assert.equal(tf.memory().numTensors, tensors, 'sampling leaks no tensors');
});

test('sampling a model that is not Sequential says why', async () => {
  const trainer = new Trainer(tf);
  const input = tf.input({ shape: [5, 3] });
  trainer.model = tf.model({ inputs: input, outputs: tf.layers.lstm({ units: 2 }).apply(input) });
  await assert.rejects(trainer.sample([0, 1, 2, 0, 1], 4, 'abc'), /need a Sequential model/);
});
