// The TF.js backend the Node tools run on: wasm (about 5x faster than cpu
// for an LSTM step on this machine: docs/benchmarks.md), or the one named
// by TFJS_BACKEND (cpu, wasm).
import '@tensorflow/tfjs-backend-wasm';

export async function useBackend(tf) {
  const name = process.env.TFJS_BACKEND || 'wasm';
  if (!(await tf.setBackend(name))) throw new Error(`TF.js backend ${name} is not available`);
  await tf.ready();
  return name;
}
