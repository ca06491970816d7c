// The job dashboard: version over time, loss, epoch progress, volunteers,
// throughput and discarded results, refreshed every few seconds.
import { Api } from './api.js';
import { lineChart } from './chart.js';

const $ = (id) => document.getElementById(id);
const charts = {
  versions: lineChart($('version-chart'), 'version', { xLabel: 'seconds', color: '#2f855a' }),
  loss: lineChart($('loss-chart'), 'loss'),
  rate: lineChart($('rate-chart'), 'samples / min', { xLabel: 'seconds', color: '#b7791f' }),
};
let api;
let jobId = new URLSearchParams(location.search).get('job');

async function pickJob() {
  const { jobs } = await api.jobs();
  const select = $('jobs');
  select.replaceChildren(...jobs.map((j) => new Option(`${j.name} (${j.job_id}) ${j.status}`, j.job_id)));
  if (!jobId && jobs.length) jobId = jobs[0].job_id;
  select.value = jobId || '';
}

async function refresh() {
  try {
    await pickJob();
    if (!jobId) { $('summary').textContent = 'no jobs yet'; return; }
    const job = await api.progress(jobId);
    const total = job.spec.dataset.batches * job.spec.epochs;
    $('summary').textContent = `${job.spec.name}: ${job.status}, version ${job.version}`;
    $('epoch').textContent = `${job.epoch} / ${job.spec.epochs}`;
    $('epoch-bar').value = job.batches_done;
    $('epoch-bar').max = total;
    $('batches').textContent = `${job.batches_done} / ${total}`;
    $('volunteers').textContent = job.active_volunteers;
    $('leases').textContent = job.active_leases;
    const discarded = Object.entries(job.discarded).map(([k, v]) => `${k} ${v}`).join(', ');
    $('discarded').textContent = discarded || 'none';
    const h = job.history;
    const t0 = h.length ? h[0].time : 0;
    charts.versions.update(h.map((p) => p.time - t0), h.map((p) => p.version));
    charts.loss.update(h.map((p) => p.version), h.map((p) => p.loss));
    // samples per minute over a sliding window of 5 versions
    const rates = h.slice(5).map((p, i) => (60 * h.slice(i + 1, i + 6).reduce((n, q) => n + q.samples, 0)) / Math.max(1e-3, p.time - h[i].time));
    charts.rate.update(h.slice(5).map((p) => p.time - t0), rates);
    $('tasks-per-minute').textContent = rates.length ? (rates[rates.length - 1] / job.spec.dataset.x.shape[0]).toFixed(1) : '–';
  } catch (err) {
    $('summary').textContent = `cannot reach the API: ${err.message}`;
  }
}

async function main() {
  api = new Api((await (await fetch('config.json')).json()).api);
  $('jobs').addEventListener('change', () => { jobId = $('jobs').value; refresh(); });
  await refresh();
  setInterval(refresh, 3000);
}

main();
