// A volunteer's computing preferences (BOINC's, for a browser tab): only
// while charging, a daily data cap, a CPU share, and when to pause. Saved in
// the browser (localStorage) and read back on the next visit. Environment-free,
// so Node's test runner checks the rules the page applies.

export const PREFERENCES_KEY = 'crowdtrain-preferences';
// How long after the last key press, pointer move or touch the person counts as using the page.
export const BUSY_MS = 3000;

export const DEFAULTS = Object.freeze({
  chargingOnly: false, // lease only while the device is charging (where the browser says)
  dailyCapMb: 0, // megabytes a day, down and up together; 0: no cap
  cpuShare: 100, // percent of the time spent computing; the rest is a pause after each task
  pauseHidden: true, // pause while this tab is hidden
  pauseBusy: false, // pause while the person is typing or moving the pointer on the page
});

const clamp = (value, low, high, fallback) => (Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : fallback);

/** Preferences from what was stored: anything missing, of the wrong type or out of range takes its default. */
export function parsePreferences(text) {
  let stored = {};
  try { stored = JSON.parse(text) || {}; } catch { /* unreadable: the defaults */ }
  if (typeof stored !== 'object' || Array.isArray(stored)) stored = {};
  const flag = (key) => (typeof stored[key] === 'boolean' ? stored[key] : DEFAULTS[key]);
  return {
    chargingOnly: flag('chargingOnly'),
    dailyCapMb: clamp(stored.dailyCapMb, 0, 1e6, DEFAULTS.dailyCapMb),
    cpuShare: Math.round(clamp(stored.cpuShare, 10, 100, DEFAULTS.cpuShare)),
    pauseHidden: flag('pauseHidden'),
    pauseBusy: flag('pauseBusy'),
  };
}

export function loadPreferences(storage) {
  return parsePreferences(storage.getItem(PREFERENCES_KEY));
}

export function savePreferences(storage, preferences) {
  storage.setItem(PREFERENCES_KEY, JSON.stringify(parsePreferences(JSON.stringify(preferences))));
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
