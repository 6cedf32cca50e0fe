// The HTTP API client: bearer token from sessionStorage, errors as ApiError with the server's
// message, thumbnails fetched with the token (an <img src> cannot send it), and the
// notification stream read with fetch (EventSource cannot send headers either).

const TOKEN_KEY = 'alray.token';

export class ApiError extends Error {
  constructor(status, body = {}) {
    super(body.detail || `HTTP ${status}`);
    this.status = status;
    this.detail = this.message;
    this.errors = body.errors ?? [];
    this.problems = body.problems ?? [];
  }
}

export const getToken = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (t) =>
  t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY);

// askToken(message) -> Promise<token>; one prompt at a time however many requests got a 401.
let prompter = null;
let asking = null;
export function onTokenNeeded(fn) {
  prompter = fn;
}
function askToken(message) {
  asking ??= prompter(message)
    .then(setToken)
    .finally(() => (asking = null));
  return asking;
}

export function url(path, query) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v == null || v === '') continue;
    for (const item of Array.isArray(v) ? v : [v]) u.searchParams.append(k, item);
  }
  return u.pathname + u.search;
}

async function errorBody(resp) {
  try {
    return await resp.json();
  } catch {
    return { detail: `${resp.status} ${resp.statusText}`.trim() };
  }
}

export async function request(path, { method = 'GET', body, query, signal, raw = false } = {}) {
  const target = url(path, query);
  for (;;) {
    const headers = new Headers();
    const token = getToken();
    if (token) headers.set('Authorization', `Bearer ${token}`);
    if (body !== undefined) headers.set('Content-Type', 'application/json');
    let resp;
    try {
      resp = await fetch(target, {
        method,
        headers,
        signal,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, { detail: `cannot reach the server (${e.message})` });
    }
    if (resp.status === 401 && prompter) {
      await askToken((await errorBody(resp)).detail);
      continue; // with the new token
    }
    if (!resp.ok) throw new ApiError(resp.status, await errorBody(resp));
    if (raw) return resp;
    return resp.status === 204 ? null : resp.json();
  }
}

export const get = (path, query, signal) => request(path, { query, signal });
export const post = (path, body) => request(path, { method: 'POST', body });
export const put = (path, body) => request(path, { method: 'PUT', body });

// Thumbnails --------------------------------------------------------------------------------------
// A few at a time (the browser keeps 6 connections per host and the event stream holds one),
// cached as object URLs, least recently used evicted.
const MAX_IMAGES = 600;
const PARALLEL = 4;
const images = new Map();
const waiting = [];
let running = 0;

function pump() {
  while (running < PARALLEL && waiting.length) {
    const job = waiting.shift();
    running++;
    job().finally(() => {
      running--;
      pump();
    });
  }
}

export function imageURL(path) {
  let p = images.get(path);
  if (p) {
    images.delete(path); // re-insert: most recently used last
  } else {
    p = new Promise((resolve, reject) => {
      waiting.push(() =>
        request(path, { raw: true })
          .then((r) => r.blob())
          .then((b) => resolve(URL.createObjectURL(b)), reject),
      );
      pump();
    });
    p.catch(() => images.delete(path));
  }
  images.set(path, p);
  while (images.size > MAX_IMAGES) {
    const [oldest, old] = images.entries().next().value;
    images.delete(oldest);
    old.then(URL.revokeObjectURL, () => {});
  }
  return p;
}

// Server-sent events over fetch -------------------------------------------------------------------
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

function parseEvent(block) {
  const ev = { data: [] };
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue; // comments are heartbeats
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'data') ev.data.push(value);
    else ev[field] = value;
  }
  return ev.data.length ? { ...ev, data: ev.data.join('\n') } : null;
}

// Follow an SSE route until signal aborts; reconnects after `lastId` with backoff.
export async function follow(path, { after = 0, onEvent, onState, signal }) {
  let lastId = after;
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const resp = await request(path, { query: { after: lastId }, raw: true, signal });
      onState?.('live');
      delay = 1000;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replaceAll('\r\n', '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const ev = parseEvent(buf.slice(0, end));
          buf = buf.slice(end + 2);
          if (!ev) continue;
          if (ev.id) lastId = Math.max(lastId, Number(ev.id));
          try {
            onEvent({ id: Number(ev.id), type: ev.event, data: JSON.parse(ev.data) });
          } catch (e) {
            console.error('alray: notification handler failed', e);
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      onState?.('retrying', e);
    }
    if (signal.aborted) return;
    onState?.('retrying');
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 30000);
  }
}
