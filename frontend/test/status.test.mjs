import assert from 'node:assert/strict';
import test from 'node:test';
import { nextDelay, readDocument } from '../src/status.js';

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
