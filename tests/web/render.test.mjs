// render(): the tree as DOM nodes (never HTML strings), and incremental rendering of a streamed
// answer -- the same DOM as rendering from scratch, at the cost of the last block only.

import test from 'node:test';
import assert from 'node:assert/strict';
import { md } from './load.mjs';
import { container, html, elements, Document } from './fake-dom.mjs';

const { render, clear } = md;

function fresh(src) {
  const c = container();
  render(c.el, src, c.doc);
  return html(c.el);
}

const SAMPLE = [
  '# Answer',
  '',
  'Some *emphasis*, **strong**, `code` and a [link](https://example.com).',
  'Second line of the paragraph.',
  '',
  '> quoted *text*',
  '> > nested',
  '',
  '- one',
  '- two',
  '  - two.a',
  '',
  '3. three',
  '4. four',
  '',
  '```js',
  'const a = 1; // <b>not html</b>',
  '```',
  '',
  '~~~',
  'unclosed at the end',
].join('\n');

test('blocks and spans become the expected elements', () => {
  assert.equal(fresh('# T\n\n*a* **b** `c`'),
    '<div><h3>T</h3>\n\n<p><em>a</em> <strong>b</strong> <code>c</code></p></div>');
  assert.equal(fresh('- a\n  - b\n\n5. c'),
    '<div><ul><li>a<ul><li>b</li></ul></li></ul>\n\n<ol start="5"><li>c</li></ol></div>');
  assert.equal(fresh('> q'), '<div><blockquote><p>q</p></blockquote></div>');
  assert.equal(fresh('```py\nx < 1\n```'),
    '<div><div class="code"><div class="code-bar" data-lang="py"><button aria-label="Copy code" class="copy" ' +
    'type="button"></button></div><pre><code class="language-py">x &lt; 1</code></pre></div></div>');
  assert.equal(fresh('###### six'), '<div><h6>six</h6></div>');
});

test('markup in model output is text, and plain text renders to exactly itself', () => {
  const payload = '<script>window.__xss=1</script> <img src=x onerror="window.__xss=2">';
  const c = container(); // the fake document throws on innerHTML and friends
  render(c.el, `${payload}\n\n\`${payload}\`\n\n\`\`\`\n${payload}\n\`\`\``, c.doc);
  const tags = [...elements(c.el)].map((e) => e.tagName);
  assert.ok(!tags.some((t) => ['SCRIPT', 'IMG', 'IFRAME', 'STYLE', 'SVG'].includes(t)), tags.join());
  assert.equal(c.el.childNodes[1].textContent, payload);
  for (const text of ['plain text\n\n\n  with gaps  \n', '\n\nlead', 'trailing\n\n', '   ', 'a\nb\n\nc']) {
    const d = container();
    render(d.el, text, d.doc);
    assert.equal(d.el.textContent, text, JSON.stringify(text));
  }
});

test('streaming one character at a time gives the same DOM as rendering at once', () => {
  const c = container();
  for (let k = 0; k <= SAMPLE.length; k++) {
    render(c.el, SAMPLE.slice(0, k), c.doc);
    assert.equal(html(c.el), fresh(SAMPLE.slice(0, k)), `after ${k} characters`);
  }
});

test('random documents in random chunks give the same DOM as rendering at once', () => {
  // A small deterministic PRNG: the same cases on every run.
  let seed = 12345;
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const pieces = ['a', 'b c', ' ', '\n', '\n\n', '*', '**', '_', '`', '```', '~~~', '#', '# ', '- ', '  - ', '1. ',
    '> ', '>', '[', ']', '(', ')', '](https://x.y)', '](javascript:x)', '\\', 'é', '😀', '\t', '    '];
  for (let round = 0; round < 300; round++) {
    let doc = '';
    const parts = 5 + rand(40);
    for (let k = 0; k < parts; k++) doc += pieces[rand(pieces.length)];
    const c = container();
    let at = 0;
    while (at < doc.length) {
      at = Math.min(doc.length, at + 1 + rand(6));
      render(c.el, doc.slice(0, at), c.doc);
      assert.equal(html(c.el), fresh(doc.slice(0, at)), JSON.stringify(doc.slice(0, at)));
    }
  }
});

test('appending to a long answer touches only its end', () => {
  const c = container();
  let src = '';
  for (let k = 0; k < 400; k++) src += `Paragraph ${k} with *some* \`code\`.\n\n`;
  render(c.el, src, c.doc);
  const first = c.el.childNodes[1];
  for (const more of ['More', ' text', ' *here*', '\n', '\n\n- item', '\n\n```\ncode', '\nmore code']) {
    src += more;
    const before = c.doc.mutations;
    render(c.el, src, c.doc);
    assert.ok(c.doc.mutations - before < 20, `${c.doc.mutations - before} DOM mutations for appending ${JSON.stringify(more)}`);
    assert.equal(html(c.el), fresh(src));
  }
  assert.equal(c.el.childNodes[1], first, 'the first paragraph kept its element');
});

test('a growing code block is updated in place', () => {
  const c = container();
  render(c.el, '```js\nlet a', c.doc);
  const box = c.el.childNodes[1];
  render(c.el, '```js\nlet a = 1;\nlet b', c.doc);
  assert.equal(c.el.childNodes[1], box, 'same code block element (a copy in progress is not lost)');
  assert.equal(box.lastChild.firstChild.textContent, 'let a = 1;\nlet b');
});

test('text that is not an extension of the last render starts over', () => {
  const c = container();
  render(c.el, 'first answer *x*', c.doc);
  render(c.el, 'other', c.doc);
  assert.equal(html(c.el), fresh('other'));
  clear(c.el);
  assert.equal(c.el.childNodes.length, 0);
  render(c.el, '# again', c.doc);
  assert.equal(html(c.el), fresh('# again'));
});

test('after a render that threw, the next one starts over and is right', () => {
  const doc = new Document();
  const el = doc.createElement('div');
  render(el, 'a\n\nb', doc);
  const create = doc.createElement;
  doc.createElement = () => { throw new Error('boom'); };
  assert.throws(() => render(el, 'a\n\nb *c*\n\n- d', doc), /boom/);
  doc.createElement = create;
  render(el, 'a\n\nb *c*\n\n- d\n\ne', doc);
  assert.equal(html(el), fresh('a\n\nb *c*\n\n- d\n\ne'));
});
