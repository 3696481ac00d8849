// The chat page (web/, served at `/`) in headless Chromium against a real Sluice running with
// `[[teams]]`, driven with playwright-core:
//   1. first load: GET /v1/models answers 401, so the page asks for a key (#keyform); the right
//      key is kept in localStorage (sluice.apiKey), the model picker fills from /v1/models and a
//      message streams to `done` with the full answer (compared with the server's replay);
//   2. after a reload the stored key is used: no key form, no 401, a message streams to done;
//   3. a wrong key (typed, or left in localStorage) is answered 401: the page says the key was
//      not accepted and asks again; cancelling shows the 401 as a notice, and a message sent
//      then asks for the key again, continues with the right one and refreshes the model list;
//   4. rate limit (60 requests/minute, burst 2): messages sent quickly end in a clear
//      "Rate limited: try again in N s" (N = the 429's Retry-After) instead of a broken answer,
//      and the answer's Retry button after N s streams the full answer;
//   5. a team whose model globs match nothing the gateway serves: /v1/models is empty, the page
//      says so, and sending with the page's default model shows the 403 as a clear message.
// A screenshot of the rate-limited answer: test-artifacts/teams.png (repository root).
//
// Usage: node browser_teams.mjs BASE_URL CHROMIUM_PATH KEY_MAIN KEY_LIMITED KEY_NARROW
// where the three keys belong to teams configured as (the Rust wrapper writes this config):
//   main:    models = ["*"], no limits (the gateway also lists a second model, so the picker
//            visibly fills: it starts with the page's one built-in option)
//   limited: requests_per_minute = 60, request_burst = 2
//   narrow:  models = a glob that matches no served model
// Prints one PASS/FAIL line per check and exits non-zero if any check failed.

import { chromium } from 'playwright-core';
import {
  artifactPath, CHROMIUM_ARGS, result, runChecks, saveScreenshot, short as shortAt, sleep,
} from './lib.mjs';
import { replay as fetchReplay } from './sse.mjs';

const DEADLINE_MS = 90_000; // the whole script; normally it takes 10-20 s
const STEP_TIMEOUT_MS = 10_000; // a page reaction (form shown, response seen)
const ANSWER_TIMEOUT_MS = 30_000;
const MAX_QUICK_SENDS = 12; // burst 2 at 60/minute: a 429 must come long before this
const STORAGE_KEY = 'sluice.apiKey';

const [baseArg, chromiumArg, keyMain, keyLimited, keyNarrow] = process.argv.slice(2);
if (!baseArg || !chromiumArg || !keyMain || !keyLimited || !keyNarrow) {
  console.error('usage: node browser_teams.mjs BASE_URL CHROMIUM_PATH KEY_MAIN KEY_LIMITED KEY_NARROW');
  process.exit(2);
}
const origin = new URL(baseArg).origin;
const executablePath = chromiumArg;
const screenshotPath = artifactPath('teams.png');
// A key of the right shape that no team has.
const unknownKey = `sk-sluice-${'x'.repeat(43)}`;

const short = (s, n = 100) => shortAt(s, n);
/** Never prints a key itself, only which one it is. */
const whichKey = (auth) => {
  if (auth == null) return 'none';
  const k = auth.replace(/^Bearer /, '');
  return { [keyMain]: 'main', [keyLimited]: 'limited', [keyNarrow]: 'narrow', [unknownKey]: 'wrong' }[k] ||
    'other';
};

async function waitUntil(what, fn, timeout = STEP_TIMEOUT_MS) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(50);
  }
}

// ---- the server's side ----

/** The whole replay of stream `id`, as the server keeps it. */
const replay = (id) => fetchReplay(origin, id);

/** The model ids the server lists for `key`. */
async function serverModels(key) {
  const res = await fetch(`${origin}/v1/models`, {
    headers: { Authorization: `Bearer ${key}` },
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status !== 200) throw new Error(`GET /v1/models: ${res.status}`);
  return (await res.json()).data.map((m) => m.id);
}

// ---- the page ----

// Counts how often the key form is shown (a MutationObserver on its `hidden` attribute), so a
// form that appears and goes again between two samples is not missed.
function recordKeyForm() {
  window.__keyFormShown = 0;
  document.addEventListener('DOMContentLoaded', () => {
    const f = document.getElementById('keyform');
    let shown = !f.hidden;
    if (shown) window.__keyFormShown++;
    new MutationObserver(() => {
      if (!f.hidden && !shown) window.__keyFormShown++;
      shown = !f.hidden;
    }).observe(f, { attributes: true, attributeFilter: ['hidden'] });
  });
}

/** A new page that records every /v1 response: method, path, status, key sent, Retry-After. */
async function newPage(context, errors) {
  const page = await context.newPage();
  const net = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) errors.push(`CSP: ${m.text()}`);
  });
  page.on('response', async (res) => {
    const url = new URL(res.url());
    if (!url.pathname.startsWith('/v1/') || url.pathname.endsWith('/events')) return;
    const entry = { method: res.request().method(), path: url.pathname, status: res.status(), ready: false };
    net.push(entry);
    try {
      const [req, hdrs] = await Promise.all([res.request().allHeaders(), res.allHeaders()]);
      entry.key = whichKey(req.authorization ?? null);
      entry.retryAfter = hdrs['retry-after'] ?? null;
    } catch { /* the page went away */ }
    entry.ready = true;
  });
  await page.addInitScript(recordKeyForm);
  return { page, net };
}

/** The first recorded response at or after `from` matching method, path and status. */
function seen(net, from, method, pathRe, status) {
  return net.slice(from).find((e) => e.ready && e.method === method && pathRe.test(e.path) &&
    (status === undefined || e.status === status));
}
const MODELS = /^\/v1\/models$/;
const STREAMS = /^\/v1\/streams$/;
const fmt = (e) => (e ? `${e.method} ${e.path} -> ${e.status}, key ${e.key}` : 'none');

function pageState(page) {
  return page.evaluate((storageKey) => {
    const $ = (id) => document.getElementById(id);
    const all = document.querySelectorAll('article.msg.assistant');
    const a = all[all.length - 1];
    const err = a ? a.querySelector('.meta .error') : null;
    return {
      formVisible: !$('keyform').hidden,
      formShown: window.__keyFormShown,
      keyMsg: $('keymsg').textContent,
      keyInput: $('apikey').value,
      focus: document.activeElement ? document.activeElement.id : null,
      stored: localStorage.getItem(storageKey),
      notice: $('notice').hidden ? '' : $('notice').textContent,
      options: [...$('model').options].map((o) => o.value),
      model: $('model').value,
      html: document.documentElement.outerHTML,
      answers: all.length,
      state: a ? a.dataset.state : null,
      content: a ? a.querySelector('.content').textContent : '',
      raw: window.sluice ? window.sluice.text : '',
      streamId: window.sluice ? window.sluice.lastStreamId : null,
      error: err ? err.textContent : null,
      errorRole: err ? err.getAttribute('role') : null,
      retryVisible: !!(a && a.querySelector('.meta .retry')),
      sendVisible: !$('send').hidden,
      status: $('status').textContent.trim(),
    };
  }, STORAGE_KEY);
}

const formVisible = (page) => page.evaluate(() => !document.getElementById('keyform').hidden);

async function enterKey(page, key) {
  await page.fill('#apikey', key);
  await page.press('#apikey', 'Enter');
}

/** Types `text` into #prompt and presses Enter; resolves once the new answer exists. */
async function send(page, text) {
  const before = await page.locator('article.msg.assistant').count();
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
  await page.waitForFunction(
    (n) => document.querySelectorAll('article.msg.assistant').length > n,
    before,
    { timeout: STEP_TIMEOUT_MS },
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
  return pageState(page);
}

/** Checks that the last answer ended done and equals the server's replay of its stream. */
async function checkFullAnswer(s, what) {
  result(`${what}: the answer ends with data-state=done`, s.state === 'done' && /^done\b/.test(s.status),
    `state ${s.state}, status ${short(s.status)}`);
  const full = await replay(s.streamId);
  result(`${what}: the server replay ends with done / finish_reason stop`,
    full.last.event === 'done' && full.last.data?.finish_reason === 'stop', JSON.stringify(full.last));
  result(`${what}: window.sluice.text equals the full answer from the events URL`,
    s.raw === full.text && full.text.startsWith('Hello from Sluice!') && s.content.length > 0,
    `${s.raw.length} vs ${full.text.length} chars`);
}

// ---- scenarios ----

async function firstLoad(context, errors) {
  console.log('-- 1. first load asks for a key; the right key is kept and used');
  const { page, net } = await newPage(context, errors);
  await page.goto(`${origin}/`, { waitUntil: 'load' });
  await waitUntil('the key form', () => formVisible(page));
  let s = await pageState(page);
  const first = seen(net, 0, 'GET', MODELS);
  result('GET /v1/models without a key answered 401', first && first.status === 401 && first.key === 'none',
    fmt(first));
  result('the key form (#keyform) is shown and says a key is needed',
    s.formVisible && /needs an API key/i.test(s.keyMsg), short(s.keyMsg));
  result('the key field has the focus', s.focus === 'apikey', `focus on #${s.focus}`);
  result('nothing is stored yet', s.stored === null, `stored ${s.stored === null ? 'nothing' : 'a key'}`);
  const staticOptions = s.options;

  const mark = net.length;
  await enterKey(page, keyMain);
  const ok = await waitUntil('GET /v1/models -> 200', () => seen(net, mark, 'GET', MODELS, 200));
  await waitUntil('the picker to fill', async () => (await pageState(page)).options.length > 1, 5_000)
    .catch(() => {});
  s = await pageState(page);
  result('GET /v1/models was retried with the key and answered 200', ok.key === 'main', fmt(ok));
  result('the key form is hidden again', !s.formVisible);
  result(`the key is stored in localStorage (${STORAGE_KEY})`, s.stored === keyMain,
    s.stored === null ? 'nothing stored' : `stored ${whichKey(`Bearer ${s.stored}`)} key`);
  result('the key is not left in the page (input cleared, not in the DOM)',
    s.keyInput === '' && !s.html.includes(keyMain));
  const listed = await serverModels(keyMain);
  result('the model picker holds the models the server lists for the team',
    JSON.stringify(s.options) === JSON.stringify(listed) && listed.length > staticOptions.length,
    `picker ${JSON.stringify(s.options)} (before: ${JSON.stringify(staticOptions)}), server ${JSON.stringify(listed)}`);
  result('sluice-demo is selected', s.model === 'sluice-demo', `selected ${s.model}`);
  result('no notice is shown', s.notice === '', short(s.notice));
  const loads = net.slice(mark).filter((e) => e.method === 'GET' && MODELS.test(e.path));
  result('the model list was asked for once with the key (no second load)',
    loads.length === 1 && loads[0].status === 200, loads.map(fmt).join('; '));

  const before = net.length;
  await send(page, 'Hello from a team member.');
  s = await waitEnded(page);
  const post = seen(net, before, 'POST', STREAMS);
  result('POST /v1/streams carried the key and answered 201', post && post.status === 201 && post.key === 'main',
    fmt(post));
  await checkFullAnswer(s, 'first message');
  return { page, net };
}

async function reload(page, net) {
  console.log('-- 2. after a reload the stored key is used');
  const mark = net.length;
  await page.reload({ waitUntil: 'load' });
  const ok = await waitUntil('GET /v1/models after the reload',
    () => seen(net, mark, 'GET', MODELS));
  await sleep(300); // give a key form that would follow a 401 time to appear
  let s = await pageState(page);
  result('GET /v1/models sent the stored key and answered 200', ok.status === 200 && ok.key === 'main', fmt(ok));
  result('no 401 after the reload', !net.slice(mark).some((e) => e.status === 401),
    net.slice(mark).map(fmt).join('; '));
  result('the key form was never shown', s.formShown === 0 && !s.formVisible, `shown ${s.formShown}×`);
  result('the picker is filled again', s.options.length > 1 && s.model === 'sluice-demo',
    JSON.stringify(s.options));
  const before = net.length;
  await send(page, 'Still there after a reload?');
  s = await waitEnded(page);
  const post = seen(net, before, 'POST', STREAMS);
  result('POST /v1/streams used the stored key', post && post.status === 201 && post.key === 'main', fmt(post));
  await checkFullAnswer(s, 'after reload');
  result('no key form during the answer either', s.formShown === 0, `shown ${s.formShown}×`);
}

async function wrongKey(context, errors) {
  console.log('-- 3. a wrong key is refused with a clear message and the page asks again');
  const { page, net } = await newPage(context, errors);
  await page.goto(`${origin}/`, { waitUntil: 'load' });
  await waitUntil('the key form', () => formVisible(page));

  // a. Typed into the form.
  let mark = net.length;
  await enterKey(page, keyMain.slice(0, -1) + (keyMain.endsWith('A') ? 'B' : 'A'));
  const bad = await waitUntil('a second 401', () => seen(net, mark, 'GET', MODELS, 401));
  await waitUntil('the key form again', async () => (await pageState(page)).formShown >= 2);
  let s = await pageState(page);
  result('the wrong key was sent and answered 401', bad.key === 'other', fmt(bad));
  result('the form asks again and says the key was not accepted, with the server\'s reason',
    s.formVisible && /not accepted/i.test(s.keyMsg) && /Incorrect API key/i.test(s.keyMsg), short(s.keyMsg));
  result('the key field is empty and has the focus', s.keyInput === '' && s.focus === 'apikey',
    `focus on #${s.focus}`);

  // b. Cancel: the 401 stays visible as a notice.
  await page.click('#keycancel');
  await waitUntil('a notice', async () => (await pageState(page)).notice !== '');
  s = await pageState(page);
  result('cancelling hides the form and shows the 401 as a notice',
    !s.formVisible && /Unauthorized/.test(s.notice) && /Incorrect API key/i.test(s.notice), short(s.notice));

  // c. Sending a message now asks for the key again; the right one lets the message through
  //    and the model list, which could not load before, is loaded.
  mark = net.length;
  await send(page, 'Sent before the key was right.');
  await waitUntil('the key form on send', () => formVisible(page));
  s = await pageState(page);
  const refused = seen(net, mark, 'POST', STREAMS);
  result('the message was refused with 401 and the form asks again', refused && refused.status === 401 &&
    /not accepted/i.test(s.keyMsg), `${fmt(refused)}; ${short(s.keyMsg)}`);
  await enterKey(page, keyMain);
  s = await waitEnded(page);
  const accepted = seen(net, mark, 'POST', STREAMS, 201);
  result('the message went through with the right key', accepted && accepted.key === 'main', fmt(accepted));
  await checkFullAnswer(s, 'after the wrong key');
  const models = await waitUntil('GET /v1/models -> 200', () => seen(net, mark, 'GET', MODELS, 200), 5_000)
    .catch(() => null);
  s = await pageState(page);
  result('the model list was loaded with the accepted key', models && models.key === 'main' &&
    s.options.length > 1 && s.notice === '', `${fmt(models)}; picker ${JSON.stringify(s.options)}`);
  result('the right key replaced the wrong one in localStorage', s.stored === keyMain);

  // d. A wrong key left in localStorage: asked at load, with the reason.
  await page.evaluate(([k, v]) => localStorage.setItem(k, v), [STORAGE_KEY, unknownKey]);
  mark = net.length;
  await page.reload({ waitUntil: 'load' });
  await waitUntil('the key form', () => formVisible(page));
  s = await pageState(page);
  const stale = seen(net, mark, 'GET', MODELS);
  result('a stored wrong key is answered 401 and the form asks for another', stale && stale.status === 401 &&
    stale.key === 'wrong' && /not accepted/i.test(s.keyMsg), `${fmt(stale)}; ${short(s.keyMsg)}`);
  await enterKey(page, keyMain);
  const ok = await waitUntil('GET /v1/models -> 200', () => seen(net, mark, 'GET', MODELS, 200));
  s = await pageState(page);
  result('the right key then loads the models and is stored', ok.key === 'main' && !s.formVisible &&
    s.stored === keyMain, fmt(ok));
  await page.close();
}

async function rateLimit(context, errors) {
  console.log('-- 4. rate limit: messages sent quickly get "try again in N s"');
  const { page, net } = await newPage(context, errors);
  await page.goto(`${origin}/`, { waitUntil: 'load' });
  await waitUntil('the key form', () => formVisible(page));
  let mark = net.length;
  await enterKey(page, keyLimited);
  await waitUntil('GET /v1/models -> 200', () => seen(net, mark, 'GET', MODELS, 200));

  let s;
  const states = [];
  let limited = null;
  for (let i = 1; i <= MAX_QUICK_SENDS; i++) {
    mark = net.length;
    await send(page, `Quick message ${i}.`);
    s = await waitEnded(page);
    states.push(s.state);
    if (s.state === 'failed') {
      limited = await waitUntil('the POST response', () => seen(net, mark, 'POST', STREAMS));
      break;
    }
  }
  console.log(`  answers: ${states.join(' ')}`);
  result('the first two messages (the burst) were answered', states[0] === 'done' && states[1] === 'done',
    states.join(' '));
  result('a quick message got 429 with Retry-After', limited && limited.status === 429 &&
    /^\d+$/.test(limited.retryAfter ?? '') && Number(limited.retryAfter) >= 1,
    limited ? `${fmt(limited)}, Retry-After ${limited.retryAfter}` : `no 429 in ${states.length} messages`);
  if (!limited || limited.status !== 429) return;
  const m = /Rate limited: try again in (\d+) s\b/.exec(s.error || '');
  result('the answer shows "Rate limited: try again in N s" with N from Retry-After',
    m && m[1] === limited.retryAfter, short(s.error || 'no error shown'));
  result('the message is an alert (role=alert)', s.errorRole === 'alert');
  result('no broken answer: no text, data-state=failed, status failed',
    s.content === '' && s.raw === '' && s.state === 'failed' && /^failed\b/.test(s.status),
    `content ${short(s.content)}, state ${s.state}, status ${short(s.status)}`);
  result('the page is usable again (Send back, a Retry button)', s.sendVisible && s.retryVisible);
  result('a 429 does not ask for a key or drop the stored one', !s.formVisible && s.formShown === 1 &&
    s.stored === keyLimited, `form shown ${s.formShown}×`);
  await screenshot(page);

  // Retry-After is accurate: the answer's Retry button after N s gets through.
  await sleep(Number(limited.retryAfter) * 1000 + 100);
  mark = net.length;
  await page.locator('article.msg.assistant').last().locator('.retry').click();
  const again = await waitUntil('the retried POST', () => seen(net, mark, 'POST', STREAMS));
  s = await waitEnded(page);
  result(`Retry after ${limited.retryAfter} s is admitted`, again.status === 201, fmt(again));
  if (again.status === 201) await checkFullAnswer(s, 'the retried message');
  await page.close();
}

async function forbiddenModel(context, errors) {
  console.log('-- 5. a model outside the team\'s globs');
  const { page, net } = await newPage(context, errors);
  await page.goto(`${origin}/`, { waitUntil: 'load' });
  await waitUntil('the key form', () => formVisible(page));
  let mark = net.length;
  await enterKey(page, keyNarrow);
  const ok = await waitUntil('GET /v1/models -> 200', () => seen(net, mark, 'GET', MODELS, 200));
  await waitUntil('a notice', async () => (await pageState(page)).notice !== '', 5_000).catch(() => {});
  let s = await pageState(page);
  result('/v1/models lists nothing for the team and the page says so',
    (await serverModels(keyNarrow)).length === 0 && /No models are available/.test(s.notice),
    `${fmt(ok)}; notice ${short(s.notice)}; picker ${JSON.stringify(s.options)}`);
  if (!s.options.length) {
    // The page offers no model: nothing it can send reaches the 403.
    console.log('  the picker is empty: the page cannot ask for a forbidden model');
    await page.close();
    return;
  }
  // The picker still holds the page's built-in default (sluice-demo), which the team may not use.
  mark = net.length;
  await send(page, 'May I use this model?');
  s = await waitEnded(page);
  const post = seen(net, mark, 'POST', STREAMS);
  result(`sending with ${s.model} is answered 403`, post && post.status === 403 && post.key === 'narrow', fmt(post));
  result('the answer shows a clear "Forbidden" message naming the model',
    /^Forbidden: .*may not use the model/.test(s.error || '') && s.errorRole === 'alert', short(s.error || 'none'));
  result('no broken answer and no key prompt for a 403', s.content === '' && s.state === 'failed' &&
    !s.formVisible && s.formShown === 1 && s.stored === keyNarrow, `state ${s.state}, form shown ${s.formShown}×`);
  await page.close();
}

async function screenshot(page) {
  await saveScreenshot(page, screenshotPath);
}

async function main() {
  console.log(`headless Chromium (${executablePath}) against ${origin} (teams)`);
  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
  console.log(`browser ${browser.version()}`);
  const errors = [];
  // Each scenario gets its own browser context: its own, empty localStorage.
  const fresh = () => browser.newContext({ viewport: { width: 900, height: 800 } });
  try {
    const { page, net } = await firstLoad(await fresh(), errors);
    await reload(page, net);
    await page.close();
    await wrongKey(await fresh(), errors);
    await rateLimit(await fresh(), errors);
    await forbiddenModel(await fresh(), errors);
    const pageErrors = errors.filter((e) => e.startsWith('page error') || e.startsWith('CSP'));
    result('no uncaught script error or CSP violation on any page', pageErrors.length === 0,
      pageErrors.join('; '));
  } finally {
    await browser.close();
  }
}

await runChecks('browser teams', main, { deadlineMs: DEADLINE_MS });
