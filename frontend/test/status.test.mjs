import assert from 'node:assert/strict';
import test from 'node:test';
import { heldOutSummary, nextDelay, poll, readDocument } from '../src/status.js';

test('polling slows while nothing changes, snaps back on a change and backs off on errors', () => {
  let delay = 3000;
  const waits = [];
  for (let i = 0; i < 7; i += 1) { delay = nextDelay(delay, { changed: false }); waits.push(delay); }
  assert.deepEqual(waits, [4500, 6750, 10125, 15188, 22782, 30000, 30000]);
  assert.equal(nextDelay(30000, { changed: true }), 3000);
  assert.equal(nextDelay(3000, { failed: true }), 6000);
  assert.equal(nextDelay(20000, { failed: true }), 30000);
});

test('a document not published yet reads as null; other failures are errors', async () => {
  const reply = (status, body) => async () => ({ status, ok: status < 300, json: async () => body });
  assert.equal(await readDocument('jobs/x/status.json', reply(404)), null);
  assert.deepEqual(await readDocument('jobs/index.json', reply(200, { jobs: [] })), { jobs: [] });
  await assert.rejects(readDocument('jobs/index.json', reply(503)), /HTTP 503/);
});

test('a poll hands on every change, a status change in an unchanged job list included, and nothing else', async () => {
  const documents = [{ jobs: [{ job_id: 'j-1', status: 'running' }] }, { jobs: [{ job_id: 'j-1', status: 'running' }] },
    { jobs: [{ job_id: 'j-1', status: 'finished' }] }];
  let i = 0;
  const seen = [];
  const stop = poll(async () => documents[Math.min(i++, 2)], (d) => seen.push(d.jobs[0].status), () => {},
    { minMs: 5, maxMs: 10 });
  await new Promise((r) => setTimeout(r, 80));
  stop();
  assert.deepEqual(seen, ['running', 'finished']);
});

test('a leaderboard becomes ranked rows, the reader\'s own marked by name and tag', async () => {
  const { leaderboardRows, formatCredit } = await import('../src/status.js');
  const board = [{ name: 'ada (0123)', credit: 123.4, results: 50, samples: 1600 },
    { name: 'anonymous (fedc)', credit: 0.00421, results: 2, samples: 64 }];
  assert.deepEqual(leaderboardRows(board, 'v.fedcba987654'), [
    { rank: 1, name: 'ada (0123)', credit: '123', results: 50, mine: false },
    { rank: 2, name: 'anonymous (fedc)', credit: '0.0042', results: 2, mine: true }]);
  assert.equal(leaderboardRows(board, 'ada.0123aaaaaaaa')[0].mine, true);
  assert.equal(leaderboardRows(board, 'ada.9999aaaaaaaa')[0].mine, false); // same name, another identity
  assert.deepEqual(leaderboardRows(undefined), []);
  assert.equal(formatCredit(12.34), '12.3');
});

test('the held-out summary names the newest agreed figure, or why there is none', () => {
  const spec = { evaluation: { every: 10, copies: 2 } };
  assert.equal(heldOutSummary({ spec: {}, held_out: [] }), 'not measured: the job has no held-out data');
  assert.equal(heldOutSummary({ spec, held_out: [] }), 'none agreed yet (every 10 versions, 2 volunteers)');
  const held = [{ version: 10, loss: 2.5, accuracy: null, volunteers: 2 }, { version: 20, loss: 1.98771, accuracy: 0.5, volunteers: 3 }];
  assert.equal(heldOutSummary({ spec, held_out: held }), 'loss 1.9877, accuracy 50.0 % at version 20 (3 volunteers agreed)');
});
