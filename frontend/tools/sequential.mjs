// Sequential training with TF.js in one process, the baseline crowdtrain is
// compared with: the same model, data and order, tf.train optimizers.
// stdin: {model_url, spec, batch_urls, optimizer: {name, ...settings}, eval_urls, eval_every,
//        learning_rates (optional: one per step, for a schedule),
//        accumulate (optional: each step takes the mean gradient of this many consecutive batches, one
//        batch that many times larger: what synchronous rounds of that many volunteers compute)}
// stdout (last line): {val: [[samples, loss], ...], weights: [[...], ...]}
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from './backend.mjs';
import { fetchBytes } from '../src/api.js';
import { Trainer, setLearningRate } from '../src/trainer.js';

await useBackend(tf);
const input = JSON.parse(readFileSync(0, 'utf8'));
const { spec } = input;
const trainer = new Trainer(tf);
await trainer.prepare({ job_id: 'sequential', base_version: 0, model_url: input.model_url, spec });
const o = input.optimizer;
const optimizer = {
  sgd: () => tf.train.sgd(o.learning_rate),
  momentum: () => tf.train.momentum(o.learning_rate, o.momentum, o.use_nesterov),
  adam: () => tf.train.adam(o.learning_rate, o.beta1, o.beta2, o.epsilon),
  rmsprop: () => tf.train.rmsprop(o.learning_rate, o.decay, o.momentum, o.epsilon, o.centered),
}[o.name]();
const evalBatches = await Promise.all((input.eval_urls || []).map((u) => fetchBytes(u)));
const validate = () => evalBatches.reduce((s, b) => s + trainer.evaluate(b, spec), 0) / Math.max(1, evalBatches.length);
const val = [[0, validate()]];
const variables = trainer.model.weights.map((w) => w.val); // trainer.order indexes these
const group = input.accumulate || 1;
const steps = Math.floor(input.batch_urls.length / group);
const batchSamples = spec.dataset.x.shape[0];
for (let step = 0; step < steps; step += 1) {
  if (input.learning_rates) setLearningRate(optimizer, input.learning_rates[step]);
  let sum = null;
  for (let b = step * group; b < (step + 1) * group; b += 1) {
    const { grads } = await trainer.gradient(await fetchBytes(input.batch_urls[b]), spec);
    if (sum === null) sum = grads.map((g) => Float32Array.from(g));
    else sum.forEach((s, k) => { for (let i = 0; i < s.length; i += 1) s[i] += grads[k][i]; });
  }
  const mean = (k) => tf.div(tf.tensor(sum[k], variables[trainer.order[k]].shape), group);
  const statistic = (k) => trainer.statistics.includes(trainer.order[k]);
  tf.tidy(() => optimizer.applyGradients(trainer.order.flatMap((i, k) => (statistic(k) ? [] : [{
    name: variables[i].name, tensor: mean(k) }]))));
  // a layer's own statistics (BatchNormalization's) move by their change, as the fold moves them
  trainer.order.forEach((i, k) => statistic(k) && tf.tidy(() => variables[i].assign(tf.sub(variables[i], mean(k)))));
  if ((step + 1) % (input.eval_every || 1e9) === 0 || step === steps - 1) {
    val.push([(step + 1) * group * batchSamples, validate()]);
  }
}
const weights = trainer.order.map((i) => Array.from(variables[i].dataSync()));
process.stdout.write(`\n${JSON.stringify({ val, weights })}`);
