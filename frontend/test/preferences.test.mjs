import assert from 'node:assert/strict';
import test from 'node:test';
import { DataMeter, DATA_KEY, bodyBytes } from '../src/meter.js';
import {
  DEFAULTS, METERED_CAP_MB, holdReason, loadPreferences, metered, parsePreferences, pauseAfter, savePreferences,
} from '../src/preferences.js';

class Storage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
}

test('preferences survive a save and a load; unreadable or out-of-range ones fall back to the defaults', () => {
  const storage = new Storage();
  assert.deepEqual(loadPreferences(storage), DEFAULTS);
  const chosen = { ...DEFAULTS, chargingOnly: true, dailyCapMb: 50, capChosen: true, cpuShare: 40, pauseBusy: true };
  savePreferences(storage, chosen);
  assert.deepEqual(loadPreferences(storage), chosen);
  assert.deepEqual(parsePreferences('{not json'), DEFAULTS);
  assert.deepEqual(parsePreferences('[1]'), DEFAULTS);
  assert.deepEqual(parsePreferences('{"cpuShare": 3, "dailyCapMb": -5, "chargingOnly": "yes", "pauseHidden": false}'),
    { ...DEFAULTS, cpuShare: 10, dailyCapMb: 0, pauseHidden: false });
  assert.equal(parsePreferences('{"cpuShare": 1e400}').cpuShare, DEFAULTS.cpuShare);
});

test('on a metered link a cap the volunteer never set is METERED_CAP_MB; one they set is kept on any link', () => {
  const cellular = { type: 'cellular', saveData: false };
  for (const link of [cellular, { type: 'wifi', saveData: true }, { effectiveType: '4g', saveData: true }]) {
    assert.ok(metered(link), JSON.stringify(link));
  }
  for (const link of [undefined, null, {}, { type: 'wifi', saveData: false }, { effectiveType: '2g' }]) {
    assert.ok(!metered(link), JSON.stringify(link));
  }
  const storage = new Storage();
  assert.equal(loadPreferences(storage, cellular).dailyCapMb, METERED_CAP_MB);
  assert.equal(loadPreferences(storage, { type: 'wifi' }).dailyCapMb, 0);
  // the other preferences saved: the cap still follows the link
  savePreferences(storage, { ...loadPreferences(storage, cellular), cpuShare: 50 });
  assert.deepEqual([loadPreferences(storage, cellular).dailyCapMb, loadPreferences(storage, {}).dailyCapMb],
    [METERED_CAP_MB, 0]);
  // what pages before the metered default stored: 0 unasked (the link decides), a cap above 0 chosen
  assert.equal(parsePreferences('{"dailyCapMb": 0, "cpuShare": 50}', cellular).dailyCapMb, METERED_CAP_MB);
  assert.equal(parsePreferences('{"dailyCapMb": 40}', cellular).dailyCapMb, 40);
  // a cap set (no cap included) is the volunteer's, whatever the link
  for (const cap of [0, 20]) {
    savePreferences(storage, { ...loadPreferences(storage, cellular), dailyCapMb: cap, capChosen: true });
    assert.deepEqual([loadPreferences(storage, cellular).dailyCapMb, loadPreferences(storage, {}).dailyCapMb], [cap, cap]);
  }
});

test('the pause after a task gives computing the asked share of the time', () => {
  for (const share of [10, 25, 50, 100]) {
    const compute = 400;
    assert.ok(Math.abs(compute / (compute + pauseAfter(compute, share)) - share / 100) < 1e-12);
  }
  assert.equal(pauseAfter(400, 100), 0);
});

test('a hold names its reason: not charging, the data cap, a hidden tab, a person at the page', () => {
  const idle = { charging: true, hidden: false, busy: false, bytesToday: 0 };
  assert.equal(holdReason(DEFAULTS, idle), null);
  assert.equal(holdReason(DEFAULTS, { ...idle, charging: false }), null); // not asked for
  assert.match(holdReason({ ...DEFAULTS, chargingOnly: true }, { ...idle, charging: false }), /charge/);
  // a browser that does not say whether it charges is not held (the page says so and turns the option off)
  assert.equal(holdReason({ ...DEFAULTS, chargingOnly: true }, { ...idle, charging: null }), null);
  assert.equal(holdReason({ ...DEFAULTS, dailyCapMb: 2 }, { ...idle, bytesToday: 1_999_999 }), null);
  assert.match(holdReason({ ...DEFAULTS, dailyCapMb: 2 }, { ...idle, bytesToday: 2_000_000 }), /data cap of 2 MB/);
  assert.match(holdReason(DEFAULTS, { ...idle, hidden: true }), /hidden/);
  assert.equal(holdReason({ ...DEFAULTS, pauseHidden: false }, { ...idle, hidden: true }), null);
  assert.equal(holdReason(DEFAULTS, { ...idle, busy: true }), null);
  assert.match(holdReason({ ...DEFAULTS, pauseBusy: true }, { ...idle, busy: true }), /use this page/);
});

test('the meter counts what crossed the network: same-origin entries by transfer size, other origins by their bodies', async () => {
  const storage = new Storage();
  let clock = new Date('2026-11-26T23:59:00Z');
  const meter = new DataMeter(storage, 'http://127.0.0.1:8000', () => clock);
  meter.observe([
    { name: 'http://127.0.0.1:8000/jobs/j/data/batch-000001.bin', transferSize: 1300, encodedBodySize: 1000 },
    { name: 'http://127.0.0.1:8000/jobs/j/data/batch-000001.bin', transferSize: 0, encodedBodySize: 1000 }, // cache
    { name: 'http://127.0.0.1:9000/tasks/lease', transferSize: 0, encodedBodySize: 0 }, // hidden: counted by wrap
  ]);
  assert.deepEqual(meter.visit, { down: 1300, up: 0 });
  assert.equal(meter.edge.get('/jobs/j/data/batch-000001.bin'), 1000);
  const fetchImpl = async () => new Response('{"ok":true}', { status: 200 });
  const metered = meter.wrap(fetchImpl);
  const reply = await metered('http://127.0.0.1:9000/tasks/complete', { method: 'POST', body: '{"loss":1}' });
  assert.deepEqual(await reply.json(), { ok: true }); // the caller still reads the body
  assert.deepEqual(meter.visit, { down: 1311, up: 10 });
  await meter.wrap(async () => new Response('x'))('http://127.0.0.1:8000/status.json'); // same origin: not twice
  assert.deepEqual(meter.visit, { down: 1311, up: 10 });
  // today and all visits are kept; a new day starts today's count again
  const again = new DataMeter(storage, 'http://127.0.0.1:8000', () => clock);
  assert.equal(again.today, 1321);
  clock = new Date('2026-11-27T00:01:00Z');
  assert.equal(again.today, 0);
  again.add(5, 0);
  assert.deepEqual(JSON.parse(storage.getItem(DATA_KEY)), { day: '2026-11-27', today: 5, total: 1326 });
});

test('a form body counts its fields and its file', () => {
  const form = new FormData();
  form.append('key', 'abc');
  form.append('file', new Blob([new Uint8Array(100)]), 'gradient.bin');
  assert.equal(bodyBytes(form), 3 + 3 + 4 + 100);
  assert.equal(bodyBytes(new Uint8Array(7)), 7);
  assert.equal(bodyBytes(undefined), 0);
});
