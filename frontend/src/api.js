// The volunteer side of the crowdtrain API, plus the retry policy.

export class ApiError extends Error {
  constructor(status, message) {
    super(`${status}: ${message}`);
    this.status = status;
  }
}

/** Exponential back-off with full jitter: a random wait in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt, baseMs = 1000, capMs = 30000, random = Math.random) {
  return random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
}

// A volunteer token is renewed once it is a day old: the API ends one 30 days after it was issued or
// renewed, and stops knowing its key two days after a rotation of the lease secret.
export const RENEW_AFTER_S = 86400;

/** When a volunteer token was issued or renewed (epoch seconds), read from its payload; null if unreadable. */
export function tokenIssued(token) {
  try {
    const issued = JSON.parse(atob(token.split('.')[2].replace(/-/g, '+').replace(/_/g, '/'))).issued;
    return typeof issued === 'number' ? issued : null;
  } catch {
    return null;
  }
}

export class Api {
  constructor(baseUrl, fetchImpl = (...args) => fetch(...args)) {
    this.base = baseUrl.replace(/\/$/, '');
    this.fetch = fetchImpl;
    this.identity = null; // {volunteer_id, volunteer_token}: sent with every task call
  }

  /**
   * This volunteer's identity: the one `storage` (localStorage) holds for `name`, or a new one from
   * POST /volunteers, kept there. The API issues identities at a limited rate per address, so the
   * page keeps its own; `fresh` asks for a new one (the stored one's key was retired).
   */
  async identify(name, storage, fresh = false) {
    const key = `crowdtrain-identity:${name}`;
    const kept = !fresh && storage?.getItem(key);
    this.identity = kept ? JSON.parse(kept) : await this.call('POST', '/volunteers', name ? { name } : {});
    storage?.setItem(key, JSON.stringify(this.identity));
    this.identityName = name;
    this.storage = storage;
    return this.identity;
  }

  get volunteerToken() { return this.identity?.volunteer_token; }

  /** The same identity (and so its credit) with a fresh token, once the one held is a day old. */
  async renewIfDue(now = Date.now() / 1000) {
    const issued = tokenIssued(this.volunteerToken);
    if (issued === null || now - issued < RENEW_AFTER_S) return;
    try {
      const renewed = await this.call('POST', '/volunteers/renew', { volunteer_token: this.volunteerToken });
      this.identity = { ...this.identity, volunteer_token: renewed.volunteer_token };
      this.storage?.setItem(`crowdtrain-identity:${this.identityName}`, JSON.stringify(this.identity));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err; // a token too old to renew: the lease's 401 gets a new identity
    }
  }

  async call(method, path, body) {
    const reply = await this.fetch(`${this.base}${path}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (reply.status === 204) return { retryAfter: Number(reply.headers.get('Retry-After') || 5) };
    const text = await reply.text();
    let payload;
    try { payload = JSON.parse(text); } catch { payload = { Message: text }; }
    if (!reply.ok) throw new ApiError(reply.status, payload.Message || text);
    return payload;
  }

  /**
   * A task; {kind: 'wait', retry_after, reason} while a synchronous job's round is all handed out; or
   * {retryAfter} when there is none now. An identity the API no longer knows is replaced once.
   */
  async lease() {
    await this.renewIfDue();
    try {
      return await this.call('POST', '/tasks/lease', { volunteer_token: this.volunteerToken });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401 && /volunteer/.test(err.message))) throw err;
      await this.identify(this.identityName, this.storage, true);
      return this.call('POST', '/tasks/lease', { volunteer_token: this.volunteerToken });
    }
  }

  heartbeat(jobId, token) {
    return this.call('POST', '/tasks/heartbeat', { job_id: jobId, lease_token: token, volunteer_token: this.volunteerToken });
  }

  /**
   * `steps`: the local steps trained, for a task of local steps (its batches trained on, in order);
   * `backend`: the TF.js backend that computed it; `data`: {down, up}, the bytes the page used
   * since its last completion. Any of them may be undefined (left out).
   */
  complete(jobId, token, { loss, steps, backend, data, accuracy }) {
    return this.call('POST', '/tasks/complete', { job_id: jobId, lease_token: token, volunteer_token: this.volunteerToken,
      loss, steps, backend, bytes_down: data?.down, bytes_up: data?.up, accuracy });
  }

  /** This identity's credit in a job: {credit, results, samples, ...} (earned as its results are folded). */
  credit(jobId) {
    return this.call('POST', '/volunteers/credit', { job_id: jobId, volunteer_token: this.volunteerToken });
  }

  /** Hand a task back: `reason` is compute_error, download_error, no_backend or stopped (chalicelib/domain/wire.py). */
  release(jobId, token, reason) {
    return this.call('POST', '/tasks/release', { job_id: jobId, lease_token: token, volunteer_token: this.volunteerToken, reason });
  }

  progress(jobId) { return this.call('GET', `/progress/${encodeURIComponent(jobId)}`); }
}

/** POST bytes through a presigned S3 form. */
export async function uploadForm(form, bytes, fetchImpl = (...args) => fetch(...args)) {
  const data = new FormData();
  for (const [key, value] of Object.entries(form.fields)) data.append(key, value);
  data.append('file', new Blob([bytes]), 'gradient.bin');
  const reply = await fetchImpl(form.url, { method: 'POST', body: data });
  if (!reply.ok) throw new ApiError(reply.status, `upload refused: ${(await reply.text()).slice(0, 200)}`);
}

export async function fetchBytes(url, fetchImpl = (...args) => fetch(...args)) {
  const reply = await fetchImpl(url);
  if (!reply.ok) throw new ApiError(reply.status, `GET ${url} failed`);
  return new Uint8Array(await reply.arrayBuffer());
}
