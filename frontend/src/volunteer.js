// The volunteer page: consent, start/stop, the volunteer's preferences (CPU
// share, data cap, charging, idle), live stats with the data used, the job's
// loss curve and a sample of what the model writes. The volunteer loop runs
// here, its requests on this thread; the training runs in worker.js.
import { Api } from './api.js';
import { lineChart } from './chart.js';
import { THANKS, dispatcher, eventHandlers } from './events.js';
import { VolunteerLoop } from './loop.js';
import { DataMeter } from './meter.js';
import { BUSY_MS, METERED_CAP_MB, holdReason, loadPreferences, metered, pauseAfter, savePreferences } from './preferences.js';
import { RemoteTrainer } from './remote.js';
import { INDEX_URL, formatCredit, heldOutSummary, leaderboardRows, poll, readDocument, statusUrl } from './status.js';

const $ = (id) => document.getElementById(id);
// ms: time contributed (wall time with a task in hand), until: the end of the last task counted
const stats = { tasks: 0, samples: 0, ms: 0, until: 0, split: { download: 0, compute: 0, upload: 0 } };
let worker = null;
let trainer = null;
let loop = null;
const preferences = loadPreferences(localStorage, navigator.connection); // a metered link caps the day
const meter = new DataMeter(localStorage, location.origin);
let battery = null; // the Battery Status API's manager, where the browser has one
let lastInput = -Infinity; // when the person last typed, pointed or touched on the page
let api = null;
let jobId = null;
let alphabet = null;
let sampledVersion = null; // the version the shown text sample came from
let sampledAt = -Infinity; // when it was asked for
const SAMPLE_EVERY_MS = 20000;
const lossChart = lineChart($('loss-chart'), 'loss', { yLabel: 'loss (nats)' });
// the held-out loss volunteers agreed on, beside the training loss they report (jobs with held-out data)
const heldOutChart = lineChart($('held-out-chart'), 'held-out loss', { yLabel: 'loss (nats)', color: '#c53030' });
let jobFinished = false; // the job shown has finished: the page thanks the volunteer instead of waiting
// The last tasks' timings and the data meter, for people curious in the console, bench/overhead.py and the tests.
window.crowdtrain = { tasks: [], evaluations: [], meter };

const params = new URLSearchParams(location.search);
// ?volunteer=NAME names this page (headless swarms run several in one browser profile); else the
// name the volunteer chose for the leaderboard (none: anonymous). Each name keeps its own identity,
// which the API issues (api.identify).
const NAME_KEY = 'crowdtrain-display-name';
const volunteerName = () => params.get('volunteer') || localStorage.getItem(NAME_KEY) || '';
const CREDIT_EVERY_MS = 15000;
let creditAt = -Infinity; // when this volunteer's credit was last asked for

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(2)} MB`;
const visitBytes = () => meter.visit.down + meter.visit.up;
// Data per hour of volunteering, counted from the first task done since the start (the page's code,
// the TF.js binaries and the first model are a visit's, not an hour's): {at, bytes} then.
let rateFrom = null;
const RATE_AFTER_MS = 30000; // shown once it spans this long

function dataPerHour() {
  const span = rateFrom ? performance.now() - rateFrom.at : 0;
  return span < RATE_AFTER_MS ? '–' : `${megabytes(((visitBytes() - rateFrom.bytes) * 3.6e6) / span)} an hour`;
}

function render() {
  $('data-visit').textContent = `${megabytes(meter.visit.down)} / ${megabytes(meter.visit.up)}`;
  $('data-today').textContent = megabytes(meter.today) + (preferences.dailyCapMb ? ` of ${preferences.dailyCapMb} MB` : '');
  $('data-total').textContent = megabytes(meter.total);
  $('data-hour').textContent = dataPerHour();
  $('tasks').textContent = stats.tasks;
  $('samples').textContent = stats.samples;
  $('time').textContent = `${(stats.ms / 1000).toFixed(1)} s`;
  for (const part of ['download', 'compute', 'upload']) {
    $(`ms-${part}`).textContent = stats.tasks ? Math.round(stats.split[part] / stats.tasks) : '–';
  }
}

// The loop's and the worker's events, each to its handler (src/events.js).
const onReport = dispatcher(eventHandlers({
  $, stats, crowdtrain: window.crowdtrain, render, refreshCredit,
  setJob: (id) => { jobId = id; },
  finished: () => jobFinished,
  stopped: () => {
    worker?.terminate();
    worker = null;
    loop = null;
    showToggle(false);
  },
}));

/** This identity's credit in the job shown, asked for at most every 15 s (it grows as results are folded). */
async function refreshCredit(force = false) {
  if (!api?.identity || !jobId || (!force && performance.now() - creditAt < CREDIT_EVERY_MS)) return;
  creditAt = performance.now();
  try {
    const mine = await api.credit(jobId);
    $('credit').textContent = `${formatCredit(mine.credit)} (${mine.results} ${mine.results === 1 ? 'result' : 'results'} folded)`;
  } catch (err) {
    $('credit').textContent = err.status === 404 ? 'this job keeps no credit' : '–';
  }
}

function showLeaderboard(board) {
  $('leaderboard-box').hidden = !board?.length;
  $('leaderboard').replaceChildren(...leaderboardRows(board, api?.identity?.volunteer_id).map((row) => {
    const tr = document.createElement('tr');
    if (row.mine) tr.className = 'mine';
    for (const cell of [row.rank, row.name + (row.mine ? ' (you)' : ''), row.credit, row.results]) {
      tr.appendChild(document.createElement('td')).textContent = cell;
    }
    return tr;
  }));
}

function showToggle(running) {
  $('toggle').textContent = running ? 'Stop' : 'Start helping';
  $('toggle').className = running ? 'stop' : 'start';
}

/** What the volunteer's preferences say about now: why the page must not lease, or null. */
function hold() {
  return holdReason(preferences, {
    charging: battery ? battery.charging : null, hidden: document.hidden,
    busy: performance.now() - lastInput < BUSY_MS, bytesToday: meter.today,
  });
}

let reported = { down: 0, up: 0 }; // the data used when the last completion was sent
function dataSince() {
  const used = { down: meter.visit.down - reported.down, up: meter.visit.up - reported.up };
  reported = { ...meter.visit };
  return used;
}

let identifying = false; // a start waiting for the volunteer's identity: another press meanwhile does nothing

async function start() {
  if (identifying) return;
  showToggle(true); // the press shows at once; the first start first gets an identity (one request)
  $('state').textContent = 'starting';
  if (!api.identity) {
    identifying = true;
    try {
      window.crowdtrain.volunteerId = (await api.identify(volunteerName(), localStorage)).volunteer_id;
    } catch (err) {
      showToggle(false);
      $('state').textContent = `cannot get a volunteer identity from the API (${err.message}); press start to try again`;
      return;
    } finally {
      identifying = false;
    }
  }
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  trainer = new RemoteTrainer(worker);
  worker.onmessage = ({ data }) => {
    if (data.type === 'resources') meter.observe(data.entries); // what the worker fetched
    else if (!trainer.settle(data)) onReport(data);
  };
  sampledVersion = null; // a new worker has shown no sample yet
  sampledAt = -Infinity;
  worker.onerror = (event) => {
    $('state').textContent = `worker failed: ${event.message}`;
    console.error(`crowdtrain worker failed: ${event.message}`);
  };
  worker.postMessage({ type: 'start', backend: $('backend').value,
    threads: params.has('threads') ? Number(params.get('threads')) : undefined });
  const cap = () => preferences.dailyCapMb * 1e6;
  rateFrom = null;
  const report = (event) => {
    if (event.type === 'task' && !rateFrom) rateFrom = { at: performance.now(), bytes: visitBytes() };
    onReport(event);
  };
  loop = new VolunteerLoop({
    api, trainer, fetchImpl: meter.wrap((...args) => fetch(...args)), report,
    prefetch: params.has('prefetch') ? Number(params.get('prefetch')) : 1,
    pauseAfter: (computeMs) => pauseAfter(computeMs, preferences.cpuShare), hold,
    dataLeft: () => (cap() > 0 ? cap() - meter.today : Infinity), dataSince,
  });
  loop.run(); // after 'starting' is shown: the loop may report a hold at once
}

/** Stop means stop: the worker ends now, the task computing and the one leased ahead go back. */
function stop() {
  loop.stop();
  trainer.cancel('stopped by the volunteer');
  worker?.terminate();
  worker = null;
  $('toggle').textContent = 'Stopping…';
}

/** Show the preferences, and keep them (and the running loop) up to date as they change. */
function bindPreferences() {
  $('cpu-share').value = preferences.cpuShare;
  $('data-cap').value = preferences.dailyCapMb;
  $('charging-only').checked = preferences.chargingOnly;
  $('pause-hidden').checked = preferences.pauseHidden;
  $('pause-busy').checked = preferences.pauseBusy;
  $('display-name').value = localStorage.getItem(NAME_KEY) || '';
  $('display-name').addEventListener('change', () => {
    localStorage.setItem(NAME_KEY, $('display-name').value.trim());
    if (!loop) api.identity = null; // the next start takes (or makes) the identity of the new name
  });
  const capNote = () => {
    $('cap-note').textContent = !preferences.capChosen && metered(navigator.connection)
      ? `(a metered connection: ${METERED_CAP_MB} MB until you set one; 0: none)` : '(0: none)';
  };
  const chosen = () => { preferences.capChosen = true; }; // from now on the volunteer's, on any link
  $('data-cap').addEventListener('input', chosen);
  $('data-cap').addEventListener('change', chosen);
  navigator.connection?.addEventListener?.('change', () => { // a cap not chosen follows the link
    if (preferences.capChosen) return;
    $('data-cap').value = loadPreferences(localStorage, navigator.connection).dailyCapMb;
    changed();
  });
  const changed = () => {
    Object.assign(preferences, {
      cpuShare: Number($('cpu-share').value), dailyCapMb: Math.max(0, Number($('data-cap').value) || 0),
      chargingOnly: $('charging-only').checked, pauseHidden: $('pause-hidden').checked, pauseBusy: $('pause-busy').checked,
    });
    savePreferences(localStorage, preferences);
    $('cpu-share-value').textContent = `${preferences.cpuShare} %`;
    capNote();
    render();
  };
  for (const id of ['cpu-share', 'data-cap', 'charging-only', 'pause-hidden', 'pause-busy']) {
    $(id).addEventListener('input', changed);
    $(id).addEventListener('change', changed);
  }
  changed();
  for (const kind of ['keydown', 'pointermove', 'pointerdown', 'wheel', 'touchstart']) {
    document.addEventListener(kind, () => { lastInput = performance.now(); }, { passive: true });
  }
}

/** The Battery Status API where the browser has it; where it has not, the charging option is off and says why. */
async function watchBattery() {
  battery = await navigator.getBattery?.().catch(() => null) ?? null;
  if (battery) {
    const say = () => { $('charging-note').textContent = battery.charging ? '(charging now)' : '(not charging now)'; };
    battery.addEventListener('chargingchange', say);
    say();
    return;
  }
  $('charging-only').checked = false;
  $('charging-only').disabled = true;
  preferences.chargingOnly = false;
  $('charging-note').textContent = '(this browser does not say whether the device is charging)';
}

/** The job to show: the one named in the URL, else a running one from the published list. */
async function readJob() {
  const cap = preferences.dailyCapMb * 1e6;
  if (cap > 0 && meter.today >= cap) throw new Error("today's data cap is reached: not read until tomorrow");
  if (!jobId) {
    const { jobs } = (await readDocument(INDEX_URL)) || { jobs: [] };
    jobId = (jobs.find((j) => j.status === 'running') || jobs[0] || {}).job_id;
  }
  return jobId ? readDocument(statusUrl(jobId)) : null;
}

function showJob(job) {
  if (!job) { $('job').textContent = 'no job yet'; return; }
  $('job').textContent = `${job.spec.name} (${job.job_id}), ${job.status}`;
  jobFinished = job.status === 'finished';
  if (jobFinished && worker) $('state').textContent = THANKS;
  $('version').textContent = job.version;
  $('epoch').textContent = `${job.epoch} / ${job.spec.epochs}`;
  lossChart.update(job.history.map((h) => h.version), job.history.map((h) => h.loss));
  $('held-out-box').hidden = !job.spec.evaluation;
  if (job.spec.evaluation) {
    $('held-out').textContent = heldOutSummary(job);
    heldOutChart.update(job.held_out.map((p) => p.version), job.held_out.map((p) => p.loss));
  }
  showLeaderboard(job.leaderboard);
  refreshCredit(jobFinished); // a finished job's credit is final: shown at once
  alphabet = job.spec.text ? job.spec.text.alphabet : null;
  $('sample-box').hidden = !alphabet;
  // a new sample only for a new version, and at most every 20 s: writing one takes the worker's time
  if (alphabet && worker && job.version !== sampledVersion && performance.now() - sampledAt >= SAMPLE_EVERY_MS) {
    sampledVersion = job.version;
    sampledAt = performance.now();
    worker.postMessage({ type: 'sample', length: 80, alphabet });
  }
}

async function main() {
  const config = await (await fetch('config.json')).json();
  api = new Api(config.api, meter.wrap((...args) => fetch(...args)));
  new PerformanceObserver((list) => {
    meter.observe(list.getEntries());
    performance.clearResourceTimings(); // counted: the browser's buffer of 250 never fills
    render();
  })
    .observe({ type: 'resource', buffered: true });
  $('toggle').addEventListener('click', () => { if (loop) stop(); else start(); });
  bindPreferences();
  window.crowdtrain.ready = true; // the controls show the saved preferences and follow changes
  await watchBattery();
  render();
  poll(readJob, showJob, (err) => { $('job').textContent = `cannot read the job's status: ${err.message}`; });
  if (params.has('backend')) $('backend').value = params.get('backend');
  if (params.has('autostart')) start();
}

main();
