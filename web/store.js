// The chat page's memory across reloads and closed tabs: conversations kept in a Storage
// (the page passes localStorage; the unit tests pass a Map-backed fake).
//
// Layout -- one key per conversation, and no shared index:
//   sluice.chat.conv.<id>  {id, title, model, created, updated, turns, pending}
//   sluice.chat.current    the id of the conversation a reload shows (absent: a new, empty one);
//                          kept in sessionStorage too (opts.session), so that a reload shows
//                          the tab's own conversation when two tabs show two conversations.
//                          localStorage's copy serves a new tab or a reopened browser.
// Two tabs each write only the whole record of the conversation they show, so the last writer
// of a conversation wins and turns of two tabs are never interleaved; a shared list of ids
// would need read-modify-write cycles that two tabs can interleave. The recent list is
// derived by scanning the keys instead (bounded to MAX_CONVERSATIONS, so that stays cheap).
//
// A turn is {role: 'user' | 'assistant', content, state?}; `state` of an answer is one of
// streaming, done, stopped, failed, interrupted. While an answer streams, `pending` is
// {turn, streamId, lastEventId, thinking, tools}: the answer's text so far is the turn's
// content, saved in the same write as the last event id it includes, so a reload resumes
// right after it: nothing lost, nothing doubled.
//
// Storage that is missing, throws (private mode, disabled cookies) or is full degrades to
// "no persistence": every call still works and returns what an empty store would, and
// onDisabled(reason) is called once so the page can say so.

export const PREFIX = 'sluice.chat.';
const CONV = `${PREFIX}conv.`;
const CURRENT = `${PREFIX}current`;
const PROBE = `${PREFIX}probe`;

/** How many conversations are kept; saving one more drops the least recently updated. */
export const MAX_CONVERSATIONS = 30;
/** The most characters one conversation may take in storage (~2 MB of UTF-16). */
export const MAX_CONVERSATION_CHARS = 1_000_000;
const TITLE_CHARS = 60;

/** A title from a conversation's first question: one line, at most TITLE_CHARS characters. */
export function titleOf(text) {
  const t = String(text || '').replace(/\s+/g, ' ').trim();
  if (!t) return 'New conversation';
  return t.length > TITLE_CHARS ? `${t.slice(0, TITLE_CHARS - 1)}…` : t;
}

/** A new conversation id: random, so two tabs never pick the same one. */
export function newId() {
  const b = new Uint8Array(9);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** The conversation id a storage key belongs to, or null if it is not a conversation's key. */
export function conversationKey(key) {
  return typeof key === 'string' && key.startsWith(CONV) ? key.slice(CONV.length) : null;
}

const isQuota = (e) => !!e && (e.name === 'QuotaExceededError' || e.name === 'NS_ERROR_DOM_QUOTA_REACHED' ||
  e.code === 22 || e.code === 1014);

function valid(c) {
  return !!c && typeof c === 'object' && typeof c.id === 'string' && Array.isArray(c.turns);
}

/**
 * A store over `storage` (a Storage-like object: getItem, setItem, removeItem, key, length),
 * or a store without persistence when `storage` is null or unusable.
 * Options: onDisabled(reason) -- called once when persistence is (or becomes) off; `now` --
 * the clock; `max`, `maxChars` -- the bounds above.
 */
export function createStore(storage, opts = {}) {
  const onDisabled = opts.onDisabled || (() => {});
  const now = opts.now || (() => Date.now());
  const max = opts.max || MAX_CONVERSATIONS;
  const maxChars = opts.maxChars || MAX_CONVERSATION_CHARS;
  const session = opts.session || null;
  let enabled = !!storage;
  let told = false;

  function disable(reason) {
    enabled = false;
    if (!told) {
      told = true;
      try { onDisabled(reason); } catch { /* the page's notice must not break storage */ }
    }
  }

  // Private modes differ: some have no localStorage, some throw on every call, some (old
  // Safari) read fine and throw on every write. One write at start tells them all apart.
  if (enabled) {
    try {
      storage.setItem(PROBE, '1');
      storage.removeItem(PROBE);
    } catch (e) {
      disable(isQuota(e) ? 'full' : 'disabled');
    }
  } else disable('disabled');

  /** Every stored conversation's id (reads only keys, never values). */
  function ids() {
    if (!enabled) return [];
    try {
      const out = [];
      for (let i = 0; i < storage.length; i++) {
        const id = conversationKey(storage.key(i));
        if (id) out.push(id);
      }
      return out;
    } catch (e) {
      disable('disabled');
      return [];
    }
  }

  function load(id) {
    if (!enabled || typeof id !== 'string' || !id) return null;
    try {
      const raw = storage.getItem(CONV + id);
      if (raw == null) return null;
      const c = JSON.parse(raw);
      return valid(c) && c.id === id ? c : null;
    } catch (e) {
      if (e instanceof SyntaxError) return null; // a damaged record reads as absent
      disable('disabled');
      return null;
    }
  }

  /** Every stored conversation, newest (most recently updated) first. */
  function all() {
    return ids().map(load).filter(Boolean).sort((a, b) => (b.updated || 0) - (a.updated || 0));
  }

  /** The recent list: {id, title, updated, model}, newest first. */
  function list() {
    return all().map(({ id, title, updated, model }) => ({ id, title, updated, model }));
  }

  function remove(id) {
    if (!enabled) return;
    try {
      storage.removeItem(CONV + id);
      if (storage.getItem(CURRENT) === id) storage.removeItem(CURRENT);
      if (session && session.getItem(CURRENT) === id) session.setItem(CURRENT, '');
    } catch {
      disable('disabled');
    }
  }

  /** Drops the least recently updated conversation other than `keep`; false if none is left. */
  function dropOldest(keep) {
    const victims = all().filter((c) => c.id !== keep);
    if (!victims.length) return false;
    remove(victims[victims.length - 1].id);
    return true;
  }

  /**
   * Saves conversation `c` whole (setting `updated`), then keeps only the `max` newest.
   * On a full storage drops the oldest other conversations until it fits; if it never fits,
   * persistence is turned off. Returns true if `c` is stored.
   */
  function save(c) {
    if (!enabled || !valid(c)) return false;
    c.updated = now();
    if (!c.created) c.created = c.updated;
    if (!c.title) {
      const first = c.turns.find((t) => t.role === 'user');
      c.title = titleOf(first && first.content);
    }
    let text = JSON.stringify(c);
    if (text.length > maxChars) {
      // Too big to keep whole: keep the newest turns that fit (the record stays consistent).
      const copy = { ...c, turns: c.turns.slice() };
      while (copy.turns.length > 1 && text.length > maxChars) {
        copy.turns.shift();
        if (copy.pending) copy.pending = { ...copy.pending, turn: copy.pending.turn - 1 };
        text = JSON.stringify(copy);
      }
      if (text.length > maxChars) return false;
    }
    for (;;) {
      try {
        storage.setItem(CONV + c.id, text);
        break;
      } catch (e) {
        if (!isQuota(e)) { disable('disabled'); return false; }
        if (!dropOldest(c.id)) { disable('full'); return false; }
      }
    }
    const rest = all();
    for (const old of rest.slice(max)) if (old.id !== c.id) remove(old.id);
    return true;
  }

  function current() {
    if (!enabled) return null;
    try {
      // '' in the tab's session: this tab chose a new, empty conversation.
      const mine = session ? session.getItem(CURRENT) : null;
      if (mine != null) return mine || null;
    } catch { /* no session storage: the shared value below */ }
    try { return storage.getItem(CURRENT) || null; } catch { disable('disabled'); return null; }
  }

  /** Which conversation a reload shows; null: a new, empty one. */
  function setCurrent(id) {
    if (!enabled) return;
    try {
      if (session) session.setItem(CURRENT, id || '');
    } catch { /* the shared value still serves */ }
    try {
      if (id) storage.setItem(CURRENT, id); else storage.removeItem(CURRENT);
    } catch (e) {
      if (isQuota(e) && id && dropOldest(id)) { setCurrent(id); return; }
      disable(isQuota(e) ? 'full' : 'disabled');
    }
  }

  return {
    get enabled() { return enabled; },
    load, save, remove, list, current, setCurrent,
  };
}
