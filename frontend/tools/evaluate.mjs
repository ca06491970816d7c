// Validation loss of model versions: stdin {spec, model_urls, eval_urls, accuracy?};
// stdout (last line): [loss, ...], or with accuracy: true [[loss, accuracy], ...]
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from './backend.mjs';
import { fetchBytes } from '../src/api.js';
import { Trainer } from '../src/trainer.js';

await useBackend(tf);
const { spec, model_urls: urls, eval_urls: evalUrls, accuracy } = JSON.parse(readFileSync(0, 'utf8'));
const batches = await Promise.all(evalUrls.map((u) => fetchBytes(u)));
const trainer = new Trainer(tf);
const losses = [];
for (const [i, url] of urls.entries()) {
  const version = Number(url.match(/versions\/(\d+)\//)[1]);
  await trainer.prepare({ job_id: 'eval', base_version: i === 0 ? -1 : version, model_url: url, spec });
  trainer.version = version;
  const mean = (f) => batches.reduce((s, b) => s + f(b), 0) / batches.length;
  const loss = mean((b) => trainer.evaluate(b, spec));
  losses.push(accuracy ? [loss, mean((b) => trainer.accuracy(b, spec))] : loss);
}
process.stdout.write(`\n${JSON.stringify(losses)}`);
