// The volunteer page: consent, start/stop, throttle, live stats, the job's
// loss curve and a sample of what the model writes. The volunteer loop runs
// here, its requests on this thread; the training runs in worker.js.
import { Api } from './api.js';
import { lineChart } from './chart.js';
import { VolunteerLoop } from './loop.js';
import { RemoteTrainer } from './remote.js';
import { INDEX_URL, poll, readDocument, statusUrl } from './status.js';

const $ = (id) => document.getElementById(id);
const stats = { tasks: 0, samples: 0, ms: 0, split: { download: 0, compute: 0, upload: 0 } };
let worker = null;
let loop = null;
let api = null;
let jobId = null;
let alphabet = null;
let sampledVersion = null; // the version the shown text sample came from
let sampledAt = -Infinity; // when it was asked for
const SAMPLE_EVERY_MS = 20000;
const lossChart = lineChart($('loss-chart'), 'loss', { yLabel: 'loss (nats)' });
const THANKS = 'This job is finished: thank you for helping train it! The page waits for the next job.';
let jobFinished = false; // the job shown has finished: the page thanks the volunteer instead of waiting
// The last tasks' timings, for people curious in the console and for bench/overhead.py.
window.crowdtrain = { tasks: [] };

const params = new URLSearchParams(location.search);
// ?volunteer=NAME names this page (headless swarms run several in one browser profile).
const volunteerId = params.get('volunteer') || localStorage.getItem('crowdtrain-volunteer')
  || `v-${crypto.getRandomValues(new Uint32Array(2)).join('')}`;
if (!params.has('volunteer')) localStorage.setItem('crowdtrain-volunteer', volunteerId);

function render() {
  $('tasks').textContent = stats.tasks;
  $('samples').textContent = stats.samples;
  $('time').textContent = `${(stats.ms / 1000).toFixed(1)} s`;
  for (const part of ['download', 'compute', 'upload']) {
    $(`ms-${part}`).textContent = stats.tasks ? Math.round(stats.split[part] / stats.tasks) : '–';
  }
}

/** The canary's choice for a job: each backend's step time, and why the others were skipped. */
function describeChoice({ jobId, ms, skipped }) {
  const times = Object.entries(ms).map(([name, t]) => `${name} ${Math.round(t)} ms`).join(', ');
  const why = Object.entries(skipped).map(([name, reason]) => `${name}: ${reason}`).join('; ');
  return `job ${jobId}: one step takes ${times}${why ? `; skipped ${why}` : ''}`;
}

function onReport({ data }) {
  switch (data.type) {
    case 'backend':
      $('backend-active').textContent = data.name;
      if (data.ms) $('backend-detail').textContent = describeChoice(data);
      if (data.wasmThreads) {
        $('wasm-threads').textContent = `${data.wasmThreads} ${data.wasmThreads === 1 ? 'thread' : 'threads'}`
          + (data.isolated ? '' : ' (page not cross-origin isolated)');
      }
      break;
    case 'leased': $('state').textContent = `working on job ${data.jobId}, batch ${data.batch}`; jobId = data.jobId; break;
    case 'task':
      window.crowdtrain.tasks = [...window.crowdtrain.tasks.slice(-999), data];
      stats.tasks += 1;
      stats.samples += data.samples;
      stats.ms += data.ms.total;
      stats.split.download += data.ms.download;
      stats.split.compute += data.ms.compute + data.ms.encode;
      stats.split.upload += data.ms.upload + data.ms.complete;
      render();
      break;
    case 'idle': $('state').textContent = jobFinished ? THANKS : 'no task right now; waiting'; break;
    case 'lost': $('state').textContent = 'a lease ran out; moving on'; break;
    case 'error':
      $('state').textContent = `problem: ${data.message}; retrying`;
      console.error(`crowdtrain volunteer: ${data.message}`);
      break;
    case 'gave-up':
      $('state').textContent = `this browser failed ${data.streak} tasks of job ${data.jobId} in a row (${data.message}); `
        + `handed them back and waiting ${Math.round(data.waitMs / 60000)} minutes`;
      console.error(`crowdtrain volunteer: giving up on job ${data.jobId} for now: ${data.message}`);
      break;
    case 'stopped':
      $('state').textContent = 'stopped';
      worker.terminate();
      worker = null;
      loop = null;
      $('toggle').textContent = 'Start helping';
      break;
    case 'sample': $('sample').textContent = data.text; break;
    default: break;
  }
}

function start() {
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  const trainer = new RemoteTrainer(worker);
  worker.onmessage = ({ data }) => { if (!trainer.settle(data)) onReport({ data }); };
  sampledVersion = null; // a new worker has shown no sample yet
  sampledAt = -Infinity;
  worker.onerror = (event) => {
    $('state').textContent = `worker failed: ${event.message}`;
    console.error(`crowdtrain worker failed: ${event.message}`);
  };
  worker.postMessage({ type: 'start', backend: $('backend').value,
    threads: params.has('threads') ? Number(params.get('threads')) : undefined });
  loop = new VolunteerLoop({
    api, trainer, report: (event) => onReport({ data: event }), volunteerId, idleMs: Number($('idle').value),
    prefetch: params.has('prefetch') ? Number(params.get('prefetch')) : 1,
  });
  loop.run();
  $('toggle').textContent = 'Stop';
  $('state').textContent = 'starting';
}

/** The job to show: the one named in the URL, else a running one from the published list. */
async function readJob() {
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
  api = new Api(config.api);
  $('toggle').addEventListener('click', () => {
    if (loop) { loop.stop(); $('toggle').textContent = 'Stopping…'; } else start();
  });
  $('idle').addEventListener('input', () => {
    $('idle-value').textContent = `${$('idle').value} ms`;
    if (loop) loop.idleMs = Number($('idle').value);
  });
  document.addEventListener('visibilitychange', () => {
    if ($('pause-hidden').checked && loop) loop.paused = document.hidden;
  });
  render();
  poll(readJob, showJob, (err) => { $('job').textContent = `cannot read the job's status: ${err.message}`; });
  if (params.has('backend')) $('backend').value = params.get('backend');
  if (params.has('autostart')) start();
}

main();
