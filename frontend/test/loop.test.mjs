import assert from 'node:assert/strict';
import test from 'node:test';
import { ApiError, backoffDelay } from '../src/api.js';
import { FOLLOW_MS, FOLLOW_WAITS, VolunteerLoop } from '../src/loop.js';
import { RemoteTrainer } from '../src/remote.js';
import { parseBatch } from '../src/trainer.js';

const dataset = { x: { shape: [2, 3], dtype: 'int32' }, y: { shape: [2], dtype: 'int32' } };
const spec = { codec: 'fp32', dataset };
const task = {
  job_id: 'j-1', epoch: 0, batch: 4, base_version: 7, lease_token: 't1', heartbeat_seconds: 0,
  model_url: 'http://cdn/jobs/j-1/versions/00000007/model.json', batch_url: 'http://cdn/batch', upload: { url: 'http://s3/', fields: { key: 'k' } }, spec,
};

function fakes({ complete } = {}) {
  const calls = [];
  const api = {
    lease: async () => { calls.push('lease'); return task; },
    heartbeat: async (jobId, token) => { calls.push(`heartbeat ${token}`); return { lease_token: `${token}+` }; },
    complete: complete || (async (jobId, token, { loss }) => { calls.push(`complete ${token} ${loss}`); return {}; }),
  };
  const trainer = {
    prepare: async () => 'cached',
    gradient: () => ({ loss: 0.5, grads: [Float32Array.from([1, 2])] }),
  };
  const fetchImpl = async (url, init) => {
    calls.push(`${init?.method || 'GET'} ${url}`);
    return { ok: true, status: 200, arrayBuffer: async () => new ArrayBuffer(8), text: async () => '' };
  };
  return { calls, api, trainer, fetchImpl };
}

test('one task runs lease, download, heartbeat, upload, complete in order', async () => {
  const { calls, api, trainer, fetchImpl } = fakes();
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e) });
  await loop.once();
  assert.deepEqual(calls, ['lease', 'GET http://cdn/batch', 'heartbeat t1', 'heartbeat t1+', 'POST http://s3/', 'complete t1++ 0.5']);
  const done = reports.find((r) => r.type === 'task');
  assert.equal(done.bytes, 8);
  assert.equal(done.samples, 2);
  assert.ok(done.ms.total >= 0 && 'compute' in done.ms);
});

test('work owed between tasks runs before the lease, never while one is held, and is timed', async () => {
  const { calls, api, trainer, fetchImpl } = fakes();
  const reports = [];
  const betweenTasks = async () => { calls.push('between'); await new Promise((r) => setTimeout(r, 30)); };
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e), betweenTasks });
  await loop.once();
  await loop.once();
  assert.deepEqual(calls.filter((c) => c === 'between' || c === 'lease' || c.startsWith('complete')),
    ['between', 'lease', 'complete t1++ 0.5', 'between', 'lease', 'complete t1++ 0.5']);
  const done = reports.filter((r) => r.type === 'task');
  assert.ok(done.every((r) => r.ms.between >= 25 && r.ms.total < r.ms.between));
});

test('a lease that ended is reported as lost, not as an error', async () => {
  const { api, trainer, fetchImpl } = fakes({ complete: async () => { throw new ApiError(410, 'lease has expired'); } });
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e) });
  await loop.once();
  assert.equal(reports.at(-1).type, 'lost');
});

test('an empty queue backs off and stop ends the loop', async () => {
  const reports = [];
  const api = { lease: async () => ({ retryAfter: 0.01 }) };
  const loop = new VolunteerLoop({ api, trainer: {}, fetchImpl: null, report: (e) => reports.push(e) });
  const running = loop.run();
  await new Promise((r) => setTimeout(r, 60));
  loop.stop();
  await running;
  assert.ok(reports.filter((r) => r.type === 'idle').length >= 1);
  assert.equal(reports.at(-1).type, 'stopped');
});

test("a synchronous job's full round is asked again after the wait it names, which does not grow", async () => {
  const waits = async (answer) => {
    const reports = [];
    const api = { lease: async () => answer };
    const loop = new VolunteerLoop({ api, trainer: {}, fetchImpl: null, report: (e) => reports.push(e) });
    const running = loop.run();
    await new Promise((r) => setTimeout(r, 150));
    loop.stop();
    await running;
    return reports.filter((r) => r.type === 'idle');
  };
  const round = await waits({ kind: 'wait', retry_after: 0.01, reason: 'waiting for version 3' });
  assert.ok(round.length >= 5, `${round.length} leases in 150 ms`);
  assert.ok(round.every((r) => r.waitMs === 10 && r.reason === 'waiting for version 3'));
  const empty = await waits({ retryAfter: 0.01 }); // an empty queue: jittered, exponentially growing
  assert.ok(empty.length < round.length && empty.length >= 2);
});

test('back-off is jittered within an exponentially growing, capped window', () => {
  assert.equal(backoffDelay(0, 1000, 30000, () => 1), 1000);
  assert.equal(backoffDelay(3, 1000, 30000, () => 1), 8000);
  assert.equal(backoffDelay(10, 1000, 30000, () => 1), 30000);
  assert.equal(backoffDelay(3, 1000, 30000, () => 0), 0);
});

test('batch files split into x then y and must have the exact size', () => {
  const bytes = new Uint8Array(new Int32Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer);
  const { x, y } = parseBatch(bytes, dataset);
  assert.deepEqual(Array.from(x), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(Array.from(y), [7, 8]);
  assert.throws(() => parseBatch(bytes.slice(4), dataset), /expected 32/);
});

test('uint8 token ids take one byte each, and the y half after an odd x is read whole', () => {
  const ids = { x: { shape: [1, 3], dtype: 'uint8', one_hot: 128 }, y: { shape: [2], dtype: 'int32' } };
  const bytes = new Uint8Array(11);
  bytes.set([65, 66, 127]);
  new DataView(bytes.buffer).setInt32(3, 300, true);
  new DataView(bytes.buffer).setInt32(7, -2, true);
  const { x, y } = parseBatch(bytes, ids);
  assert.deepEqual(Array.from(x), [65, 66, 127]);
  assert.deepEqual(Array.from(y), [300, -2]);
  assert.throws(() => parseBatch(bytes.slice(1), ids), /expected 11/);
});

function pipelineFakes(tasks, taskSpec = spec) {
  const events = [];
  let held = 0;
  let most = 0;
  let n = 0;
  const api = {
    lease: async () => {
      if (n >= tasks) return { retryAfter: 0.01 };
      n += 1;
      held += 1;
      most = Math.max(most, held);
      events.push(`lease ${n}`);
      return { ...task, lease_token: `t${n}`, batch: n, spec: taskSpec };
    },
    heartbeat: async (jobId, token) => ({ lease_token: token }),
    complete: async (jobId, token) => {
      await new Promise((r) => setTimeout(r, 30)); // completing takes longer than computing
      held -= 1;
      events.push(`complete ${token}`);
      return {};
    },
  };
  const trainer = {
    prepare: async () => 'cached',
    gradient: async () => { await new Promise((r) => setTimeout(r, 20)); return { loss: 0.5, grads: [Float32Array.from([1, 2])] }; },
  };
  const fetchImpl = async () => ({ ok: true, status: 200, arrayBuffer: async () => new ArrayBuffer(8), text: async () => '' });
  return { events, api, trainer, fetchImpl, most: () => most };
}

for (const prefetch of [0, 1]) {
  test(`a loop with prefetch ${prefetch} holds at most ${prefetch + 1} leases and finishes every task`, async () => {
    const { events, api, trainer, fetchImpl, most } = pipelineFakes(6);
    const reports = [];
    const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e), prefetch });
    const running = loop.run();
    while (reports.filter((r) => r.type === 'task').length < 6) await new Promise((r) => setTimeout(r, 5));
    loop.stop();
    await running;
    assert.equal(most(), prefetch + 1);
    assert.deepEqual(events.filter((e) => e.startsWith('complete')), [1, 2, 3, 4, 5, 6].map((i) => `complete t${i}`));
    // pipelined: the next task is leased before the one in hand is completed
    assert.equal(events.indexOf('lease 2') < events.indexOf('complete t1'), prefetch > 0);
    assert.equal(reports.at(-1).type, 'stopped');
  });
}

test('in a synchronous round the next lease goes beside the delivery before it: at most 3 leases held', async () => {
  const { events, api, trainer, fetchImpl, most } = pipelineFakes(6, { ...spec, synchronous: true });
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e), prefetch: 1 });
  const running = loop.run();
  while (reports.filter((r) => r.type === 'task').length < 6) await new Promise((r) => setTimeout(r, 5));
  loop.stop();
  await running;
  assert.equal(most(), 3);
  assert.deepEqual(events.filter((e) => e.startsWith('complete')), [1, 2, 3, 4, 5, 6].map((i) => `complete t${i}`));
  // task 3 is leased while task 1 is still being completed (a completion outlasts a compute here)
  assert.ok(events.indexOf('lease 3') < events.indexOf('complete t1'));
});

test('a page with a seat in a full round asks again soon, a few times; a page without one as told', async () => {
  const wait = { kind: 'wait', job_id: 'j-1', base_version: 7, retry_after: 1, reason: 'round' };
  const leases = [{ ...task, spec: { ...spec, synchronous: true } }, wait, wait];
  const api = { lease: async () => leases.shift() ?? wait, heartbeat: async (j, token) => ({ lease_token: token }) };
  const seated = new VolunteerLoop({ api, trainer: fakes().trainer, fetchImpl: fakes().fetchImpl, report: () => {} });
  await seated.acquire(); // a seat in version 7's round
  const waits = [];
  for (let i = 0; i < FOLLOW_WAITS + 2; i += 1) waits.push(seated.roundWait(await seated.acquire()));
  assert.deepEqual(waits, [...Array(FOLLOW_WAITS).fill(FOLLOW_MS), 1000, 1000]);
  const other = new VolunteerLoop({ api, trainer: fakes().trainer, fetchImpl: fakes().fetchImpl, report: () => {} });
  assert.equal(other.roundWait(await other.acquire()), 1000); // no seat of its in that round
  assert.equal(seated.roundWait({ ...(await seated.acquire()), version: 8 }), 1000); // another round
});

test('with a range of local steps the page trains as many batches as fit the target at its own step time', async () => {
  const urls = Array.from({ length: 8 }, (_, i) => `http://cdn/batch-${i}`);
  const local = { ...spec, local_steps: { steps: 8, min_steps: 2, target_seconds: 0.4 } };
  const downloads = [];
  const completed = [];
  let msPerStep = 10;
  const api = {
    lease: async () => ({ ...task, batch_urls: urls, spec: local }),
    heartbeat: async (jobId, token) => ({ lease_token: token }),
    complete: async (jobId, token, { steps }) => { completed.push(steps); return {}; },
  };
  const trainer = {
    prepare: async () => 'cached',
    localSteps: async (batches) => {
      await new Promise((r) => setTimeout(r, msPerStep * batches.length));
      return { loss: 0.5, grads: [Float32Array.from([1, 2])] };
    },
  };
  const fetchImpl = async (url) => {
    if (url.startsWith('http://cdn/')) downloads.push(url);
    return { ok: true, status: 200, arrayBuffer: async () => new ArrayBuffer(8), text: async () => '' };
  };
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: () => {} });
  await loop.once(); // nothing measured yet: the least
  await loop.once(); // ~10 ms a step (under 50 even on a busy machine): 400 ms fits all 8
  msPerStep = 130;
  await loop.once(); // still measured at ~10 ms
  await loop.once(); // 130 ms or more a step: 3 fit, or the least, 2
  assert.deepEqual(completed.slice(0, 3), [2, 8, 8]);
  assert.ok(completed[3] === 2 || completed[3] === 3, completed);
  assert.deepEqual(downloads.slice(0, 2), urls.slice(0, 2)); // only the batches it trains on
  assert.equal(downloads.length, 2 + 8 + 8 + completed[3]);
  // the server's budget for the lease caps it: a fast page given 5 trains (and reports) 5
  msPerStep = 10;
  api.lease = async () => ({ ...task, batch_urls: urls, spec: local, steps: 5 });
  await loop.once(); // measured at 130 ms a step: 3 fit
  await loop.once(); // ~10 ms: all 8 fit, 5 given
  await loop.once();
  assert.deepEqual(completed.slice(5), [5, 5]);
});

test("a task of fixed local steps trains on all its batches at the lease's inner learning rate and says so", async () => {
  const urls = ['http://cdn/a', 'http://cdn/b', 'http://cdn/c'];
  const completed = [];
  const rates = [];
  const api = {
    lease: async () => ({ ...task, batch_urls: urls, local_learning_rate: 0.0125,
      spec: { ...spec, local_steps: { steps: 3, min_steps: 3, target_seconds: 1 } } }),
    heartbeat: async (jobId, token) => ({ lease_token: token }),
    complete: async (jobId, token, { steps }) => { completed.push(steps); return {}; },
  };
  const trainer = { prepare: async () => 'cached',
    localSteps: async (batches, s, rate) => { rates.push(rate); return { loss: batches.length, grads: [Float32Array.from([1])] }; } };
  const fetchImpl = async () => ({ ok: true, status: 200, arrayBuffer: async () => new ArrayBuffer(8), text: async () => '' });
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: () => {} });
  await loop.once();
  assert.deepEqual(completed, [3]);
  assert.deepEqual(rates, [0.0125]);
});

test('a task whose compute fails is handed back at once; three in a row and the page waits, saying why', async () => {
  const released = [];
  const reports = [];
  let leased = 0;
  const api = {
    lease: async () => { leased += 1; return { ...task, lease_token: `t${leased}` }; },
    heartbeat: async (jobId, token) => ({ lease_token: token }),
    release: async (jobId, token, reason) => { released.push(`${token} ${reason}`); return {}; },
    complete: async () => { throw new Error('never'); },
  };
  const trainer = { prepare: async () => 'cached', gradient: () => { throw new Error("Kernel 'X' not registered"); } };
  const fetchImpl = async () => ({ ok: true, status: 200, arrayBuffer: async () => new ArrayBuffer(8), text: async () => '' });
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e), prefetch: 0 });
  loop.failed = ((failed) => function (err) { failed.call(this, err); return 1; })(loop.failed); // no real waits
  const running = loop.run();
  while (!reports.some((r) => r.type === 'gave-up')) await new Promise((r) => setTimeout(r, 2));
  loop.stop();
  await running;
  assert.deepEqual(released.slice(0, 3), ['t1 compute_error', 't2 compute_error', 't3 compute_error']);
  assert.deepEqual(reports.filter((r) => r.type === 'error' || r.type === 'gave-up').slice(0, 3).map((r) => r.type),
    ['error', 'error', 'gave-up']);
  const gaveUp = reports.find((r) => r.type === 'gave-up');
  assert.equal(gaveUp.jobId, 'j-1');
  assert.match(gaveUp.message, /not registered/);
  assert.equal(gaveUp.waitMs, 5 * 60 * 1000);
  assert.equal(loop.held.size, 0);
});

test('stopping hands back the task in hand and the prefetched one, and uploads nothing more', async () => {
  const released = [];
  const { api, trainer, fetchImpl, events } = pipelineFakes(3);
  api.release = async (jobId, token, reason) => { released.push(`${token} ${reason}`); return {}; };
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: () => {}, prefetch: 1 });
  const compute = trainer.gradient;
  trainer.gradient = async (...args) => { // stop once the next task is leased, while this one computes
    while (!events.includes('lease 2')) await new Promise((r) => setTimeout(r, 1));
    loop.stop();
    return compute(...args);
  };
  await loop.run();
  assert.deepEqual(events.filter((e) => e.startsWith('complete')), []); // the task in hand is not delivered
  assert.deepEqual(released.sort(), ['t1 stopped', 't2 stopped']);
  assert.equal(loop.held.size, 0);
});

test('an upload goes through the newest form a heartbeat returned', async () => {
  const { calls, api, trainer, fetchImpl } = fakes();
  api.heartbeat = async (jobId, token) => ({ lease_token: `${token}+`, upload: { url: 'http://s3-renewed/', fields: { key: 'k' } } });
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: () => {} });
  await loop.once();
  assert.ok(calls.includes('POST http://s3-renewed/') && !calls.includes('POST http://s3/'), calls.join(', '));
});

test('a throttled or failed completion is tried again within the lease, and the gradient is delivered', async () => {
  let tries = 0;
  const { calls, api, trainer, fetchImpl } = fakes({
    complete: async (jobId, token, { loss }) => {
      tries += 1;
      if (tries === 1) throw new ApiError(429, 'Too Many Requests');
      if (tries === 2) throw new TypeError('Failed to fetch'); // a dropped connection
      if (tries === 3) throw new ApiError(503, 'Service Unavailable');
      calls.push(`complete ${token} ${loss}`);
      return {};
    },
  });
  api.lease = async () => ({ ...task, lease_expires: Date.now() / 1000 + 60 });
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e) });
  await loop.once();
  assert.equal(tries, 4);
  assert.equal(reports.filter((r) => r.type === 'retry').length, 3);
  assert.equal(reports.filter((r) => r.type === 'task').length, 1);
});

test('a refusal (4xx) or the end of the lease ends the retries', async () => {
  for (const [error, expires] of [[new ApiError(400, 'bad'), 60], [new ApiError(429, 'slow down'), -1]]) {
    let tries = 0;
    const { api, trainer, fetchImpl } = fakes({ complete: async () => { tries += 1; throw error; } });
    api.lease = async () => ({ ...task, lease_expires: Date.now() / 1000 + expires });
    const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: () => {} });
    await assert.rejects(loop.once(), (err) => err === error);
    assert.equal(tries, 1);
  }
});

test('a task leased ahead is computed next even when the task before it fails', { timeout: 10000 }, async () => {
  const { events, api, trainer, fetchImpl } = pipelineFakes(3);
  const compute = trainer.gradient;
  let calls = 0;
  trainer.gradient = async (...args) => {
    calls += 1;
    while (calls === 1 && !events.includes('lease 2')) await new Promise((r) => setTimeout(r, 1));
    if (calls === 1) throw new Error('loss is NaN; not uploading');
    return compute(...args);
  };
  api.release = async () => ({});
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e), prefetch: 1 });
  loop.failed = ((failed) => function (err) { failed.call(this, err); return 1; })(loop.failed);
  const running = loop.run();
  while (reports.filter((r) => r.type === 'task').length < 2) await new Promise((r) => setTimeout(r, 5));
  loop.stop();
  await running;
  // t1 failed and went back; t2 (leased ahead) and t3 were computed and completed
  assert.deepEqual(events.filter((e) => e.startsWith('complete')).slice(0, 2), ['complete t2', 'complete t3']);
});

test('a hold stops leasing within one task: the task ahead and the one computing go back, and leasing resumes after', async () => {
  const { events, api, trainer, fetchImpl } = pipelineFakes(5);
  const released = [];
  api.release = async (jobId, token, reason) => { released.push(`${token} ${reason}`); return {}; };
  let unplugged = false;
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e),
    hold: () => (unplugged ? 'waiting for the device to charge' : null) });
  const compute = trainer.gradient;
  let calls = 0;
  trainer.gradient = async (...args) => { // unplugged while task 2 computes, with task 3 leased ahead
    calls += 1;
    if (calls === 2) {
      while (!events.includes('lease 3')) await new Promise((r) => setTimeout(r, 1));
      unplugged = true;
    }
    return compute(...args);
  };
  const running = loop.run();
  while (!unplugged) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(events.filter((e) => e.startsWith('lease')), ['lease 1', 'lease 2', 'lease 3']); // no lease after
  assert.deepEqual(events.filter((e) => e.startsWith('complete')), ['complete t1']); // task 2 was not uploaded
  assert.deepEqual(released.sort(), ['t2 stopped', 't3 stopped']);
  assert.equal(loop.held.size, 0);
  assert.deepEqual(reports.filter((r) => r.type === 'held').map((r) => r.reason), ['waiting for the device to charge']);
  unplugged = false; // plugged in again
  while (!events.includes('lease 4')) await new Promise((r) => setTimeout(r, 5));
  loop.stop();
  await running;
});

test('the pause after a task makes computing the asked share of the time', async () => {
  const { api, trainer, fetchImpl } = pipelineFakes(8);
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e),
    pauseAfter: (computeMs) => computeMs * 3 }); // a CPU share of 25 %
  const running = loop.run();
  while (reports.filter((r) => r.type === 'task').length < 6) await new Promise((r) => setTimeout(r, 5));
  loop.stop();
  await running;
  const spans = reports.filter((r) => r.type === 'task').map((r) => r.at);
  const computing = spans.slice(0, 5).reduce((n, s) => n + s.computed - s.computing, 0);
  const share = computing / (spans[5].computing - spans[0].computing);
  assert.ok(Math.abs(share - 0.25) < 0.05, `computing took ${(100 * share).toFixed(1)} % of the time`);
});

test("near the data cap a task whose model version is not here is handed back; one whose version is here is kept", async () => {
  const weights = [{ name: 'w', shape: [200] }]; // 800 bytes: 1,600 with an upload of them, 800 if here already
  const { events, api, trainer, fetchImpl } = pipelineFakes(3);
  const lease = api.lease;
  api.lease = async () => { const t = await lease(); return t.retryAfter ? t : { ...t, spec: { ...spec, weights } }; };
  const released = [];
  api.release = async (jobId, token, reason) => { released.push(`${token} ${reason}`); return {}; };
  let cached = false;
  trainer.has = () => cached;
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e),
    dataLeft: () => 1000, prefetch: 0 });
  const first = await loop.once();
  assert.equal(first.retryAfter, 30);
  assert.match(first.reason, /data cap/);
  assert.deepEqual(released, ['t1 stopped']);
  cached = true;
  await loop.once();
  assert.deepEqual(events.filter((e) => e.startsWith('complete')), ['complete t2']);
});

test('each completion carries the bytes the page used since the one before', async () => {
  const { api, trainer, fetchImpl } = fakes();
  const sent = [];
  api.complete = async (jobId, token, { data }) => { sent.push(data); return {}; };
  let used = 0;
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: () => {},
    dataSince: () => { used += 1; return { down: 100 * used, up: used }; } });
  await loop.once();
  await loop.once();
  assert.deepEqual(sent, [{ down: 100, up: 1 }, { down: 200, up: 2 }]);
});

test('a hold that starts before the next lease keeps it from being taken at all', async () => {
  const { events, api, trainer, fetchImpl } = pipelineFakes(5);
  api.release = async () => ({});
  let unplugged = false;
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: () => {},
    hold: () => (unplugged ? 'waiting for the device to charge' : null) });
  const compute = trainer.gradient;
  let calls = 0;
  trainer.gradient = async (...args) => { // unplugged as task 2 starts, while task 1 is still being completed
    calls += 1;
    if (calls === 2) unplugged = true;
    return compute(...args);
  };
  const running = loop.run();
  while (!unplugged) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 300));
  loop.stop();
  await running;
  assert.deepEqual(events.filter((e) => e.startsWith('lease')), ['lease 1', 'lease 2']);
});

test('a stop that cancels the trainer hands its task back as stopped, not as a failure', async () => {
  const { api, trainer, fetchImpl } = pipelineFakes(3);
  const released = [];
  api.release = async (jobId, token, reason) => { released.push(`${token} ${reason}`); return {}; };
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e), prefetch: 0 });
  trainer.gradient = async () => { // the page stops: it ends the worker, and the call in flight is rejected
    loop.stop();
    throw new Error('stopped by the volunteer');
  };
  await loop.run();
  assert.deepEqual(released, ['t1 stopped']);
  assert.deepEqual(reports.map((r) => r.type), ['leased', 'stopped']);
  assert.equal(loop.streaks.size, 0);
});

test('a stop while a task is being leased ends the loop: the cancelled worker trainer refuses the task at once', { timeout: 5000 }, async () => {
  const { api, fetchImpl } = pipelineFakes(3);
  const released = [];
  api.release = async (jobId, token, reason) => { released.push(`${token} ${reason}`); return {}; };
  const posted = [];
  const trainer = new RemoteTrainer({ postMessage: (message) => posted.push(message.method) }); // a worker ended: it never answers
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e), prefetch: 0 });
  const lease = api.lease;
  api.lease = async () => { // the volunteer presses stop while the lease request is out, as the page does
    loop.stop();
    trainer.cancel('stopped by the volunteer');
    return lease();
  };
  await loop.run();
  assert.deepEqual(posted, []); // nothing was asked of the ended worker
  assert.deepEqual(released, ['t1 stopped']);
  assert.deepEqual(reports.map((r) => r.type), ['leased', 'stopped']);
});

test('an evaluation task downloads the held-out batches, uploads nothing and completes with loss and accuracy', async () => {
  const { calls, api, fetchImpl } = fakes({
    complete: async (jobId, token, body) => { calls.push(`complete ${token} ${JSON.stringify(body)}`); return {}; },
  });
  const evaluation = { ...task, kind: 'evaluate', epoch: -1, batch: -1, upload: undefined,
    batch_urls: ['http://cdn/held-1', 'http://cdn/held-2'], batch_url: 'http://cdn/held-1' };
  api.lease = async () => { calls.push('lease'); return evaluation; };
  const seen = [];
  const trainer = {
    prepare: async () => 'cached',
    heldOut: async (batches, s) => { seen.push(batches.length, s); return { loss: 1.25, accuracy: 0.75 }; },
    gradient: () => { throw new Error('an evaluation trains nothing'); },
  };
  const reports = [];
  const loop = new VolunteerLoop({ api, trainer, fetchImpl, report: (e) => reports.push(e) });
  await loop.once();
  assert.deepEqual(seen, [2, spec]);
  assert.deepEqual(calls.filter((c) => !c.startsWith('heartbeat')), ['lease', 'GET http://cdn/held-1', 'GET http://cdn/held-2',
    'complete t1+ {"loss":1.25,"accuracy":0.75}']);
  const done = reports.find((r) => r.type === 'evaluated');
  assert.equal(done.version, 7);
  assert.equal(done.accuracy, 0.75);
  assert.equal(loop.held.size, 0);
});

test('the API client keeps its identity, sends it with every task call, and replaces one the API no longer knows', async () => {
  const { Api } = await import('../src/api.js');
  const sent = [];
  let registered = 0;
  const fetchImpl = async (url, init) => {
    const body = init.body ? JSON.parse(init.body) : undefined;
    sent.push([url.replace('http://api', ''), body]);
    const reply = (status, payload) => ({ ok: status < 300, status, headers: { get: () => null }, text: async () => JSON.stringify(payload) });
    if (url.endsWith('/volunteers')) { registered += 1; return reply(201, { volunteer_id: `ada.${registered}`, volunteer_token: `token-${registered}` }); }
    if (url.endsWith('/tasks/lease') && body.volunteer_token === 'token-1') return reply(401, { Message: "volunteer token's key is unknown" });
    return reply(200, { lease_token: 'lt' });
  };
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const api = new Api('http://api', fetchImpl);
  assert.equal((await api.identify('ada', storage)).volunteer_id, 'ada.1');
  assert.equal((await new Api('http://api', fetchImpl).identify('ada', storage)).volunteer_id, 'ada.1'); // kept
  assert.equal(registered, 1);
  await api.lease(); // token-1 is refused: a new identity, then the lease
  assert.equal(api.identity.volunteer_id, 'ada.2');
  assert.equal(JSON.parse(store.get('crowdtrain-identity:ada')).volunteer_token, 'token-2');
  await api.heartbeat('j', 'lt');
  await api.complete('j', 'lt', { loss: 1 });
  await api.release('j', 'lt', 'stopped');
  assert.deepEqual(sent.map(([path, body]) => [path, body.volunteer_token]), [
    ['/volunteers', undefined], ['/tasks/lease', 'token-1'], ['/volunteers', undefined], ['/tasks/lease', 'token-2'],
    ['/tasks/heartbeat', 'token-2'], ['/tasks/complete', 'token-2'], ['/tasks/release', 'token-2']]);
});

test('the API client renews a day-old volunteer token before a lease, keeping its identity', async () => {
  const { Api, tokenIssued } = await import('../src/api.js');
  const now = Date.now() / 1000;
  const token = (issued) => `v2.k.${Buffer.from(JSON.stringify({ issued, volunteer_id: 'ada.1' })).toString('base64url')}.mac`;
  const sent = [];
  const fetchImpl = async (url, init) => {
    const body = JSON.parse(init.body);
    sent.push([url.replace('http://api', ''), body.volunteer_token]);
    const payload = url.endsWith('/volunteers/renew') ? { volunteer_id: 'ada.1', volunteer_token: token(now), name: 'ada' } : { lease_token: 'lt' };
    return { ok: true, status: 200, headers: { get: () => null }, text: async () => JSON.stringify(payload) };
  };
  const store = new Map([['crowdtrain-identity:ada', JSON.stringify({ volunteer_id: 'ada.1', volunteer_token: token(now - 2 * 86400) })]]);
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const api = new Api('http://api', fetchImpl);
  await api.identify('ada', storage);
  assert.equal(tokenIssued(api.volunteerToken), now - 2 * 86400);
  await api.lease(); // two days old: renewed first, then the lease with the new token
  await api.lease(); // fresh: no renewal
  assert.deepEqual(sent, [['/volunteers/renew', token(now - 2 * 86400)], ['/tasks/lease', token(now)], ['/tasks/lease', token(now)]]);
  assert.equal(JSON.parse(store.get('crowdtrain-identity:ada')).volunteer_token, token(now)); // kept for the next visit
  assert.equal(api.identity.volunteer_id, 'ada.1');
  assert.equal(tokenIssued('token-1'), null); // not a token it can read: left alone
});

test("a lease whose batches do not download is handed back, so its task (and its round's seat) is not held until it ends", { timeout: 5000 }, async () => {
  const released = [];
  const reports = [];
  let leased = 0;
  const api = {
    lease: async () => { leased += 1; return { ...task, lease_token: `t${leased}` }; },
    release: async (jobId, token, reason) => { released.push(`${token} ${reason}`); return {}; },
  };
  const fetchImpl = async (url) => { throw new TypeError(`fetch failed: ${url}`); }; // the edge refused the connection
  const loop = new VolunteerLoop({ api, trainer: { prepare: async () => 'cached' }, fetchImpl, prefetch: 0,
    report: (e) => reports.push(e) });
  loop.failed = ((failed) => function (err) { failed.call(this, err); return 1; })(loop.failed); // no real waits
  const running = loop.run();
  while (released.length < 2) await new Promise((r) => setTimeout(r, 2));
  loop.stop();
  await running;
  assert.deepEqual(released.slice(0, 2), ['t1 download_error', 't2 download_error']);
  assert.match(reports.find((r) => r.type === 'error').message, /fetch failed/);
  assert.equal(loop.held.size, 0);
});
