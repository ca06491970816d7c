import assert from 'node:assert/strict';
import test from 'node:test';
import { THANKS, dispatcher, eventHandlers } from '../src/events.js';

/** A page without a DOM: elements are plain objects with a textContent, and the hooks record their calls. */
function fakePage({ finished = false } = {}) {
  const elements = {};
  const calls = [];
  const page = {
    $: (id) => (elements[id] ??= { textContent: '' }),
    stats: { tasks: 0, samples: 0, ms: 0, until: 0, split: { download: 0, compute: 0, upload: 0 } },
    crowdtrain: { tasks: [], evaluations: [] },
    setJob: (id) => calls.push(['setJob', id]),
    finished: () => finished,
    render: () => calls.push(['render']),
    refreshCredit: () => calls.push(['refreshCredit']),
    stopped: () => calls.push(['stopped']),
  };
  return { page, elements, calls, text: (id) => elements[id]?.textContent };
}

const quiet = { debug() {} };

test('each event goes to its handler, which sets the page\'s texts and calls its hooks', () => {
  const { page, calls, text } = fakePage();
  const report = dispatcher(eventHandlers(page), quiet);
  report({ type: 'leased', jobId: 'j-1', batch: 4, version: 2 });
  assert.equal(text('state'), 'working on job j-1, batch 4');
  report({ type: 'leased', jobId: 'j-1', batch: -1, version: 2 });
  assert.equal(text('state'), 'checking version 2 of job j-1 on held-out data');
  report({ type: 'backend', name: 'wasm', wasmThreads: 1, isolated: false });
  assert.equal(text('backend-active'), 'wasm');
  assert.equal(text('wasm-threads'), '1 thread (page not cross-origin isolated)');
  report({ type: 'task', samples: 32, ms: { total: 100, download: 10, compute: 50, encode: 5, upload: 20, complete: 15 } });
  assert.deepEqual(page.stats, { tasks: 1, samples: 32, ms: 100, until: 100, split: { download: 10, compute: 55, upload: 35 } });
  assert.equal(page.crowdtrain.tasks.length, 1);
  report({ type: 'idle' });
  assert.equal(text('state'), 'no task right now; waiting');
  report({ type: 'lost', jobId: 'j-1', message: '409: gone' });
  assert.equal(text('state'), 'a lease ran out; moving on');
  report({ type: 'sample', text: 'hello' });
  assert.equal(text('sample'), 'hello');
  report({ type: 'stopped' });
  assert.equal(text('state'), 'stopped');
  assert.deepEqual(calls, [['setJob', 'j-1'], ['setJob', 'j-1'], ['render'], ['refreshCredit'], ['stopped']]);
});

test('time contributed is wall time with a task in hand: overlapping pipelined tasks count once', () => {
  const { page } = fakePage();
  const report = dispatcher(eventHandlers(page), quiet);
  const ms = { download: 0, compute: 0, encode: 0, upload: 0, complete: 0 };
  report({ type: 'task', samples: 1, at: { completed: 1000 }, ms: { ...ms, total: 1000 } }); // 0 to 1,000
  report({ type: 'task', samples: 1, at: { completed: 1600 }, ms: { ...ms, total: 900 } }); // 700 to 1,600
  report({ type: 'task', samples: 1, at: { completed: 3000 }, ms: { ...ms, total: 500 } }); // 2,500 to 3,000
  assert.equal(page.stats.ms, 1000 + 600 + 500); // not 2,400: the second overlapped the first
});

test('a retried request says what failed and when it is tried again', () => {
  const { page, text } = fakePage();
  const report = dispatcher(eventHandlers(page), quiet);
  report({ type: 'retry', jobId: 'j-1', message: '429: Too Many Requests', waitMs: 1200 });
  assert.equal(text('state'), 'a request failed (429: Too Many Requests); retrying in 2 s');
});

test('a finished job\'s idle page thanks the volunteer', () => {
  const { page, text } = fakePage({ finished: true });
  dispatcher(eventHandlers(page), quiet)({ type: 'idle', reason: 'no task' });
  assert.equal(text('state'), THANKS);
});

test('an unknown event is ignored, logged once per type, and Object\'s own names are not handlers', () => {
  const { page, elements } = fakePage();
  const logged = [];
  const report = dispatcher(eventHandlers(page), { debug: (line) => logged.push(line) });
  for (const type of ['surprise', 'surprise', 'toString', undefined]) assert.equal(report({ type }), undefined);
  assert.deepEqual(elements, {}); // nothing shown
  assert.equal(logged.length, 3);
  assert.match(logged[0], /no handler for event 'surprise'/);
});
