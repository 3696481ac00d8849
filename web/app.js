// Sluice chat page: POST /v1/streams, then an EventSource on events_url. The
// browser resumes a dropped connection itself with Last-Event-ID and the server
// replays exactly what came after it, so appending every delta is correct.
//
// A reload (or a closed and reopened tab) is a dropped connection the browser does not
// resume: the conversation is kept in localStorage (store.js), together with the id of the
// stream of an answer in progress and the id of the last event already in its kept text. On
// load the page shows the conversation again and reads that stream from the next event
// (?last_event_id=N), so the answer continues where it was: nothing lost, nothing doubled.

import { api, setKey, setKeyPrompt } from './api.js';
import { render, clear } from './markdown.js';
import { createStore, newId, conversationKey } from './store.js';
import { createHistory } from './history.js';

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
const persistNotice = $('persist-notice');

const conversation = []; // the messages sent as context: questions and answers that ended
let cur = null;   // the answer being generated
let last = null;  // the answer the status line describes
let frame = 0;
let leaving = false; // the page is being unloaded (reload, closed tab)

// Storage can be missing or throw at the mere mention of localStorage (blocked site data).
let storage = null;
let session = null;
try { storage = window.localStorage; } catch { storage = null; }
try { session = window.sessionStorage; } catch { session = null; }
const store = createStore(storage, {
  session,
  onDisabled: (why) => {
    // Said once (the store calls this once), in its own line so other notices don't hide it.
    persistNotice.textContent = why === 'full'
      ? 'Browser storage is full: conversations are not kept any more, a reload will lose them.'
      : 'Browser storage is not available: conversations are not kept, a reload will lose them.';
    persistNotice.hidden = false;
  },
});
// The conversation shown: {id, model, title, turns, pending} as store.js keeps it.
let conv = blankConversation();
const recentList = createHistory($('recent'), { onOpen: openConversation, onDelete: deleteConversation });

const sluice = { lastStreamId: null, eventSource: null, conversation, store };
Object.defineProperty(sluice, 'text', { get: () => (last ? last.raw : ''), enumerable: true });
Object.defineProperty(sluice, 'conversationId', { get: () => conv.id, enumerable: true });
Object.defineProperty(sluice, 'turns', { get: () => conv.turns, enumerable: true });
Object.defineProperty(sluice, 'lastEventId', { get: () => (last ? last.lastEventId : null), enumerable: true });
window.sluice = sluice;

function blankConversation() {
  return { id: newId(), model: null, title: '', turns: [], pending: null };
}

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
    const want = conv.model; // a restored conversation goes on with the model it used
    modelSel.value = ids.includes(want) ? want
      : ids.includes('sluice-demo') ? 'sluice-demo' : ids.includes(keep) ? keep : ids[0];
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

function newAnswer(messages, turn) {
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
  return { el, content, thinkingBox, thinkingText, toolsBox, meta, messages, turn, lastEventId: null };
}

function reset(a) {
  Object.assign(a, {
    id: null, es: null, raw: '', shown: '', lastEventId: null, resumed: false, events: 0, thinking: '', shownThinking: null,
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

// ---- persistence of the answer in progress ----

// What a reload needs of an answer in progress, written in one record with the conversation:
// its text so far and the id of the last event that text includes (a consistent pair, so a
// resume from that id neither repeats nor skips a piece). Written at most every SAVE_MS while
// it streams -- a reload then replays the few events after the pair -- and at once when the
// answer starts, ends, or the page is hidden or unloaded.
const SAVE_MS = 200;
let saveTimer = 0;

function saveAnswer(a) {
  if (saveTimer) { clearTimeout(saveTimer); saveTimer = 0; }
  const t = a.turn;
  if (!t || conv.turns[conv.turns.length - 1] !== t) return; // no longer the conversation shown
  t.content = a.raw;
  if (t.state === 'streaming') {
    conv.pending = {
      turn: conv.turns.indexOf(t), streamId: a.id, lastEventId: a.lastEventId,
      thinking: a.thinking, tools: a.tools.filter(Boolean),
    };
  } else {
    conv.pending = null;
    t.thinking = a.thinking || undefined;
    t.tools = a.tools.some(Boolean) ? a.tools.filter(Boolean) : undefined;
  }
  saveConversation();
}

function saveSoon(a) {
  if (!saveTimer) saveTimer = setTimeout(() => { saveTimer = 0; saveAnswer(a); }, SAVE_MS);
}

function saveConversation() {
  if (!conv.turns.length) return; // an empty conversation is not worth a row in the list
  conv.model = conv.model || modelSel.value;
  store.save(conv);
  store.setCurrent(conv.id);
}

/** Marks that event `ev` (now applied to `a`) is in the answer's text; saves soon. */
function seen(a, ev) {
  a.events++;
  const n = Number(ev.lastEventId);
  if (ev.lastEventId !== '' && Number.isSafeInteger(n)) a.lastEventId = n;
  saveSoon(a);
}

// ---- streaming ----

async function start(a) {
  reset(a);
  cur = last = a;
  setBusy(true);
  setState(a, 'connecting');
  paintAnswer(a);
  if (a.turn) {
    a.turn.state = 'streaming';
    delete a.turn.note;
    delete a.turn.mark;
    saveAnswer(a);
  }
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
  saveAnswer(a); // the stream id: from now on a reload can resume this answer
  refreshHistory();
  listen(a, created.events_url);
}

/**
 * Goes on with an answer that was streaming when the page was left: its kept text is shown,
 * then the events after `lastEventId` (the whole stream when none was kept) are appended.
 */
function resume(a, streamId, lastEventId) {
  cur = last = a;
  a.id = streamId;
  a.lastEventId = lastEventId;
  a.resumed = true;
  sluice.lastStreamId = streamId;
  setBusy(true);
  setState(a, 'connecting');
  let url = `/v1/streams/${encodeURIComponent(streamId)}/events`;
  if (lastEventId != null) url += `?last_event_id=${encodeURIComponent(lastEventId)}`;
  listen(a, url);
}

function listen(a, url) {
  // A reconnect of this EventSource sends Last-Event-ID, which the server prefers to the
  // ?last_event_id= of a resumed answer's URL: the reconnect goes on from the right place.
  const es = new EventSource(url);
  a.es = es;
  sluice.eventSource = es;

  es.addEventListener('open', () => {
    if (!a.final) setState(a, 'streaming');
  });
  es.addEventListener('delta', (ev) => {
    const d = parseData(ev);
    if (a.final) return;
    if (d && (d.index || 0) === 0 && typeof d.text === 'string') {
      firstToken(a);
      a.raw += d.text;
      a.count++;
      if (a.state !== 'streaming') setState(a, 'streaming');
      schedule();
    }
    seen(a, ev);
  });
  es.addEventListener('reasoning', (ev) => {
    const d = parseData(ev);
    if (a.final) return;
    if (d && typeof d.text === 'string') {
      firstToken(a);
      a.thinking += d.text;
      schedule();
    }
    seen(a, ev);
  });
  es.addEventListener('tool_call', (ev) => {
    const d = parseData(ev);
    if (a.final) return;
    if (d) {
      const i = Number.isInteger(d.index) && d.index >= 0 && d.index < 128 ? d.index : a.tools.length;
      const t = a.tools[i] || (a.tools[i] = { name: '', args: '' });
      if (typeof d.name === 'string' && d.name) t.name = d.name;
      if (typeof d.arguments === 'string') t.args += d.arguments;
      a.toolsDirty = true;
      schedule();
    }
    seen(a, ev);
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
    if (a.final || leaving) return;
    if (es.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself, sending Last-Event-ID: keep this EventSource.
      a.reconnects++;
      a.el.dataset.reconnects = String(a.reconnects);
      setState(a, 'reconnecting');
    } else if (a.resumed && !a.events) {
      // The kept stream is gone (404: unknown or past its retention) or refused: keep the
      // text the page had and say the answer was cut short.
      interrupt(a);
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
  if (a.turn) {
    a.turn.state = state;
    saveAnswer(a);
    refreshHistory();
  }
}

const MARKS = {
  length: 'cut off: length limit', content_filter: 'cut off: content filter', cancelled: 'stopped',
};

function finish(a, state, reason) {
  if (a.raw) conversation.push({ role: 'assistant', content: a.raw });
  const mark = state === 'stopped' ? 'stopped' : MARKS[reason];
  if (a.turn && mark) a.turn.mark = mark;
  end(a, state);
  showMark(a, state, mark);
}

function fail(a, message, type) {
  if (a.turn) a.turn.note = message;
  end(a, 'failed');
  showError(a, message, type);
}

/** The answer's stream can no longer be read (after a reload): it keeps its text. */
function interrupt(a) {
  if (a.turn) a.turn.mark = 'interrupted';
  end(a, 'interrupted');
  showMark(a, 'interrupted', 'interrupted');
  showRetry(a);
}

function showMark(a, state, mark) {
  const stick = nearBottom();
  if (mark) {
    const m = h('span', `mark ${state}`, mark);
    if (state === 'interrupted') m.title = 'The answer was cut short: its stream is no longer available.';
    a.meta.append(m);
  }
  if (stick) toBottom();
}

function showError(a, message, type) {
  const stick = nearBottom();
  const err = h('p', 'error', message);
  err.setAttribute('role', 'alert');
  if (type) err.title = type;
  a.meta.append(err);
  showRetry(a);
  if (stick) toBottom();
}

function showRetry(a) {
  const retry = h('button', 'retry', 'Retry');
  retry.type = 'button';
  retry.setAttribute('aria-label', 'Retry this answer');
  retry.addEventListener('click', () => {
    if (cur) return;
    start(a);
    promptEl.focus();
  });
  a.meta.append(retry);
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
  refreshHistory();
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
  conv.model = modelSel.value;
  conv.turns.push({ role: 'user', content: text });
  const turn = { role: 'assistant', content: '', state: 'streaming' };
  conv.turns.push(turn);
  const a = newAnswer(conversation.slice(), turn);
  toBottom();
  start(a);
}

function newChat() {
  if (cur) return;
  showConversation(blankConversation());
  store.setCurrent(null); // a reload shows the new, empty conversation
  refreshHistory();
  notice('');
  promptEl.focus();
}

// ---- kept conversations ----

/** The messages a model is sent as context from `turns`: questions, and answers that ended. */
function contextOf(turns) {
  return turns
    .filter((t) => t.role === 'user' ||
      (t.role === 'assistant' && (t.state === 'done' || t.state === 'stopped') && t.content))
    .map((t) => ({ role: t.role, content: t.content }));
}

/**
 * Shows conversation `c` in place of the page's one. With `resume`, an answer that was
 * streaming goes on from its stream (this tab owns it now); without, it is only drawn
 * (another tab streams it and its saves are drawn as they come).
 */
function showConversation(c, { resume: goOn = false } = {}) {
  if (frame) { cancelAnimationFrame(frame); frame = 0; }
  if (saveTimer) { clearTimeout(saveTimer); saveTimer = 0; }
  conv = c;
  last = null;
  conversation.splice(0, conversation.length, ...contextOf(c.turns));
  log.replaceChildren();
  if (!c.turns.length) log.append(h('p', 'empty', 'New conversation.'));
  if (c.model && [...modelSel.options].some((o) => o.value === c.model)) modelSel.value = c.model;
  c.turns.forEach((t, i) => {
    if (t.role === 'user') { addUser(t.content); return; }
    const isLast = i === c.turns.length - 1;
    const a = newAnswer(contextOf(c.turns.slice(0, i)), t);
    reset(a);
    const p = isLast && t.state === 'streaming' ? c.pending : null;
    a.raw = t.content || '';
    a.thinking = (p ? p.thinking : t.thinking) || '';
    a.tools = ((p ? p.tools : t.tools) || []).map((x) => ({ name: String(x.name || ''), args: String(x.args || '') }));
    paintAnswer(a, true);
    last = a;
    if (t.state === 'streaming' && isLast) {
      if (!goOn) { a.state = 'streaming'; return; }
      if (p && p.streamId) resume(a, p.streamId, Number.isSafeInteger(p.lastEventId) ? p.lastEventId : null);
      else interrupt(a); // left before the gateway named the stream: it cannot be found again
      return;
    }
    // An answer that ended, or one left streaming by a tab that is gone (not the last turn).
    const state = t.state === 'streaming' ? 'interrupted' : t.state || 'done';
    a.final = true;
    a.el.removeAttribute('aria-busy');
    a.el.dataset.state = state;
    a.state = state;
    showMark(a, state, t.mark || (state === 'interrupted' ? 'interrupted' : ''));
    if (state === 'failed') {
      const err = h('p', 'error', t.note || 'The generation failed.');
      a.meta.append(err);
    }
    if (isLast && (state === 'failed' || state === 'interrupted')) showRetry(a);
  });
  paintStatus();
  toBottom();
}

function openConversation(id) {
  if (cur || id === conv.id) return;
  const c = store.load(id);
  if (!c) { refreshHistory(); return; }
  showConversation(c, { resume: true });
  store.setCurrent(c.id);
  refreshHistory();
  promptEl.focus();
}

function deleteConversation(id) {
  if (cur) return;
  store.remove(id);
  if (id === conv.id) newChat(); else refreshHistory();
}

function refreshHistory() {
  recentList.render(store.list(), conv.id, !!cur);
}

// Another tab wrote a conversation (the event fires in every other tab of this origin).
// The list is redrawn; the conversation shown here is redrawn from storage unless this tab
// is streaming into it -- then this tab's own saves win, and this tab never writes what it
// did not change, so it never puts back an older copy over the other tab's.
let otherTabTimer = 0;
window.addEventListener('storage', (e) => {
  const id = e.key === null ? null : conversationKey(e.key);
  if (e.key !== null && !id) return;
  clearTimeout(otherTabTimer);
  otherTabTimer = setTimeout(() => {
    refreshHistory();
    if (cur || (id && id !== conv.id)) return;
    const c = store.load(conv.id);
    if (c) showConversation(c);
    else if (conv.turns.length) showConversation(blankConversation()); // deleted over there
  }, 100);
});

// A reload, a closed tab, a phone discarding a background tab: save the answer in progress
// now rather than up to SAVE_MS later. While the page goes away the browser cuts its event
// stream, and that error must not be kept as the answer's end: the next page resumes it.
// Chromium cuts it between beforeunload and pagehide, so both set the flag. No timer clears
// it (a slow reload keeps the old page alive for a while); the user touching the page again
// does, as does a return from the back-forward cache. A cut ignored by mistake costs nothing
// kept: the stored answer is still "streaming", which a later load resumes.
window.addEventListener('beforeunload', () => { leaving = true; });
for (const type of ['pointerdown', 'keydown']) {
  document.addEventListener(type, () => { leaving = false; }, { capture: true, passive: true });
}
window.addEventListener('pagehide', () => { leaving = true; if (cur) saveAnswer(cur); });
window.addEventListener('pageshow', () => { leaving = false; }); // back from the bfcache
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden' && cur) saveAnswer(cur);
});

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

modelSel.addEventListener('change', () => {
  if (conv.turns.length && !cur) { conv.model = modelSel.value; store.save(conv); refreshHistory(); }
});

// The conversation this tab showed last (or the one last chosen in any tab), as it was.
{
  const id = store.current();
  const c = id ? store.load(id) : null;
  if (c) showConversation(c, { resume: true });
  refreshHistory();
}
loadModels();
promptEl.focus();
