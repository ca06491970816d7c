// The page's side of the Web Worker: a Trainer whose calls run in the worker.
// The volunteer loop (leases, downloads, uploads, heartbeats) runs on the
// page's main thread, which is idle while the worker computes, so a prefetched
// task's requests go on during a step instead of waiting for TF.js's
// synchronous kernels to finish.

import { fetchBytes } from './api.js';
import { shardUrl } from './trainer.js';

// Versions fetched ahead and not yet handed to the worker: the one computing and the one leased next.
const AHEAD = 2;

export class RemoteTrainer {
  constructor(worker) {
    this.worker = worker;
    this.calls = new Map(); // id -> {resolve, reject}
    this.nextId = 0;
    this.backends = new Map(); // job id -> the backend the worker's canary chose for it
    this.cancelled = null; // why the page ended the worker: a later call is refused with it
    this.shards = new Map(); // shard URL -> its bytes (a promise), fetched ahead for the worker
    this.prepared = null; // the shard URL of the version the worker was last prepared for
  }

  /** Route a worker message: a call's result, or (returns false) something else. */
  settle(data) {
    if (data.type === 'backend' && data.jobId) this.backends.set(data.jobId, data.name);
    if (data.type !== 'result' || !this.calls.has(data.id)) return false;
    const { resolve, reject } = this.calls.get(data.id);
    this.calls.delete(data.id);
    if (data.error) reject(Object.assign(new Error(data.error), { reason: data.reason })); else resolve(data.result);
    return true;
  }

  call(method, args, transfer = []) {
    // an ended worker never answers: a call the loop makes after the stop (its lease came back after it) would wait forever
    if (this.cancelled) return Promise.reject(new Error(this.cancelled));
    const id = this.nextId;
    this.nextId += 1;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.worker.postMessage({ type: 'call', id, method, args }, transfer);
    });
  }

  /** Reject every call in flight, and every later one: the page is ending the worker (stop means stop). */
  cancel(message) {
    this.cancelled = message;
    for (const { reject } of this.calls.values()) reject(new Error(message));
    this.calls.clear();
  }

  /** Prepare the worker's model for a task: a version fetched ahead goes with the call, so it is fetched once. */
  async prepare(task, keep = false) {
    const url = shardUrl(task);
    const ahead = this.shards.get(url);
    this.shards.delete(url);
    if (!keep) this.prepared = url; // the worker is taking this version: a lease of it meanwhile fetches nothing
    const shard = keep ? null : await ahead?.catch(() => null);
    try {
      return await this.call('prepare', [task, keep, shard], shard ? [shard.buffer] : []);
    } catch (err) {
      if (this.prepared === url) this.prepared = null;
      throw err;
    }
  }

  /** Whether a task's model version is here already (fetched ahead, or the worker's last). */
  has(task) { return this.shards.has(shardUrl(task)) || this.prepared === shardUrl(task); }

  /** Fetch a leased version's weights ahead, on this thread, while the worker computes; they
   * travel to the worker with its prepare call (then the worker fetches only model.json once per job). */
  async warm(task) {
    const url = shardUrl(task);
    if (this.shards.has(url) || this.prepared === url) return;
    const bytes = fetchBytes(url);
    this.shards.set(url, bytes);
    while (this.shards.size > AHEAD) this.shards.delete(this.shards.keys().next().value);
    await bytes.catch(() => null); // the worker fetches it itself
  }

  // `between` is not called: the loop heartbeats on a timer while the worker computes
  gradient(batch, spec) { return this.call('gradient', [batch, spec]); }

  localSteps(batches, spec, rate) { return this.call('localSteps', [batches, spec, rate]); }

  heldOut(batches, spec) { return this.call('heldOut', [batches, spec]); }
}
