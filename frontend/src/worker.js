// The Web Worker that trains, so the page's main thread stays responsive.
// Messages in: {type: 'start', api, backend, idleMs, volunteerId, prefetch}, {type: 'stop'},
// {type: 'pause', paused}, {type: 'idle', idleMs}, {type: 'sample', length, alphabet}.
// Messages out: the loop's reports, {type: 'backend', name}, {type: 'sample', text}.
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { Api } from './api.js';
import { VolunteerLoop } from './loop.js';
import { firstSequence, TextSampler } from './sampler.js';
import { Trainer } from './trainer.js';

let loop = null;
const trainer = new Trainer(tf);
const sampler = new TextSampler(tf);
let seed = null;  // the first sequence of the last batch trained on
// The latest text-sample request. It runs between tasks (or at once when not
// training), so it never holds up a lease's download, upload or completion.
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

async function chooseBackend(requested) {
  // wasm is the fastest here for recurrent models; models with Embedding layers
  // cannot train on it (no UnsortedSegmentSum kernel), so 'auto' never forces it on them.
  const order = requested === 'auto' ? ['wasm', 'webgl', 'cpu'] : [requested, 'cpu'];
  for (const name of order) {
    try {
      if (await tf.setBackend(name)) { await tf.ready(); return tf.getBackend(); }
    } catch (err) { /* try the next one */ }
  }
  throw new Error('no TF.js backend could start');
}

self.onmessage = async ({ data }) => {
  if (data.type === 'start' && !loop) {
    setWasmPaths(new URL('./', self.location.href).href);
    const backend = await chooseBackend(data.backend || 'auto');
    self.postMessage({ type: 'backend', name: backend });
    loop = new VolunteerLoop({
      api: new Api(data.api), trainer, report: (event) => self.postMessage(event),
      volunteerId: data.volunteerId, idleMs: data.idleMs || 0, betweenTasks: writeSample, prefetch: data.prefetch ?? 1,
      trained: (batch, spec) => { seed = firstSequence(batch, spec) || seed; },
    });
    loop.run().finally(() => { loop = null; });
  } else if (data.type === 'stop' && loop) {
    loop.stop();
  } else if (data.type === 'pause' && loop) {
    loop.paused = data.paused;
  } else if (data.type === 'idle' && loop) {
    loop.idleMs = data.idleMs;
  } else if (data.type === 'sample') {
    sampleWanted = { length: data.length, alphabet: data.alphabet };
    if (!loop) writeSample();
  }
};
