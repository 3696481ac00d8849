// Light, safe markdown for streamed answers. Model text reaches the DOM only via
// createTextNode / textContent (never innerHTML), so markup in it shows as text.
// Whitespace between blocks is kept as text nodes, so for plain text the
// container's textContent equals the source exactly.

const BLANK = /^\s*$/;
const FENCE = /^(\s*)(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/;
const LIST = /^(\s*)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const LINK = /\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/y;
const WORD = /[\p{L}\p{N}]/u;
const ESCAPABLE = '`*_';

const indentOf = (s) => s.match(/^\s*/)[0].replace(/\t/g, '    ').length;
const isFenceClose = (line, fence) => {
  const t = line.trim();
  return t.length >= fence.length && t === fence[0].repeat(t.length);
};

/** Split source into blocks: {type, raw, sep, ...}; raw+sep of all blocks (after lead) = src. */
export function parse(src) {
  const lines = src.split('\n');
  const starts = [];
  for (let k = 0, o = 0; k < lines.length; k++) { starts.push(o); o += lines[k].length + 1; }
  const N = lines.length;
  const blocks = [];
  let i = 0;
  while (i < N) {
    const line = lines[i];
    if (BLANK.test(line)) { i++; continue; }
    let m;
    const s = i;
    if ((m = FENCE.exec(line))) {
      const ind = indentOf(m[1]);
      const body = [];
      let closed = false;
      for (i++; i < N; i++) {
        if (isFenceClose(lines[i], m[2])) { closed = true; i++; break; }
        body.push(lines[i].replace(new RegExp(`^ {0,${ind}}`), ''));
      }
      if (!closed) {
        // Still streaming: hide a trailing empty line or a half-typed closing fence.
        const t = body.length ? body[body.length - 1].trim() : null;
        if (t !== null && (t === '' || t === m[2][0].repeat(t.length))) body.pop();
      }
      blocks.push({ type: 'code', lang: m[3], code: body.join('\n'), s, e: i });
    } else if ((m = HEADING.exec(line))) {
      blocks.push({ type: 'h', level: m[1].length, text: m[2] || '', s, e: ++i });
    } else if (LIST.test(line)) {
      const r = parseList(lines, i);
      i = r.end;
      blocks.push({ type: 'list', list: r.list, s, e: i });
    } else {
      for (i++; i < N; i++) {
        const l = lines[i];
        if (BLANK.test(l) || FENCE.test(l) || HEADING.test(l) || LIST.test(l)) break;
      }
      blocks.push({ type: 'p', text: lines.slice(s, i).join('\n'), s, e: i });
    }
  }
  const out = [];
  const firstStart = blocks.length ? starts[blocks[0].s] : src.length;
  if (firstStart > 0) out.push({ type: 'ws', raw: src.slice(0, firstStart), sep: '' });
  blocks.forEach((b, k) => {
    const from = starts[b.s];
    const end = starts[b.e - 1] + lines[b.e - 1].length;
    const next = k + 1 < blocks.length ? starts[blocks[k + 1].s] : src.length;
    b.raw = src.slice(from, end);
    b.sep = src.slice(end, next);
    delete b.s; delete b.e;
    out.push(b);
  });
  for (const b of out) b.key = `${b.type}\u0000${b.raw}\u0000${b.sep}`;
  return out;
}

function parseList(lines, i) {
  const mk = (m) => {
    const ordered = /\d/.test(m[2]);
    return { ordered, start: ordered ? parseInt(m[2], 10) : 1, indent: indentOf(m[1]), items: [] };
  };
  const root = mk(LIST.exec(lines[i]));
  const stack = [root];
  let last = null;
  let blank = false;
  let end = i;
  for (let j = i; j < lines.length; j++) {
    const line = lines[j];
    if (BLANK.test(line)) { blank = true; continue; }
    if (FENCE.test(line) || HEADING.test(line)) break;
    const m = LIST.exec(line);
    if (m) {
      const w = indentOf(m[1]);
      const ordered = /\d/.test(m[2]);
      while (stack.length > 1 && w < stack[stack.length - 1].indent) stack.pop();
      let top = stack[stack.length - 1];
      const parent = top.items[top.items.length - 1];
      if (w >= top.indent + 2 && parent) {
        top = mk(m);
        parent.lists.push(top);
        stack.push(top);
      } else if (stack.length === 1 && ordered !== root.ordered) {
        break; // a different kind of list starts a new block
      }
      last = { text: m[3] || '', lists: [] };
      top.items.push(last);
    } else {
      if (blank && indentOf(line) < 2) break;
      last.text += (blank ? '\n\n' : '\n') + line.trim();
    }
    blank = false;
    end = j + 1;
  }
  return { list: root, end };
}

/** Inline spans: text, `code`, **strong**, *em*, _em_, [link](https://..). */
export function inline(s) {
  const out = [];
  let buf = '';
  const flush = () => { if (buf) { out.push({ t: 'text', v: buf }); buf = ''; } };
  for (let i = 0; i < s.length;) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length && ESCAPABLE.includes(s[i + 1])) {
      buf += s[i + 1]; i += 2; continue;
    }
    if (c === '`') {
      let n = 1;
      while (s[i + n] === '`') n++;
      const close = findRun(s, i + n, n);
      if (close >= 0) {
        flush();
        let v = s.slice(i + n, close);
        if (v.length > 2 && v[0] === ' ' && v[v.length - 1] === ' ') v = v.slice(1, -1);
        out.push({ t: 'code', v });
        i = close + n;
      } else { buf += s.slice(i, i + n); i += n; }
      continue;
    }
    if (c === '*' || c === '_') {
      const d = s[i + 1] === c ? c + c : c;
      const j = closeDelim(s, i, d);
      if (j > 0) {
        flush();
        out.push({ t: d.length === 2 ? 'strong' : 'em', c: inline(s.slice(i + d.length, j)) });
        i = j + d.length;
      } else { buf += d; i += d.length; }
      continue;
    }
    if (c === '[') {
      LINK.lastIndex = i;
      const m = LINK.exec(s);
      if (m) {
        flush();
        out.push({ t: 'a', href: m[2], c: inline(m[1]) });
        i += m[0].length;
        continue;
      }
    }
    buf += c; i++;
  }
  flush();
  return out;
}

function findRun(s, from, n) {
  for (let j = s.indexOf('`', from); j >= 0; j = s.indexOf('`', j)) {
    let k = 0;
    while (s[j + k] === '`') k++;
    if (k === n) return j;
    j += k;
  }
  return -1;
}

function closeDelim(s, i, d) {
  const c = d[0];
  const from = i + d.length;
  if (from >= s.length || /\s/.test(s[from])) return -1;
  if (c === '_' && i > 0 && WORD.test(s[i - 1])) return -1;
  for (let j = s.indexOf(d, from + 1); j >= 0; j = s.indexOf(d, j + 1)) {
    const after = s[j + d.length] || '';
    if (/\s/.test(s[j - 1]) || after === c) continue;
    if (d.length === 1 && s[j - 1] === c) continue;
    if (c === '_' && WORD.test(after)) continue;
    return j;
  }
  return -1;
}

// ---- DOM ----

function appendInline(doc, parent, nodes) {
  for (const n of nodes) {
    if (n.t === 'text') parent.appendChild(doc.createTextNode(n.v));
    else if (n.t === 'code') parent.appendChild(el(doc, 'code', n.v));
    else {
      const e = doc.createElement(n.t);
      if (n.t === 'a') {
        e.setAttribute('href', n.href);
        e.setAttribute('target', '_blank');
        e.setAttribute('rel', 'noopener noreferrer nofollow');
      }
      appendInline(doc, e, n.c);
      parent.appendChild(e);
    }
  }
}

function el(doc, tag, text, cls) {
  const e = doc.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

function buildList(doc, list) {
  const e = doc.createElement(list.ordered ? 'ol' : 'ul');
  if (list.ordered && list.start !== 1) e.setAttribute('start', String(list.start));
  for (const item of list.items) {
    const li = doc.createElement('li');
    appendInline(doc, li, inline(item.text));
    for (const sub of item.lists) li.appendChild(buildList(doc, sub));
    e.appendChild(li);
  }
  return e;
}

function build(doc, b) {
  const rec = { key: b.key, type: b.type, lang: b.lang, sepNode: doc.createTextNode(b.sep) };
  if (b.type === 'ws') rec.el = doc.createTextNode(b.raw);
  else if (b.type === 'p') { rec.el = doc.createElement('p'); appendInline(doc, rec.el, inline(b.text)); }
  else if (b.type === 'h') { rec.el = doc.createElement(`h${Math.min(6, b.level + 2)}`); appendInline(doc, rec.el, inline(b.text)); }
  else if (b.type === 'list') rec.el = buildList(doc, b.list);
  else {
    rec.el = el(doc, 'div', '', 'code');
    const bar = el(doc, 'div', '', 'code-bar');
    bar.setAttribute('data-lang', b.lang);
    const btn = el(doc, 'button', '', 'copy');
    btn.setAttribute('type', 'button');
    btn.setAttribute('aria-label', 'Copy code');
    bar.appendChild(btn);
    const pre = doc.createElement('pre');
    rec.code = el(doc, 'code', b.code);
    if (b.lang) rec.code.className = `language-${b.lang}`;
    pre.appendChild(rec.code);
    rec.el.appendChild(bar);
    rec.el.appendChild(pre);
  }
  return rec;
}

const CACHE = Symbol('md');

/**
 * Render `src` into `container`, reusing the DOM of unchanged leading blocks so a
 * streamed answer only rebuilds its last block (no flicker, selection survives).
 */
export function render(container, src, doc = container.ownerDocument) {
  const blocks = parse(src);
  const old = container[CACHE] || [];
  let k = 0;
  while (k < old.length && k < blocks.length && old[k].key === blocks[k].key) k++;
  const reuse = k < old.length && k < blocks.length && old[k].type === 'code'
    && blocks[k].type === 'code' && old[k].lang === blocks[k].lang ? old[k] : null;
  for (let j = old.length - 1; j >= k + (reuse ? 1 : 0); j--) {
    container.removeChild(old[j].el);
    container.removeChild(old[j].sepNode);
  }
  const next = old.slice(0, k);
  for (let j = k; j < blocks.length; j++) {
    const b = blocks[j];
    if (j === k && reuse) {
      if (reuse.code.textContent !== b.code) reuse.code.textContent = b.code;
      reuse.sepNode.data = b.sep;
      reuse.key = b.key;
      next.push(reuse);
    } else {
      const r = build(doc, b);
      container.appendChild(r.el);
      container.appendChild(r.sepNode);
      next.push(r);
    }
  }
  container[CACHE] = next;
}

/** Forget cached blocks and empty the container. */
export function clear(container) {
  container[CACHE] = null;
  while (container.firstChild) container.removeChild(container.firstChild);
}
