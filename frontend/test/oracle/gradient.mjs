// The gradient TF.js computes under Node (cpu backend) for one batch at one
// model version, with the page's own trainer; for tests/test_browser.py.
// stdin: {task: {job_id, model_url, base_version, spec}, batch_url}  stdout: {loss, grads}
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { fetchBytes } from '../../src/api.js';
import { Trainer } from '../../src/trainer.js';

await tf.setBackend('cpu');
const { task, batch_url: batchUrl } = JSON.parse(readFileSync(0, 'utf8'));
const trainer = new Trainer(tf);
await trainer.prepare(task);
const { loss, grads } = await trainer.gradient(await fetchBytes(batchUrl), task.spec);
process.stdout.write(`\n${JSON.stringify({ loss, grads: grads.map((g) => Array.from(g)) })}`);
