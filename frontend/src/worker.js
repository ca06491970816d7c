// The Web Worker that computes, so the page's main thread stays responsive and
// free for the volunteer loop's requests (src/remote.js is its other side).
// Messages in: {type: 'start', backend}, {type: 'call', id, method, args} for
// prepare, gradient and localSteps, {type: 'sample', length, alphabet}.
// Messages out: {type: 'backend', name}, {type: 'result', id, result | error},
// {type: 'sample', text}.
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { firstSequence, TextSampler } from './sampler.js';
import { Trainer } from './trainer.js';

const trainer = new Trainer(tf);
const sampler = new TextSampler(tf);
let seed = null; // the first sequence of the last batch trained on
let ready = null; // the backend, once chosen
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

const methods = {
  prepare: (task) => trainer.prepare(task),
  gradient: async (batch, spec) => {
    const result = await trainer.gradient(batch, spec);
    seed = firstSequence(batch, spec) || seed;
    return result;
  },
  localSteps: async (batches, spec) => {
    const result = await trainer.localSteps(batches, spec);
    seed = firstSequence(batches[batches.length - 1], spec) || seed;
    return result;
  },
};

async function call({ id, method, args }) {
  try {
    await ready;
    self.postMessage({ type: 'result', id, result: await methods[method](...args) });
  } catch (err) {
    self.postMessage({ type: 'result', id, error: String(err.message || err) });
  }
  await writeSample();
}

self.onmessage = ({ data }) => {
  if (data.type === 'start' && !ready) {
    setWasmPaths(new URL('./', self.location.href).href);
    ready = chooseBackend(data.backend || 'auto');
    ready.then((name) => self.postMessage({ type: 'backend', name }),
      (err) => self.postMessage({ type: 'backend', name: `none (${err.message})` }));
  } else if (data.type === 'call') {
    work = work.then(() => call(data));
  } else if (data.type === 'sample') {
    sampleWanted = { length: data.length, alphabet: data.alphabet };
    work = work.then(writeSample);
  }
};
