// The parser's plain tree: blocks (headings, paragraphs, fenced code, lists, quotes) and inline
// spans (code, emphasis, strong, links, escapes), CommonMark's rules where the page follows them.

import test from 'node:test';
import assert from 'node:assert/strict';
import { md } from './load.mjs';

const { parse, inline } = md;
const t = (v) => ({ t: 'text', v });
const p = (...c) => ({ t: 'p', c });

test('headings: levels 1-6, closing #s, and what is not a heading', () => {
  assert.deepEqual(parse('# Title'), [{ t: 'h', level: 1, c: [t('Title')] }]);
  assert.deepEqual(parse('###### six'), [{ t: 'h', level: 6, c: [t('six')] }]);
  assert.deepEqual(parse('## Closed ##'), [{ t: 'h', level: 2, c: [t('Closed')] }]);
  assert.deepEqual(parse('## C#'), [{ t: 'h', level: 2, c: [t('C#')] }]);
  assert.deepEqual(parse('#'), [{ t: 'h', level: 1, c: [] }]);
  assert.deepEqual(parse('#hashtag'), [p(t('#hashtag'))]);
  assert.deepEqual(parse('####### seven'), [p(t('####### seven'))]);
  assert.deepEqual(parse('# *a* b'), [{ t: 'h', level: 1, c: [{ t: 'em', c: [t('a')] }, t(' b')] }]);
  assert.deepEqual(parse('text\n# next'), [p(t('text')), { t: 'h', level: 1, c: [t('next')] }]);
});

test('emphasis and strong with * and _', () => {
  const em = (...c) => ({ t: 'em', c });
  const strong = (...c) => ({ t: 'strong', c });
  assert.deepEqual(inline('*a*'), [em(t('a'))]);
  assert.deepEqual(inline('_a_'), [em(t('a'))]);
  assert.deepEqual(inline('**a**'), [strong(t('a'))]);
  assert.deepEqual(inline('__a__'), [strong(t('a'))]);
  assert.deepEqual(inline('***a***'), [em(strong(t('a')))]);
  assert.deepEqual(inline('**a *b* c**'), [strong(t('a '), em(t('b')), t(' c'))]);
  assert.deepEqual(inline('**a*'), [t('*'), em(t('a'))]);
  assert.deepEqual(inline('*a**'), [em(t('a')), t('*')]);
  assert.deepEqual(inline('2*3*4'), [t('2'), em(t('3')), t('4')]);
  // Not emphasis: intraword _, spaces inside, unmatched.
  assert.deepEqual(inline('snake_case_name'), [t('snake_case_name')]);
  assert.deepEqual(inline('a * b * c'), [t('a * b * c')]);
  assert.deepEqual(inline('*open'), [t('*open')]);
  assert.deepEqual(inline('snake__double__name'), [t('snake__double__name')]);
  // The browser test's XSS payload stays one text node.
  const payload = '<script>window.__xss=1</script> <img src=x onerror="window.__xss=2">';
  assert.deepEqual(inline(payload), [t(payload)]);
});

test('code spans', () => {
  assert.deepEqual(inline('a `b` c'), [t('a '), { t: 'code', v: 'b' }, t(' c')]);
  assert.deepEqual(inline('`` a ` b ``'), [{ t: 'code', v: 'a ` b' }]);
  assert.deepEqual(inline('`*not em*` *em*'), [{ t: 'code', v: '*not em*' }, t(' '), { t: 'em', c: [t('em')] }]);
  assert.deepEqual(inline('` `'), [{ t: 'code', v: ' ' }]);
  assert.deepEqual(inline('`a\nb`'), [{ t: 'code', v: 'a b' }]);
  assert.deepEqual(inline('`unclosed *em*'), [t('`unclosed '), { t: 'em', c: [t('em')] }]);
  assert.deepEqual(inline('``a`'), [t('``a`')]);
  assert.deepEqual(inline('[`]`](https://x.y)'), [{ t: 'a', href: 'https://x.y', c: [{ t: 'code', v: ']' }] }]);
});

test('backslash escapes', () => {
  assert.deepEqual(inline('\\*not em\\*'), [t('*not em*')]);
  assert.deepEqual(inline('\\_a\\_ \\`b\\`'), [t('_a_ `b`')]);
  // LaTeX-style \[ \] keep their backslash and are no link brackets.
  assert.deepEqual(inline('\\[x\\](https://a.b)'), [t('\\[x\\](https://a.b)')]);
  assert.deepEqual(inline('C:\\path\\n'), [t('C:\\path\\n')]);
});

test('fenced code: language, tildes, unclosed while streaming', () => {
  assert.deepEqual(parse('```js\nlet a = 1;\n```'), [{ t: 'pre', lang: 'js', v: 'let a = 1;' }]);
  assert.deepEqual(parse('~~~\n*x*\n~~~'), [{ t: 'pre', lang: '', v: '*x*' }]);
  assert.deepEqual(parse('````\n```\n````'), [{ t: 'pre', lang: '', v: '```' }]);
  // Still streaming: no closing fence yet; a half-typed one or a trailing empty line is hidden.
  assert.deepEqual(parse('```py\nprint(1)\n``'), [{ t: 'pre', lang: 'py', v: 'print(1)' }]);
  assert.deepEqual(parse('```py\nprint(1)\n'), [{ t: 'pre', lang: 'py', v: 'print(1)' }]);
  // An info string with a backtick is no fence.
  assert.deepEqual(parse('```a`b\nx'), [p(t('```a`b\nx'))]);
  // Indented fences lose that indent in the code.
  assert.deepEqual(parse('  ```\n  a\n    b\n  ```'), [{ t: 'pre', lang: '', v: 'a\n  b' }]);
  assert.deepEqual(parse('para\n```\ncode\n```\nafter'), [p(t('para')), { t: 'pre', lang: '', v: 'code' }, p(t('after'))]);
});

test('lists: bullets, numbers with a start, nesting, continuation', () => {
  const li = (...c) => ({ t: 'li', c });
  assert.deepEqual(parse('- a\n* b\n+ c'), [{ t: 'ul', c: [li(t('a')), li(t('b')), li(t('c'))] }]);
  assert.deepEqual(parse('3. a\n4) b'), [{ t: 'ol', start: 3, c: [li(t('a')), li(t('b'))] }]);
  assert.deepEqual(parse('- a\n  - b\n    - c\n- d'), [{
    t: 'ul',
    c: [li(t('a'), { t: 'ul', c: [li(t('b'), { t: 'ul', c: [li(t('c'))] })] }), li(t('d'))],
  }]);
  assert.deepEqual(parse('- a\n  more\n\n  after blank\n- *b*'), [{
    t: 'ul', c: [li(t('a\nmore\n\nafter blank')), li({ t: 'em', c: [t('b')] })],
  }]);
  assert.deepEqual(parse('- a\n1. b'), [{ t: 'ul', c: [li(t('a'))] }, { t: 'ol', start: 1, c: [li(t('b'))] }]);
  assert.deepEqual(parse('- a\n\nnext'), [{ t: 'ul', c: [li(t('a'))] }, p(t('next'))]);
  // A thousand levels of indentation nest only MAX_LIST_DEPTH deep.
  const deep = Array.from({ length: 1000 }, (_, k) => `${' '.repeat(2 * k)}- x`).join('\n');
  let depth = 0;
  for (let n = parse(deep)[0]; n; n = n.c[n.c.length - 1].c.find((k) => k.t === 'ul')) depth++;
  assert.equal(depth, md.MAX_LIST_DEPTH);
});

test('quotes nest, but only MAX_QUOTE_DEPTH deep', () => {
  assert.deepEqual(parse('> a\n> *b*'), [{ t: 'quote', c: [p(t('a\n'), { t: 'em', c: [t('b')] })] }]);
  assert.deepEqual(parse('> a\n>> b\n\nc'), [{ t: 'quote', c: [p(t('a')), { t: 'quote', c: [p(t('b'))] }] }, p(t('c'))]);
  let n = parse('>'.repeat(10000) + ' deep')[0];
  let depth = 0;
  while (n.t === 'quote') { depth++; n = n.c[0]; }
  assert.equal(depth, md.MAX_QUOTE_DEPTH);
  assert.deepEqual(n, p(t('>'.repeat(10000 - md.MAX_QUOTE_DEPTH) + ' deep')));
});

test('paragraphs keep their line breaks; blank lines separate blocks', () => {
  assert.deepEqual(parse('a\nb\n\n\nc'), [p(t('a\nb')), p(t('c'))]);
  assert.deepEqual(parse('\n\n  \n'), []);
});

test('inline nesting is capped at MAX_INLINE_DEPTH; the rest stays as text', () => {
  const n = 5000;
  const src = '*'.repeat(n) + 'a' + '*'.repeat(n);
  const tree = inline(src);
  let depth = 0;
  let text = '';
  const walk = (nodes, d) => {
    depth = Math.max(depth, d);
    for (const k of nodes) {
      if (k.t === 'text') text += k.v;
      else {
        const mark = k.t === 'em' ? '*' : '**';
        text += mark;
        walk(k.c, d + 1);
        text += mark;
      }
    }
  };
  // Iterative check would be nicer, but the depth is bounded: that is the point.
  walk(tree, 0);
  assert.equal(depth, md.MAX_INLINE_DEPTH);
  assert.equal(text, src, 'every delimiter is still there, as markup or as text');
  // Nested links in too-deep emphasis keep their source as text too.
  const deepLink = '*'.repeat(100) + '[x](https://a.b)' + '*'.repeat(100);
  const flat = JSON.stringify(inline(deepLink));
  assert.ok(flat.includes('[x](https://a.b)'), flat.slice(0, 200));
});
