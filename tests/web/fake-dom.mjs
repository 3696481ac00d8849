// The few DOM calls markdown.js makes, enough to render into and to inspect the result.
// Only what a text node, an element and a document need; no parsing of HTML anywhere.

class Node {
  constructor(doc) {
    this.ownerDocument = doc;
    this.parentNode = null;
    this.childNodes = [];
  }
  get firstChild() { return this.childNodes[0] || null; }
  get lastChild() { return this.childNodes[this.childNodes.length - 1] || null; }
  appendChild(n) {
    if (n.parentNode) n.parentNode.removeChild(n);
    n.parentNode = this;
    this.childNodes.push(n);
    this.ownerDocument.mutations++;
    return n;
  }
  removeChild(n) {
    const k = this.childNodes.indexOf(n);
    if (k < 0) throw new Error('removeChild: not a child');
    this.childNodes.splice(k, 1);
    n.parentNode = null;
    this.ownerDocument.mutations++;
    return n;
  }
}

export class Text extends Node {
  constructor(doc, data) {
    super(doc);
    this._data = String(data);
  }
  get data() { return this._data; }
  set data(v) { this._data = String(v); this.ownerDocument.mutations++; }
  get textContent() { return this._data; }
  set textContent(v) { this.data = v; }
}

export class Element extends Node {
  constructor(doc, tag) {
    super(doc);
    this.tagName = tag.toUpperCase();
    this.attributes = new Map();
  }
  setAttribute(k, v) { this.attributes.set(String(k).toLowerCase(), String(v)); }
  getAttribute(k) { return this.attributes.has(k) ? this.attributes.get(k) : null; }
  get className() { return this.getAttribute('class') || ''; }
  set className(v) { this.setAttribute('class', v); }
  get textContent() { return this.childNodes.map((c) => c.textContent).join(''); }
  set textContent(v) {
    for (const c of this.childNodes) c.parentNode = null;
    this.childNodes = [];
    if (v !== '') this.appendChild(new Text(this.ownerDocument, v));
    this.ownerDocument.mutations++;
  }
  set innerHTML(_) { throw new Error('innerHTML must not be used'); }
  set outerHTML(_) { throw new Error('outerHTML must not be used'); }
  insertAdjacentHTML() { throw new Error('insertAdjacentHTML must not be used'); }
}

export class Document {
  constructor() { this.mutations = 0; }
  createElement(tag) { return new Element(this, tag); }
  createTextNode(data) { return new Text(this, data); }
  write() { throw new Error('document.write must not be used'); }
}

/** A fresh document and an empty container element in it. */
export function container() {
  const doc = new Document();
  return { doc, el: doc.createElement('div') };
}

/** Serialises a node as HTML-like text (attributes sorted), for comparisons in tests. */
export function html(n) {
  if (n instanceof Text) return n.data.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const attrs = [...n.attributes].sort().map(([k, v]) => ` ${k}="${v.replace(/"/g, '&quot;')}"`).join('');
  const tag = n.tagName.toLowerCase();
  return `<${tag}${attrs}>${n.childNodes.map(html).join('')}</${tag}>`;
}

/** Every element below `n`, depth first. */
export function* elements(n) {
  for (const c of n.childNodes) {
    if (c instanceof Element) {
      yield c;
      yield* elements(c);
    }
  }
}
