// A real WHATWG-conformant EventSource client (npm `eventsource`) reading a Sluice resumable
// stream through a TCP proxy that cuts the first connection mid-stream. The EventSource must
// reconnect on its own with Last-Event-ID and end with the full answer: no gap, no duplicate.
//
// Usage: node eventsource_resume.mjs http://127.0.0.1:PORT/v1
//
// Prints one PASS/FAIL line per check and exits non-zero if any check failed.

import net from 'node:net';
import { EventSource } from 'eventsource';
import { closeTogether, result, runChecks } from './lib.mjs';
import { parseSse } from './sse.mjs';

const CUT_AFTER_DELTAS = 5;
const DEADLINE_MS = 30_000;
const MESSAGES = [{ role: 'user', content: 'Resume me, please.' }];
const MOCK = { delay_ms: 30, tokens: 60 };

const baseArg = process.argv[2];
if (!baseArg) {
  console.error('usage: node eventsource_resume.mjs BASE_URL (e.g. http://127.0.0.1:8080/v1)');
  process.exit(2);
}
const base = new URL(baseArg.endsWith('/') ? baseArg : `${baseArg}/`);
const origin = base.origin;

// ---- the proxy: forwards TCP both ways; cuts connection #1 in the middle of the body ----

const connections = []; // per connection: { request, forwarded, cut }

function startProxy(targetHost, targetPort) {
  return new Promise((resolve) => {
    const server = net.createServer((client) => {
      const conn = { request: '', forwarded: '', cut: false };
      connections.push(conn);
      const cutThis = connections.length === 1;
      const upstream = net.connect(targetPort, targetHost);
      let deltasSeen = 0;
      let cutArmed = false;
      client.on('data', (buf) => {
        conn.request += buf.toString('latin1');
        upstream.write(buf);
      });
      upstream.on('data', (buf) => {
        if (conn.cut) return;
        let text = buf.toString('latin1');
        if (cutThis && cutArmed) {
          // Forward the first bytes of the next write only, then drop both sides: the client
          // holds a partial event it must discard, and the server loses its reader mid-stream.
          text = text.slice(0, Math.max(1, Math.floor(text.length / 2)));
          conn.forwarded += text;
          conn.cut = true;
          client.write(Buffer.from(text, 'latin1'), () => {
            client.destroy();
            upstream.destroy();
          });
          return;
        }
        conn.forwarded += text;
        client.write(buf);
        if (cutThis) {
          deltasSeen = conn.forwarded.split('event: delta').length - 1;
          if (deltasSeen >= CUT_AFTER_DELTAS) cutArmed = true;
        }
      });
      closeTogether(client, upstream);
    });
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  console.log(`eventsource (npm) against ${origin}`);

  // 1. Start the generation.
  const created = await fetch(new URL('streams', base), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'sluice-demo', messages: MESSAGES, mock: MOCK }),
  });
  const createdBody = await created.text();
  result('POST /v1/streams answers 201 {id, events_url}', created.status === 201, `${created.status} ${createdBody}`);
  if (created.status !== 201) return;
  const { id, events_url: eventsUrl } = JSON.parse(createdBody);
  if (typeof id !== 'string' || typeof eventsUrl !== 'string') {
    result('the 201 body names id and events_url', false, createdBody);
    return;
  }

  // 2. Read it with an EventSource through the cutting proxy.
  const proxy = await startProxy(base.hostname, Number(base.port || 80));
  const proxied = new URL(eventsUrl, origin);
  proxied.host = `127.0.0.1:${proxy.address().port}`;

  const received = []; // { type, id, data }
  let errors = 0;
  let texts = '';
  let done = null;
  const started = Date.now();
  const outcome = await new Promise((resolve) => {
    const es = new EventSource(proxied.href);
    const timer = setTimeout(() => {
      es.close();
      resolve('timeout');
    }, DEADLINE_MS);
    const finish = (why) => {
      clearTimeout(timer);
      es.close();
      resolve(why);
    };
    const record = (type) => (ev) => {
      received.push({ type, id: ev.lastEventId, data: ev.data });
      if (type === 'delta') texts += JSON.parse(ev.data).text;
      if (type === 'done') {
        done = JSON.parse(ev.data);
        finish('done');
      }
      if (type === 'failed') finish('failed');
    };
    for (const type of ['delta', 'done', 'failed', 'reasoning', 'tool_call', 'message']) {
      es.addEventListener(type, record(type));
    }
    es.addEventListener('error', (ev) => {
      errors += 1;
      console.log(
        `  EventSource error event #${errors} after ${received.length} events: ` +
          `readyState=${es.readyState} ${ev.message ?? ''} ${ev.code ?? ''}`,
      );
      // CLOSED (2) means the client gave up: a non-200 answer or a bad content type.
      if (es.readyState === 2) finish('closed');
    });
  });
  proxy.close();
  const elapsed = Date.now() - started;
  console.log(`  EventSource ended with "${outcome}" after ${elapsed} ms, ${received.length} events`);

  // 3. The full answer, two ways: the replay read directly, and a non-streaming call with the
  // same messages and mock settings (the demo is deterministic).
  const replayResp = await fetch(new URL(eventsUrl, origin));
  const replay = parseSse(await replayResp.text());
  const replayDeltas = replay.filter((e) => e.event === 'delta');
  const full = replayDeltas.map((e) => JSON.parse(e.data).text).join('');
  const completion = await (
    await fetch(new URL('chat/completions', base), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'sluice-demo', messages: MESSAGES, mock: MOCK }),
    })
  ).json();
  const nonStreaming = completion?.choices?.[0]?.message?.content;

  result('the replay equals a non-streaming call with the same messages', full === nonStreaming && full.length > 0,
    `${full.length} chars`);
  result('done arrived (finish_reason stop) and the EventSource was closed on it',
    outcome === 'done' && done?.finish_reason === 'stop', `outcome ${outcome}, done ${JSON.stringify(done)}`);

  const first = connections[0];
  const cutMidStream = !!first && first.cut && !first.forwarded.includes('event: done');
  result('the proxy cut the first connection mid-stream', cutMidStream,
    first ? `forwarded ${first.forwarded.split('event: delta').length - 1} delta events, then a partial write` : 'no connection');

  const reconnects = connections.slice(1);
  const lastIdHeaders = reconnects.map((c) => /^last-event-id:\s*(.*?)\r?$/im.exec(c.request)?.[1] ?? null);
  result('the EventSource reconnected by itself, sending Last-Event-ID',
    reconnects.length >= 1 && errors >= 1 && lastIdHeaders[0] !== null,
    `${connections.length} connections, ${errors} error events, Last-Event-ID ${JSON.stringify(lastIdHeaders)}`);

  const ids = received.map((e) => Number(e.id));
  const consecutive = ids.length > 0 && ids.every((n, i) => n === i + 1);
  const dupes = ids.length - new Set(ids).size;
  result('event ids are 1, 2, 3, ... with no gap and no duplicate', consecutive && dupes === 0,
    `${ids.length} events, ids ${ids[0]}..${ids[ids.length - 1]}, ${dupes} duplicates`);
  if (!consecutive) console.log(`  ids: ${ids.join(',')}`);

  const lastBeforeCut = lastIdHeaders[0] === null || lastIdHeaders[0] === undefined ? NaN : Number(lastIdHeaders[0]);
  const replayLast = replay.length ? Number(replay[replay.length - 1].id) : NaN;
  result('Last-Event-ID names an event the client had, and the tail followed it',
    Number.isInteger(lastBeforeCut) && lastBeforeCut >= CUT_AFTER_DELTAS && ids.includes(lastBeforeCut) &&
      ids.includes(lastBeforeCut + 1) && replayLast === ids[ids.length - 1],
    `resumed after ${lastBeforeCut} of ${replayLast}`);

  const unexpected = received.filter((e) => e.type !== 'delta' && e.type !== 'done');
  result('only delta and done events arrived', unexpected.length === 0,
    unexpected.length ? JSON.stringify(unexpected.slice(0, 3)) : '');

  result('the concatenated delta texts equal the full answer', texts === full && texts.length > 0,
    texts === full ? `${texts.length} chars` : `got ${JSON.stringify(texts)}\nwant ${JSON.stringify(full)}`);
}

await runChecks('eventsource', main);
