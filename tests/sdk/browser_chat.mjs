// The chat page (web/, served at `/`) in headless Chromium against the real Sluice and its demo
// model, driven with playwright-core:
//   1. typewriter: the answer grows over time, then equals the full answer from the replay;
//   2. the event connection is cut mid-answer by a TCP proxy: the page shows "reconnecting",
//      resumes with Last-Event-ID and ends with the full answer, no gap, no duplicate;
//   3. the stop button ends the answer with a visible "stopped" mark (server: done/cancelled);
//   4. model output with <script> and <img onerror> is shown as text, never run;
//   5. a screenshot of the page after an answer: test-artifacts/chat.png (repository root).
//
// Usage: node browser_chat.mjs http://127.0.0.1:PORT [CHROMIUM_PATH]
// Run Sluice with a slowish demo pace (SLUICE_DEMO_TOKENS_PER_SEC=30) so the typing is visible.
// Prints one PASS/FAIL line per check and exits non-zero if any check failed.

import fs from 'node:fs';
import net from 'node:net';
import { chromium } from 'playwright-core';
import {
  artifactPath, CHROMIUM_ARGS, closeTogether, result, runChecks, saveScreenshot, short, sleep,
} from './lib.mjs';
import { replay as fetchReplay } from './sse.mjs';

const DEADLINE_MS = 90_000; // the whole script; normally it takes 15-25 s
const ANSWER_TIMEOUT_MS = 30_000; // one demo answer at 30 tokens/s takes about 4 s
const CUT_AFTER_DELTAS = 8; // the proxy cuts the events connection after this many deltas

const baseArg = process.argv[2];
if (!baseArg) {
  console.error('usage: node browser_chat.mjs BASE_URL [CHROMIUM_PATH] (e.g. http://127.0.0.1:8080)');
  process.exit(2);
}
const origin = new URL(baseArg).origin;
const executablePath = process.argv[3] || process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const screenshotPath = artifactPath('chat.png');

// ---- the server's record of an answer ----

/** The whole replay of stream `id`, as the server keeps it. */
const replay = (id) => fetchReplay(origin, id);

// ---- the page ----

// Records the first word of every status the page shows (a MutationObserver on #status), so a
// short-lived "reconnecting" is not missed between two samples.
function recordStatus() {
  window.__statusWords = [];
  window.__statusTexts = [];
  document.addEventListener('DOMContentLoaded', () => {
    const st = document.getElementById('status');
    const rec = () => {
      const t = st.textContent.trim();
      const w = t.split(/\s/)[0];
      if (window.__statusWords[window.__statusWords.length - 1] !== w) {
        window.__statusWords.push(w);
        window.__statusTexts.push(t);
      }
    };
    rec();
    new MutationObserver(rec).observe(st, { childList: true, characterData: true, subtree: true });
  });
}

async function openPage(context, url, errors) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) errors.push(`CSP: ${m.text()}`);
  });
  await page.addInitScript(recordStatus);
  await page.goto(`${url}/`, { waitUntil: 'load' });
  // The model list is loaded from /v1/models: wait until the picker holds the demo model.
  await page.waitForFunction(
    () => document.getElementById('model').value === 'sluice-demo' && window.sluice,
    null,
    { timeout: 10_000 },
  );
  return page;
}

/** Everything the checks look at, read in one round trip. */
function snapshot(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('article.msg.assistant');
    const a = all[all.length - 1];
    const content = a ? a.querySelector('.content') : null;
    return {
      answers: all.length,
      raw: window.sluice.text,
      shown: content ? content.textContent : '',
      state: a ? a.dataset.state : null,
      reconnects: a && a.dataset.reconnects !== undefined ? Number(a.dataset.reconnects) : 0,
      status: document.getElementById('status').textContent.trim(),
      streamId: window.sluice.lastStreamId,
      statusWords: window.__statusWords.slice(),
      statusTexts: window.__statusTexts.slice(),
    };
  });
}

/** Types `text` into #prompt and presses Enter; resolves once the new answer exists. */
async function send(page, text) {
  const before = await page.locator('article.msg.assistant').count();
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
  await page.waitForFunction(
    (n) => document.querySelectorAll('article.msg.assistant').length > n,
    before,
    { timeout: 10_000 },
  );
}

async function waitEnded(page) {
  await page.waitForFunction(
    () => {
      const all = document.querySelectorAll('article.msg.assistant');
      const s = all.length ? all[all.length - 1].dataset.state : null;
      return s && s !== 'streaming';
    },
    null,
    { timeout: ANSWER_TIMEOUT_MS },
  );
  return snapshot(page);
}

const firstWord = (s) => s.split(/\s/)[0];

// ---- the cutting proxy: browser <-> proxy <-> sluice ----

// Forwards TCP both ways. The first response to a GET for `/events` (whichever keep-alive
// connection carries it) is cut once CUT_AFTER_DELTAS deltas of it went through: the proxy
// forwards half of the next piece of the body (a partial event the browser must drop), then
// closes both sides. Every events request head is recorded (to check Last-Event-ID).
function startProxy(target) {
  const state = { eventsRequests: [], cut: null };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    let events = false; // this connection now carries an events response
    let forwarded = '';
    let cutting = false;
    let reqBuf = ''; // request bytes not yet parsed (a head may span several reads)
    let bodyLeft = 0; // bytes of a request body still to skip
    client.on('data', (buf) => {
      reqBuf += buf.toString('latin1');
      for (;;) {
        if (bodyLeft > 0) {
          const n = Math.min(bodyLeft, reqBuf.length);
          reqBuf = reqBuf.slice(n);
          bodyLeft -= n;
          if (bodyLeft > 0) break;
        }
        const end = reqBuf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const head = reqBuf.slice(0, end + 4);
        reqBuf = reqBuf.slice(end + 4);
        bodyLeft = Number(/^content-length:\s*(\d+)/im.exec(head)?.[1] ?? 0);
        events = /^GET \S*\/events\S* HTTP\//.test(head) && !state.cut;
        if (/^GET \S*\/events\S* HTTP\//.test(head)) state.eventsRequests.push(head);
        forwarded = '';
      }
      upstream.write(buf);
    });
    upstream.on('data', (buf) => {
      if (cutting) return;
      if (events && !state.cut && forwarded.split('event: delta').length - 1 >= CUT_AFTER_DELTAS) {
        cutting = true;
        const text = buf.toString('latin1');
        const part = text.slice(0, Math.max(1, Math.floor(text.length / 2)));
        state.cut = { deltas: forwarded.split('event: delta').length - 1, partial: part };
        client.write(Buffer.from(part, 'latin1'), () => {
          client.destroy();
          upstream.destroy();
        });
        return;
      }
      if (events) forwarded += buf.toString('latin1');
      client.write(buf);
    });
    closeTogether(client, upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, state, port: server.address().port }));
  });
}

// ---- scenarios ----

async function typewriter(page) {
  console.log('-- 1. typewriter');
  await send(page, 'Hello! Please stream me an answer.');
  const samples = [];
  const t0 = Date.now();
  let s;
  for (;;) {
    s = await snapshot(page);
    samples.push({ t: Date.now() - t0, raw: s.raw.length, shown: s.shown.length, state: s.state });
    if (s.state !== 'streaming' || Date.now() - t0 > ANSWER_TIMEOUT_MS) break;
    await sleep(100);
  }
  if (s.state === 'streaming') s = await waitEnded(page);
  const during = samples.filter((x) => x.state === 'streaming' && x.raw > 0);
  const rawLens = [...new Set(during.map((x) => x.raw))];
  const shownLens = [...new Set(during.map((x) => x.shown).filter((n) => n > 0))];
  const increasing = during.every((x, i) => i === 0 || x.raw >= during[i - 1].raw);
  console.log(`  ${samples.length} samples over ${samples[samples.length - 1].t} ms; text lengths while ` +
    `streaming: ${rawLens.join(' ')}`);
  result('the answer grows while streaming (>= 3 distinct increasing lengths of window.sluice.text)',
    rawLens.length >= 3 && increasing, `${rawLens.length} distinct lengths`);
  result('the rendered .content grows too (>= 3 distinct lengths)', shownLens.length >= 3,
    `${shownLens.length} distinct lengths`);
  result('the answer did not appear at once (first non-empty sample shorter than the final text)',
    during.length > 0 && during[0].raw < s.raw.length / 2,
    `first ${during.length ? during[0].raw : 'none'} of ${s.raw.length} chars`);
  result('the answer ends with data-state=done', s.state === 'done', `state ${s.state}`);
  result('the status line says done', firstWord(s.status) === 'done', short(s.status));
  const full = await replay(s.streamId);
  result('the server replay ends with done / finish_reason stop',
    full.last.event === 'done' && full.last.data?.finish_reason === 'stop', JSON.stringify(full.last));
  result('window.sluice.text equals the full answer from the events URL',
    s.raw === full.text && full.text.startsWith('Hello from Sluice!'),
    `${s.raw.length} vs ${full.text.length} chars`);
  return full.text;
}

async function connectionCut(context, errors) {
  console.log('-- 2. connection cut mid-answer');
  const target = new URL(origin);
  const proxy = await startProxy(target);
  try {
    const page = await openPage(context, `http://127.0.0.1:${proxy.port}`, errors);
    await send(page, 'Survive a dropped connection, please.');
    const s = await waitEnded(page);
    const { cut, eventsRequests } = proxy.state;
    result('the proxy cut the events connection mid-answer', !!cut && !cut.partial.includes('event: done'),
      cut ? `after ${cut.deltas} deltas, then ${cut.partial.length} bytes of the next write` : 'never cut');
    const lastId = eventsRequests.slice(1).map((r) => /^last-event-id:\s*(.*?)\r?$/im.exec(r)?.[1] ?? null);
    result('the browser reconnected with Last-Event-ID', eventsRequests.length >= 2 && lastId[0] != null,
      `${eventsRequests.length} events requests, Last-Event-ID ${JSON.stringify(lastId)}`);
    const iRe = s.statusWords.indexOf('reconnecting');
    result('the page showed "reconnecting"', iRe >= 0,
      `status words ${s.statusWords.join(' > ')}${iRe >= 0 ? `; ${short(s.statusTexts[iRe])}` : ''}`);
    result('after reconnecting it streamed again and ended done',
      iRe >= 0 && s.statusWords.slice(iRe + 1).includes('streaming') && firstWord(s.status) === 'done' &&
        s.state === 'done', `state ${s.state}, status ${short(s.status)}`);
    result('data-reconnects >= 1', s.reconnects >= 1, `data-reconnects ${s.reconnects}`);
    const full = await replay(s.streamId);
    const ok = s.raw === full.text && full.text.length > 0;
    let where = '';
    if (!ok) {
      let i = 0;
      while (i < s.raw.length && s.raw[i] === full.text[i]) i++;
      where = `; first difference at ${i}: page ${short(s.raw.slice(i), 40)} vs server ${short(full.text.slice(i), 40)}`;
    }
    result('the final text equals the full answer (no duplicated or missing piece)', ok,
      `${s.raw.length} vs ${full.text.length} chars${where}`);
    await page.close();
  } finally {
    proxy.server.close();
  }
}

async function stopButton(page, fullTail) {
  console.log('-- 3. stop button');
  await send(page, 'Stop me halfway.');
  await page.waitForFunction(() => window.sluice.text.length > 20, null, { timeout: 10_000 });
  result('#stop is visible while streaming', await page.locator('#stop').isVisible());
  await page.click('#stop');
  const s = await waitEnded(page);
  result('the answer ends with data-state=stopped', s.state === 'stopped', `state ${s.state}`);
  const mark = page.locator('article.msg.assistant').last().locator('.mark');
  const markVisible = (await mark.count()) === 1 && (await mark.isVisible());
  const markText = markVisible ? (await mark.textContent()).trim() : '';
  result('a visible "stopped" mark', markVisible && /stopped/i.test(markText), short(markText));
  result('the status line says stopped', firstWord(s.status) === 'stopped', short(s.status));
  result('#send is back and #stop hidden',
    (await page.locator('#send').isVisible()) && !(await page.locator('#stop').isVisible()));
  const r = await replay(s.streamId);
  result('the server replay ends with done / finish_reason cancelled',
    r.last.event === 'done' && r.last.data?.finish_reason === 'cancelled', JSON.stringify(r.last));
  result('the generation stopped early (the replay lacks the answer\'s ending)',
    r.text.length > 0 && !r.text.endsWith(fullTail), `${r.text.length} chars`);
  result('the page kept what the server sent before the stop', r.text.startsWith(s.raw) && s.raw.length > 0,
    `page ${s.raw.length} chars, server ${r.text.length} chars`);
}

async function xss(page, errors) {
  console.log('-- 4. markup in model output is shown as text');
  const payload = '<script>window.__xss=1</script> <img src=x onerror="window.__xss=2">';
  const before = errors.length;
  await send(page, payload);
  const s = await waitEnded(page);
  result('the answer ends with data-state=done', s.state === 'done', `state ${s.state}`);
  result('the model output contains the markup (the demo quotes the message)', s.raw.includes(payload));
  const found = await page.evaluate(() => {
    const all = document.querySelectorAll('article.msg.assistant');
    const a = all[all.length - 1];
    return {
      xss: typeof window.__xss,
      inAnswer: [...a.querySelectorAll('script, img, iframe, object, embed, svg, style, link')]
        .map((e) => e.tagName),
      inLog: document.querySelectorAll('#log script, #log img').length,
      text: a.querySelector('.content').textContent,
    };
  });
  result('window.__xss is undefined (nothing ran)', found.xss === 'undefined', `typeof ${found.xss}`);
  result('no script/img element inside the answer', found.inAnswer.length === 0 && found.inLog === 0,
    found.inAnswer.join(',') || `${found.inLog} in #log`);
  result('the markup appears literally in .content', found.text.includes(payload), short(found.text, 120));
  const csp = errors.slice(before).filter((e) => e.startsWith('CSP'));
  result('no Content-Security-Policy violation was reported (nothing tried to run)', csp.length === 0,
    csp.join('; '));
}

async function screenshot(page) {
  console.log('-- 5. screenshot');
  const png = await saveScreenshot(page, screenshotPath);
  const isPng = png.length > 8 && png.subarray(1, 4).toString('latin1') === 'PNG';
  result('screenshot saved', isPng && fs.existsSync(screenshotPath), `${png.length} bytes PNG`);
}

async function main() {
  console.log(`headless Chromium (${executablePath}) against ${origin}`);
  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
  console.log(`browser ${browser.version()}`);
  const errors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 800 } });
    const page = await openPage(context, origin, errors);
    const full = await typewriter(page);
    await connectionCut(context, errors);
    await stopButton(page, full.slice(-40));
    await xss(page, errors);
    await screenshot(page);
    const pageErrors = errors.filter((e) => e.startsWith('page error'));
    result('no uncaught script error on any page', pageErrors.length === 0, pageErrors.join('; '));
  } finally {
    await browser.close();
  }
}

await runChecks('browser chat', main, { deadlineMs: DEADLINE_MS });
