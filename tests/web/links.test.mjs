// Links: only http(s), mailto and relative targets become <a href>; every other scheme, and
// every trick that a browser would fold into one (case, whitespace, control characters,
// character references), leaves the source as plain text.

import test from 'node:test';
import assert from 'node:assert/strict';
import { md } from './load.mjs';
import { container, elements } from './fake-dom.mjs';

const { inline, safeHref } = md;

/** The href of the single link in `[x](dest)`, or null when no link was made. */
function hrefOf(dest) {
  const nodes = inline(`[x](${dest})`);
  const links = nodes.filter((n) => n.t === 'a');
  assert.ok(links.length <= 1);
  return links.length ? links[0].href : null;
}

test('safe targets become links', () => {
  for (const url of [
    'https://example.com',
    'http://example.com/a?b=1&c=2#d',
    'HTTPS://EXAMPLE.COM/',
    'https://en.wikipedia.org/wiki/Foo_(bar)',
    'mailto:someone@example.com',
    '/docs/page',
    './rel',
    '../up',
    'page.html',
    '#anchor',
    '?q=1',
    'https://x.y/a%20b',
  ]) {
    assert.equal(hrefOf(url), url, url);
  }
  assert.equal(hrefOf('<https://x.y/a(b>'), 'https://x.y/a(b');
  assert.equal(hrefOf(' https://x.y '), 'https://x.y');
  assert.equal(hrefOf('https://x.y/\\(a\\)'), 'https://x.y/(a)');
});

test('unsafe schemes and tricks stay text', () => {
  const bad = [
    'javascript:alert(1)',
    'JaVaScRiPt:alert(1)',
    'javascript:alert(document.cookie)//https://x.y',
    'data:text/html,<script>alert(1)</script>',
    'data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==',
    'vbscript:msgbox(1)',
    'VBSCRIPT:msgbox(1)',
    'file:///etc/passwd',
    'blob:https://x.y/uuid',
    'ftp://x.y',
    'about:blank',
    'java\tscript:alert(1)',
    'java\nscript:alert(1)',
    'java\rscript:alert(1)',
    ' javascript:alert(1)',
    '\u0000javascript:alert(1)',
    'java\u0000script:alert(1)',
    '\u0001javascript:alert(1)',
    'java\u200bscript:alert(1)',
    '\ufeffjavascript:alert(1)',
    'java\u00adscript:alert(1)',
    'javascript&colon;alert(1)',
    'javascript&#58;alert(1)',
    'javascript&#x3A;alert(1)',
    '&#106;avascript:alert(1)',
    '&#x6A;avascript:alert(1)',
    'jav&#x09;ascript:alert(1)',
    'javascript\\:alert(1)',
    '\\javascript:alert(1)',
    'x:alert(1)',
    'javascript:',
    '',
  ];
  for (const dest of bad) {
    assert.equal(safeHref(dest), null, JSON.stringify(dest));
    const nodes = inline(`[x](${dest})`);
    assert.ok(!nodes.some((n) => n.t === 'a'), `${JSON.stringify(dest)} made a link: ${JSON.stringify(nodes)}`);
  }
  // In angle brackets too.
  for (const dest of ['<javascript:alert(1)>', '<JaVaScRiPt:alert(1)>', '<data:text/html,x>', '< javascript:alert(1)>']) {
    assert.equal(hrefOf(dest), null, dest);
  }
});

test('an unsafe link is shown as its source text', () => {
  assert.deepEqual(inline('[x](javascript:alert(1))'), [{ t: 'text', v: '[x](javascript:alert(1))' }]);
  assert.deepEqual(inline('[*x*](vbscript:y)'), [{ t: 'text', v: '[' }, { t: 'em', c: [{ t: 'text', v: 'x' }] }, { t: 'text', v: '](vbscript:y)' }]);
});

test('no links inside links, no link without a target', () => {
  assert.deepEqual(inline('[a [b](https://x) c](https://y)'), [
    { t: 'text', v: '[a ' },
    { t: 'a', href: 'https://x', c: [{ t: 'text', v: 'b' }] },
    { t: 'text', v: ' c](https://y)' },
  ]);
  assert.deepEqual(inline('[a]'), [{ t: 'text', v: '[a]' }]);
  assert.deepEqual(inline('[a]()'), [{ t: 'text', v: '[a]()' }]);
  assert.deepEqual(inline('[a] (https://x.y)'), [{ t: 'text', v: '[a] (https://x.y)' }]);
  assert.deepEqual(inline('[a](https://x.y "title")'), [{ t: 'text', v: '[a](https://x.y "title")' }]);
});

test('rendered links: href via setAttribute, new tab without opener, no other schemes anywhere', () => {
  const c = container();
  md.render(c.el, '[ok](https://x.y) [no](javascript:alert(1)) [mail](mailto:a@b.c)\n\n- [rel](/a)', c.doc);
  const links = [...elements(c.el)].filter((e) => e.tagName === 'A');
  assert.deepEqual(links.map((a) => a.getAttribute('href')), ['https://x.y', 'mailto:a@b.c', '/a']);
  for (const a of links) {
    assert.equal(a.getAttribute('target'), '_blank');
    assert.equal(a.getAttribute('rel'), 'noopener noreferrer nofollow');
  }
  assert.ok(c.el.textContent.includes('[no](javascript:alert(1))'));
});
