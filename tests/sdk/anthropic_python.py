#!/usr/bin/env python3
"""Drives a running Sluice with the official Anthropic Python SDK (PyPI `anthropic`).

Usage: python3 anthropic_python.py http://127.0.0.1:PORT

The gateway serves three models from OpenAI-compatible upstreams (see
tests/tests/sdk_anthropic.rs): `claude-text` answers "Hello from Sluice", `claude-tools` calls
`get_weather` with {"city": "Paris"}, `claude-broken` fails after its first words.

Prints one PASS/FAIL line per check and exits non-zero if any check failed.
"""

import sys
import traceback

import anthropic

TEXT = "Hello from Sluice"
MESSAGES = [{"role": "user", "content": "Say hello"}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]

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


def main():
    base = sys.argv[1]
    client = anthropic.Anthropic(base_url=base, api_key="sk-sluice-test", max_retries=0)

    def stream_text():
        with client.messages.stream(model="claude-text", max_tokens=64, messages=MESSAGES) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        expect(text == TEXT, f"streamed text {text!r}")
        expect(final.id.startswith("msg_"), f"id {final.id}")
        expect(final.role == "assistant", final.role)
        expect(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason}")
        expect(final.content[0].type == "text" and final.content[0].text == TEXT, final.content)
        expect(final.usage.input_tokens == 5, f"input_tokens {final.usage.input_tokens}")
        expect(final.usage.output_tokens == 3, f"output_tokens {final.usage.output_tokens}")
        return f"{final.id}, usage {final.usage.input_tokens}/{final.usage.output_tokens}"

    def stream_tools():
        with client.messages.stream(
            model="claude-tools",
            max_tokens=64,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=TOOLS,
            tool_choice={"type": "auto"},
        ) as s:
            kinds = [e.type for e in s]
            final = s.get_final_message()
        expect("input_json" in kinds, f"events {kinds}")
        expect(final.stop_reason == "tool_use", f"stop_reason {final.stop_reason}")
        uses = [b for b in final.content if b.type == "tool_use"]
        expect(len(uses) == 1, f"content {final.content}")
        expect(uses[0].name == "get_weather", uses[0].name)
        expect(uses[0].input == {"city": "Paris"}, f"input {uses[0].input}")
        expect(uses[0].id == "call_w", uses[0].id)
        return f"tool_use {uses[0].input}"

    def tool_result_turn():
        m = client.messages.create(
            model="claude-text",
            max_tokens=64,
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "call_w", "name": "get_weather",
                         "input": {"city": "Paris"}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_w", "content": "18C"}
                    ],
                },
            ],
        )
        expect(m.content[0].text == TEXT, m.content)
        return None

    def create():
        m = client.messages.create(
            model="claude-text",
            max_tokens=64,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=MESSAGES,
            metadata={"user_id": "u-1"},
            stop_sequences=["STOP"],
            thinking={"type": "enabled", "budget_tokens": 1024},
            output_config={"effort": "low"},
        )
        expect(m.type == "message", m.type)
        expect(m.content[0].text == TEXT, m.content)
        expect(m.stop_reason == "end_turn", m.stop_reason)
        return m.id

    def create_stream_raw():
        events = list(
            client.messages.create(
                model="claude-text", max_tokens=64, messages=MESSAGES, stream=True
            )
        )
        kinds = [e.type for e in events]
        expect(kinds[0] == "message_start", kinds)
        expect(kinds[-2:] == ["message_delta", "message_stop"], kinds)
        expect(events[-2].usage.output_tokens == 3, events[-2].usage)
        return ",".join(kinds)

    def count_tokens():
        n = client.messages.count_tokens(model="claude-text", messages=MESSAGES, tools=TOOLS)
        expect(n.input_tokens > 0, n)
        return f"{n.input_tokens} tokens"

    def broken_stream():
        seen = []
        try:
            with client.messages.stream(
                model="claude-broken", max_tokens=64, messages=MESSAGES
            ) as s:
                for t in s.text_stream:
                    seen.append(t)
        except anthropic.APIStatusError as e:
            expect(seen == ["Hel"], f"text before the error {seen}")
            return f"{type(e).__name__}: {e.message}"
        raise AssertionError("the broken stream ended without an error")

    def unknown_model():
        try:
            client.messages.create(model="gpt-nothing", max_tokens=8, messages=MESSAGES)
        except anthropic.NotFoundError as e:
            expect(e.body["error"]["type"] == "not_found_error", e.body)
            return "NotFoundError"
        raise AssertionError("no error for an unknown model")

    check("messages.stream text", stream_text)
    check("messages.stream tools", stream_tools)
    check("tool_result turn", tool_result_turn)
    check("messages.create", create)
    check("messages.create stream=True", create_stream_raw)
    check("messages.count_tokens", count_tokens)
    check("failure mid-stream raises", broken_stream)
    check("unknown model is NotFoundError", unknown_model)

    if failures:
        print(f"FAIL anthropic-python: {len(failures)} check(s) failed: {failures}", flush=True)
        sys.exit(1)
    print("PASS anthropic-python: every check passed", flush=True)


if __name__ == "__main__":
    main()
