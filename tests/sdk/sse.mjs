// Shared by the Node check scripts: the way a WHATWG client splits an SSE body into events, and
// reading a stream's replay from the server.

/** Splits an SSE body into events: objects of field name to value (`data` lines joined). */
export function parseSse(body) {
  const events = [];
  let cur = {};
  for (const line of body.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (Object.keys(cur).length) events.push(cur);
      cur = {};
      continue;
    }
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    cur[field] = field === 'data' && cur.data !== undefined ? `${cur.data}\n${value}` : value;
  }
  if (Object.keys(cur).length) events.push(cur);
  return events;
}

/**
 * The whole replay of stream `id` from the server at `origin` (read after it ended; the events
 * URL needs no key): its text, its events and its last event.
 */
export async function replay(origin, id) {
  const res = await fetch(`${origin}/v1/streams/${encodeURIComponent(id)}/events`, {
    signal: AbortSignal.timeout(15_000),
  });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`GET events for ${id}: ${res.status} ${body}`);
  const events = parseSse(body);
  const text = events
    .filter((e) => e.event === 'delta')
    .map((e) => JSON.parse(e.data))
    .filter((d) => (d.index || 0) === 0)
    .map((d) => d.text)
    .join('');
  const last = events[events.length - 1] || {};
  let lastData = null;
  try { lastData = JSON.parse(last.data); } catch { /* not JSON */ }
  return { text, events, last: { event: last.event, data: lastData } };
}
