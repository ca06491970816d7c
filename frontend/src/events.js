// What the volunteer page does with each event of the volunteer loop (src/loop.js)
// and of the worker (src/worker.js): a table of small handlers, one per event type,
// so a new type is one entry and node --test checks them without a DOM.

export const THANKS = 'This job is finished: thank you for helping train it! The page waits for the next job.';

/** The canary's choice for a job: each backend's step time, and why the others were skipped. */
export function describeChoice({ jobId, ms, skipped }) {
  const times = Object.entries(ms).map(([name, t]) => `${name} ${Math.round(t)} ms`).join(', ');
  const why = Object.entries(skipped).map(([name, reason]) => `${name}: ${reason}`).join('; ');
  return `job ${jobId}: one step takes ${times}${why ? `; skipped ${why}` : ''}`;
}

/**
 * The handlers by event type. `page` is what they touch: $(id) (an element, or
 * anything with a textContent), stats and crowdtrain (the page's counters and
 * window.crowdtrain), and its hooks: setJob(jobId), finished() (the job shown has
 * finished), render(), refreshCredit() and stopped() (the worker and loop end).
 */
export function eventHandlers(page) {
  const { $ } = page;
  const state = (text) => { $('state').textContent = text; };

  function showBackend(data) {
    $('backend-active').textContent = data.name;
    if (data.ms) $('backend-detail').textContent = describeChoice(data);
    if (data.wasmThreads) {
      $('wasm-threads').textContent = `${data.wasmThreads} ${data.wasmThreads === 1 ? 'thread' : 'threads'}`
        + (data.isolated ? '' : ' (page not cross-origin isolated)');
    }
  }
  function showLease(data) {
    state(data.batch < 0 ? `checking version ${data.version} of job ${data.jobId} on held-out data`
      : `working on job ${data.jobId}, batch ${data.batch}`);
    page.setJob(data.jobId); // the job whose credit the page shows
  }
  function keepEvaluation(data) { // the last 100, for the console and the tests
    page.crowdtrain.evaluations = [...page.crowdtrain.evaluations.slice(-99), data];
  }
  function countTask(data) {
    page.crowdtrain.tasks = [...page.crowdtrain.tasks.slice(-999), data];
    const { stats } = page;
    stats.tasks += 1;
    stats.samples += data.samples;
    // time contributed is wall time with a task in hand: pipelined tasks overlap, so each adds
    // only its time after the last counted end (tasks are reported in the order they end)
    const end = data.at?.completed ?? stats.until + data.ms.total;
    stats.ms += Math.max(0, end - Math.max(end - data.ms.total, stats.until));
    stats.until = Math.max(stats.until, end);
    stats.split.download += data.ms.download;
    stats.split.compute += data.ms.compute + data.ms.encode;
    stats.split.upload += data.ms.upload + data.ms.complete;
    page.render();
    page.refreshCredit();
  }
  function showIdle(data) { state(page.finished() ? THANKS : (data.reason || 'no task right now; waiting')); }
  function showHold(data) { state(data.reason); }
  function showLost() { state('a lease ran out; moving on'); }
  function showError(data) {
    state(`problem: ${data.message}; retrying`);
    console.error(`crowdtrain volunteer: ${data.message}`);
  }
  function showGiveUp(data) {
    state(`this browser failed ${data.streak} tasks of job ${data.jobId} in a row (${data.message}); `
      + `handed them back and waiting ${Math.round(data.waitMs / 60000)} minutes`);
    console.error(`crowdtrain volunteer: giving up on job ${data.jobId} for now: ${data.message}`);
  }
  // a throttled or dropped request within a lease: tried again, so not a console error
  function showRetry(data) { state(`a request failed (${data.message}); retrying in ${Math.max(1, Math.ceil(data.waitMs / 1000))} s`); }
  function showStopped() {
    state('stopped');
    page.stopped();
  }
  function showSample(data) { $('sample').textContent = data.text; }

  return {
    backend: showBackend, leased: showLease, evaluated: keepEvaluation, task: countTask, idle: showIdle,
    held: showHold, lost: showLost, error: showError, 'gave-up': showGiveUp, retry: showRetry,
    stopped: showStopped, sample: showSample,
  };
}

/** A function that hands each event to its handler; an unknown type is logged once (console.debug), not thrown. */
export function dispatcher(handlers, log = console) {
  const unknown = new Set();
  return (data) => {
    // own properties only: an event named 'toString' is unknown, not Object's method
    if (Object.hasOwn(handlers, data.type)) return handlers[data.type](data);
    if (unknown.has(data.type)) return undefined;
    unknown.add(data.type);
    log.debug(`crowdtrain volunteer: no handler for event '${data.type}'; ignored`);
    return undefined;
  };
}
