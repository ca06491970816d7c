// The volunteer loop: lease -> weights and batch -> gradient -> encode ->
// upload -> complete -> next, pipelined: while one task computes, the next is
// leased and downloaded and the one before is uploaded and completed.
// Environment-free (no DOM, no worker globals), so Node's test runner drives
// it with fakes and the Web Worker with the real thing.
import { ApiError, backoffDelay, fetchBytes, uploadForm } from './api.js';
import { getCodec } from './codecs.js';
import { weightsBytes } from './trainer.js';
import { continues, Trajectory } from './trajectory.js';

const now = () => performance.now();
// After this many failed tasks of one job in a row, the page stops leasing for GIVE_UP_MS and says why.
export const MAX_STREAK = 3;
export const GIVE_UP_MS = 5 * 60 * 1000;
// Near the data cap, after handing back a task whose model is not here, wait this long before the next lease.
const NEAR_CAP_RETRY_S = 30;
// A page that holds (or held) a seat in a synchronous round that is all handed out asks again this
// soon (the update is a fold away from its result), at most FOLLOW_WAITS times in a row; others as
// told. At most K pages a round ask this often, and for about two seconds.
export const FOLLOW_MS = 250;
export const FOLLOW_WAITS = 8;
const sleep = (ms, signal) => new Promise((resolve) => {
  const wake = () => { clearTimeout(timer); signal?.removeEventListener('abort', wake); resolve(); };
  const timer = setTimeout(wake, ms);
  signal?.addEventListener('abort', wake, { once: true });
});

export class VolunteerLoop {
  /**
   * @param {object} deps api (Api, with the volunteer's identity), trainer (Trainer), fetch, report(event), and
   *   betweenTasks: async work the volunteer's thread owes besides training (the page's text
   *   sample); it runs before a lease and is timed as `ms.between`;
   *   trained(batch, spec): told of each batch trained on (the text sample seeds from it);
   *   prefetch: tasks leased ahead while one computes (1 by default, 0: one task at a time);
   *   pauseAfter(computeMs): the pause after a task, counted from the end of its compute
   *   (the volunteer's CPU share); hold(): why not to lease now, or null (the volunteer's
   *   preferences: charging, data cap, idle); dataLeft(): bytes left under today's data cap;
   *   dataSince(): {down, up} bytes the page used since it last asked (sent with each completion).
   *   The loop never holds more than prefetch + 1 leases (prefetch + 2 briefly in a synchronous round).
   */
  constructor({ api, trainer, fetchImpl, report, betweenTasks = async () => {},
    trained = () => {}, prefetch = 1, pauseAfter = () => 0, hold = () => null, dataLeft = () => Infinity,
    dataSince = () => undefined }) {
    Object.assign(this, { api, trainer, fetchImpl, report, betweenTasks, trained, prefetch, pauseAfter,
      hold, dataLeft, dataSince });
    this.stopping = new AbortController();
    this.failures = 0;
    this.held = new Set(); // the leases in hand, each heartbeated until its task is completed or let go
    this.stepMs = new Map(); // job id -> the last local step's time here, in ms
    this.streaks = new Map(); // job id -> its tasks that failed here in a row
    this.batchBytes = new Map(); // job id -> the bytes of its last task's batches
    this.holding = null; // the reason the loop is holding, last reported
    this.trajectory = new Trajectory(); // this page's own path through a job that follows one
    this.computing = null; // the tag of the result being computed, where it will be a move of that path
    this.inRound = new Map(); // job id -> the version of the synchronous round this page last took a seat in
    this.follows = 0; // round waits in a row cut short
  }

  /** How long to wait after a synchronous round's wait answer (`lease`: its retryAfter, job and version). */
  roundWait(lease) {
    const told = lease.retryAfter * 1000;
    if (this.inRound.get(lease.jobId) !== lease.version || this.follows >= FOLLOW_WAITS) return told;
    this.follows += 1;
    return Math.min(told, FOLLOW_MS);
  }

  /**
   * How many of a task's batches to train on: all of them, unless the job
   * gives a range of local steps; then as many as fit its target seconds at
   * this device's last measured step time (the least, until one is measured).
   */
  stepsFor(task) {
    const all = task.batch_urls.length;
    const { min_steps: least, steps, target_seconds: target } = task.spec.local_steps;
    if (!(least < steps)) return all;
    const most = Math.min(all, task.steps ?? all); // the budget the server gave this lease: a result reports no more
    const ms = this.stepMs.get(task.job_id);
    const fit = ms ? Math.floor((target * 1000) / ms) : least;
    return Math.max(Math.min(least, most), Math.min(fit, most));
  }

  /**
   * Ask the loop to end now: no lease is taken and no upload started after
   * this; the leases in hand are handed back (a trainer in another thread
   * that the page stops rejects its call, and the task computing is let go).
   */
  stop() { this.stopping.abort(); }

  get stopped() { return this.stopping.signal.aborted; }

  async run() {
    let next = null; // the prefetched task: a promise of a lease with its batches, or of a retryAfter
    let delivering = Promise.resolve();
    while (!this.stopped) {
      if (this.holds()) {
        next = await this.drop(next); // a lease taken ahead goes to someone else now
        await sleep(250, this.stopping.signal);
        continue;
      }
      let waitMs = 0;
      try {
        const lease = await (next ?? this.acquire());
        next = null;
        if (lease === null) continue; // stopped or held while prefetching
        if (lease.retryAfter !== undefined) {
          // a synchronous job's round is a fold away from its update: ask again as told, not later each time
          waitMs = lease.round ? this.roundWait(lease) : backoffDelay(this.failures, lease.retryAfter * 1000);
          if (!lease.round) this.failures += 1;
          this.report({ type: 'idle', waitMs, reason: lease.reason });
        } else {
          this.failures = 0;
          this.follows = 0;
          // Lease the next task once the one before this is delivered (then at most the one
          // computing and the one prefetched are held, and the lease may get the version that
          // folds it), or beside that delivery in a synchronous round, whose version does not
          // move before its last result: there a short step would otherwise wait for both.
          const beside = lease.task.spec?.synchronous && lease.task.kind !== 'evaluate';
          const prefetching = this.prefetch > 0 ? (beside ? this.acquire() : delivering.then(() => this.acquire())) : null;
          prefetching?.catch(() => {}); // its failure is met where it is awaited, as the next task
          next = prefetching; // the next task even when this one's compute fails
          const result = await this.compute(lease);
          await delivering;
          if (this.stopped || this.holds()) { // stop means stop: nothing more is uploaded
            this.trajectory.reset(null, -1); // its move, in the trainer's weights, will not be folded
            await this.letGo(lease, 'stopped');
            continue;
          }
          delivering = this.deliver(lease, result).catch((err) => this.failed(err));
          if (!prefetching) await delivering; // one task at a time
          const { computing, compute } = lease.t;
          waitMs = Math.max(0, this.pauseAfter(compute - computing) - (now() - compute));
        }
      } catch (err) {
        if (this.stopped) continue;
        waitMs = this.failed(err);
        if (waitMs >= GIVE_UP_MS) next = await this.drop(next);
      }
      await sleep(waitMs, this.stopping.signal);
    }
    await delivering;
    await this.drop(next);
    await Promise.all([...this.held].map((lease) => this.letGo(lease, 'stopped')));
    this.report({ type: 'stopped' });
  }

  /** Whether the volunteer's preferences hold the loop now; a change of reason is reported. */
  holds() {
    const reason = this.hold();
    if (reason !== this.holding) {
      this.holding = reason;
      if (reason) this.report({ type: 'held', reason });
    }
    return reason !== null;
  }

  /** Hand back a task leased ahead, if there is one; returns null (no task ahead any more). */
  async drop(next) {
    const ahead = await next?.catch(() => null);
    if (ahead && ahead.retryAfter === undefined) await this.letGo(ahead, 'stopped');
    return null;
  }

  failed(err) {
    const message = String(err.message || err);
    if (err.streak >= MAX_STREAK) {
      this.report({ type: 'gave-up', jobId: err.jobId, message, streak: err.streak, waitMs: GIVE_UP_MS });
      this.streaks.set(err.jobId, MAX_STREAK - 1); // after the wait, one more failure waits again
      return GIVE_UP_MS;
    }
    const waitMs = backoffDelay(this.failures);
    this.failures += 1;
    this.report({ type: 'error', message, status: err.status, waitMs });
    return waitMs;
  }

  /**
   * A request for a lease in hand, tried again after a back-off on 429, 5xx
   * and network errors (an API throttle, S3's SlowDown, a dropped
   * connection) for as long as the lease lasts, heartbeating it meanwhile:
   * a computed gradient is not thrown away for a throttled completion.
   */
  async persist(lease, request) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await request();
      } catch (err) {
        const passing = !(err instanceof ApiError) || err.status === 429 || err.status >= 500;
        const waitMs = backoffDelay(attempt, 250, 5000);
        if (!passing || Date.now() + waitMs >= (lease.expiresAt || 0)) throw err;
        this.report({ type: 'retry', jobId: lease.task.job_id, message: String(err.message || err), waitMs });
        await sleep(waitMs);
        if (!this.beating) await this.heartbeat();
      }
    }
  }

  /** Hand a lease back at once, so its task goes to someone else now (if the call fails, the lease runs out). */
  async letGo(lease, reason) {
    this.held.delete(lease);
    try {
      await this.api.release(lease.task.job_id, lease.token, reason);
    } catch { /* it ends on its own */ }
  }

  /** One task, start to finish, nothing in parallel. Returns {retryAfter} when there was none. */
  async once() {
    const lease = await this.acquire();
    if (lease.retryAfter !== undefined) return lease;
    await this.deliver(lease, await this.compute(lease));
    return {};
  }

  /** Lease a task and download its batches; the lease is held (heartbeated) from here on. */
  async acquire() {
    if (this.stopped || this.holds()) return null;
    const before = now();
    await this.betweenTasks();
    const t = { before, start: now() };
    const task = await this.api.lease();
    t.lease = now();
    if (task.retryAfter !== undefined) return task;
    if (task.kind === 'wait') {
      return { retryAfter: task.retry_after, reason: task.reason, round: true, jobId: task.job_id, version: task.base_version };
    }
    // the version's weights are fetched ahead unless the page's own weights stand for it
    const plan = this.trajectory.plan(task, this.computing);
    const left = this.dataLeft();
    if (left < Infinity && this.bytesFor(task, plan) > left) { // near the data cap: only a task whose model is here already
      await this.api.release(task.job_id, task.lease_token, 'stopped').catch(() => {});
      return { retryAfter: NEAR_CAP_RETRY_S, reason: "near today's data cap: waiting for a task whose model version is already here" };
    }
    this.report({ type: 'leased', jobId: task.job_id, epoch: task.epoch, batch: task.batch, version: task.base_version });
    if (task.spec.synchronous && task.kind !== 'evaluate') this.inRound.set(task.job_id, task.base_version);
    const lease = { task, token: task.lease_token, beat: t.start, t, expiresAt: task.lease_expires * 1000 };
    this.held.add(lease);
    try {
      const urls = task.kind === 'evaluate' ? task.batch_urls // the held-out batches
        : task.spec.local_steps ? task.batch_urls.slice(0, this.stepsFor(task)) : [task.batch_url];
      [lease.batches] = await Promise.all([Promise.all(urls.map((url) => fetchBytes(url, this.fetchImpl))),
        plan === 'fetch' ? this.trainer.warm?.(task) : null]); // a trainer in another thread may fetch the version ahead
    } catch (err) {
      // handed back, not dropped: a lease left to run out holds its task (and a synchronous round's seat) meanwhile
      await this.letGo(lease, 'download_error');
      throw err;
    }
    t.download = now();
    this.batchBytes.set(task.job_id, lease.batches.reduce((n, b) => n + b.byteLength, 0));
    return lease;
  }

  /**
   * The bytes a task would cost: its batches (as large as this job's last
   * ones), the model's weights unless the trainer has that version already,
   * (or the page's own weights stand for it: `plan`), and its upload, plus the uploads still owed by the tasks in hand (an
   * upload is at most the weights' size, fp32).
   */
  bytesFor(task, plan) {
    const weights = weightsBytes(task.spec.weights);
    const here = plan === 'continue' || this.trainer.has?.(task);
    const download = (this.batchBytes.get(task.job_id) || 0) + (here ? 0 : weights);
    return download + weights * (1 + this.held.size);
  }

  /** Extend every lease in hand that is due (a third of its lease time since the last). */
  async heartbeat() {
    if (this.beating) return; // a timer's beat and a phase's beat never overlap
    this.beating = true;
    try {
      for (const lease of this.held) {
        if (now() - lease.beat >= lease.task.heartbeat_seconds * 1000) {
          const renewed = await this.persist(lease, () => this.api.heartbeat(lease.task.job_id, lease.token));
          lease.token = renewed.lease_token;
          if (renewed.lease_expires) lease.expiresAt = renewed.lease_expires * 1000;
          if (renewed.upload) lease.task.upload = renewed.upload; // the newest form outlives the renewed lease
          lease.beat = now();
        }
      }
    } finally {
      this.beating = false;
    }
  }

  /** The gradient of a task's batch, or the pseudo-gradient of its local steps. */
  async compute(lease) {
    const { task, batches, t } = lease;
    const beat = () => this.heartbeat(); // between micro-batches or local steps
    // and on a timer, for a trainer in another thread (the page's Web Worker) that cannot call back
    const ticker = setInterval(() => this.heartbeat().catch(() => {}), 1000);
    const training = task.kind !== 'evaluate';
    const own = training && task.spec.local_steps && continues(task.spec);
    try {
      const plan = training ? this.trajectory.plan(task) : 'fetch';
      lease.fetched = await this.trainer.prepare(task, plan === 'continue');
      if (training) this.trajectory.began(task, lease.fetched === 'continued'); // else the model is the version
      t.computing = now();
      await this.heartbeat();
      if (task.kind === 'evaluate') { // a forward pass over the held-out batches; nothing is trained
        const answer = await this.trainer.heldOut(batches, task.spec);
        t.compute = now();
        if (!Number.isFinite(answer.loss)) throw new Error(`held-out loss is ${answer.loss}; not reporting it`);
        return answer;
      }
      this.computing = own ? task.result_tag : null;
      const result = task.spec.local_steps ? await this.trainer.localSteps(batches, task.spec, task.local_learning_rate, beat)
        : await this.trainer.gradient(batches[0], task.spec, beat);
      if (own) this.trajectory.moved(task.result_tag);
      t.compute = now();
      if (task.spec.local_steps) this.stepMs.set(task.job_id, (t.compute - t.computing) / batches.length);
      this.trained(batches[batches.length - 1], task.spec);
      if (!Number.isFinite(result.loss)) throw new Error(`loss is ${result.loss}; not uploading`);
      return result;
    } catch (err) {
      this.trajectory.reset(null, -1); // the trainer's weights are no longer known: the next task loads its version
      if (this.stopped) { // the page stopped its trainer: not a failure of this browser
        await this.letGo(lease, 'stopped');
        throw err;
      }
      await this.letGo(lease, err.reason || 'compute_error'); // not delivered: someone else computes it
      const streak = (this.streaks.get(task.job_id) || 0) + 1;
      this.streaks.set(task.job_id, streak);
      throw Object.assign(err instanceof Error ? err : new Error(String(err)), { jobId: task.job_id, streak });
    } finally {
      this.computing = null;
      clearInterval(ticker);
    }
  }

  /** Encode, upload and complete a task's result; then its lease is no longer held. */
  async deliver(lease, result) {
    if (lease.task.kind === 'evaluate') return this.answer(lease, result);
    const { loss, grads } = result;
    const { task, batches, t } = lease;
    let delivered = false;
    try {
      const body = getCodec(task.spec.codec).encode(grads);
      t.encode = now();
      await this.heartbeat();
      await this.persist(lease, () => uploadForm(task.upload, body, this.fetchImpl));
      t.upload = now();
      try {
        const data = this.dataSince(); // what the page used since its last completion
        await this.persist(lease, () => this.api.complete(task.job_id, lease.token, {
          loss, steps: task.spec.local_steps ? batches.length : undefined,
          backend: this.trainer.backends?.get(task.job_id), data }));
      } catch (err) {
        // 409/410: the lease ended or was completed; its task goes to someone else.
        if (err instanceof ApiError && (err.status === 409 || err.status === 410)) {
          this.report({ type: 'lost', jobId: task.job_id, message: err.message });
          return;
        }
        throw err;
      }
      t.complete = now();
      delivered = true;
      this.streaks.delete(task.job_id);
      this.report({
        type: 'task', jobId: task.job_id, version: task.base_version, epoch: task.epoch, batch: task.batch,
        loss, samples: batches.length * task.spec.dataset.x.shape[0], fetched: lease.fetched, bytes: body.byteLength,
        at: { computing: t.computing, computed: t.compute, completed: t.complete }, // performance.now() times
        ms: {
          lease: t.lease - t.start, download: t.download - t.lease, compute: t.compute - t.computing,
          encode: t.encode - t.compute, upload: t.upload - t.encode, complete: t.complete - t.upload,
          total: t.complete - t.start, between: t.start - t.before,
        },
      });
    } finally {
      // a move that will never be folded: the next task loads its version
      if (!delivered) this.trajectory.reset(null, -1);
      this.held.delete(lease);
    }
  }

  /** Complete an evaluation task with its held-out loss (and accuracy): nothing to upload. */
  async answer(lease, { loss, accuracy }) {
    const { task, t } = lease;
    try {
      await this.persist(lease, () => this.api.complete(task.job_id, lease.token, {
        loss, accuracy, backend: this.trainer.backends?.get(task.job_id), data: this.dataSince() }));
      this.streaks.delete(task.job_id);
      this.report({ type: 'evaluated', jobId: task.job_id, version: task.base_version, loss, accuracy,
        ms: { compute: t.compute - t.computing, total: now() - t.start } });
    } catch (err) {
      if (err instanceof ApiError && (err.status === 409 || err.status === 410)) {
        this.report({ type: 'lost', jobId: task.job_id, message: err.message });
        return;
      }
      throw err;
    } finally {
      this.held.delete(lease);
    }
  }
}
