// The data a volunteer's page uses: bytes down and up, this visit, today and
// in all visits (kept in localStorage), for the contribution card, the daily
// cap and the stats sent with each completion.
//
// What crossed the network, not what the code read: responses from the
// page's own origin (the site, the model versions, the batches, the status
// documents) are counted from the browser's Resource Timing entries, whose
// transferSize is 0 when the HTTP cache answered; requests to other origins
// (the API, the upload forms), whose timing the browser hides, are counted
// by the fetch wrapper from their bodies.

export const DATA_KEY = 'crowdtrain-data';

const day = (date) => date.toISOString().slice(0, 10);

/** The bytes a request body puts on the wire (a FormData's fields and files; the multipart framing is left out). */
export function bodyBytes(body) {
  if (body === undefined || body === null) return 0;
  if (typeof body === 'string') return new TextEncoder().encode(body).byteLength;
  if (body.byteLength !== undefined) return body.byteLength;
  if (body.size !== undefined) return body.size;
  if (typeof body.entries === 'function') {
    let n = 0;
    for (const [key, value] of body.entries()) n += bodyBytes(key) + bodyBytes(value);
    return n;
  }
  return 0;
}

export class DataMeter {
  /**
   * @param storage localStorage (or a stand-in): today's and all visits' totals.
   * @param origin the page's origin: its responses are counted from Resource Timing.
   * @param clock () => Date.
   */
  constructor(storage, origin, clock = () => new Date()) {
    Object.assign(this, { storage, origin, clock });
    this.visit = { down: 0, up: 0 };
    this.edge = new Map(); // path on the page's origin -> body bytes fetched over the network, this visit
    this.saved = this.read();
  }

  read() {
    let saved = null;
    try { saved = JSON.parse(this.storage.getItem(DATA_KEY)); } catch { /* unreadable: start again */ }
    const count = (v) => (Number.isFinite(v) && v >= 0 ? v : 0);
    return { day: typeof saved?.day === 'string' ? saved.day : day(this.clock()),
      today: count(saved?.today), total: count(saved?.total) };
  }

  /** Bytes used today (in every visit), after a day change starts the count again. */
  get today() {
    if (this.saved.day !== day(this.clock())) this.saved = { ...this.saved, day: day(this.clock()), today: 0 };
    return this.saved.today;
  }

  get total() { return this.saved.total; }

  add(down, up) {
    const [d, u] = [down > 0 ? down : 0, up > 0 ? up : 0];
    if (d + u === 0) return;
    this.visit.down += d;
    this.visit.up += u;
    this.saved = { day: this.saved.day, today: this.today + d + u, total: this.saved.total + d + u };
    this.storage.setItem(DATA_KEY, JSON.stringify(this.saved));
  }

  /** Resource Timing entries of this page or its worker: those of the page's origin that crossed the network. */
  observe(entries) {
    for (const entry of entries) {
      const url = new URL(entry.name);
      if (url.origin !== this.origin || !(entry.transferSize > 0)) continue;
      this.edge.set(url.pathname, (this.edge.get(url.pathname) || 0) + entry.encodedBodySize);
      this.add(entry.transferSize, 0);
    }
  }

  /** `fetch`, counting requests to other origins by their bodies (both ways). */
  wrap(fetchImpl) {
    return async (resource, init = {}) => {
      const url = new URL(typeof resource === 'string' ? resource : resource.url, `${this.origin}/`);
      const reply = await fetchImpl(resource, init);
      if (url.origin !== this.origin) {
        const body = reply.body ? await reply.clone().arrayBuffer() : new ArrayBuffer(0);
        this.add(body.byteLength, bodyBytes(init.body));
      }
      return reply;
    };
  }
}
