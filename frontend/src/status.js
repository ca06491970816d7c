// The public status documents the pages poll: jobs/index.json (the started
// jobs) and jobs/<id>/status.json (one job's progress). The fold and admin
// actions write them to the data bucket and CloudFront (the local edge server)
// serves them beside the pages with a 5 s max-age, so however many pages poll,
// none of them reaches the API or the database.

export const INDEX_URL = 'jobs/index.json';
export const statusUrl = (jobId) => `jobs/${encodeURIComponent(jobId)}/status.json`;

/** A published document, or null where there is none (yet). */
export async function readDocument(url, fetchImpl = (...args) => fetch(...args)) {
  const reply = await fetchImpl(url, { cache: 'no-cache' });
  if (reply.status === 404 || reply.status === 403) return null;
  if (!reply.ok) throw new Error(`${url}: HTTP ${reply.status}`);
  return reply.json();
}

/**
 * The wait before the next poll: back to `minMs` when the document changed,
 * half as long again (up to `maxMs`) while it does not, twice as long after an
 * error (up to `maxMs`), so idle pages and a failing edge cost little.
 */
export function nextDelay(previousMs, { changed, failed }, minMs = 3000, maxMs = 30000) {
  if (failed) return Math.min(maxMs, Math.max(minMs, previousMs) * 2);
  if (changed) return minMs;
  return Math.min(maxMs, Math.round(previousMs * 1.5));
}

/** Poll `read` for ever, handing each new document to `apply`; returns a stop function. */
export function poll(read, apply, onError, { minMs = 3000, maxMs = 30000 } = {}) {
  let delay = minMs;
  let last = null;
  let timer = null;
  let stopped = false;
  const step = async () => {
    let changed = false;
    let failed = false;
    try {
      const document = await read();
      const stamp = JSON.stringify(document); // a job's status or a job list: any change counts
      changed = stamp !== last;
      last = stamp;
      if (changed) apply(document);
    } catch (err) {
      failed = true;
      onError(err);
    }
    delay = nextDelay(delay, { changed, failed }, minMs, maxMs);
    if (!stopped) timer = setTimeout(step, delay);
  };
  step();
  return () => { stopped = true; clearTimeout(timer); };
}

/** Credit as a short figure: "12.3", "0.0042". */
export function formatCredit(credit) {
  if (credit >= 100) return credit.toFixed(0);
  if (credit >= 1) return credit.toFixed(1);
  return credit.toPrecision(2);
}

/**
 * A status document's leaderboard as rows for a table: rank, display name,
 * credit, results folded. `mine` (a volunteer id) marks the row that is the
 * reader's own, by the display name's tag (the public board has no ids).
 */
export function leaderboardRows(board, mine = null) {
  const tag = mine ? `(${mine.split('.').at(-1).slice(0, 4)})` : null;
  const name = mine ? mine.split('.').slice(0, -1).join('.') : null;
  return (board || []).map((entry, i) => ({
    rank: i + 1, name: entry.name, credit: formatCredit(entry.credit), results: entry.results,
    mine: tag !== null && entry.name === `${name === 'v' ? 'anonymous' : name} ${tag}`,
  }));
}

/** The newest accepted held-out figures: "loss 1.234, accuracy 91.2 % at version 40 (2 volunteers agreed)". */
export function heldOutSummary(job) {
  if (!job.spec.evaluation) return 'not measured: the job has no held-out data';
  const last = job.held_out.at(-1);
  if (!last) return `none agreed yet (every ${job.spec.evaluation.every} versions, ${job.spec.evaluation.copies} volunteers)`;
  const accuracy = last.accuracy === null ? '' : `, accuracy ${(100 * last.accuracy).toFixed(1)} %`;
  return `loss ${last.loss.toFixed(4)}${accuracy} at version ${last.version} (${last.volunteers} volunteer${last.volunteers === 1 ? '' : 's'} agreed)`;
}
