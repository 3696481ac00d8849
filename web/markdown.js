// Light, safe markdown for streamed answers, in three steps:
//
//   1. blocks: lines -> paragraphs, headings, fenced code, lists, quotes (one pass, each
//      line looked at a bounded number of times);
//   2. inline: CommonMark's delimiter-stack algorithm for `code`, *em*, **strong**, _em_,
//      [links](https://..) -- iterative, linear in the text, no backtracking;
//   3. a tiny builder turning the resulting plain tree into DOM nodes.
//
// Model text reaches the DOM only via createTextNode / textContent / setAttribute (never
// innerHTML), so markup in it shows as text. Links keep only http(s), mailto and relative
// targets. Nesting is bounded (quotes, lists, emphasis), so no input can exhaust the stack
// or build a DOM too deep to lay out. Whitespace between blocks is kept as text nodes, so
// for plain text the container's textContent equals the source exactly.
//
// The module has no imports and only touches the DOM through the `doc` it is given, so the
// page loads it as an ES module and node's test runner imports it as is.

/** Deepest blockquote nesting; deeper `>` are shown as text. */
export const MAX_QUOTE_DEPTH = 8;
/** Deepest list nesting; deeper items stay at this level. */
export const MAX_LIST_DEPTH = 8;
/** Deepest em/strong/link nesting; deeper markers are shown as text. */
export const MAX_INLINE_DEPTH = 16;
/** Longest link destination considered (longer ones stay text). */
const MAX_DEST = 2048;
/** Deepest parentheses inside a link destination (CommonMark's reference limit is 32). */
const MAX_DEST_PARENS = 32;

const BLANK = /^\s*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+([^]*))?$/;
const LIST = /^(\s*)([-*+]|\d{1,9}[.)])(?:[ \t]+([^]*))?$/;
const QUOTE = /^ {0,3}>/;
const QUOTE_MARK = /^ {0,3}> ?/;
const SPACE = /\s/u;
const PUNCT = /[\p{P}\p{S}]/u;
const ASCII_PUNCT = /[!-/:-@[-`{-~]/;
/** `\` before one of these gives the character itself (and it is no markup). */
const ESCAPED = '`*_';
/** `\` before one of these keeps both characters as text (LaTeX's `\[ \]`) but no markup. */
const KEPT = '[]\\';

const indentOf = (s) => s.match(/^\s*/)[0].replace(/\t/g, '    ').length;

// ---- blocks ----

/** An opening fence: up to any indent, 3+ backticks or tildes, an info string. */
function fenceOpen(line) {
  let i = 0;
  while (line[i] === ' ' || line[i] === '\t') i++;
  const c = line[i];
  if (c !== '`' && c !== '~') return null;
  let j = i;
  while (line[j] === c) j++;
  if (j - i < 3) return null;
  const info = line.slice(j).trim();
  // CommonMark: a backtick fence's info string may not contain a backtick.
  if (c === '`' && info.includes('`')) return null;
  return { indent: indentOf(line.slice(0, i)), fence: line.slice(i, j), lang: info.match(/^\S*/)[0] };
}

function isFenceClose(line, fence) {
  const t = line.trim();
  if (t.length < fence.length) return false;
  for (let k = 0; k < t.length; k++) if (t[k] !== fence[0]) return false;
  return true;
}

/** Removes up to `n` columns of leading spaces (the fence's own indent) from a code line. */
function dedent(line, n) {
  let k = 0;
  while (k < n && line[k] === ' ') k++;
  return k ? line.slice(k) : line;
}

function headingText(rest) {
  // Trailing whitespace and a closing sequence of #s (`## Title ##`) are not content.
  let t = (rest || '').trim();
  let k = t.length;
  while (k > 0 && t[k - 1] === '#') k--;
  if (k === 0) return '';
  if (k < t.length && (t[k - 1] === ' ' || t[k - 1] === '\t')) t = t.slice(0, k).trimEnd();
  return t;
}

const isQuote = (line, depth) => depth < MAX_QUOTE_DEPTH && QUOTE.test(line);
const startsBlock = (line, depth) => BLANK.test(line) || fenceOpen(line) !== null
  || HEADING.test(line) || LIST.test(line) || isQuote(line, depth);

/**
 * Splits `lines` into blocks. Each entry is {b, s, e, pk}: the block, its first line, the
 * line after its last, and the furthest line looked at to decide where it ends (`lines.length`
 * when it ran into the end). A block whose `pk` is a complete line cannot change when text is
 * appended, which lets `render` re-parse only the tail of a streamed answer.
 */
function scanBlocks(lines, depth) {
  const N = lines.length;
  const out = [];
  let i = 0;
  while (i < N) {
    const line = lines[i];
    if (BLANK.test(line)) { i++; continue; }
    const s = i;
    let b;
    let pk;
    let m;
    const f = fenceOpen(line);
    if (f) {
      const body = [];
      let closed = false;
      for (i++; i < N; i++) {
        if (isFenceClose(lines[i], f.fence)) { closed = true; i++; break; }
        body.push(dedent(lines[i], f.indent));
      }
      if (!closed) {
        // Still streaming: hide a trailing empty line or a half-typed closing fence.
        const t = body.length ? body[body.length - 1].trim() : null;
        if (t !== null && (t === '' || isFenceClose(t, f.fence[0]))) body.pop();
      }
      pk = closed ? i - 1 : N;
      b = { t: 'pre', lang: f.lang, v: body.join('\n') };
    } else if ((m = HEADING.exec(line))) {
      b = { t: 'h', level: m[1].length, text: headingText(m[2]) };
      pk = s;
      i++;
    } else if (isQuote(line, depth)) {
      const inner = [];
      for (; i < N && QUOTE.test(lines[i]); i++) inner.push(lines[i].replace(QUOTE_MARK, ''));
      pk = i;
      b = { t: 'quote', blocks: scanBlocks(inner, depth + 1).map((x) => x.b) };
    } else if (LIST.test(line)) {
      const r = scanList(lines, i, depth);
      i = r.end;
      pk = r.pk;
      b = { t: 'list', list: r.list };
    } else {
      for (i++; i < N; i++) if (startsBlock(lines[i], depth)) break;
      pk = i;
      b = { t: 'p', text: lines.slice(s, i).join('\n') };
    }
    out.push({ b, s, e: i, pk });
  }
  return out;
}

function scanList(lines, i, depth) {
  const mk = (m) => {
    const ordered = /\d/.test(m[2]);
    return { ordered, start: ordered ? parseInt(m[2], 10) : 1, indent: indentOf(m[1]), items: [] };
  };
  const root = mk(LIST.exec(lines[i]));
  const stack = [root];
  let last = null;
  let blank = false;
  let end = i;
  let j = i;
  for (; j < lines.length; j++) {
    const line = lines[j];
    if (BLANK.test(line)) { blank = true; continue; }
    if (fenceOpen(line) || HEADING.test(line)) break;
    const m = LIST.exec(line);
    if (m) {
      const w = indentOf(m[1]);
      const ordered = /\d/.test(m[2]);
      while (stack.length > 1 && w < stack[stack.length - 1].indent) stack.pop();
      let top = stack[stack.length - 1];
      const parent = top.items[top.items.length - 1];
      if (w >= top.indent + 2 && parent && stack.length < MAX_LIST_DEPTH) {
        top = mk(m);
        parent.lists.push(top);
        stack.push(top);
      } else if (stack.length === 1 && ordered !== root.ordered) {
        break; // a different kind of list starts a new block
      }
      last = { text: m[3] || '', lists: [] };
      top.items.push(last);
    } else {
      if ((blank || isQuote(line, depth)) && indentOf(line) < 2) break;
      last.text += (blank ? '\n\n' : '\n') + line.trim();
    }
    blank = false;
    end = j + 1;
  }
  return { list: root, end, pk: j };
}

/** A scanned block as a tree node: {t: 'p'|'h'|'pre'|'ul'|'ol'|'quote', ...}. */
function blockTree(b) {
  switch (b.t) {
    case 'p': return { t: 'p', c: inline(b.text) };
    case 'h': return { t: 'h', level: b.level, c: inline(b.text) };
    case 'pre': return { t: 'pre', lang: b.lang, v: b.v };
    case 'quote': return { t: 'quote', c: b.blocks.map(blockTree) };
    default: return listTree(b.list);
  }
}

function listTree(list) {
  const node = { t: list.ordered ? 'ol' : 'ul', c: [] };
  if (list.ordered) node.start = list.start;
  for (const item of list.items) {
    node.c.push({ t: 'li', c: inline(item.text).concat(item.lists.map(listTree)) });
  }
  return node;
}

/**
 * Scans `src` from offset `from` (the start of a line) into top-level blocks:
 * {node, key, start, end, next, stable}: `start`/`end` delimit the block's own text, `next` is
 * where the following line starts, `stable` says appending text cannot change the block.
 */
function scan(src, from) {
  const text = from ? src.slice(from) : src;
  const lines = text.split('\n');
  const starts = new Array(lines.length);
  for (let k = 0, o = from; k < lines.length; k++) { starts[k] = o; o += lines[k].length + 1; }
  const N = lines.length;
  return scanBlocks(lines, 0).map(({ b, s, e, pk }) => {
    const start = starts[s];
    const end = starts[e - 1] + lines[e - 1].length;
    // Every line but the last is complete (a '\n' follows it), so it is final.
    return { b, key: `${b.t}\u0000${src.slice(start, end)}`, start, end, next: e < N ? starts[e] : src.length, stable: pk < N - 1 };
  });
}

/** The whole document as a plain tree: an array of block nodes. */
export function parse(src) {
  return scan(src, 0).map((x) => blockTree(x.b));
}

// ---- inline ----

/** Whitespace (0), punctuation or symbol (1), or other (2) for the character before / at `i`;
 *  a string's ends count as whitespace. ASCII without a regex: this runs for every `*` and `_`. */
function classBefore(s, i) {
  if (i <= 0) return 0;
  const lo = s.charCodeAt(i - 1);
  if (lo < 128) return ASCII_CLASS[lo];
  if (lo >= 0xdc00 && lo <= 0xdfff && i >= 2) {
    const hi = s.charCodeAt(i - 2);
    if (hi >= 0xd800 && hi <= 0xdbff) return classOf(s.slice(i - 2, i));
  }
  return classOf(s[i - 1]);
}
function classAt(s, i) {
  if (i >= s.length) return 0;
  const c = s.charCodeAt(i);
  return c < 128 ? ASCII_CLASS[c] : classOf(String.fromCodePoint(s.codePointAt(i)));
}
const classOf = (ch) => (SPACE.test(ch) ? 0 : PUNCT.test(ch) ? 1 : 2);
const ASCII_CLASS = Array.from({ length: 128 }, (_, c) => classOf(String.fromCharCode(c)));

/**
 * The link target after `](` at `p` (which holds the `(`): CommonMark's inline link without a
 * title: `(dest)`, `(<dest>)`, spaces allowed around. Returns {dest, end} or null.
 * Each attempt stops at whitespace, an unbalanced `)`, `MAX_DEST_PARENS` open parentheses or
 * `MAX_DEST` characters, so attempts overlap a bounded number of times: linear overall.
 */
function linkTarget(s, p) {
  if (s[p] !== '(') return null;
  let i = p + 1;
  while (s[i] === ' ' || s[i] === '\t') i++;
  let dest;
  if (s[i] === '<') {
    const j0 = i + 1;
    let j = j0;
    for (; j < s.length && s[j] !== '>'; j++) {
      if (s[j] === '<' || s[j] === '\n' || j - j0 > MAX_DEST) return null;
      if (s[j] === '\\' && j + 1 < s.length) j++;
    }
    if (s[j] !== '>') return null;
    dest = s.slice(j0, j);
    i = j + 1;
  } else {
    const j0 = i;
    let depth = 0;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c <= 0x20 || c === 0x7f || i - j0 > MAX_DEST) break;
      if (c === 0x5c && i + 1 < s.length && ASCII_PUNCT.test(s[i + 1])) { i++; continue; }
      if (c === 0x28) { if (++depth > MAX_DEST_PARENS) return null; } else if (c === 0x29) {
        if (depth === 0) break;
        depth--;
      }
    }
    if (depth !== 0) return null;
    dest = s.slice(j0, i);
  }
  while (s[i] === ' ' || s[i] === '\t') i++;
  if (s[i] !== ')') return null;
  return { dest: dest.replace(/\\([!-/:-@[-`{-~])/g, '$1'), end: i + 1 };
}

const SAFE_SCHEMES = ['http', 'https', 'mailto'];

/**
 * `url` if a link to it is safe to show, else null: http(s), mailto, or relative. Anything a
 * browser would strip or fold before reading the scheme (whitespace, control characters) or
 * that only HTML would decode (character references) is refused outright rather than cleaned.
 */
export function safeHref(url) {
  if (typeof url !== 'string' || !url || url.length > MAX_DEST) return null;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0020\u007f-\u009f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]|\s/u.test(url)) return null;
  const m = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  if (m) {
    if (!SAFE_SCHEMES.includes(m[1].toLowerCase())) return null;
  } else {
    // Relative: no colon before the first / ? # (it would read as a scheme), and nothing that
    // HTML would decode into one (`javascript&colon;`); the DOM never decodes it, but a
    // copied link might meet something that does.
    const k = url.search(/[:/?#]/);
    if (k >= 0 && url[k] === ':') return null;
    if (/&(?:#|[a-z][a-z0-9]*;)/i.test(url)) return null;
  }
  // Second opinion from the URL parser browsers use, where there is one.
  if (typeof URL === 'function') {
    try {
      const u = new URL(url, 'https://relative.invalid/');
      if (!SAFE_SCHEMES.includes(u.protocol.slice(0, -1))) return null;
    } catch {
      return null;
    }
  }
  return url;
}

/** A node of the inline linked list; one shape for all kinds keeps the hot loop monomorphic. */
class Span {
  constructor(t, v) {
    this.t = t;         // text | code | delim | em | strong | a
    this.v = v;         // text and code
    this.prev = null;
    this.next = null;
    this.first = null;  // em, strong, a: the content, a list of its own
    this.last = null;
    this.ch = '';       // delim, em, strong: '*' or '_'
    this.n = 0;         // delim: characters left; em/strong: characters used
    this.orig = 0;      // delim: run length as written
    this.canOpen = false;
    this.canClose = false;
    this.pos = 0;       // delim: position in the delimiter stack
    this.dprev = null;
    this.dnext = null;
    this.href = '';     // a
    this.close = '';    // a: the source of `](...)`, shown if the link is too deep to nest
  }
}

/**
 * Inline spans of `s` as a plain tree: {t:'text', v}, {t:'code', v}, {t:'em'|'strong', c},
 * {t:'a', href, c}. CommonMark's algorithm (spec appendix "Phase 2: inline structure"): one
 * left-to-right pass builds a linked list of text, code spans and delimiter runs; `process`
 * pairs delimiters with per-kind lower bounds, so nothing is scanned twice; a final
 * iterative walk turns the list into nested arrays, capping nesting at MAX_INLINE_DEPTH.
 */
export function inline(s) {
  const head = new Span('text', '');
  let tail = head;
  const add = (t, v) => {
    const n = new Span(t, v);
    n.prev = tail;
    tail.next = n;
    tail = n;
    return n;
  };
  let dTop = null; // top of the delimiter stack (doubly linked through dprev/dnext)
  let dCount = 0;  // delimiter positions, increasing: bounds survive removals
  const brackets = [];
  let runs = null; // code-span closers: run length -> {at: [starts], k: cursor}

  const removeDelim = (d) => {
    if (d.dprev) d.dprev.dnext = d.dnext;
    if (d.dnext) d.dnext.dprev = d.dprev; else dTop = d.dprev;
  };

  /** Pairs the delimiters above `bottom` (a delimiter or null), then drops them from the stack. */
  const process = (bottom) => {
    const floor = bottom ? bottom.pos : -1;
    let closer = dTop;
    if (!closer || closer.pos <= floor) return;
    while (closer.dprev && closer.dprev.pos > floor) closer = closer.dprev;
    // Per delimiter kind and closer class: the position below which no opener can match.
    const openersBottom = { '*': new Array(6).fill(floor), _: new Array(6).fill(floor) };
    while (closer) {
      if (!closer.canClose) { closer = closer.dnext; continue; }
      const idx = (closer.canOpen ? 3 : 0) + (closer.orig % 3);
      const ob = openersBottom[closer.ch];
      let opener = closer.dprev;
      let found = null;
      for (; opener && opener.pos > ob[idx]; opener = opener.dprev) {
        // "Rule of 3": a run that can both open and close pairs only if the sum of the
        // run lengths is not a multiple of 3, unless both are.
        const odd = (closer.canOpen || opener.canClose) && closer.orig % 3 !== 0
          && (opener.orig + closer.orig) % 3 === 0;
        if (opener.ch === closer.ch && opener.canOpen && !odd) { found = opener; break; }
      }
      if (found) {
        const use = closer.n >= 2 && found.n >= 2 ? 2 : 1;
        found.n -= use;
        closer.n -= use;
        const e = new Span(use === 2 ? 'strong' : 'em', '');
        e.ch = closer.ch;
        e.n = use;
        if (found.next !== closer) {
          e.first = found.next;
          e.last = closer.prev;
          e.first.prev = null;
          e.last.next = null;
        }
        found.next = e; e.prev = found; e.next = closer; closer.prev = e;
        found.dnext = closer; closer.dprev = found; // delimiters in between are now text
        if (found.n === 0) removeDelim(found);
        if (closer.n === 0) {
          const next = closer.dnext;
          removeDelim(closer);
          closer = next;
        }
      } else {
        ob[idx] = closer.dprev ? closer.dprev.pos : floor;
        const next = closer.dnext;
        if (!closer.canOpen) removeDelim(closer);
        closer = next;
      }
    }
    while (dTop && dTop.pos > floor) removeDelim(dTop);
  };

  const closingRun = (n, from) => {
    if (!runs) {
      runs = new Map();
      for (let j = s.indexOf('`'); j >= 0; j = s.indexOf('`', j)) {
        let k = j;
        while (s[k] === '`') k++;
        let r = runs.get(k - j);
        if (!r) runs.set(k - j, (r = { at: [], k: 0 }));
        r.at.push(j);
        j = k;
      }
    }
    const r = runs.get(n);
    if (!r) return -1;
    while (r.k < r.at.length && r.at[r.k] < from) r.k++; // queries only move forward
    return r.k < r.at.length ? r.at[r.k] : -1;
  };

  const SPECIAL = /[\\`*_[\]]/g;
  let textFrom = 0;
  const flush = (to) => { if (to > textFrom) add('text', s.slice(textFrom, to)); };
  let i = 0;
  while (i < s.length) {
    SPECIAL.lastIndex = i;
    const hit = SPECIAL.exec(s);
    if (!hit) break;
    i = hit.index;
    const c = s[i];
    if (c === '\\') {
      const nx = s[i + 1];
      if (nx !== undefined && ESCAPED.includes(nx)) {
        flush(i);
        add('text', nx);
        i += 2;
        textFrom = i;
      } else i += nx !== undefined && KEPT.includes(nx) ? 2 : 1;
    } else if (c === '`') {
      let n = 1;
      while (s[i + n] === '`') n++;
      const close = closingRun(n, i + n);
      if (close >= 0) {
        flush(i);
        let v = s.slice(i + n, close).replace(/\n/g, ' ');
        if (v.length >= 2 && v[0] === ' ' && v[v.length - 1] === ' ' && /[^ ]/.test(v)) v = v.slice(1, -1);
        add('code', v);
        i = close + n;
        textFrom = i;
      } else i += n;
    } else if (c === '*' || c === '_') {
      let n = 1;
      while (s[i + n] === c) n++;
      const before = classBefore(s, i);
      const after = classAt(s, i + n);
      const bWs = before === 0;
      const aWs = after === 0;
      const bP = before === 1;
      const aP = after === 1;
      const left = !aWs && (!aP || bWs || bP);
      const right = !bWs && (!bP || aWs || aP);
      const canOpen = c === '*' ? left : left && (!right || bP);
      const canClose = c === '*' ? right : right && (!left || aP);
      if (canOpen || canClose) {
        flush(i);
        const d = add('delim', '');
        d.ch = c;
        d.n = d.orig = n;
        d.canOpen = canOpen;
        d.canClose = canClose;
        d.pos = dCount++;
        d.dprev = dTop;
        if (dTop) dTop.dnext = d;
        dTop = d;
        textFrom = i + n;
      }
      i += n;
    } else if (c === '[') {
      flush(i);
      brackets.push({ node: add('text', '['), bottom: dTop });
      i++;
      textFrom = i;
    } else { // ']'
      const open = brackets.pop();
      const target = open ? linkTarget(s, i + 1) : null;
      const href = target ? safeHref(target.dest) : null;
      if (href === null) { i++; continue; } // stays text
      flush(i);
      process(open.bottom);
      // The `[` node becomes the link; what follows it becomes the link's content.
      const a = open.node;
      a.t = 'a';
      a.href = href;
      a.close = s.slice(i, target.end);
      a.first = a.next;
      a.last = a.next ? tail : null;
      if (a.first) a.first.prev = null;
      a.next = null;
      tail = a;
      brackets.length = 0; // no links inside links: every earlier `[` is plain text now
      i = target.end;
      textFrom = i;
    }
  }
  flush(s.length);
  process(null);
  return nest(head.next);
}

/** Turns the linked list into nested arrays, iteratively; too-deep spans become plain text. */
function nest(first) {
  const root = [];
  const text = (out, v) => {
    if (!v) return;
    const l = out[out.length - 1];
    if (l && l.t === 'text') l.v += v; else out.push({ t: 'text', v });
  };
  const stack = [{ out: root, cur: first, depth: 0, close: '' }];
  while (stack.length) {
    const f = stack[stack.length - 1];
    const n = f.cur;
    if (!n) {
      stack.pop();
      text(f.out, f.close);
      continue;
    }
    f.cur = n.next;
    if (n.t === 'text') text(f.out, n.v);
    else if (n.t === 'delim') text(f.out, n.ch.repeat(n.n));
    else if (n.t === 'code') f.out.push({ t: 'code', v: n.v });
    else if (f.depth >= MAX_INLINE_DEPTH) {
      const open = n.t === 'a' ? '[' : n.ch.repeat(n.n);
      text(f.out, open);
      stack.push({ out: f.out, cur: n.first, depth: f.depth, close: n.t === 'a' ? n.close : open });
    } else {
      const o = n.t === 'a' ? { t: 'a', href: n.href, c: [] } : { t: n.t, c: [] };
      f.out.push(o);
      stack.push({ out: o.c, cur: n.first, depth: f.depth + 1, close: '' });
    }
  }
  return root;
}

// ---- DOM ----

const TAGS = { p: 'p', quote: 'blockquote', ul: 'ul', ol: 'ol', li: 'li', em: 'em', strong: 'strong', a: 'a' };

/** One tree node as a DOM node. The tree is depth-bounded, so recursion is fine here. */
export function toDom(doc, n) {
  if (n.t === 'text') return doc.createTextNode(n.v);
  if (n.t === 'code') return el(doc, 'code', n.v);
  if (n.t === 'pre') return codeBlock(doc, n);
  const e = doc.createElement(n.t === 'h' ? `h${Math.min(6, n.level + 2)}` : TAGS[n.t]);
  if (n.t === 'a') {
    e.setAttribute('href', n.href);
    e.setAttribute('target', '_blank');
    e.setAttribute('rel', 'noopener noreferrer nofollow');
  } else if (n.t === 'ol' && n.start !== 1) e.setAttribute('start', String(n.start));
  for (const k of n.c) e.appendChild(toDom(doc, k));
  return e;
}

function el(doc, tag, text, cls) {
  const e = doc.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

function codeBlock(doc, n) {
  const box = el(doc, 'div', '', 'code');
  const bar = el(doc, 'div', '', 'code-bar');
  bar.setAttribute('data-lang', n.lang);
  const btn = el(doc, 'button', '', 'copy');
  btn.setAttribute('type', 'button');
  btn.setAttribute('aria-label', 'Copy code');
  bar.appendChild(btn);
  const pre = doc.createElement('pre');
  const code = el(doc, 'code', n.v);
  if (n.lang) code.className = `language-${n.lang}`;
  pre.appendChild(code);
  box.appendChild(bar);
  box.appendChild(pre);
  return box;
}

const CACHE = Symbol('md');

/**
 * Renders `src` into `container`. A streamed answer only grows, so blocks that appending
 * cannot change are neither re-parsed nor rebuilt: each call costs the last block or so, not
 * the whole answer. An unchanged block keeps its DOM (no flicker, selection survives); a code
 * block still being typed has its text updated in place.
 */
export function render(container, src, doc = container.ownerDocument) {
  let cache = container[CACHE];
  container[CACHE] = null; // if anything below throws, the next call starts over
  // (slice + === compares like memcmp; startsWith walks a rope character by character)
  if (!cache || src.length < cache.src.length || src.slice(0, cache.src.length) !== cache.src) {
    clear(container);
    cache = { src: '', blocks: [], stable: 0, recs: [], lead: doc.createTextNode('') };
    container.appendChild(cache.lead);
  }
  const blocks = cache.blocks;
  let keep = cache.stable; // once stable, a block stays so
  while (keep < blocks.length && blocks[keep].stable) keep++;
  const from = keep ? blocks[keep - 1].next : 0;
  blocks.length = keep;
  for (const b of scan(src, from)) blocks.push(b);
  const recs = cache.recs;
  let k = keep;
  while (k < recs.length && k < blocks.length && recs[k].key === blocks[k].key) k++;
  const reuse = k < recs.length && k < blocks.length && recs[k].type === 'pre'
    && blocks[k].b.t === 'pre' && recs[k].lang === blocks[k].b.lang ? recs[k] : null;
  for (let j = recs.length - 1; j >= k + (reuse ? 1 : 0); j--) {
    container.removeChild(recs[j].el);
    container.removeChild(recs[j].sepNode);
  }
  recs.length = Math.min(recs.length, k + (reuse ? 1 : 0));
  if (reuse) {
    const code = reuse.el.lastChild.firstChild;
    if (code.textContent !== blocks[k].b.v) code.textContent = blocks[k].b.v;
    reuse.key = blocks[k].key;
    k++;
  }
  for (; k < blocks.length; k++) {
    const b = blocks[k];
    const rec = { key: b.key, type: b.b.t, lang: b.b.lang, el: toDom(doc, blockTree(b.b)), sepNode: doc.createTextNode('') };
    container.appendChild(rec.el);
    container.appendChild(rec.sepNode);
    recs.push(rec);
  }
  // Whitespace before the first block and between blocks, as text.
  const lead = src.slice(0, blocks.length ? blocks[0].start : src.length);
  if (cache.lead.data !== lead) cache.lead.data = lead;
  for (let j = Math.max(0, keep - 1); j < blocks.length; j++) {
    const sep = src.slice(blocks[j].end, j + 1 < blocks.length ? blocks[j + 1].start : src.length);
    if (recs[j].sepNode.data !== sep) recs[j].sepNode.data = sep;
  }
  cache.src = src;
  cache.stable = keep;
  container[CACHE] = cache;
}

/** Forgets cached blocks and empties the container. */
export function clear(container) {
  container[CACHE] = null;
  while (container.firstChild) container.removeChild(container.firstChild);
}
