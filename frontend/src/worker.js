// The Web Worker that computes, so the page's main thread stays responsive and
// free for the volunteer loop's requests (src/remote.js is its other side).
// Messages in: {type: 'start', backend}, {type: 'call', id, method, args} for
// prepare, gradient and localSteps, {type: 'sample', length, alphabet}.
// Messages out: {type: 'backend', name, jobId?, ms?, skipped?} (the canary's
// choice for a job, src/canary.js), {type: 'result', id, result | error,
// reason?}, {type: 'sample', text}, {type: 'resources', entries} (what the
// worker fetched, for the page's data meter, src/meter.js).
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount, setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-webgpu'; // registers 'webgpu'; used only where the canary proves it
import { candidates, chooseBackend, tinyBatch } from './canary.js';
import { firstSequence, TextSampler } from './sampler.js';
import { shardUrl, Trainer } from './trainer.js';

const trainer = new Trainer(tf);
// the worker's own fetches (model topology, weights) are timed here, not on the page
new PerformanceObserver((list) => {
  const entries = list.getEntries().map(({ name, transferSize, encodedBodySize }) => ({ name, transferSize, encodedBodySize }));
  self.postMessage({ type: 'resources', entries });
  performance.clearResourceTimings(); // sent: the browser's buffer of 250 never fills
}).observe({ type: 'resource', buffered: true });
const sampler = new TextSampler(tf);
let seed = null; // the first sequence of the last batch trained on
let ready = null; // the backend, once started
let requested = 'auto'; // or a backend the volunteer forced
const chosen = new Map(); // job id -> the canary's choice for it
let lastTask = null; // the task the trainer was last prepared for
let modelBackend = null; // the backend the trainer's model was built on
let lastShard = null; // {url, bytes}: the last version's weights the page sent (the canary's trials reuse them)
const shardFor = (task) => (lastShard?.url === shardUrl(task) ? lastShard.bytes : null);
let work = Promise.resolve(); // one thing at a time: calls and text samples never interleave
// The latest text-sample request. It runs between calls, so it never holds up a step.
let sampleWanted = null;

async function writeSample() {
  if (!sampleWanted || !trainer.model || !seed) return;
  const { length, alphabet } = sampleWanted;
  sampleWanted = null;
  try {
    self.postMessage({ type: 'sample', text: await sampler.sample(trainer.model, seed, length, alphabet) });
  } catch (err) {
    self.postMessage({ type: 'sample', text: `(no sample: ${err.message || err})` });
  }
}

async function startBackend() {
  // 'auto' starts on wasm (the canary chooses per job at its first batch); a
  // forced backend is used as asked, cpu if it cannot start
  const order = requested === 'auto' ? ['wasm', 'cpu'] : [requested, 'cpu'];
  for (const name of order) {
    try {
      if (await tf.setBackend(name)) { await tf.ready(); return tf.getBackend(); }
    } catch (err) { /* try the next one */ }
  }
  throw new Error('no TF.js backend could start');
}

/** One canary trial on the backend set now: the gradient of a few samples, and one timed step. */
async function trial(task, batch) {
  const t = new Trainer(tf);
  try {
    await t.prepare(task, false, shardFor(task));
    const tiny = tinyBatch(batch, task.spec.dataset);
    const { grads } = await t.gradient(tiny.bytes, { ...task.spec, dataset: tiny.dataset });
    await t.gradient(batch, task.spec); // kernels and shaders for the job's shapes
    const start = performance.now();
    await t.gradient(batch, task.spec);
    return { grads, ms: performance.now() - start };
  } finally {
    t.model?.dispose();
  }
}

/** Put TF.js and the trainer's model on `name` (the model is built again there). */
async function moveTo(name) {
  if (tf.getBackend() === name && modelBackend === name) return;
  await tf.setBackend(name);
  trainer.forget();
  modelBackend = name;
}

/** With 'auto', the first batch of a job runs the canary, whose choice is kept for the job. */
async function chooseFor(task, batch) {
  if (requested !== 'auto' || chosen.has(task.job_id)) return;
  // webgpu only where the browser has an adapter to give (navigator.gpu alone is not enough)
  const adapter = self.navigator?.gpu ? await self.navigator.gpu.requestAdapter().catch(() => null) : null;
  const choice = await chooseBackend(tf, candidates(adapter !== null), () => trial(task, batch));
  chosen.set(task.job_id, choice);
  self.postMessage({ type: 'backend', jobId: task.job_id, ...choice });
  await moveTo(choice.name);
  await trainer.prepare(task, false, shardFor(task));
}

const methods = {
  prepare: async (task, keep, shard) => {
    lastTask = task;
    if (shard) lastShard = { url: shardUrl(task), bytes: shard };
    if (chosen.has(task.job_id)) await moveTo(chosen.get(task.job_id).name);
    return trainer.prepare(task, keep, shardFor(task));
  },
  gradient: async (batch, spec) => {
    await chooseFor(lastTask, batch);
    const result = await trainer.gradient(batch, spec);
    seed = firstSequence(batch, spec) || seed;
    return result;
  },
  heldOut: async (batches, spec) => {
    await chooseFor(lastTask, batches[0]);
    return trainer.heldOut(batches, spec);
  },
  localSteps: async (batches, spec, rate) => {
    await chooseFor(lastTask, batches[0]);
    const result = await trainer.localSteps(batches, spec, rate);
    seed = firstSequence(batches[batches.length - 1], spec) || seed;
    return result;
  },
};

async function call({ id, method, args }) {
  try {
    await ready;
    self.postMessage({ type: 'result', id, result: await methods[method](...args) });
  } catch (err) {
    self.postMessage({ type: 'result', id, error: String(err.message || err), reason: err.reason });
  }
  await writeSample();
}

self.onmessage = ({ data }) => {
  if (data.type === 'start' && !ready) {
    setWasmPaths(new URL('./', self.location.href).href);
    // wasm runs its threaded binary where the page is cross-origin isolated: TF.js's own thread
    // count unless the page asks (`?threads=N`)
    if (data.threads) setThreadsCount(data.threads);
    requested = data.backend || 'auto';
    ready = startBackend();
    ready.then((name) => {
      modelBackend = name;
      self.postMessage({ type: 'backend', name: requested === 'auto' ? `${name} until a job's first batch picks one` : name,
        wasmThreads: getThreadsCount(), isolated: self.crossOriginIsolated === true });
    }, (err) => self.postMessage({ type: 'backend', name: `none (${err.message})` }));
  } else if (data.type === 'call') {
    work = work.then(() => call(data));
  } else if (data.type === 'sample') {
    sampleWanted = { length: data.length, alphabet: data.alphabet };
    work = work.then(writeSample);
  }
};
