// Sluice chat page: POST /v1/streams, then an EventSource on events_url. The
// browser resumes a dropped connection itself with Last-Event-ID and the server
// replays exactly what came after it, so appending every delta is correct.

import { api, setKey, setKeyPrompt } from './api.js';
import { render, clear } from './markdown.js';

const $ = (id) => document.getElementById(id);
const log = $('log');
const promptEl = $('prompt');
const sendBtn = $('send');
const stopBtn = $('stop');
const newBtn = $('new');
const modelSel = $('model');
const statusEl = $('status');
const noticeEl = $('notice');
const keyForm = $('keyform');
const keyInput = $('apikey');

const conversation = [];
let cur = null;   // the answer being generated
let last = null;  // the answer the status line describes
let frame = 0;

const sluice = { lastStreamId: null, eventSource: null, conversation };
Object.defineProperty(sluice, 'text', { get: () => (last ? last.raw : ''), enumerable: true });
window.sluice = sluice;

function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

function notice(msg) {
  noticeEl.textContent = msg || '';
  noticeEl.hidden = !msg;
}

// ---- API key form ----

let keyWait = null;
let keyDone = null;
function askKey(message) {
  $('keymsg').textContent = message;
  keyForm.hidden = false;
  keyInput.focus();
  if (!keyWait) keyWait = new Promise((resolve) => { keyDone = resolve; });
  return keyWait;
}
function answerKey(key) {
  keyForm.hidden = true;
  keyInput.value = '';
  const done = keyDone;
  keyWait = keyDone = null;
  if (key) setKey(key);
  if (done) done(key);
  // A new key may belong to another team, and a list that failed without a key never filled
  // the picker: load it again (unless the load in flight is the one that asked for the key).
  if (key && !modelsLoading) loadModels();
  promptEl.focus();
}
keyForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const k = keyInput.value.trim();
  if (k) answerKey(k); else keyInput.focus();
});
$('keycancel').addEventListener('click', () => answerKey(null));
setKeyPrompt(askKey);

// ---- models ----

let modelsLoading = false;
async function loadModels() {
  modelsLoading = true;
  try {
    const list = await api('GET', '/v1/models');
    const ids = (Array.isArray(list && list.data) ? list.data : [])
      .map((m) => m && m.id).filter((id) => typeof id === 'string');
    if (!ids.length) { notice('No models are available.'); return; }
    const keep = modelSel.value;
    modelSel.replaceChildren(...ids.map((id) => new Option(id, id)));
    modelSel.value = ids.includes('sluice-demo') ? 'sluice-demo' : ids.includes(keep) ? keep : ids[0];
    notice('');
  } catch (e) {
    notice(`Could not load the model list. ${e.message}`);
  } finally {
    modelsLoading = false;
  }
}

// ---- status line ----

/** The status line in three pieces: before the token rate, the rate, after it. */
function statusParts(a) {
  if (!a) return ['ready', '', ''];
  let head = a.state;
  if (a.tFirst != null) head += ` · first token ${Math.round(a.tFirst - a.t0)} ms`;
  const tokens = a.usageTokens != null ? a.usageTokens : a.count;
  const end = a.tEnd != null ? a.tEnd : performance.now();
  let rate = '';
  if (a.tFirst != null && tokens > 1 && end - a.tFirst > 50) {
    rate = ` · ${(tokens / ((end - a.tFirst) / 1000)).toFixed(1)} tok/s`;
  }
  return [head, rate, a.reconnects ? ` · resumed ${a.reconnects}×` : ''];
}

// #status is the page's live region (aria-live="polite"), announced when the state or the
// first-token time changes -- not the answer, which would be read token by token. While an
// answer streams its token rate changes every frame, so the rate sits in an aria-hidden span;
// once the answer has ended it joins the announced text.
const statusHead = document.createTextNode('');
const statusRate = h('span', 'rate');
statusRate.setAttribute('aria-hidden', 'true');
const statusTail = document.createTextNode('');
statusEl.replaceChildren(statusHead, statusRate, statusTail);
function paintStatus() {
  let [head, rate, tail] = statusParts(last);
  if (!last || last.tEnd != null) { head += rate; rate = ''; }
  if (statusHead.data !== head) statusHead.data = head;
  if (statusRate.textContent !== rate) statusRate.textContent = rate;
  if (statusTail.data !== tail) statusTail.data = tail;
}
function setState(a, state) {
  a.state = state;
  if (state !== 'connecting' && state !== 'reconnecting') a.el.dataset.state = state;
  paintStatus();
}

// ---- rendering (at most once per animation frame) ----

const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 48;
const toBottom = () => { log.scrollTop = log.scrollHeight; };

function schedule() {
  if (!frame) frame = requestAnimationFrame(flush);
}
// `force`: the answer ended, paint everything now (a requestAnimationFrame call passes a number).
function flush(force) {
  if (frame) cancelAnimationFrame(frame);
  frame = 0;
  if (!last) return;
  const stick = nearBottom();
  const behind = paintAnswer(last, force === true);
  paintStatus();
  if (stick) toBottom();
  if (behind) schedule();
}

// Rendering costs about the last block of the answer (markdown.js re-parses only what can
// still change), but one huge block -- a long code listing, a wall of text -- is re-rendered
// whole. So after a render that took t ms the next one waits 3t: rendering never takes more
// than about a quarter of the main thread, however long the answer grows.
const RENDER_SHARE = 3;

/** Paints what changed; true if the text is still behind (rendering was deferred). */
function paintAnswer(a, force) {
  let behind = false;
  if (a.shown.length !== a.raw.length || a.shown !== a.raw) {
    const t0 = performance.now();
    if (force || t0 >= a.nextRender) {
      renderText(a);
      const t1 = performance.now();
      a.nextRender = t1 + Math.min(RENDER_SHARE * (t1 - t0), 2000);
    } else behind = true;
  }
  if (a.shownThinking !== a.thinking) {
    a.thinkingBox.hidden = !a.thinking;
    a.thinkingText.textContent = a.thinking;
    a.shownThinking = a.thinking;
  }
  if (a.toolsDirty) {
    a.toolsDirty = false;
    a.toolsBox.hidden = !a.tools.length;
    a.toolsBox.replaceChildren(...a.tools.filter(Boolean).map((t) => h('pre', 'tool', `${t.name}(${t.args})`)));
  }
  return behind;
}

/** Renders the answer's markdown; if that ever throws, the answer is shown as plain text. */
function renderText(a) {
  if (!a.plain) {
    try {
      render(a.content, a.raw);
      a.shown = a.raw;
      return;
    } catch (e) {
      console.error('markdown rendering failed; showing the answer as plain text', e);
      a.plain = true;
      clear(a.content);
      a.content.classList.add('plain');
      a.content.append(document.createTextNode(''));
    }
  }
  a.content.firstChild.data = a.raw;
  a.shown = a.raw;
}

// ---- answers ----

function newAnswer(messages) {
  const el = h('article', 'msg assistant');
  el.setAttribute('aria-label', 'Answer');
  const thinkingBox = h('details', 'thinking');
  thinkingBox.append(h('summary', '', 'Thinking'));
  const thinkingText = h('div', 'thinking-text');
  thinkingBox.append(thinkingText);
  const content = h('div', 'content');
  const toolsBox = h('div', 'tools');
  const meta = h('div', 'meta');
  el.append(thinkingBox, content, toolsBox, meta);
  log.append(el);
  return { el, content, thinkingBox, thinkingText, toolsBox, meta, messages };
}

function reset(a) {
  Object.assign(a, {
    id: null, es: null, raw: '', shown: '', thinking: '', shownThinking: null,
    tools: [], toolsDirty: true, count: 0, usageTokens: null, reconnects: 0,
    t0: performance.now(), tFirst: null, tEnd: null, final: false, plain: false, nextRender: 0,
  });
  clear(a.content);
  a.content.classList.remove('plain');
  a.meta.replaceChildren();
  a.el.setAttribute('aria-busy', 'true');
  a.el.dataset.state = 'streaming';
  delete a.el.dataset.reconnects;
}

function parseData(ev) {
  try { return JSON.parse(ev.data); } catch { return null; }
}

function firstToken(a) {
  if (a.tFirst == null) a.tFirst = performance.now();
}

async function start(a) {
  reset(a);
  cur = last = a;
  setBusy(true);
  setState(a, 'connecting');
  paintAnswer(a);
  let created;
  try {
    created = await api('POST', '/v1/streams', { model: modelSel.value, messages: a.messages });
  } catch (e) {
    if (!a.final) fail(a, e.message);
    return;
  }
  if (!created || typeof created.id !== 'string' || typeof created.events_url !== 'string') {
    if (!a.final) fail(a, 'The gateway answered without a stream id.');
    return;
  }
  a.id = created.id;
  sluice.lastStreamId = a.id;
  if (a.final) { // stopped while the request was in flight
    api('DELETE', `/v1/streams/${encodeURIComponent(a.id)}`).catch(() => {});
    return;
  }
  const es = new EventSource(created.events_url);
  a.es = es;
  sluice.eventSource = es;

  es.addEventListener('open', () => {
    if (!a.final) setState(a, 'streaming');
  });
  es.addEventListener('delta', (ev) => {
    const d = parseData(ev);
    if (a.final || !d || (d.index || 0) !== 0 || typeof d.text !== 'string') return;
    firstToken(a);
    a.raw += d.text;
    a.count++;
    if (a.state !== 'streaming') setState(a, 'streaming');
    schedule();
  });
  es.addEventListener('reasoning', (ev) => {
    const d = parseData(ev);
    if (a.final || !d || typeof d.text !== 'string') return;
    firstToken(a);
    a.thinking += d.text;
    schedule();
  });
  es.addEventListener('tool_call', (ev) => {
    const d = parseData(ev);
    if (a.final || !d) return;
    const i = Number.isInteger(d.index) && d.index >= 0 && d.index < 128 ? d.index : a.tools.length;
    const t = a.tools[i] || (a.tools[i] = { name: '', args: '' });
    if (typeof d.name === 'string' && d.name) t.name = d.name;
    if (typeof d.arguments === 'string') t.args += d.arguments;
    a.toolsDirty = true;
    schedule();
  });
  es.addEventListener('done', (ev) => {
    const d = parseData(ev) || {};
    if (a.final) return;
    const u = d.usage && d.usage.completion_tokens;
    if (Number.isFinite(u) && u > 0) a.usageTokens = u;
    const reason = d.finish_reason;
    finish(a, reason === 'cancelled' ? 'stopped' : 'done', reason);
  });
  es.addEventListener('failed', (ev) => {
    const d = parseData(ev) || {};
    if (a.final) return;
    fail(a, typeof d.message === 'string' && d.message ? d.message : 'The generation failed.', d.type);
  });
  es.addEventListener('error', () => {
    if (a.final) return;
    if (es.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself, sending Last-Event-ID: keep this EventSource.
      a.reconnects++;
      a.el.dataset.reconnects = String(a.reconnects);
      setState(a, 'reconnecting');
    } else {
      fail(a, a.raw
        ? 'The connection to the stream was lost and it could not be resumed.'
        : 'The event stream could not be opened.');
    }
  });
}

function end(a, state) {
  a.final = true;
  a.tEnd = performance.now();
  if (a.es) a.es.close();
  if (cur === a) cur = null;
  try {
    flush(true);
  } catch (e) {
    console.error(e); // the answer must still end, whatever painting it did
  }
  a.el.removeAttribute('aria-busy');
  setState(a, state);
  setBusy(false);
}

const MARKS = { length: 'cut off: length limit', content_filter: 'cut off: content filter' };

function finish(a, state, reason) {
  if (a.raw) conversation.push({ role: 'assistant', content: a.raw });
  end(a, state);
  const mark = state === 'stopped' ? 'stopped' : MARKS[reason];
  const stick = nearBottom();
  if (mark) a.meta.append(h('span', `mark ${state}`, mark));
  if (stick) toBottom();
}

function fail(a, message, type) {
  end(a, 'failed');
  const stick = nearBottom();
  const err = h('p', 'error', message);
  err.setAttribute('role', 'alert');
  if (type) err.title = type;
  const retry = h('button', 'retry', 'Retry');
  retry.type = 'button';
  retry.setAttribute('aria-label', 'Retry this answer');
  retry.addEventListener('click', () => {
    if (cur) return;
    start(a);
    promptEl.focus();
  });
  a.meta.append(err, retry);
  if (stick) toBottom();
}

async function stop() {
  const a = cur;
  if (!a || a.final) return;
  if (!a.id) { // nothing to cancel yet: stop locally, start() cancels once the id arrives
    finish(a, 'stopped', 'cancelled');
    return;
  }
  stopBtn.disabled = true;
  try {
    await api('DELETE', `/v1/streams/${encodeURIComponent(a.id)}`);
    // The server now sends done(cancelled); don't wait forever for it.
    setTimeout(() => { if (!a.final) finish(a, 'stopped', 'cancelled'); }, 5000);
  } catch (e) {
    if (a.final) return;
    if (e.status === 404) finish(a, 'stopped', 'cancelled');
    else { notice(`Could not stop: ${e.message}`); stopBtn.disabled = false; }
  }
}

function setBusy(busy) {
  const f = document.activeElement;
  const lose = (busy && f === sendBtn) || (!busy && f === stopBtn);
  stopBtn.hidden = !busy; // Stop takes Send's place while an answer streams
  stopBtn.disabled = false;
  sendBtn.hidden = busy;
  newBtn.disabled = busy;
  if (lose) promptEl.focus();
}

function addUser(text) {
  const el = h('article', 'msg user');
  el.setAttribute('aria-label', 'You');
  el.append(h('div', 'content', text));
  log.append(el);
}

function send() {
  if (cur) return;
  const text = promptEl.value.trim();
  if (!text) return;
  if (!modelSel.value) { notice('Pick a model first.'); return; }
  notice('');
  promptEl.value = '';
  autosize();
  for (const b of log.querySelectorAll('.retry')) b.remove();
  const empty = log.querySelector('.empty');
  if (empty) empty.remove();
  conversation.push({ role: 'user', content: text });
  addUser(text);
  const a = newAnswer(conversation.slice());
  toBottom();
  start(a);
}

function newChat() {
  if (cur) return;
  conversation.length = 0;
  last = null;
  log.replaceChildren(h('p', 'empty', 'New conversation.'));
  notice('');
  paintStatus();
  promptEl.focus();
}

function autosize() {
  promptEl.style.height = 'auto';
  promptEl.style.height = `${Math.min(promptEl.scrollHeight + 2, Math.round(innerHeight * 0.4))}px`;
}

// ---- copy buttons (event delegation; the buttons are rebuilt while streaming) ----

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = h('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.className = 'offscreen';
    document.body.append(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { /* unsupported */ }
    ta.remove();
    return ok;
  }
}

log.addEventListener('click', async (e) => {
  const btn = e.target instanceof Element ? e.target.closest('button.copy') : null;
  if (!btn) return;
  const code = btn.closest('.code').querySelector('pre code');
  const ok = await copyText(code ? code.textContent : '');
  btn.dataset.copied = ok ? 'yes' : 'no';
  btn.setAttribute('aria-label', ok ? 'Copied' : 'Copy failed');
  btn.focus();
  setTimeout(() => {
    delete btn.dataset.copied;
    btn.setAttribute('aria-label', 'Copy code');
  }, 1500);
});

// ---- wiring ----

$('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
promptEl.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    send();
  }
});
promptEl.addEventListener('input', autosize);
stopBtn.addEventListener('click', stop);
newBtn.addEventListener('click', newChat);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && cur && keyForm.hidden) { e.preventDefault(); stop(); }
});

loadModels();
promptEl.focus();
