// The gradient noise scale's two measurements (McCandlish et al. 2018, "An Empirical Model of
// Large-Batch Training", appendix A): the mean squared norm of single batches' gradients and the
// squared norm of their mean, at one model version. stdin: {model_url, spec, batch_urls};
// stdout (last line): {batches, batch_size, small: mean |g_i|^2, big: |mean g_i|^2}.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from './backend.mjs';
import { fetchBytes } from '../src/api.js';
import { Trainer } from '../src/trainer.js';

await useBackend(tf);
const { model_url: modelUrl, spec, batch_urls: urls } = JSON.parse(readFileSync(0, 'utf8'));
const trainer = new Trainer(tf);
await trainer.prepare({ job_id: 'noise', base_version: 0, model_url: modelUrl, spec });
let small = 0;
let sum = null;
for (const url of urls) {
  const { grads } = await trainer.gradient(await fetchBytes(url), spec);
  small += grads.reduce((s, g) => s + g.reduce((t, v) => t + v * v, 0), 0) / urls.length;
  if (sum === null) sum = grads.map((g) => Float64Array.from(g));
  else sum.forEach((s, k) => { for (let i = 0; i < s.length; i += 1) s[i] += grads[k][i]; });
}
const big = sum.reduce((s, g) => s + g.reduce((t, v) => t + (v / urls.length) ** 2, 0), 0);
process.stdout.write(`\n${JSON.stringify({ batches: urls.length, batch_size: spec.dataset.x.shape[0], small, big })}`);
