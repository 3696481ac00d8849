#!/usr/bin/env python3
"""Drives a running Sluice with the official OpenAI Python SDK (PyPI `openai`).

Usage: python3 openai_python.py http://127.0.0.1:PORT/v1

Start Sluice with SLUICE_KEEPALIVE_SECS=1 so that the slow-stream check puts keep-alive
comments between events (the trap: once an `id:` line has been seen, the SDK turns every
stray blank line into an event with empty data and dies on `json.loads("")`).

Prints one PASS/FAIL line per check and exits non-zero if any check failed.
"""

import json
import sys
import threading
import time
import traceback
import urllib.request

import openai
from openai import OpenAI

MODEL = "sluice-demo"
MESSAGES = [{"role": "user", "content": "Tell me about Sluice, please."}]
# Fast demo pace so the suite stays quick; the demo is deterministic for the same messages.
FAST = {"mock": {"delay_ms": 2}}
# Silences (2.5 s) longer than the keep-alive interval (1 s): keep-alives arrive between events.
SLOW = {"mock": {"delay_ms": 2500, "tokens": 4}}

failures = []


def check(name, fn):
    try:
        detail = fn()
    except Exception as e:  # noqa: BLE001 - report any failure as FAIL with the traceback
        failures.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        return
    print(f"PASS {name}" + (f" ({detail})" if detail else ""), flush=True)


def expect(cond, message):
    if not cond:
        raise AssertionError(message)


def raw_stream(base_url, body):
    """POSTs a streaming request with the standard library and returns the raw body text, to
    show what the SDK is fed on the same request (keep-alive comments, `id:` lines)."""
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer sk-sluice-test"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read().decode("utf-8")


def main():
    if len(sys.argv) != 2:
        print("usage: openai_python.py BASE_URL (e.g. http://127.0.0.1:8080/v1)", file=sys.stderr)
        return 2
    base_url = sys.argv[1]
    print(f"openai-python {openai.__version__} against {base_url}", flush=True)
    client = OpenAI(base_url=base_url, api_key="sk-sluice-test", max_retries=0, timeout=60.0)
    state = {}

    def non_streaming():
        resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_body=FAST)
        expect(isinstance(resp, openai.types.chat.ChatCompletion), f"got {type(resp)}")
        expect(resp.object == "chat.completion", f"object={resp.object!r}")
        choice = resp.choices[0]
        expect(choice.message.role == "assistant", f"role={choice.message.role!r}")
        text = choice.message.content
        expect(isinstance(text, str) and text, f"content={text!r}")
        expect(choice.finish_reason == "stop", f"finish_reason={choice.finish_reason!r}")
        expect(resp.usage is not None and resp.usage.completion_tokens > 0, f"usage={resp.usage}")
        state["text"] = text
        state["usage"] = resp.usage
        return f"{len(text)} chars, usage {resp.usage.prompt_tokens}+{resp.usage.completion_tokens}"

    def streaming_equals_non_streaming():
        expect("text" in state, "no non-streaming text to compare with")
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, extra_body=FAST
        )
        parts, finishes, usage_chunks, n = [], [], 0, 0
        for chunk in stream:
            n += 1
            expect(chunk.object == "chat.completion.chunk", f"object={chunk.object!r}")
            if chunk.usage is not None or not chunk.choices:
                usage_chunks += 1
            for c in chunk.choices:
                if c.delta.content:
                    parts.append(c.delta.content)
                if c.finish_reason:
                    finishes.append(c.finish_reason)
        text = "".join(parts)
        expect(text == state["text"], f"streamed text differs:\n{text!r}\nvs\n{state['text']!r}")
        expect(finishes == ["stop"], f"finish reasons {finishes}")
        expect(usage_chunks == 0, f"{usage_chunks} usage/empty-choices chunk(s) without include_usage")
        return f"{n} chunks"

    def finish_reason_length():
        resp = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=3, extra_body=FAST
        )
        expect(resp.choices[0].finish_reason == "length", f"non-streaming finish_reason={resp.choices[0].finish_reason!r}")
        expect(resp.usage.completion_tokens == 3, f"usage={resp.usage}")
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=3, stream=True, extra_body=FAST
        )
        parts, finishes = [], []
        for chunk in stream:
            for c in chunk.choices:
                parts.append(c.delta.content or "")
                if c.finish_reason:
                    finishes.append(c.finish_reason)
        expect(finishes == ["length"], f"streaming finish reasons {finishes}")
        expect("".join(parts) == resp.choices[0].message.content, f"{''.join(parts)!r} vs {resp.choices[0].message.content!r}")
        return repr("".join(parts))

    def include_usage():
        stream = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=FAST,
        )
        chunks = list(stream)
        expect(chunks, "no chunks")
        with_usage = [c for c in chunks if c.usage is not None]
        expect(len(with_usage) == 1, f"{len(with_usage)} chunks carry usage")
        last = chunks[-1]
        expect(last.usage is not None and last.choices == [], f"last chunk is not the usage chunk: {last}")
        u = last.usage
        expect(u.prompt_tokens > 0 and u.completion_tokens > 0, f"usage={u}")
        expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage not consistent: {u}")
        content_chunks = sum(1 for c in chunks for ch in c.choices if ch.delta.content)
        expect(u.completion_tokens == content_chunks, f"completion_tokens {u.completion_tokens} vs {content_chunks} content chunks")
        if "usage" in state:
            n = state["usage"]
            expect(
                (u.prompt_tokens, u.completion_tokens) == (n.prompt_tokens, n.completion_tokens),
                f"streaming usage {u} vs non-streaming {n}",
            )
        text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        if "text" in state:
            expect(text == state["text"], "text differs from the non-streaming text")
        return f"{u.prompt_tokens}+{u.completion_tokens}={u.total_tokens}"

    def slow_stream_with_keepalives():
        expected = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_body=SLOW
        ).choices[0].message.content
        # The same request, read raw beside the SDK's, shows the trap is armed.
        raw = {}

        def read_raw():
            try:
                raw["text"] = raw_stream(
                    base_url, {"model": MODEL, "messages": MESSAGES, "stream": True, **SLOW}
                )
            except Exception as e:  # noqa: BLE001
                raw["error"] = e

        reader = threading.Thread(target=read_raw)
        reader.start()
        started = time.monotonic()
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, extra_body=SLOW
        )
        parts, finishes = [], []
        for chunk in stream:
            for c in chunk.choices:
                parts.append(c.delta.content or "")
                if c.finish_reason:
                    finishes.append(c.finish_reason)
        elapsed = time.monotonic() - started
        text = "".join(parts)
        expect(text == expected, f"slow stream text {text!r} vs {expected!r}")
        expect(finishes == ["stop"], f"finish reasons {finishes}")
        # The trap must have been armed: `id:` lines and keep-alives between events.
        reader.join(60)
        expect("error" not in raw, f"raw request failed: {raw.get('error')}")
        raw = raw.get("text", "")
        expect("\nid: " in "\n" + raw, "the stream carried no `id:` lines")
        keepalives = raw.count(": keep-alive")
        expect(keepalives >= 2, f"only {keepalives} keep-alive comments in {elapsed:.1f}s (start sluice with SLUICE_KEEPALIVE_SECS=1)")
        return f"{elapsed:.1f}s, {keepalives} keep-alives, {len(text)} chars"

    def unknown_model_non_streaming():
        try:
            client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        except openai.NotFoundError as e:
            expect(e.status_code == 404, f"status {e.status_code}")
            expect(e.code == "model_not_found", f"code={e.code!r} body={e.body!r}")
            return f"NotFoundError: {e.message}"
        raise AssertionError("no exception raised")

    def unknown_model_streaming():
        try:
            stream = client.chat.completions.create(model="no-such-model", messages=MESSAGES, stream=True)
            for _ in stream:
                pass
        except openai.NotFoundError as e:
            expect(e.status_code == 404, f"status {e.status_code}")
            expect(e.code == "model_not_found", f"code={e.code!r} body={e.body!r}")
            return "NotFoundError"
        raise AssertionError("no exception raised")

    check("non-streaming create returns a ChatCompletion with content", non_streaming)
    check("streaming text equals non-streaming text, finish_reason stop, no usage chunk", streaming_equals_non_streaming)
    check("max_tokens=3 gives finish_reason length (streaming and not)", finish_reason_length)
    check("stream_options.include_usage gives one consistent usage chunk", include_usage)
    check("slow stream, silences longer than the keep-alive interval, completes with the full text", slow_stream_with_keepalives)
    check("unknown model raises NotFoundError model_not_found", unknown_model_non_streaming)
    check("unknown model (stream=True) raises NotFoundError model_not_found", unknown_model_streaming)

    if failures:
        print(f"FAIL openai-python: {len(failures)} check(s) failed: {', '.join(failures)}", flush=True)
        return 1
    print("PASS openai-python: every check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
