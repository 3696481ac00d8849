// Shared by the Node check scripts (browser_chat, browser_teams, eventsource_resume): the
// PASS/FAIL lines and the closing summary the Rust wrappers look for, small utilities, the
// Chromium launch flags, screenshots, and closing the two sides of a proxied connection.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Flags for headless Chromium in a container: no sandbox, GPU or background traffic. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** The names of the checks that failed so far. */
export const failures = [];

/** Prints `PASS name (detail)` or `FAIL name (detail)`, remembers a failure, returns `ok`. */
export function result(name, ok, detail) {
  if (!ok) failures.push(name);
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ` (${detail})` : ''}`);
  return ok;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `s` quoted, cut to `n` characters. */
export const short = (s, n = 80) => JSON.stringify(s.length > n ? `${s.slice(0, n)}…` : s);

/**
 * Runs `main`, then prints the closing line the Rust wrapper checks, `PASS {title}: every check
 * passed`, or `FAIL {title}: ...` and exits 1. A throw from `main` is a failed check; with
 * `deadlineMs`, a run that takes longer fails too.
 */
export async function runChecks(title, main, { deadlineMs } = {}) {
  const watchdog = deadlineMs && setTimeout(() => {
    console.log(`FAIL ${title}: did not finish within ${deadlineMs / 1000} s`);
    process.exit(1);
  }, deadlineMs);
  try {
    await main();
  } catch (e) {
    result(`${title}: the checks ran to the end`, false, e && e.stack ? e.stack : String(e));
  }
  if (watchdog) clearTimeout(watchdog);
  if (failures.length) {
    console.log(`FAIL ${title}: ${failures.length} check(s) failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log(`PASS ${title}: every check passed`);
  process.exit(0);
}

/** `test-artifacts/{name}` at the repository root. */
export function artifactPath(name) {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  return path.join(repoRoot, 'test-artifacts', name);
}

/** Saves a screenshot of `page` at `file` and returns the PNG bytes. */
export async function saveScreenshot(page, file) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const png = await page.screenshot();
  // Write then rename, so a reader (or a concurrent run) never sees a half-written file.
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, png);
  fs.renameSync(tmp, file);
  console.log(`screenshot: ${file}`);
  return png;
}

/** Destroys both sockets of a proxied connection as soon as either one errors or closes. */
export function closeTogether(client, upstream) {
  const closeBoth = () => {
    client.destroy();
    upstream.destroy();
  };
  for (const socket of [client, upstream]) {
    socket.on('error', closeBoth);
    socket.on('close', closeBoth);
  }
}
