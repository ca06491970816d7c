// The volunteer loop: lease -> weights and batch -> gradient -> encode ->
// upload -> complete -> next. Environment-free (no DOM, no worker globals),
// so Node's test runner drives it with fakes and the Web Worker with the real thing.
import { ApiError, backoffDelay, fetchBytes, uploadForm } from './api.js';
import { getCodec } from './codecs.js';

const now = () => performance.now();
const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

export class VolunteerLoop {
  /**
   * @param {object} deps api (Api), trainer (Trainer), fetch, report(event), volunteerId, and
   *   betweenTasks: async work the volunteer's thread owes besides training (the page's text
   *   sample); it runs before a lease, never while one is held, and is timed as `ms.between`;
   *   trained(batch, spec): told of each batch trained on (the text sample seeds from it).
   */
  constructor({ api, trainer, fetchImpl, report, volunteerId, idleMs = 0, betweenTasks = async () => {}, trained = () => {} }) {
    Object.assign(this, { api, trainer, fetchImpl, report, volunteerId, idleMs, betweenTasks, trained });
    this.stopping = new AbortController();
    this.paused = false;
    this.failures = 0;
  }

  /** Ask the loop to end after the task in hand (nothing is left half-done). */
  stop() { this.stopping.abort(); }

  get stopped() { return this.stopping.signal.aborted; }

  async run() {
    while (!this.stopped) {
      if (this.paused) { await sleep(250, this.stopping.signal); continue; }
      let waitMs = this.idleMs;
      try {
        const outcome = await this.once();
        if (outcome.retryAfter !== undefined) {
          waitMs = backoffDelay(this.failures, outcome.retryAfter * 1000);
          this.failures += 1;
          this.report({ type: 'idle', waitMs });
        } else {
          this.failures = 0;
        }
      } catch (err) {
        waitMs = backoffDelay(this.failures);
        this.failures += 1;
        this.report({ type: 'error', message: String(err.message || err), status: err.status, waitMs });
      }
      await sleep(waitMs, this.stopping.signal);
    }
    this.report({ type: 'stopped' });
  }

  /** One task, start to finish. Returns {retryAfter} when there was none. */
  async once() {
    const before = now();
    await this.betweenTasks();
    const t = { start: now() };
    const task = await this.api.lease(this.volunteerId);
    t.lease = now();
    if (task.retryAfter !== undefined) return task;
    this.report({ type: 'leased', jobId: task.job_id, epoch: task.epoch, batch: task.batch, version: task.base_version });
    let token = task.lease_token;
    let beat = t.start;  // when the lease was last taken or extended
    const heartbeat = async () => {
      if (now() - beat >= task.heartbeat_seconds * 1000) {
        token = (await this.api.heartbeat(task.job_id, token)).lease_token;
        beat = now();
      }
    };
    const fetched = await this.trainer.prepare(task);
    const local = Boolean(task.spec.local_steps);
    const batches = await Promise.all((local ? task.batch_urls : [task.batch_url]).map((url) => fetchBytes(url, this.fetchImpl)));
    t.download = now();
    await heartbeat();
    // heartbeats between micro-batches, or between local steps
    const { loss, grads } = local ? await this.trainer.localSteps(batches, task.spec, heartbeat)
      : await this.trainer.gradient(batches[0], task.spec, heartbeat);
    t.compute = now();
    this.trained(batches[batches.length - 1], task.spec);
    if (!Number.isFinite(loss)) throw new Error(`loss is ${loss}; not uploading`);
    const body = getCodec(task.spec.codec).encode(grads);
    t.encode = now();
    await heartbeat();
    await uploadForm(task.upload, body, this.fetchImpl);
    t.upload = now();
    try {
      await this.api.complete(task.job_id, token, loss);
    } catch (err) {
      // 409/410: the lease ended or was completed; its task goes to someone else.
      if (err instanceof ApiError && (err.status === 409 || err.status === 410)) {
        this.report({ type: 'lost', jobId: task.job_id, message: err.message });
        return {};
      }
      throw err;
    }
    t.complete = now();
    this.report({
      type: 'task', jobId: task.job_id, version: task.base_version, epoch: task.epoch, batch: task.batch,
      loss, samples: batches.length * task.spec.dataset.x.shape[0], fetched, bytes: body.byteLength,
      ms: {
        lease: t.lease - t.start, download: t.download - t.lease, compute: t.compute - t.download,
        encode: t.encode - t.compute, upload: t.upload - t.encode, complete: t.complete - t.upload,
        total: t.complete - t.start, between: t.start - before,
      },
    });
    return {};
  }
}
