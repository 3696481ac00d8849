// Loads web/markdown.js, the page's ES module, as is. Node 20.19+ and 22.7+ recognise its
// `export` syntax although the file is `.js` with no package.json; older versions get the same
// source through a data: URL (the module has no imports, so nothing depends on its location).

import { readFileSync } from 'node:fs';

const url = new URL('../../web/markdown.js', import.meta.url);

async function load() {
  try {
    return await import(url.href);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    const src = readFileSync(url, 'utf8');
    return import(`data:text/javascript;base64,${Buffer.from(src).toString('base64')}`);
  }
}

export const md = await load();
