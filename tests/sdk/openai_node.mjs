// Drives a running Sluice with the official OpenAI Node SDK (npm `openai`).
//
// Usage: node openai_node.mjs http://127.0.0.1:PORT/v1
//
// Start Sluice with SLUICE_KEEPALIVE_SECS=1 so that the slow-stream check gets keep-alive
// comments between events. Prints one PASS/FAIL line per check and exits non-zero if any
// check failed.

import OpenAI from 'openai';
import { VERSION as sdkVersion } from 'openai/version';

const MODEL = 'sluice-demo';
const MESSAGES = [{ role: 'user', content: 'Tell me about Sluice, please.' }];
// Unknown request fields are sent as given; the gateway forwards them to the demo upstream.
const FAST = { mock: { delay_ms: 2 } };
// Silences (2.5 s) longer than the keep-alive interval (1 s).
const SLOW = { mock: { delay_ms: 2500, tokens: 4 } };

const failures = [];

async function check(name, fn) {
  try {
    const detail = await fn();
    console.log(`PASS ${name}${detail ? ` (${detail})` : ''}`);
  } catch (e) {
    failures.push(name);
    console.log(`FAIL ${name}: ${e?.constructor?.name}: ${e?.message}`);
    if (e?.stack) console.log(e.stack);
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

const baseURL = process.argv[2];
if (!baseURL) {
  console.error('usage: node openai_node.mjs BASE_URL (e.g. http://127.0.0.1:8080/v1)');
  process.exit(2);
}
console.log(`openai-node ${sdkVersion} against ${baseURL}`);

// Every response body the SDK reads is also copied here, to show what it was fed.
const rawBodies = [];
async function recordingFetch(url, init) {
  const resp = await fetch(url, init);
  if (!resp.body) return resp;
  const [forSdk, forUs] = resp.body.tee();
  const entry = { text: '' };
  rawBodies.push(entry);
  entry.done = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of forUs) entry.text += decoder.decode(chunk, { stream: true });
  })();
  return new Response(forSdk, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
}

const client = new OpenAI({
  baseURL,
  apiKey: 'sk-sluice-test',
  maxRetries: 0,
  timeout: 60_000,
  fetch: recordingFetch,
});
const state = {};

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const textOf = (chunks) =>
  chunks.flatMap((c) => c.choices.map((ch) => ch.delta?.content ?? '')).join('');
const finishesOf = (chunks) =>
  chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter(Boolean);

await check('non-streaming create returns a chat.completion with content', async () => {
  const resp = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, ...FAST });
  expect(resp.object === 'chat.completion', `object=${resp.object}`);
  const choice = resp.choices[0];
  expect(choice.message.role === 'assistant', `role=${choice.message.role}`);
  expect(typeof choice.message.content === 'string' && choice.message.content.length > 0, 'no content');
  expect(choice.finish_reason === 'stop', `finish_reason=${choice.finish_reason}`);
  expect(resp.usage && resp.usage.completion_tokens > 0, `usage=${JSON.stringify(resp.usage)}`);
  state.text = choice.message.content;
  state.usage = resp.usage;
  return `${state.text.length} chars, usage ${resp.usage.prompt_tokens}+${resp.usage.completion_tokens}`;
});

await check('streaming text equals non-streaming text, finish_reason stop, no usage chunk', async () => {
  expect(state.text !== undefined, 'no non-streaming text to compare with');
  const chunks = await collect(
    await client.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true, ...FAST }),
  );
  for (const c of chunks) expect(c.object === 'chat.completion.chunk', `object=${c.object}`);
  const text = textOf(chunks);
  expect(text === state.text, `streamed text differs:\n${JSON.stringify(text)}\nvs\n${JSON.stringify(state.text)}`);
  expect(JSON.stringify(finishesOf(chunks)) === '["stop"]', `finish reasons ${finishesOf(chunks)}`);
  const usageChunks = chunks.filter((c) => c.usage || c.choices.length === 0).length;
  expect(usageChunks === 0, `${usageChunks} usage/empty-choices chunk(s) without include_usage`);
  return `${chunks.length} chunks`;
});

await check('max_tokens=3 gives finish_reason length (streaming and not)', async () => {
  const resp = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 3, ...FAST });
  expect(resp.choices[0].finish_reason === 'length', `non-streaming finish_reason=${resp.choices[0].finish_reason}`);
  expect(resp.usage.completion_tokens === 3, `usage=${JSON.stringify(resp.usage)}`);
  const chunks = await collect(
    await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 3, stream: true, ...FAST }),
  );
  expect(JSON.stringify(finishesOf(chunks)) === '["length"]', `streaming finish reasons ${finishesOf(chunks)}`);
  expect(textOf(chunks) === resp.choices[0].message.content, `${textOf(chunks)} vs ${resp.choices[0].message.content}`);
  return JSON.stringify(textOf(chunks));
});

await check('stream_options.include_usage gives one consistent usage chunk', async () => {
  const chunks = await collect(
    await client.chat.completions.create({
      model: MODEL,
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
      ...FAST,
    }),
  );
  const withUsage = chunks.filter((c) => c.usage);
  expect(withUsage.length === 1, `${withUsage.length} chunks carry usage`);
  const last = chunks[chunks.length - 1];
  expect(last.usage && last.choices.length === 0, `last chunk is not the usage chunk: ${JSON.stringify(last)}`);
  const u = last.usage;
  expect(u.prompt_tokens > 0 && u.completion_tokens > 0, `usage=${JSON.stringify(u)}`);
  expect(u.total_tokens === u.prompt_tokens + u.completion_tokens, `usage not consistent: ${JSON.stringify(u)}`);
  const contentChunks = chunks.flatMap((c) => c.choices).filter((ch) => ch.delta?.content).length;
  expect(u.completion_tokens === contentChunks, `completion_tokens ${u.completion_tokens} vs ${contentChunks} content chunks`);
  if (state.usage) {
    expect(
      u.prompt_tokens === state.usage.prompt_tokens && u.completion_tokens === state.usage.completion_tokens,
      `streaming usage ${JSON.stringify(u)} vs non-streaming ${JSON.stringify(state.usage)}`,
    );
  }
  if (state.text !== undefined) expect(textOf(chunks) === state.text, 'text differs from the non-streaming text');
  return `${u.prompt_tokens}+${u.completion_tokens}=${u.total_tokens}`;
});

await check('slow stream, silences longer than the keep-alive interval, completes with the full text', async () => {
  const expected = (await client.chat.completions.create({ model: MODEL, messages: MESSAGES, ...SLOW })).choices[0]
    .message.content;
  const started = Date.now();
  const stream = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true, ...SLOW });
  const raw = rawBodies[rawBodies.length - 1];
  const chunks = await collect(stream);
  const elapsed = (Date.now() - started) / 1000;
  await raw.done;
  expect(textOf(chunks) === expected, `slow stream text ${JSON.stringify(textOf(chunks))} vs ${JSON.stringify(expected)}`);
  expect(JSON.stringify(finishesOf(chunks)) === '["stop"]', `finish reasons ${finishesOf(chunks)}`);
  expect(('\n' + raw.text).includes('\nid: '), 'the stream carried no `id:` lines');
  const keepalives = raw.text.split(': keep-alive').length - 1;
  expect(keepalives >= 2, `only ${keepalives} keep-alive comments in ${elapsed}s (start sluice with SLUICE_KEEPALIVE_SECS=1)`);
  return `${elapsed.toFixed(1)}s, ${keepalives} keep-alives, ${expected.length} chars`;
});

for (const stream of [false, true]) {
  await check(`unknown model${stream ? ' (stream: true)' : ''} raises NotFoundError model_not_found`, async () => {
    try {
      const r = await client.chat.completions.create({ model: 'no-such-model', messages: MESSAGES, stream });
      if (stream) await collect(r);
    } catch (e) {
      expect(e instanceof OpenAI.NotFoundError, `got ${e?.constructor?.name}: ${e?.message}`);
      expect(e.status === 404, `status ${e.status}`);
      expect(e.code === 'model_not_found', `code=${e.code} error=${JSON.stringify(e.error)}`);
      return `NotFoundError: ${e.message}`;
    }
    throw new Error('no error raised');
  });
}

if (failures.length) {
  console.log(`FAIL openai-node: ${failures.length} check(s) failed: ${failures.join(', ')}`);
  process.exit(1);
}
console.log('PASS openai-node: every check passed');
