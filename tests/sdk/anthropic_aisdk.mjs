// Drives a running Sluice with the AI SDK's Anthropic provider (`createAnthropic`), which calls
// `POST /v1/messages` and reads the Anthropic event stream.
//
// Usage: node anthropic_aisdk.mjs http://127.0.0.1:PORT/v1
//
// The models (see tests/tests/sdk_anthropic.rs): `claude-text` answers "Hello from Sluice",
// `claude-tools` calls `get_weather` with {"city": "Paris"}, `claude-broken` fails after its
// first words.

import { generateText, jsonSchema, streamText, tool } from 'ai';
import { createAnthropic } from '@ai-sdk/anthropic';

import { failures, result } from './lib.mjs';

const base = process.argv[2];
const anthropic = createAnthropic({ baseURL: base, apiKey: 'sk-sluice-test' });
const TEXT = 'Hello from Sluice';

async function check(name, fn) {
  try {
    const detail = await fn();
    result(name, true, detail);
  } catch (e) {
    result(name, false, `${e?.name}: ${e?.message}`);
    console.error(e);
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

await check('streamText text', async () => {
  const r = streamText({ model: anthropic('claude-text'), prompt: 'Say hello', maxRetries: 0 });
  let text = '';
  for await (const t of r.textStream) text += t;
  expect(text === TEXT, `text ${JSON.stringify(text)}`);
  const reason = await r.finishReason;
  expect(reason === 'stop', `finishReason ${reason}`);
  const usage = await r.usage;
  expect(usage.inputTokens === 5 && usage.outputTokens === 3, `usage ${JSON.stringify(usage)}`);
  return `usage ${usage.inputTokens}/${usage.outputTokens}`;
});

await check('streamText tools', async () => {
  const r = streamText({
    model: anthropic('claude-tools'),
    prompt: 'Weather in Paris?',
    maxRetries: 0,
    tools: {
      get_weather: tool({
        description: 'The weather in a city',
        inputSchema: jsonSchema({
          type: 'object',
          properties: { city: { type: 'string' } },
          required: ['city'],
        }),
      }),
    },
  });
  const deltas = [];
  for await (const part of r.fullStream) {
    if (part.type === 'tool-input-delta') deltas.push(part.delta);
    if (part.type === 'error') throw part.error;
  }
  const calls = await r.toolCalls;
  expect(calls.length === 1, `toolCalls ${JSON.stringify(calls)}`);
  expect(calls[0].toolName === 'get_weather', calls[0].toolName);
  expect(JSON.stringify(calls[0].input) === '{"city":"Paris"}', JSON.stringify(calls[0].input));
  expect(deltas.join('') === '{"city":"Paris"}', `input deltas ${JSON.stringify(deltas)}`);
  const reason = await r.finishReason;
  expect(reason === 'tool-calls', `finishReason ${reason}`);
  return `${deltas.length} input deltas`;
});

await check('generateText', async () => {
  const r = await generateText({ model: anthropic('claude-text'), prompt: 'Say hello', maxRetries: 0 });
  expect(r.text === TEXT, `text ${JSON.stringify(r.text)}`);
});

await check('failure mid-stream is an error', async () => {
  const r = streamText({ model: anthropic('claude-broken'), prompt: 'Say hello', maxRetries: 0, onError: () => {} });
  let text = '';
  let error = null;
  try {
    for await (const part of r.fullStream) {
      if (part.type === 'text-delta') text += part.text;
      if (part.type === 'error') error = part.error;
    }
  } catch (e) {
    error = e;
  }
  expect(error !== null, 'no error');
  expect(text === 'Hel', `text before the error ${JSON.stringify(text)}`);
  return String(error?.message ?? error).slice(0, 80);
});

if (failures.length) {
  console.log(`FAIL anthropic-aisdk: ${failures.length} check(s) failed: ${failures.join(', ')}`);
  process.exit(1);
}
console.log('PASS anthropic-aisdk: every check passed');
