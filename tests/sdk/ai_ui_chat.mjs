// The AI SDK's own `useChat` transport (`DefaultChatTransport` from npm `ai`) against Sluice's
// `POST /v1/ui/chat` and `GET|DELETE /v1/ui/chat/{chatId}/stream`, without React: the
// transport's chunk streams (which it validates against its `uiMessageChunkSchema`, failing the
// whole stream on one chunk it does not accept), run through the SDK's own message assembly
// (`readUIMessageStream`) as `useChat` does. Checks: a whole answer; a reload mid-stream then
// `reconnectToStream` (a replay from `start` with the live tail: the assembled text is whole,
// nothing doubled); 204 after the end; a stop (`abort`); reasoning, text and a tool call from a
// scripted upstream; an upstream failure as an `error` chunk.
//
// Usage: node ai_ui_chat.mjs SLUICE_URL

import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithToolCalls,
  readUIMessageStream,
} from 'ai';
import { result, runChecks, sleep } from './lib.mjs';

const [base] = process.argv.slice(2);
if (!base) {
  console.error('usage: node ai_ui_chat.mjs SLUICE_URL');
  process.exit(2);
}
const api = `${base}/v1/ui/chat`;

const userMessage = (text) => ({ id: `u-${text.length}`, role: 'user', parts: [{ type: 'text', text }] });

/** A transport as a page would make one, the model (and the demo's pace) in `body`. */
function transport(body) {
  return new DefaultChatTransport({ api, body });
}

function send(t, chatId, text) {
  return t.sendMessages({
    chatId,
    messages: [userMessage(text)],
    trigger: 'submit-message',
    messageId: undefined,
    abortSignal: undefined,
  });
}

/** Every chunk of a transport stream (each one validated by the transport on the way). */
async function chunksOf(stream) {
  const out = [];
  for await (const c of stream) out.push(c);
  return out;
}

/** The message the SDK assembles from `chunks`, as `useChat` would show it at the end. */
async function assemble(chunks, onError) {
  const stream = new ReadableStream({
    start(c) {
      for (const x of chunks) c.enqueue(x);
      c.close();
    },
  });
  let last;
  for await (const m of readUIMessageStream({ stream, onError })) last = m;
  return last;
}

const textOf = (m) => (m?.parts ?? []).filter((p) => p.type === 'text').map((p) => p.text).join('');
const deltas = (chunks) => chunks.filter((c) => c.type === 'text-delta').map((c) => c.delta).join('');
const types = (chunks) => chunks.map((c) => c.type);

async function wholeAnswer() {
  const t = transport({ model: 'sluice-demo', mock: { tokens: 12 } });
  const chunks = await chunksOf(await send(t, 'sdk-whole', 'Hello'));
  const ty = types(chunks);
  result('send: starts with start, start-step, text-start', ty.slice(0, 3).join() === 'start,start-step,text-start', ty.join());
  result('send: ends with text-end, finish-step, finish(stop)',
    ty.slice(-3).join() === 'text-end,finish-step,finish' && chunks.at(-1).finishReason === 'stop', ty.join());
  const m = await assemble(chunks);
  result('send: the SDK assembles an assistant message with the text', textOf(m) === deltas(chunks) && textOf(m).split(/\s+/).filter(Boolean).length === 12,
    JSON.stringify(textOf(m)));
  result('send: the message id is the start chunk\'s', m.id === chunks[0].messageId && m.id.startsWith('msg-'), m.id);
}

async function reloadAndResume() {
  const t = transport({ model: 'sluice-demo', mock: { tokens: 40, delay_ms: 40 } });
  const chatId = 'sdk resume/ü?';
  const first = await send(t, chatId, 'Hello');
  // The page reloads after a few deltas: the first stream is dropped.
  const seen = [];
  const reader = first.getReader();
  while (seen.filter((c) => c.type === 'text-delta').length < 5) {
    const { value, done } = await reader.read();
    if (done) break;
    seen.push(value);
  }
  await reader.cancel();
  // useChat({ resume: true }) after the reload.
  const again = await t.reconnectToStream({ chatId });
  result('reconnect mid-stream: a stream, not 204', again != null);
  if (!again) return;
  const chunks = await chunksOf(again);
  result('reconnect: a replay from start', chunks[0].type === 'start' && chunks[0].messageId === seen[0].messageId, types(chunks).slice(0, 3).join());
  const prefix = JSON.stringify(seen);
  result('reconnect: what was seen is the replay\'s beginning', JSON.stringify(chunks.slice(0, seen.length)) === prefix);
  const m = await assemble(chunks);
  const words = textOf(m).split(/\s+/).filter(Boolean);
  result('reconnect: the assembled text is whole, nothing doubled', words.length === 40 && textOf(m) === deltas(chunks), `${words.length} words`);
  result('reconnect: finished', chunks.at(-1).type === 'finish' && chunks.at(-1).finishReason === 'stop', chunks.at(-1).type);
  const after = await t.reconnectToStream({ chatId });
  result('reconnect after the end: null (204)', after === null);
  const never = await t.reconnectToStream({ chatId: 'sdk-never-sent' });
  result('reconnect to an unknown chat: null (204)', never === null);
}

async function stop() {
  const t = transport({ model: 'sluice-demo', mock: { tokens: 300, delay_ms: 40 } });
  const chatId = 'sdk-stop';
  const stream = await send(t, chatId, 'Hello');
  const reader = stream.getReader();
  const chunks = [];
  let stopped = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    if (!stopped && chunks.filter((c) => c.type === 'text-delta').length >= 2) {
      stopped = true;
      const r = await fetch(`${api}/${encodeURIComponent(chatId)}/stream`, { method: 'DELETE' });
      result('stop: DELETE answers 200', r.status === 200, String(r.status));
    }
  }
  result('stop: the stream ends with abort', chunks.at(-1)?.type === 'abort', types(chunks).slice(-3).join());
  const m = await assemble(chunks);
  result('stop: the SDK keeps the text so far', textOf(m).length > 0 && textOf(m) === deltas(chunks));
}

async function toolsAndReasoning() {
  const t = transport({ model: 'scripted-tools' });
  const chunks = await chunksOf(await send(t, 'sdk-tools', 'Weather in Paris?'));
  const m = await assemble(chunks);
  const kinds = m.parts.map((p) => p.type);
  result('tools: reasoning, text and the tool part, in order',
    JSON.stringify(kinds) === JSON.stringify(['step-start', 'reasoning', 'text', 'tool-get_weather']), kinds.join());
  const r = m.parts.find((p) => p.type === 'reasoning');
  result('tools: the reasoning text', r?.text === 'Thinking it over.', JSON.stringify(r));
  const tool = m.parts.find((p) => p.type === 'tool-get_weather');
  result('tools: the call is input-available with its parsed input',
    tool?.state === 'input-available' && tool.toolCallId === 'call_w' && tool.input?.city === 'Paris', JSON.stringify(tool));
  result('tools: finish reason tool-calls', chunks.at(-1).finishReason === 'tool-calls', chunks.at(-1).finishReason);
}

/** What `useChat` keeps its messages in, without React. */
class MemoryState {
  constructor() {
    this.status = 'ready';
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(m) { this.messages = this.messages.concat(m); }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(i, m) { this.messages = [...this.messages.slice(0, i), m, ...this.messages.slice(i + 1)]; }
  snapshot(x) { return structuredClone(x); }
}

class Chat extends AbstractChat {
  constructor(init) { super({ ...init, state: new MemoryState() }); }
}

// useChat's client-side tools: the page runs the tool, adds its output, and the chat sends the
// conversation again by itself; the answer continues the same assistant message.
async function clientSideTools() {
  const chat = new Chat({
    id: 'sdk-client-tools',
    transport: new DefaultChatTransport({
      api,
      // The scripted model calls the tool; the demo model answers once the output is there.
      prepareSendMessagesRequest: ({ id, messages, trigger, messageId }) => ({
        body: {
          id, messages, trigger, messageId,
          model: messages.at(-1).role === 'assistant' ? 'sluice-demo' : 'scripted-tools',
          mock: { tokens: 5 },
        },
      }),
    }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      // Not awaited: the chat runs it after the tool call's own update.
      chat.addToolOutput({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output: 'sunny' });
    },
  });
  await chat.sendMessage({ text: 'Weather in Paris?' });
  for (let i = 0; i < 200; i++) {
    const last = chat.messages.at(-1);
    if (chat.status === 'ready' && last?.parts.at(-1)?.type === 'text' && last.parts.some((p) => p.type === 'tool-get_weather')) break;
    await sleep(50);
  }
  const roles = chat.messages.map((m) => m.role).join();
  result('client-side tools: one user and one assistant message', roles === 'user,assistant', roles);
  const a = chat.messages.at(-1);
  const kinds = a.parts.map((p) => p.type);
  const tool = a.parts.find((p) => p.type === 'tool-get_weather');
  result('client-side tools: the tool output, then the continued answer in the same message',
    tool?.state === 'output-available' && tool.output === 'sunny' && kinds.at(-1) === 'text' && kinds.indexOf('tool-get_weather') < kinds.lastIndexOf('text'),
    kinds.join());
  result('client-side tools: the message keeps the id of its first answer', a.id.startsWith('msg-'), a.id);
  result('client-side tools: no error', chat.status === 'ready' && !chat.error, `${chat.status} ${chat.error}`);
}

async function failure() {
  const t = transport({ model: 'scripted-fail' });
  const chunks = await chunksOf(await send(t, 'sdk-fail', 'Hi'));
  const err = chunks.find((c) => c.type === 'error');
  result('failure: an error chunk with its text', typeof err?.errorText === 'string' && err.errorText.length > 0, JSON.stringify(err));
  let reported;
  const m = await assemble(chunks, (e) => { reported = e; });
  result('failure: the SDK reports it and keeps the text so far', reported instanceof Error && textOf(m) === 'Half an answer', `${reported} / ${JSON.stringify(textOf(m))}`);
}

await runChecks('ai-ui-chat', async () => {
  await wholeAnswer();
  await reloadAndResume();
  await stop();
  await toolsAndReasoning();
  await clientSideTools();
  await failure();
}, { deadlineMs: 120_000 });
