// The gradient TF.js computes under Node (cpu backend) for one batch at one
// model version, or with local steps the pseudo-gradient over the task's
// batches, with the page's own trainer; for tests/test_browser.py.
// stdin: {task: {job_id, model_url, base_version, spec}, batch_urls}  stdout: {loss, grads}
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { fetchBytes } from '../../src/api.js';
import { Trainer } from '../../src/trainer.js';

await tf.setBackend('cpu');
const { task, batch_urls: batchUrls } = JSON.parse(readFileSync(0, 'utf8'));
const trainer = new Trainer(tf);
await trainer.prepare(task);
const batches = await Promise.all(batchUrls.map((url) => fetchBytes(url)));
const { loss, grads } = task.spec.local_steps ? await trainer.localSteps(batches, task.spec)
  : await trainer.gradient(batches[0], task.spec);
process.stdout.write(`\n${JSON.stringify({ loss, grads: grads.map((g) => Array.from(g)) })}`);
