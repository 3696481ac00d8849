// Same-origin JSON calls with the team key. A 401 asks the page for a key
// (see setKeyPrompt) and retries; other failures throw ApiError with a readable message.

const KEY = 'sluice.apiKey';
let askKey = null;

export class ApiError extends Error {
  constructor(status, message, info = {}) {
    super(message);
    this.status = status;
    this.type = info.type;
    this.code = info.code;
    this.retryAfter = info.retryAfter;
  }
}

export function getKey() {
  try { return localStorage.getItem(KEY) || ''; } catch { return ''; }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY, key); else localStorage.removeItem(KEY);
  } catch { /* storage disabled: key lives for this call only */ }
}

/** fn(message) => Promise<string|null>: the key the user typed, or null if they gave up. */
export function setKeyPrompt(fn) { askKey = fn; }

async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const e = body && typeof body.error === 'object' && body.error ? body.error : {};
  const detail = typeof e.message === 'string' && e.message ? e.message : res.statusText || 'request failed';
  const ra = parseInt(res.headers.get('retry-after') || '', 10);
  const retryAfter = Number.isFinite(ra) && ra >= 0 ? ra : undefined;
  let message;
  switch (res.status) {
    case 401: message = `Unauthorized: ${detail}`; break;
    case 403: message = `Forbidden: ${detail}`; break;
    case 429:
      message = retryAfter !== undefined
        ? `Rate limited: try again in ${Math.max(1, retryAfter)} s (${detail})`
        : `Rate limited: ${detail}`;
      break;
    default: message = `Error ${res.status}: ${detail}`;
  }
  return new ApiError(res.status, message, { type: e.type, code: e.code, retryAfter });
}

/** method, path, optional JSON body → parsed JSON (or null for an empty answer). */
export async function api(method, path, body) {
  for (;;) {
    const key = getKey();
    const headers = { Accept: 'application/json' };
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method, headers, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, 'Network error: the gateway could not be reached.');
    }
    if (res.ok) {
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    }
    const err = await errorOf(res);
    if (res.status !== 401 || !askKey) throw err;
    const entered = await askKey(key
      ? `The API key was not accepted (${err.message.replace(/^Unauthorized: /, '')}). Enter another key.`
      : 'This gateway needs an API key.');
    if (!entered) throw err;
    setKey(entered);
  }
}
