// A volunteer in Node (TF.js wasm backend, tools/backend.mjs) running the page's own loop, for
// benchmarks and headless helpers: node tools/volunteer.mjs API_URL NAME JOB_ID
// It stops when the job is finished.
import * as tf from '@tensorflow/tfjs';
import { useBackend } from './backend.mjs';
import { Api } from '../src/api.js';
import { VolunteerLoop } from '../src/loop.js';
import { Trainer } from '../src/trainer.js';

const [apiUrl, name, jobId] = process.argv.slice(2);
await useBackend(tf);
const api = new Api(apiUrl);
await api.identify(name);
let tasks = 0;
const loop = new VolunteerLoop({
  api, trainer: new Trainer(tf),
  report: async (event) => {
    if (event.type === 'task') tasks += 1;
    if (event.type === 'error') console.error(`${name}: ${event.message}`);
    if ((event.type === 'idle' || event.type === 'task') && (await api.progress(jobId)).status === 'finished') loop.stop();
  },
});
await loop.run();
console.log(JSON.stringify({ name, tasks }));
