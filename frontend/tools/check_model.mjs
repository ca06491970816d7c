// Can TF.js load this job's model and train it on its data? One forward and
// backward pass on one batch, on the cpu backend (it has every kernel), the
// way a volunteer's page computes it. `crowdtrain create` runs it before
// uploading anything.
// stdin: {spec: the job document, weights: path of the weights' bytes, batch: path of one batch file,
//   gradient: also print the gradient (tests compare it with Keras's),
//   statistics: {weight name: "mean" or "variance"} for the weights a layer updates itself}
// stdout (last line): {ok: true, loss, grads?: [[...], ...] in the manifest's order} or {ok: false, error}
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { Trainer } from '../src/trainer.js';

await tf.setBackend('cpu');
const { spec, weights, batch, gradient, statistics = {} } = JSON.parse(readFileSync(0, 'utf8'));
const specs = spec.model.weightsManifest.flatMap((group) => group.weights)
  .map((w) => (statistics[w.name] ? { ...w, state: statistics[w.name] } : w));
const trainer = new Trainer(tf); // registers the Keras layers the model may use
let out;
try {
  const bytes = readFileSync(weights);
  const model = await tf.loadLayersModel(tf.io.fromMemory(spec.model.modelTopology, specs,
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  trainer.model = model;
  trainer.bind(specs);
  const { loss, grads } = await trainer.gradient(new Uint8Array(readFileSync(batch)), { ...spec, weights: specs });
  if (!Number.isFinite(loss)) throw new Error(`the loss on the first batch is ${loss}`);
  if (grads.some((g) => g.some((v) => !Number.isFinite(v)))) throw new Error('the gradient on the first batch is not finite');
  out = { ok: true, loss, ...(gradient ? { grads: grads.map((g) => Array.from(g)) } : {}) };
} catch (err) {
  out = { ok: false, error: String(err.message || err) };
}
process.stdout.write(`\n${JSON.stringify(out)}`);
