// The AI SDK's default OpenAI model after a pause longer than the streams' retention: the
// second turn sends the first answer back as an `item_reference` (its `store` is true by
// default), which Sluice must resolve from the response it kept after the stream expired.
//
// Usage: node responses_ai_sdk_retention.mjs http://127.0.0.1:PORT/v1 PAUSE_MS

import { createOpenAI } from "@ai-sdk/openai";
import { streamText } from "ai";

const [base, pauseMs] = process.argv.slice(2);
if (!base || !pauseMs) {
  console.error("usage: node responses_ai_sdk_retention.mjs BASE_URL PAUSE_MS");
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

async function run(messages) {
  const errors = [];
  const result = streamText({
    model: openai("sluice-demo"),
    messages,
    onError: ({ error }) => errors.push(error),
  });
  let text = "";
  for await (const delta of result.textStream) text += delta;
  if (errors.length) throw new Error(`errors: ${errors.map((e) => e?.message ?? e)}`);
  if (!text) throw new Error("empty answer");
  return { result, text };
}

try {
  const first = [{ role: "user", content: "Tell me about Sluice." }];
  const one = await run(first);
  const response = await one.result.response;
  await new Promise((r) => setTimeout(r, Number(pauseMs)));
  const second = [...first, ...response.messages, { role: "user", content: "Say it again." }];
  const before = sent.length;
  const two = await run(second);
  const refs = sent[before].body.input.filter((i) => i.type === "item_reference");
  if (refs.length < 1) throw new Error(`no item_reference in ${JSON.stringify(sent[before].body.input)}`);
  console.log(`PASS second turn after ${pauseMs} ms with ${refs.length} item_reference(s), ${two.text.length} chars`);
} catch (e) {
  console.log(`FAIL responses-ai-sdk-retention: ${e?.stack ?? e}`);
  process.exit(1);
}
console.log("PASS responses-ai-sdk-retention: every check passed");
