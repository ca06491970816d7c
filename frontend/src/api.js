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

export class Api {
  constructor(baseUrl, fetchImpl = (...args) => fetch(...args)) {
    this.base = baseUrl.replace(/\/$/, '');
    this.fetch = fetchImpl;
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

  /** A task, or {retryAfter} when there is none now. */
  lease(volunteerId) { return this.call('POST', '/tasks/lease', { volunteer_id: volunteerId }); }

  heartbeat(jobId, token) { return this.call('POST', '/tasks/heartbeat', { job_id: jobId, lease_token: token }); }

  /**
   * `steps`: the local steps trained, for a task of local steps (its batches trained on, in order);
   * `backend`: the TF.js backend that computed it; `data`: {down, up}, the bytes the page used
   * since its last completion. Any of them may be undefined (left out).
   */
  complete(jobId, token, { loss, steps, backend, data, accuracy }) {
    return this.call('POST', '/tasks/complete', { job_id: jobId, lease_token: token, loss, steps, backend,
      bytes_down: data?.down, bytes_up: data?.up, accuracy });
  }

  /** Hand a task back: `reason` is compute_error, no_backend or stopped (chalicelib/tasks/leases.py). */
  release(jobId, token, reason) { return this.call('POST', '/tasks/release', { job_id: jobId, lease_token: token, reason }); }

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
