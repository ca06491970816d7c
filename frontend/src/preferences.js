// A volunteer's computing preferences (BOINC's, for a browser tab): only
// while charging, a daily data cap, a CPU share, and when to pause. Saved in
// the browser (localStorage) and read back on the next visit. Environment-free,
// so Node's test runner checks the rules the page applies.

export const PREFERENCES_KEY = 'crowdtrain-preferences';
// How long after the last key press, pointer move or touch the person counts as using the page.
export const BUSY_MS = 3000;

// The daily cap on a metered link (the browser says cellular or Save-Data), until the volunteer sets one:
// about an hour of the demo job's training alone (docs/benchmarks.md#data-per-volunteer).
export const METERED_CAP_MB = 100;

export const DEFAULTS = Object.freeze({
  chargingOnly: false, // lease only while the device is charging (where the browser says)
  dailyCapMb: 0, // megabytes a day, down and up together; 0: no cap (METERED_CAP_MB on a metered link)
  capChosen: false, // whether the volunteer set the cap (then it is kept whatever the link)
  cpuShare: 100, // percent of the time spent computing; the rest is a pause after each task
  pauseHidden: true, // pause while this tab is hidden
  pauseBusy: false, // pause while the person is typing or moving the pointer on the page
});

const clamp = (value, low, high, fallback) => (Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : fallback);

/** Whether the browser says the link is metered: cellular (Android's Chrome says), or Save-Data asked for. */
export function metered(connection) {
  return connection?.saveData === true || connection?.type === 'cellular';
}

/**
 * Preferences from what was stored: anything missing, of the wrong type or
 * out of range takes its default. A cap the volunteer never set follows the
 * link (`connection`: navigator.connection, where the browser has one).
 */
export function parsePreferences(text, connection = undefined) {
  let stored = {};
  try { stored = JSON.parse(text) || {}; } catch { /* unreadable: the defaults */ }
  if (typeof stored !== 'object' || Array.isArray(stored)) stored = {};
  const flag = (key) => (typeof stored[key] === 'boolean' ? stored[key] : DEFAULTS[key]);
  // chosen: said so (pages since the metered default), or a cap above 0 (earlier pages stored 0 unasked)
  const capChosen = Number.isFinite(stored.dailyCapMb) && (stored.capChosen === true || stored.dailyCapMb > 0);
  return {
    chargingOnly: flag('chargingOnly'),
    dailyCapMb: capChosen ? clamp(stored.dailyCapMb, 0, 1e6, 0) : (metered(connection) ? METERED_CAP_MB : DEFAULTS.dailyCapMb),
    capChosen,
    cpuShare: Math.round(clamp(stored.cpuShare, 10, 100, DEFAULTS.cpuShare)),
    pauseHidden: flag('pauseHidden'),
    pauseBusy: flag('pauseBusy'),
  };
}

export function loadPreferences(storage, connection = undefined) {
  return parsePreferences(storage.getItem(PREFERENCES_KEY), connection);
}

/** Keep the preferences; the cap only once the volunteer chose one (until then it follows the link). */
export function savePreferences(storage, preferences) {
  const { capChosen, dailyCapMb, ...rest } = parsePreferences(JSON.stringify({ ...preferences, capChosen: true }));
  storage.setItem(PREFERENCES_KEY, JSON.stringify(preferences.capChosen ? { ...rest, dailyCapMb, capChosen } : rest));
}

/**
 * The pause after a task whose compute took `computeMs`, so that computing
 * fills `cpuShare` percent of the time: compute / (compute + pause) = share.
 */
export function pauseAfter(computeMs, cpuShare) {
  return (computeMs * (100 - cpuShare)) / cpuShare;
}

/**
 * Why the page must not lease now, or null. `now`: what the page knows of
 * its device and visitor: charging (true, false, or null where the browser
 * does not say), hidden, busy (in use within BUSY_MS), bytesToday.
 */
export function holdReason(preferences, now) {
  if (preferences.chargingOnly && now.charging === false) return 'waiting for the device to charge';
  const cap = preferences.dailyCapMb * 1e6;
  if (cap > 0 && now.bytesToday >= cap) {
    return `today's data cap of ${preferences.dailyCapMb} MB is reached; resuming tomorrow`;
  }
  if (preferences.pauseHidden && now.hidden) return 'paused while this tab is hidden';
  if (preferences.pauseBusy && now.busy) return 'paused while you use this page';
  return null;
}
