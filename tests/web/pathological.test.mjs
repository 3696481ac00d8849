// Pathological model output: long runs of delimiters, deep nesting. Each must parse and render
// without a stack overflow and in about linear time. The bounds are absolute and generous (a
// noisy 2-core CI box runs this beside other tests): the inputs take milliseconds here, while
// the recursive, backtracking parser this replaced overflowed the stack on 40,000 `_` and took
// 2.5 s on `*a ` x 16,000; a quadratic algorithm on the 250,000-character inputs would take
// a minute or more.

import test from 'node:test';
import assert from 'node:assert/strict';
import { md } from './load.mjs';
import { container } from './fake-dom.mjs';

/** Milliseconds to parse `src` and render it into a fresh fake DOM (best of `runs`). */
function cost(src, runs = 1) {
  let best = Infinity;
  for (let k = 0; k < runs; k++) {
    const c = container();
    const t0 = performance.now();
    md.render(c.el, src, c.doc);
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

const CASES = {
  'underscores': (n) => '_'.repeat(n),
  'stars': (n) => '*'.repeat(n),
  '"*a " repeated': (n) => '*a '.repeat(n / 3),
  '"_a " repeated': (n) => '_a '.repeat(n / 3),
  '"a* " repeated': (n) => 'a* '.repeat(n / 3),
  'backticks': (n) => '`'.repeat(n),
  'backticks in a paragraph': (n) => `a ${'`'.repeat(n)}`,
  'backtick runs of growing length': (n) => {
    let s = '';
    for (let k = 1; s.length < n; k++) s += `${'`'.repeat(k % 300)} x `;
    return s;
  },
  'nested emphasis': (n) => `${'*'.repeat(n / 2)}a${'*'.repeat(n / 2)}`,
  'nested emphasis, alternating': (n) => `${'*_'.repeat(n / 4)}a${'_*'.repeat(n / 4)}`,
  'quote markers': (n) => '>'.repeat(n),
  'quote lines': (n) => '> '.repeat(n / 4) + '\n' + '>\n'.repeat(n / 4),
  'open brackets': (n) => '['.repeat(n),
  'bracket pairs': (n) => '[a]'.repeat(n / 3),
  'unclosed link targets': (n) => '[a](b'.repeat(n / 5),
  'nested link targets': (n) => '[](('.repeat(n / 4),
  'links': (n) => '[a](https://x.y) '.repeat(n / 17),
  'list indentation': (n) => {
    let s = '';
    for (let k = 0; s.length < n; k++) s += `${' '.repeat((2 * k) % 2000)}- x\n`;
    return s;
  },
  'blank lines': (n) => '\n'.repeat(n),
  'fence openers': (n) => '```a\n'.repeat(n / 5),
  'fence-like line': (n) => `\`\`\`${'a'.repeat(n)}\``,
  'heading-like line': (n) => `# ${' '.repeat(n)}x#`,
  'list-like line': (n) => `- ${' '.repeat(n)}\r`,
};

test('the inputs from the bug report finish fast', () => {
  for (const [name, src] of [
    ['40,000 _', '_'.repeat(40000)],
    ['*a x 16,000', '*a '.repeat(16000)],
    ['100,000 backticks', '`'.repeat(100000)],
    ['100,000 backticks in a paragraph', `a ${'`'.repeat(100000)}`],
    ['10,000 >', '>'.repeat(10000)],
    ['10,000 nested *', `${'*'.repeat(10000)}a${'*'.repeat(10000)}`],
    ['10,000 nested [', `${'['.repeat(10000)}a${'](https://x.y)'.repeat(10000)}`],
  ]) {
    const ms = cost(src);
    assert.ok(ms < 1000, `${name}: ${ms.toFixed(0)} ms`);
  }
});

test('250,000 characters of each pathological pattern in well under 5 s', (t) => {
  for (const [name, make] of Object.entries(CASES)) {
    const src = make(250_000);
    const ms = cost(src);
    t.diagnostic(`${name}: ${ms.toFixed(0)} ms`);
    assert.ok(ms < 5000, `${name}: ${ms.toFixed(0)} ms for ${src.length} characters`);
  }
});

test('streaming a long answer: re-rendering after each small append stays cheap', (t) => {
  // 2,000 blocks (about 200 KB) rendered after every 40 characters: each render costs the
  // last block, so the whole stream costs about as much as a few full renders.
  let answer = '';
  for (let k = 0; answer.length < 200_000; k++) {
    answer += k % 10 === 9 ? `\`\`\`\ncode line ${k}\n\`\`\`\n\n` : `Paragraph ${k}: *some* **text** with \`code\`.\n\n`;
  }
  const full = cost(answer, 3);
  const c = container();
  let renders = 0;
  const t0 = performance.now();
  for (let at = 40; at < answer.length; at += 40) {
    md.render(c.el, answer.slice(0, at), c.doc);
    renders++;
  }
  const ms = performance.now() - t0;
  t.diagnostic(`${renders} renders: ${ms.toFixed(0)} ms; one full render: ${full.toFixed(1)} ms`);
  assert.ok(ms < 5000, `${renders} incremental renders took ${ms.toFixed(0)} ms (one full render: ${full.toFixed(1)} ms)`);
});
