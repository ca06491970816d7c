// The job dashboard: version over time, loss, epoch progress, volunteers,
// throughput and discarded results, refreshed every few seconds.
import { lineChart } from './chart.js';
import { heldOutSummary, INDEX_URL, leaderboardRows, poll, readDocument, statusUrl } from './status.js';

const $ = (id) => document.getElementById(id);
const charts = {
  versions: lineChart($('version-chart'), 'version', { xLabel: 'seconds', color: '#2f855a' }),
  loss: lineChart($('loss-chart'), 'training loss'),
  heldOut: lineChart($('held-out-chart'), 'held-out loss', { color: '#c53030' }),
  rate: lineChart($('rate-chart'), 'samples / min', { xLabel: 'seconds', color: '#b7791f' }),
};
let jobId = new URLSearchParams(location.search).get('job');
let stopPolling = null;

function showJobs(index) {
  const jobs = index ? index.jobs : [];
  const select = $('jobs');
  select.replaceChildren(...jobs.map((j) => new Option(`${j.name} (${j.job_id}) ${j.status}`, j.job_id)));
  if (!jobId && jobs.length) follow(jobs[0].job_id);
  select.value = jobId || '';
  if (!jobId) $('summary').textContent = 'no jobs yet';
}

function follow(id) {
  jobId = id;
  stopPolling?.();
  stopPolling = poll(() => readDocument(statusUrl(jobId)), show, failed);
}

function failed(err) {
  $('summary').textContent = `cannot read the status: ${err.message}`;
}

/** Tasks volunteers handed back, by reason, and how many volunteers gave each: "compute_error 7 (2 volunteers)". */
function handedBack(counters) {
  return Object.entries(counters).filter(([k]) => k.startsWith('released_'))
    .map(([k, v]) => `${k.slice('released_'.length)} ${v} (${counters[`volunteers_${k}`] ?? 0} volunteers)`).join(', ');
}

const kilobytes = (bytes) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);

/** The data volunteers' pages said they used: per completed task, and per volunteer who said. */
function dataUsed({ bytes_down: down = 0, bytes_up: up = 0, data_reports: reports = 0, volunteers_data: volunteers = 0 }) {
  if (!reports) return ['–', '–'];
  return [`${kilobytes(down / reports)} / ${kilobytes(up / reports)}`,
    `${kilobytes((down + up) / volunteers)} (${volunteers} volunteers)`];
}

function show(job) {
  if (!job) { $('summary').textContent = `job ${jobId} has not started`; return; }
  // batches_done counts folded tasks; with local steps a task trains several batches
  const total = (job.spec.tasks_per_epoch ?? job.spec.dataset.batches) * job.spec.epochs;
  const why = job.paused_reason ? ` (${job.paused_reason})` : ''; // a job that paused itself says why
  $('summary').textContent = `${job.spec.name}: ${job.status}${why}, version ${job.version}`;
  $('epoch').textContent = `${job.epoch} / ${job.spec.epochs}`;
  $('epoch-bar').value = job.batches_done;
  $('epoch-bar').max = total;
  $('batches').textContent = `${job.batches_done} / ${total}`;
  $('volunteers').textContent = job.active_volunteers;
  $('results-per-minute').textContent = job.results_per_minute.at(-2) ?? '–';  // the last full minute
  const discarded = Object.entries(job.discarded).map(([k, v]) => `${k} ${v}`).join(', ');
  $('discarded').textContent = discarded || 'none';
  $('released').textContent = handedBack(job.counters) || 'none';
  $('backends').textContent = Object.entries(job.counters).filter(([k]) => k.startsWith('backend_'))
    .map(([k, v]) => `${k.slice('backend_'.length)} ${v}`).join(', ') || '–';
  [$('data-per-task').textContent, $('data-per-volunteer').textContent] = dataUsed(job.counters);
  const h = job.history;
  const t0 = h.length ? h[0].time : 0;
  charts.versions.update(h.map((p) => p.time - t0), h.map((p) => p.version));
  charts.loss.update(h.map((p) => p.version), h.map((p) => p.loss));
  charts.heldOut.update(job.held_out.map((p) => p.version), job.held_out.map((p) => p.loss));
  $('held-out').textContent = heldOutSummary(job);
  $('leaderboard-card').hidden = job.spec.credit === false;
  $('leaderboard').replaceChildren(...leaderboardRows(job.leaderboard).map((row) => {
    const tr = document.createElement('tr');
    for (const cell of [row.rank, row.name, row.credit, row.results]) tr.appendChild(document.createElement('td')).textContent = cell;
    return tr;
  }));
  // samples per minute over a sliding window of 5 versions
  const rates = h.slice(5).map((p, i) => (60 * h.slice(i + 1, i + 6).reduce((n, q) => n + q.samples, 0)) / Math.max(1e-3, p.time - h[i].time));
  charts.rate.update(h.slice(5).map((p) => p.time - t0), rates);
  $('tasks-per-minute').textContent = rates.length ? (rates[rates.length - 1] / job.spec.dataset.x.shape[0]).toFixed(1) : '–';
}

$('jobs').addEventListener('change', () => follow($('jobs').value));
poll(() => readDocument(INDEX_URL), showJobs, failed, { minMs: 10000, maxMs: 60000 });
if (jobId) follow(jobId);
