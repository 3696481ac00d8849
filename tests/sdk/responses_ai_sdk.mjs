// The AI SDK's default OpenAI model (`createOpenAI(...)('model')`, which calls the Responses
// API) against Sluice: two turns of `streamText` (the second sends the first answer back as an
// `item_reference`, since `store` is true by default), a tool call, and a failure mid-stream.
//
// Usage: node responses_ai_sdk.mjs http://127.0.0.1:PORT/v1
// Models: `sluice-demo`, `tools-model` (calls get_weather {"city":"Paris"}), `broken-model`
// (fails after a few tokens), `thinking-model` (reasons "Let me think.", then answers "42").

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";

const base = process.argv[2];
if (!base) {
  console.error("usage: node responses_ai_sdk.mjs BASE_URL");
  process.exit(2);
}

const sent = [];
const openai = createOpenAI({
  baseURL: base,
  apiKey: "sk-sluice-test",
  fetch: async (url, init) => {
    if (init?.body) sent.push({ url: String(url), body: JSON.parse(init.body) });
    return fetch(url, init);
  },
});

const failures = [];
async function check(name, fn) {
  try {
    const detail = await fn();
    console.log(`PASS ${name}${detail ? ` (${detail})` : ""}`);
  } catch (e) {
    failures.push(name);
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

async function run(options) {
  const errors = [];
  const result = streamText({ ...options, onError: ({ error }) => errors.push(error) });
  let text = "";
  for await (const delta of result.textStream) text += delta;
  return { result, text, errors };
}

await check("two turns of streamText; the second refers to the first answer by item_reference", async () => {
  const first = [{ role: "user", content: "Tell me about Sluice." }];
  const one = await run({ model: openai("sluice-demo"), messages: first });
  expect(one.errors.length === 0, `errors: ${one.errors}`);
  expect(one.text.length > 0, "first answer is empty");
  expect((await one.result.finishReason) === "stop", `finishReason ${await one.result.finishReason}`);
  const usage = await one.result.usage;
  expect(usage.outputTokens > 0 && usage.inputTokens > 0, `usage ${JSON.stringify(usage)}`);
  const response = await one.result.response;
  expect(response.id.startsWith("resp_"), `response id ${response.id}`);

  const second = [...first, ...response.messages, { role: "user", content: "Say it again." }];
  const before = sent.length;
  const two = await run({ model: openai("sluice-demo"), messages: second });
  expect(two.errors.length === 0, `errors: ${two.errors}`);
  expect(two.text.length > 0, "second answer is empty");
  const body = sent[before].body;
  expect(body.store !== false, `store ${body.store}`);
  const refs = body.input.filter((i) => i.type === "item_reference");
  expect(refs.length >= 1, `no item_reference in ${JSON.stringify(body.input)}`);
  return `${refs.length} item_reference(s)`;
});

await check("a tool call arrives as a tool-call with its input", async () => {
  const calls = [];
  const r = await run({
    model: openai("tools-model"),
    prompt: "Weather in Paris?",
    tools: {
      get_weather: tool({
        description: "The weather in a city",
        inputSchema: jsonSchema({
          type: "object",
          properties: { city: { type: "string" } },
          required: ["city"],
        }),
      }),
    },
  });
  expect(r.errors.length === 0, `errors: ${r.errors}`);
  for (const c of await r.result.toolCalls) calls.push(c);
  expect(calls.length === 1, `tool calls ${JSON.stringify(calls)}`);
  expect(calls[0].toolName === "get_weather", calls[0].toolName);
  expect(calls[0].input.city === "Paris", JSON.stringify(calls[0].input));
  expect((await r.result.finishReason) === "tool-calls", `finishReason ${await r.result.finishReason}`);
  return calls[0].toolCallId;
});

await check("a failure mid-stream is an error, not a clean end", async () => {
  const r = await run({ model: openai("broken-model"), prompt: "hi" });
  expect(r.errors.length > 0, `no error; text ${JSON.stringify(r.text)}`);
  expect((await r.result.finishReason) !== "stop", `finishReason ${await r.result.finishReason}`);
  return String(r.errors[0]?.message ?? r.errors[0]).slice(0, 80);
});

await check("reasoning arrives as reasoning, the answer as text", async () => {
  const r = await run({ model: openai("thinking-model"), prompt: "The answer?" });
  expect(r.errors.length === 0, `errors: ${r.errors}`);
  expect(r.text === "42", `text ${JSON.stringify(r.text)}`);
  const reasoning = await r.result.reasoningText;
  expect(reasoning === "Let me think.", `reasoning ${JSON.stringify(reasoning)}`);
  return reasoning;
});

await check("generateText (not streaming) reads the response object", async () => {
  const r = await generateText({ model: openai("sluice-demo"), prompt: "Tell me about Sluice." });
  expect(r.text.length > 0, "empty text");
  expect(r.finishReason === "stop", `finishReason ${r.finishReason}`);
  expect(r.usage.outputTokens > 0, `usage ${JSON.stringify(r.usage)}`);
  return `${r.text.length} chars`;
});

if (failures.length) {
  console.log(`FAIL responses-ai-sdk: ${failures.length} check(s) failed: ${failures.join(", ")}`);
  process.exit(1);
}
console.log("PASS responses-ai-sdk: every check passed");
