// The chat page (web/, served at `/`) keeps its conversations across reloads and closed tabs
// (web/store.js), checked in headless Chromium against the real Sluice, whose one provider is
// the scripted upstream this script serves: an OpenAI-compatible server streaming a known
// answer slowly (one word per `[pace=MS]` milliseconds named in the question) and recording
// every request it gets.
//   1. reload in the middle of an answer: the kept text shows at once, the answer goes on
//      typing from the next event of the same stream, and ends equal to the upstream's answer;
//   2. reload after the end: the conversation is shown as it was, nothing is asked again;
//   3. a follow-up after the reload sends the first turn as context (the upstream got it);
//   4. New chat, then reload: empty; the recent list keeps the earlier conversation;
//   5. switching between two conversations and deleting them (accessible buttons);
//   6. a tab closed mid-answer and reopened after the stream expired (404): the kept text, an
//      "interrupted" mark and a Retry that asks again;
//      The same for a kept stream id the gateway never knew;
//   7. Stop after a (slow) reload stops the stored stream (the upstream request is cancelled);
//   8. two tabs answering at once keep two whole conversations, and each reload shows its own;
//   9. localStorage throwing (private mode): the page works, without persistence, and says so once.
//
// Usage: node browser_persist.mjs BASE_URL CHROMIUM_PATH UPSTREAM_PORT
// The gateway must serve the model `scripted` from http://127.0.0.1:UPSTREAM_PORT/v1 (started
// before this script listens there: it connects only when asked) with a short
// SLUICE_STREAM_RETENTION_SECS (the Rust wrapper uses 2) and the demo model off.

import http from 'node:http';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, result, runChecks, short, sleep } from './lib.mjs';

const DEADLINE_MS = 120_000; // the whole script; normally it takes 30-45 s
const STEP_MS = 15_000; // one condition: a page loaded, an answer ended

const [baseArg, chromiumArg, portArg] = process.argv.slice(2);
if (!baseArg || !chromiumArg || !portArg) {
  console.error('usage: node browser_persist.mjs BASE_URL CHROMIUM_PATH UPSTREAM_PORT');
  process.exit(2);
}
const origin = new URL(baseArg).origin;
const WORDS = 30;

// ---- the scripted upstream ----

/** The answer the upstream streams for `question`, in the pieces it sends. */
function pieces(question) {
  const out = [`Answer to: ${question}.`];
  for (let i = 1; i <= WORDS; i++) out.push(` w${i}`);
  return out;
}
const answerTo = (q) => pieces(q).join('');
const paceOf = (q) => Number(/\[pace=(\d+)\]/.exec(q)?.[1] ?? 40);

/** Every chat request the upstream got: {messages, aborted, finished}. */
const requests = [];

function startUpstream(port) {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (b) => { body += b; });
    req.on('end', async () => {
      if (req.method !== 'POST' || !req.url.endsWith('/chat/completions')) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"error":{"message":"not here","type":"invalid_request_error"}}');
        return;
      }
      const json = JSON.parse(body);
      const rec = { messages: json.messages, aborted: false, finished: false };
      requests.push(rec);
      res.on('close', () => { if (!rec.finished) rec.aborted = true; });
      const users = json.messages.filter((m) => m.role === 'user');
      const q = users[users.length - 1].content;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const chunk = (delta, finish) => `data: ${JSON.stringify({
        id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 0, model: 'scripted',
        choices: [{ index: 0, delta, finish_reason: finish }],
      })}\n\n`;
      for (const [i, p] of pieces(q).entries()) {
        if (rec.aborted) return;
        res.write(chunk(i === 0 ? { role: 'assistant', content: p } : { content: p }, null));
        await sleep(paceOf(q));
      }
      if (rec.aborted) return;
      res.write(chunk({}, 'stop'));
      res.write('data: [DONE]\n\n');
      rec.finished = true;
      res.end();
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

// ---- the page ----

const errors = [];

async function openPage(context, { waitModel = true } = {}) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) errors.push(`CSP: ${m.text()}`);
  });
  await page.goto(`${origin}/`, { waitUntil: 'load' });
  if (waitModel) await ready(page);
  return page;
}

/** Waits until the page's script ran and the picker holds the scripted model. */
async function ready(page) {
  await page.waitForFunction(
    () => window.sluice && document.getElementById('model').value === 'scripted',
    null, { timeout: STEP_MS },
  );
}

async function reload(page) {
  await page.reload({ waitUntil: 'load' });
  await ready(page);
}

/** Everything the checks look at, in one round trip. */
function snapshot(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('article.msg.assistant');
    const a = all[all.length - 1];
    return {
      answers: all.length,
      users: [...document.querySelectorAll('article.msg.user')].map((e) => e.textContent),
      text: window.sluice.text,
      shown: a ? a.querySelector('.content').textContent : '',
      state: a ? a.dataset.state : null,
      marks: a ? [...a.querySelectorAll('.mark')].map((m) => m.textContent) : [],
      retry: a ? a.querySelectorAll('button.retry').length : 0,
      streamId: window.sluice.lastStreamId,
      lastEventId: window.sluice.lastEventId,
      convId: window.sluice.conversationId,
      empty: !!document.querySelector('#log .empty'),
      recent: [...document.querySelectorAll('#recent .conv-open')].map((b) => b.textContent),
      recentHidden: document.getElementById('recent').hidden,
    };
  });
}

async function send(page, text) {
  const before = await page.locator('article.msg.assistant').count();
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
  await page.waitForFunction(
    (n) => document.querySelectorAll('article.msg.assistant').length > n, before, { timeout: STEP_MS },
  );
}

async function waitEnded(page) {
  await page.waitForFunction(() => {
    const all = document.querySelectorAll('article.msg.assistant');
    const s = all.length ? all[all.length - 1].dataset.state : null;
    return s && s !== 'streaming';
  }, null, { timeout: STEP_MS });
  return snapshot(page);
}

/** The conversations in the page's localStorage: {id: record}. */
function stored(page) {
  return page.evaluate(() => {
    const out = {};
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      if (k.startsWith('sluice.chat.conv.')) out[k.slice(17)] = JSON.parse(localStorage.getItem(k));
    }
    return out;
  });
}

const turnsOf = (c) => c.turns.map((t) => `${t.role}:${t.content}`);

// ---- scenarios ----

async function reloadMidAnswer(page) {
  console.log('-- 1. reload in the middle of an answer');
  const q = 'Tell me slowly [pace=200]';
  await send(page, q);
  // Wait until the page has kept a few events, then reload.
  await page.waitForFunction(() => window.sluice.text.length > 40 && window.sluice.lastEventId >= 5,
    null, { timeout: STEP_MS });
  const before = await snapshot(page);
  const posts = requests.length;
  await page.reload({ waitUntil: 'load' });
  await page.waitForFunction(() => window.sluice && window.sluice.text.length > 0, null, { timeout: STEP_MS });
  const first = await snapshot(page);
  result('after the reload the question and the kept text show at once',
    first.users.length === 1 && first.users[0] === q && first.text.length > 0 &&
      answerTo(q).startsWith(first.text),
    `${first.text.length} chars kept (${before.text.length} before the reload)`);
  result('the answer goes on (data-state streaming, the same stream id)',
    first.state === 'streaming' && first.streamId === before.streamId, `state ${first.state}`);
  const lengths = new Set();
  let s = first;
  const t0 = Date.now();
  while (s.state === 'streaming' && Date.now() - t0 < STEP_MS) {
    lengths.add(s.text.length);
    await sleep(60);
    s = await snapshot(page);
  }
  s = await waitEnded(page);
  result('it kept typing after the reload (>= 3 distinct lengths)', lengths.size >= 3,
    `${lengths.size} lengths`);
  result('the answer ends done', s.state === 'done', `state ${s.state}`);
  const full = answerTo(q);
  let where = '';
  if (s.text !== full) {
    let i = 0;
    while (s.text[i] === full[i]) i++;
    where = `; first difference at ${i}: page ${short(s.text.slice(i), 40)} vs upstream ${short(full.slice(i), 40)}`;
  }
  result('the final text equals the upstream\'s answer exactly (nothing lost, nothing doubled)',
    s.text === full && s.shown.replace(/\s+/g, ' ').trim() === full, `${s.text.length} vs ${full.length} chars${where}`);
  result('nothing was asked again (no new upstream request)', requests.length === posts,
    `${requests.length - posts} new`);
  return q;
}

async function reloadAtEnd(page, q) {
  console.log('-- 2. reload after the end');
  const posts = requests.length;
  await reload(page);
  const s = await snapshot(page);
  result('the conversation is shown as it was', s.users.length === 1 && s.users[0] === q &&
    s.answers === 1 && s.text === answerTo(q) && s.state === 'done', `state ${s.state}, ${s.text.length} chars`);
  result('the recent list names it by its first question', s.recent.length === 1 && s.recent[0] === q,
    JSON.stringify(s.recent));
  await sleep(300); // a resumed stream would have asked by now
  result('nothing was asked again', requests.length === posts);
}

async function followUp(page, q1) {
  console.log('-- 3. a follow-up after a reload carries the first turn');
  const q2 = 'And a follow-up? [pace=5]';
  await send(page, q2);
  const s = await waitEnded(page);
  const got = requests[requests.length - 1].messages.map((m) => `${m.role}:${m.content}`);
  const want = [`user:${q1}`, `assistant:${answerTo(q1)}`, `user:${q2}`];
  result('the upstream got the first question and answer, then the follow-up',
    JSON.stringify(got) === JSON.stringify(want), JSON.stringify(got.map((m) => short(m, 30))));
  result('the follow-up ends done with its answer', s.state === 'done' && s.text === answerTo(q2));
}

async function newChatThenReload(page, q1) {
  console.log('-- 4. New chat, then reload');
  await page.click('#new');
  await reload(page);
  const s = await snapshot(page);
  result('the page is empty after the reload', s.answers === 0 && s.users.length === 0 && s.empty,
    `${s.answers} answers, ${s.users.length} questions`);
  result('the earlier conversation is still in the recent list', s.recent.length === 1 && s.recent[0] === q1,
    JSON.stringify(s.recent));
}

async function switchAndDelete(page, q1) {
  console.log('-- 5. switch between conversations, delete them');
  const q3 = 'A second conversation [pace=5]';
  await send(page, q3);
  await waitEnded(page);
  let s = await snapshot(page);
  result('the recent list holds both, newest first', JSON.stringify(s.recent) === JSON.stringify([q3, q1]),
    JSON.stringify(s.recent));
  await page.getByRole('button', { name: `Open conversation: ${q1}` }).click();
  await page.waitForFunction((q) => document.querySelector('article.msg.user')?.textContent === q, q1,
    { timeout: STEP_MS });
  s = await snapshot(page);
  result('opening the first shows its turns', s.users.length === 2 && s.users[0] === q1 && s.state === 'done',
    JSON.stringify(s.users));
  await reload(page);
  s = await snapshot(page);
  result('a reload shows the conversation switched to', s.users[0] === q1 && s.users.length === 2);
  await page.getByRole('button', { name: `Delete conversation: ${q3}` }).click();
  await page.waitForFunction(() => document.querySelectorAll('#recent .conv-open').length === 1, null,
    { timeout: STEP_MS });
  let kept = await stored(page);
  result('deleting the other one removes it from the list and from storage; the shown one stays',
    Object.values(kept).length === 1 && Object.values(kept)[0].title === q1 && (await snapshot(page)).users[0] === q1);
  await page.getByRole('button', { name: `Delete conversation: ${q1}` }).click();
  await page.waitForFunction(() => document.getElementById('recent').hidden, null, { timeout: STEP_MS });
  s = await snapshot(page);
  kept = await stored(page);
  result('deleting the shown one empties the page and the list', s.empty && s.answers === 0 &&
    Object.keys(kept).length === 0);
  await reload(page);
  s = await snapshot(page);
  result('and a reload stays empty', s.empty && s.answers === 0 && s.recentHidden);
}

async function expired(context) {
  console.log('-- 6. a tab closed mid-answer, reopened after the stream expired');
  let page = await openPage(context);
  const q = 'Expire me [pace=100]';
  await send(page, q);
  await page.waitForFunction(() => window.sluice.text.length > 30 && window.sluice.lastEventId >= 3,
    null, { timeout: STEP_MS });
  const id = (await snapshot(page)).streamId;
  await page.close();
  // The gateway finishes the answer (no reader: the grace period), keeps it for the retention
  // period (2 s here), then forgets it. Wait for the 404 itself.
  const t0 = Date.now();
  let status = 0;
  while (Date.now() - t0 < 20_000) {
    const r = await fetch(`${origin}/v1/streams/${id}/events`, { signal: AbortSignal.timeout(5000) });
    status = r.status;
    await r.body?.cancel();
    if (status === 404) break;
    await sleep(250);
  }
  result('the stream expired on the gateway (404)', status === 404, `status ${status}`);
  page = await openPage(context);
  await page.waitForFunction(() => {
    const a = document.querySelector('article.msg.assistant');
    return a && a.dataset.state !== 'streaming';
  }, null, { timeout: STEP_MS });
  const s = await snapshot(page);
  result('the answer keeps its text', s.text.length > 20 && answerTo(q).startsWith(s.text) && s.text !== answerTo(q),
    `${s.text.length} chars`);
  result('it is marked interrupted, with a Retry button', s.state === 'interrupted' &&
    s.marks.includes('interrupted') && s.retry === 1, `state ${s.state}, marks ${JSON.stringify(s.marks)}`);
  await page.getByRole('button', { name: 'Retry this answer' }).click();
  await page.waitForFunction(() => window.sluice.text === '' || document.querySelector('article.msg.assistant').dataset.state === 'streaming',
    null, { timeout: STEP_MS });
  const r = await waitEnded(page);
  result('Retry asks again and ends with the whole answer', r.state === 'done' && r.text === answerTo(q),
    `state ${r.state}`);
  await page.close();
}

async function unknownStream(context) {
  console.log('-- 6b. a kept answer whose stream the gateway does not know (404)');
  const page = await openPage(context);
  await page.evaluate(() => {
    const c = {
      id: 'unknownstream', model: 'scripted', title: '',
      turns: [{ role: 'user', content: 'Asked elsewhere' },
        { role: 'assistant', content: 'Half an answer', state: 'streaming' }],
      pending: { turn: 1, streamId: 'no-such-stream-0123456789abcdef', lastEventId: 4, thinking: '', tools: [] },
    };
    window.sluice.store.save(c);
    window.sluice.store.setCurrent(c.id);
  });
  await page.reload({ waitUntil: 'load' });
  await page.waitForFunction(() => document.querySelector('article.msg.assistant')?.dataset.state === 'interrupted',
    null, { timeout: STEP_MS });
  const s = await snapshot(page);
  result('the kept text stays, marked interrupted, with Retry', s.text === 'Half an answer' &&
    s.marks.includes('interrupted') && s.retry === 1, `${short(s.text)} ${JSON.stringify(s.marks)}`);
  const kept = (await stored(page)).unknownstream;
  result('it is kept as interrupted (a reload does not try again)',
    kept && kept.pending === null && kept.turns[1].state === 'interrupted' && kept.turns[1].content === 'Half an answer');
  await page.getByRole('button', { name: 'Delete conversation: Asked elsewhere' }).click();
  await page.close();
}

async function stopAfterReload(context) {
  console.log('-- 7. Stop after a reload');
  const page = await openPage(context);
  await page.click('#new');
  const q = 'Stop me after a reload [pace=200]';
  await send(page, q);
  await page.waitForFunction(() => window.sluice.lastEventId >= 2, null, { timeout: STEP_MS });
  const rec = requests[requests.length - 1];
  // A slow reload: the new document takes 1.5 s to come, so the old page lives on after its
  // stream was cut. That cut must not be kept as the answer's end.
  const slow = async (route) => { await sleep(1500); await route.continue(); };
  await page.route(`${origin}/`, slow);
  await reload(page);
  await page.unroute(`${origin}/`, slow);
  await page.waitForFunction(() => window.sluice.lastEventId >= 4 &&
    document.querySelector('article.msg.assistant').dataset.state === 'streaming', null, { timeout: STEP_MS });
  await page.click('#stop');
  const s = await waitEnded(page);
  result('the answer ends stopped, with its mark', s.state === 'stopped' && s.marks.includes('stopped'),
    `state ${s.state}, marks ${JSON.stringify(s.marks)}`);
  const t0 = Date.now();
  while (!rec.aborted && !rec.finished && Date.now() - t0 < 5000) await sleep(50);
  result('the gateway cancelled the upstream request (the stored stream was stopped)',
    rec.aborted && !rec.finished, `aborted ${rec.aborted}, finished ${rec.finished}`);
  result('the page kept a beginning of the answer', s.text.length > 0 && answerTo(q).startsWith(s.text) &&
    s.text !== answerTo(q));
  await reload(page);
  const after = await snapshot(page);
  result('a reload shows it stopped, not streaming again', after.state === 'stopped' && after.text === s.text,
    `state ${after.state}`);
  await page.close();
}

async function twoTabs(browser) {
  console.log('-- 8. two tabs');
  const context = await browser.newContext();
  try {
    const p1 = await openPage(context);
    const p2 = await openPage(context);
    const q1 = 'Tab one asks [pace=40]';
    const q2 = 'Tab two asks [pace=40]';
    await Promise.all([send(p1, q1), send(p2, q2)]);
    const [s1, s2] = await Promise.all([waitEnded(p1), waitEnded(p2)]);
    result('both answers end done', s1.state === 'done' && s2.state === 'done');
    const kept = Object.values(await stored(p1));
    const byTitle = Object.fromEntries(kept.map((c) => [c.title, c]));
    result('storage holds two whole conversations, no turn of one in the other',
      kept.length === 2 &&
        JSON.stringify(turnsOf(byTitle[q1])) === JSON.stringify([`user:${q1}`, `assistant:${answerTo(q1)}`]) &&
        JSON.stringify(turnsOf(byTitle[q2])) === JSON.stringify([`user:${q2}`, `assistant:${answerTo(q2)}`]),
      JSON.stringify(kept.map((c) => turnsOf(c).map((t) => short(t, 24)))));
    await p1.waitForFunction(() => document.querySelectorAll('#recent .conv-open').length === 2, null,
      { timeout: STEP_MS });
    result('each tab\'s recent list shows the other tab\'s conversation too (storage event)', true);
    await reload(p1);
    await reload(p2);
    const [r1, r2] = await Promise.all([snapshot(p1), snapshot(p2)]);
    result('each reload shows the tab\'s own conversation',
      r1.users.join() === q1 && r1.text === answerTo(q1) && r2.users.join() === q2 && r2.text === answerTo(q2),
      `${JSON.stringify(r1.users)} / ${JSON.stringify(r2.users)}`);
  } finally {
    await context.close();
  }
}

async function storageDisabled(browser) {
  console.log('-- 9. storage disabled');
  const context = await browser.newContext();
  try {
    await context.addInitScript(() => {
      Object.defineProperty(window, 'localStorage', {
        configurable: true,
        get() { throw new DOMException('The operation is insecure.', 'SecurityError'); },
      });
    });
    const page = await openPage(context);
    const notice = page.locator('#persist-notice');
    result('a notice says conversations are not kept', await notice.isVisible() &&
      /not kept/i.test(await notice.textContent()), short(await notice.textContent()));
    const q = 'No storage here [pace=5]';
    await send(page, q);
    let s = await waitEnded(page);
    await send(page, 'Again [pace=5]');
    s = await waitEnded(page);
    result('answers still stream to the end', s.state === 'done' && s.text === answerTo('Again [pace=5]'));
    const notices = await page.evaluate(() => [...document.querySelectorAll('.notice')]
      .filter((e) => !e.hidden && /not kept/i.test(e.textContent)).length);
    result('the notice is shown once (one element, still there)', notices === 1, `${notices}`);
    await reload(page);
    s = await snapshot(page);
    result('a reload starts empty and the page still works', s.empty && s.answers === 0);
  } finally {
    await context.close();
  }
}

async function main() {
  const upstream = await startUpstream(Number(portArg));
  console.log(`headless Chromium (${chromiumArg}) against ${origin}, scripted upstream on ${portArg}`);
  const browser = await chromium.launch({ executablePath: chromiumArg, headless: true, args: CHROMIUM_ARGS });
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 800 } });
    const page = await openPage(context);
    const q1 = await reloadMidAnswer(page);
    await reloadAtEnd(page, q1);
    await followUp(page, q1);
    await newChatThenReload(page, q1);
    await switchAndDelete(page, q1);
    await page.close();
    await expired(context);
    await unknownStream(context);
    await stopAfterReload(context);
    await context.close();
    await twoTabs(browser);
    await storageDisabled(browser);
    const pageErrors = errors.filter((e) => e.startsWith('page error') || e.startsWith('CSP'));
    result('no uncaught script error or CSP violation on any page', pageErrors.length === 0, pageErrors.join('; '));
  } finally {
    await browser.close();
    upstream.close();
  }
}

await runChecks('browser persist', main, { deadlineMs: DEADLINE_MS });
