// A volunteer in Node (TF.js wasm backend, tools/backend.mjs) running the page's own loop, for
// benchmarks and headless helpers: node tools/volunteer.mjs API_URL NAME JOB_ID
// It stops when the job is finished, and prints what it did: its tasks, their compute and the
// time the loop ran ({name, tasks, compute_ms, seconds, round_waits, idle_ms, fetched}: bench/speedup.py's clock).
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
let computeMs = 0;
let roundWaits = 0;
let idleMs = 0; // every wait the loop was told to make: a round's, or an empty queue's retry
const fetched = {}; // what each task's prepare fetched: model, weights, cached, continued
const started = performance.now();
const loop = new VolunteerLoop({
  api, trainer: new Trainer(tf),
  report: async (event) => {
    if (event.type === 'task') {
      tasks += 1;
      computeMs += event.ms.compute;
      fetched[event.fetched] = (fetched[event.fetched] || 0) + 1;
    }
    if (event.type === 'idle' && event.reason?.startsWith('waiting for version')) roundWaits += 1;
    if (event.type === 'idle') idleMs += event.waitMs;
    if (event.type === 'error') console.error(`${name}: ${event.message}`);
    // a finished job, or one the benchmark paused once it reached its target
    if ((event.type === 'idle' || event.type === 'task') && ['finished', 'paused'].includes((await api.progress(jobId)).status)) loop.stop();
  },
});
await loop.run();
console.log(JSON.stringify({ name, tasks, compute_ms: computeMs, seconds: (performance.now() - started) / 1000,
  round_waits: roundWaits, idle_ms: idleMs, fetched }));
