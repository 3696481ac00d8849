// The chat page's storage module (web/store.js) over a fake Storage: save and load, the recent
// list's order and bound, delete, a full storage (QuotaExceededError), a disabled one, and two
// tabs writing at once.

import test from 'node:test';
import assert from 'node:assert/strict';
import { createStore, titleOf, conversationKey, MAX_CONVERSATIONS } from '../../web/store.js';

/** A Storage-like object over a Map; `quota` bounds the total characters of keys and values. */
class FakeStorage {
  constructor(quota = Infinity) { this.m = new Map(); this.quota = quota; this.writes = 0; }
  get length() { return this.m.size; }
  key(i) { return [...this.m.keys()][i] ?? null; }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) {
    v = String(v);
    let used = k.length + v.length;
    for (const [k2, v2] of this.m) if (k2 !== k) used += k2.length + v2.length;
    if (used > this.quota) {
      const e = new Error('quota'); e.name = 'QuotaExceededError'; e.code = 22; throw e;
    }
    this.writes++;
    this.m.set(k, v);
  }
  removeItem(k) { this.m.delete(k); }
}

/** A storage whose every call throws, as Safari's private mode of old or blocked cookies. */
const throwing = new Proxy({}, {
  get() { throw Object.assign(new Error('denied'), { name: 'SecurityError' }); },
});

function clock() {
  let t = 1000;
  return () => ++t;
}

const conv = (id, ...questions) => ({
  id,
  model: 'm',
  turns: questions.flatMap((q) => [{ role: 'user', content: q }, { role: 'assistant', content: `re ${q}`, state: 'done' }]),
  pending: null,
});

test('save and load: every turn, the model, a title from the first question, the pending answer', () => {
  const s = createStore(new FakeStorage(), { now: clock() });
  assert.equal(s.enabled, true);
  const c = conv('a', 'What is  a\nsluice?', 'And a weir?');
  c.turns.push({ role: 'user', content: 'third' }, { role: 'assistant', content: 'hal', state: 'streaming' });
  c.pending = { turn: 5, streamId: 'st1', lastEventId: 7, thinking: '', tools: [] };
  assert.equal(s.save(c), true);
  const back = s.load('a');
  assert.deepEqual(back.turns, c.turns);
  assert.equal(back.model, 'm');
  assert.equal(back.title, 'What is a sluice?');
  assert.deepEqual(back.pending, c.pending);
  assert.ok(back.updated > 0 && back.created > 0);
  assert.equal(s.load('missing'), null);
});

test('titles: one line, cut to 60 characters, a default for nothing', () => {
  assert.equal(titleOf('  hi\n\tthere '), 'hi there');
  assert.equal(titleOf('x'.repeat(100)).length, 60);
  assert.ok(titleOf('x'.repeat(100)).endsWith('…'));
  assert.equal(titleOf(''), 'New conversation');
});

test('the current conversation: set, read, cleared by New chat and by deleting it', () => {
  const s = createStore(new FakeStorage(), { now: clock() });
  assert.equal(s.current(), null);
  s.save(conv('a', 'q'));
  s.setCurrent('a');
  assert.equal(s.current(), 'a');
  s.setCurrent(null);
  assert.equal(s.current(), null);
  s.setCurrent('a');
  s.remove('a');
  assert.equal(s.current(), null);
  assert.equal(s.load('a'), null);
});

test('the recent list: newest first, updated by a later save, bounded', () => {
  const st = new FakeStorage();
  const s = createStore(st, { now: clock() });
  for (const id of ['a', 'b', 'c']) s.save(conv(id, `q ${id}`));
  assert.deepEqual(s.list().map((c) => c.id), ['c', 'b', 'a']);
  assert.deepEqual(s.list().map((c) => c.title), ['q c', 'q b', 'q a']);
  s.save(s.load('a'));
  assert.deepEqual(s.list().map((c) => c.id), ['a', 'c', 'b']);

  for (let i = 0; i < MAX_CONVERSATIONS + 5; i++) s.save(conv(`n${i}`, `q${i}`));
  const ids = s.list().map((c) => c.id);
  assert.equal(ids.length, MAX_CONVERSATIONS);
  assert.equal(ids[0], `n${MAX_CONVERSATIONS + 4}`);
  assert.ok(!ids.includes('a') && !ids.includes('n0'));
  // Nothing else of ours is left behind: one key per kept conversation.
  const ours = [...st.m.keys()].filter((k) => conversationKey(k));
  assert.equal(ours.length, MAX_CONVERSATIONS);
});

test('delete: the conversation is gone from storage and from the list; others stay', () => {
  const s = createStore(new FakeStorage(), { now: clock() });
  s.save(conv('a', 'qa'));
  s.save(conv('b', 'qb'));
  s.remove('a');
  assert.deepEqual(s.list().map((c) => c.id), ['b']);
  assert.equal(s.load('a'), null);
  assert.ok(s.load('b'));
});

test('storage full: the oldest conversations are dropped to make room', () => {
  const st = new FakeStorage(3000);
  let told = 0;
  const s = createStore(st, { now: clock(), onDisabled: () => told++ });
  const big = (id) => { const c = conv(id, 'q'); c.turns[1].content = 'x'.repeat(900); return c; };
  for (const id of ['a', 'b', 'c', 'd', 'e']) assert.equal(s.save(big(id)), true, id);
  const ids = s.list().map((c) => c.id);
  assert.equal(ids[0], 'e');
  assert.ok(ids.length >= 2 && ids.length < 5, ids.join());
  assert.ok(!ids.includes('a'));
  assert.equal(s.enabled, true);
  assert.equal(told, 0);
});

test('storage full even alone: persistence is turned off, said once, and calls still work', () => {
  const st = new FakeStorage(2000);
  const reasons = [];
  const s = createStore(st, { now: clock(), onDisabled: (r) => reasons.push(r) });
  const c = conv('a', 'q');
  c.turns[1].content = 'x'.repeat(5000);
  assert.equal(s.save(c), false);
  assert.equal(s.enabled, false);
  assert.equal(s.save(conv('b', 'q')), false);
  assert.deepEqual(s.list(), []);
  assert.equal(s.load('a'), null);
  s.setCurrent('b');
  assert.equal(s.current(), null);
  assert.deepEqual(reasons, ['full']);
});

test('a conversation larger than the bound keeps its newest turns and its pending answer', () => {
  const s = createStore(new FakeStorage(), { now: clock(), maxChars: 2000 });
  const c = conv('a', 'q1', 'q2', 'q3');
  for (const t of c.turns) if (t.role === 'assistant') t.content = 'y'.repeat(600);
  c.turns.push({ role: 'user', content: 'q4' }, { role: 'assistant', content: 'part', state: 'streaming' });
  c.pending = { turn: 7, streamId: 's', lastEventId: 3, thinking: '', tools: [] };
  assert.equal(s.save(c), true);
  const back = s.load('a');
  assert.ok(back.turns.length < c.turns.length);
  assert.deepEqual(back.turns.slice(-2), c.turns.slice(-2));
  assert.equal(back.turns[back.pending.turn].content, 'part');
  assert.equal(c.turns.length, 8, 'the caller\'s conversation is not cut');
});

test('storage disabled (null, or throwing on every call): no persistence, said once', () => {
  for (const storage of [null, throwing]) {
    const reasons = [];
    const s = createStore(storage, { onDisabled: (r) => reasons.push(r) });
    assert.equal(s.enabled, false);
    assert.equal(s.save(conv('a', 'q')), false);
    assert.equal(s.load('a'), null);
    assert.deepEqual(s.list(), []);
    s.setCurrent('a');
    assert.equal(s.current(), null);
    s.remove('a');
    assert.deepEqual(reasons, ['disabled']);
  }
});

test('storage that reads but throws on writes (old private modes) counts as disabled', () => {
  const st = new FakeStorage();
  st.setItem = () => { throw Object.assign(new Error('no'), { name: 'SecurityError' }); };
  const s = createStore(st);
  assert.equal(s.enabled, false);
});

test('a damaged record reads as absent and does not break the list', () => {
  const st = new FakeStorage();
  const s = createStore(st, { now: clock() });
  s.save(conv('a', 'q'));
  st.setItem('sluice.chat.conv.b', '{not json');
  st.setItem('sluice.chat.conv.c', '{"id":"other","turns":[]}');
  st.setItem('sluice.apiKey', 'k');
  assert.deepEqual(s.list().map((c) => c.id), ['a']);
  assert.equal(s.load('b'), null);
  assert.equal(s.load('c'), null);
});

test('two tabs: each writes its own conversation; the last writer of one conversation wins whole', () => {
  const st = new FakeStorage();
  const t = clock();
  const tab1 = createStore(st, { now: t });
  const tab2 = createStore(st, { now: t });
  const c1 = conv('one', 'tab one asks');
  const c2 = conv('two', 'tab two asks');
  // Interleaved writes, as two streaming answers produce them.
  for (let i = 0; i < 20; i++) {
    c1.turns[1].content += `a${i} `;
    tab1.save(c1);
    c2.turns[1].content += `b${i} `;
    tab2.save(c2);
  }
  assert.deepEqual(tab2.load('one').turns, c1.turns);
  assert.deepEqual(tab1.load('two').turns, c2.turns);
  assert.deepEqual(tab1.list().map((c) => c.id).sort(), ['one', 'two']);

  // Both tabs on one conversation: the later save is what is kept, never a mix of the two.
  const x1 = conv('x', 'q');
  const x2 = structuredClone(x1);
  x1.turns.push({ role: 'user', content: 'from tab one' });
  x2.turns.push({ role: 'user', content: 'from tab two' });
  tab1.save(x1);
  tab2.save(x2);
  assert.deepEqual(tab1.load('x').turns, x2.turns);
  // Saving never rewrites a conversation other than the one saved (below the bound).
  const before = st.getItem('sluice.chat.conv.one');
  tab2.save(x2);
  assert.equal(st.getItem('sluice.chat.conv.one'), before);
});

test('two tabs: each reload shows the tab\'s own conversation; a new tab the last one chosen', () => {
  const st = new FakeStorage();
  const t = clock();
  const s1 = new FakeStorage();
  const s2 = new FakeStorage();
  const tab1 = createStore(st, { now: t, session: s1 });
  const tab2 = createStore(st, { now: t, session: s2 });
  tab1.save(conv('one', 'q1'));
  tab1.setCurrent('one');
  tab2.save(conv('two', 'q2'));
  tab2.setCurrent('two');
  assert.equal(createStore(st, { session: s1 }).current(), 'one');
  assert.equal(createStore(st, { session: s2 }).current(), 'two');
  assert.equal(createStore(st, { session: new FakeStorage() }).current(), 'two');
  // New chat in tab 2: its reload is empty, tab 1 keeps its conversation.
  tab2.setCurrent(null);
  assert.equal(createStore(st, { session: s2 }).current(), null);
  assert.equal(createStore(st, { session: s1 }).current(), 'one');
});
