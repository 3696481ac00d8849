#!/usr/bin/env python3
"""Drives Sluice's Responses API (`/v1/responses`) with the official OpenAI Python SDK.

Usage: python3 responses_python.py http://127.0.0.1:PORT/v1

Models: `sluice-demo` (the demo), `tools-model` (an upstream that calls `get_weather`
with {"city": "Paris"}), `slow-model` (an upstream that answers "t0 t1 ... t11 " slowly),
`sleepy-model` ("t0 t1 " with 2.5 s silences: Sluice runs with SLUICE_KEEPALIVE_SECS=1, so
keep-alive comments arrive between events, and the SDK must not see a stray blank line).

Prints one PASS/FAIL line per check and exits non-zero if any check failed.
"""

import json
import sys
import traceback

import openai
from openai import OpenAI

MODEL = "sluice-demo"
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": False,
}

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


def check_sequence(events):
    """Sequence numbers 0, 1, 2, ...; created first; exactly one terminal event, last."""
    seqs = [e.sequence_number for e in events]
    expect(seqs == list(range(len(events))), f"sequence numbers {seqs}")
    expect(events[0].type == "response.created", f"first event {events[0].type}")
    terminal = [e.type for e in events if e.type in TERMINAL]
    expect(terminal == [events[-1].type], f"terminal events {terminal}, last {events[-1].type}")


def main():
    if len(sys.argv) != 2:
        print("usage: responses_python.py BASE_URL", file=sys.stderr)
        return 2
    base_url = sys.argv[1]
    print(f"openai-python {openai.__version__} against {base_url}", flush=True)
    client = OpenAI(base_url=base_url, api_key="sk-sluice-test", max_retries=0, timeout=60.0)

    def create_stream():
        events = list(client.responses.create(model=MODEL, input="Tell me about Sluice.", stream=True))
        check_sequence(events)
        expect(events[-1].type == "response.completed", events[-1].type)
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        done = events[-1].response
        expect(done.id.startswith("resp_"), done.id)
        expect(done.status == "completed", done.status)
        expect(done.output_text == text and text, f"output_text {done.output_text!r} vs deltas {text!r}")
        expect(done.usage.output_tokens > 0 and done.usage.input_tokens > 0, f"usage {done.usage}")
        items = [e.item for e in events if e.type == "response.output_item.done"]
        expect(len(items) == 1 and items[0].type == "message", f"items {items}")
        return f"{len(events)} events"

    def create_object():
        r = client.responses.create(model=MODEL, input="Tell me about Sluice.", instructions="Be brief.")
        expect(r.object == "response", r.object)
        expect(r.status == "completed", r.status)
        expect(r.output_text, f"output_text {r.output_text!r}")
        again = client.responses.retrieve(r.id)
        expect(again.output_text == r.output_text, "retrieve returns the same answer")
        return r.id

    def stream_helper():
        with client.responses.stream(model=MODEL, input="Tell me about Sluice.") as stream:
            events = list(stream)
            final = stream.get_final_response()
        check_sequence(events)
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        expect(final.output_text == text and text, f"final {final.output_text!r}")
        return f"{len(text)} chars"

    def function_calls():
        with client.responses.stream(model="tools-model", input="Weather in Paris?", tools=[WEATHER]) as stream:
            events = list(stream)
            final = stream.get_final_response()
        check_sequence(events)
        deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
        expect(deltas, "argument deltas")
        calls = [o for o in final.output if o.type == "function_call"]
        expect(len(calls) == 1, f"calls {final.output}")
        call = calls[0]
        expect(call.name == "get_weather", call.name)
        expect(json.loads(call.arguments) == {"city": "Paris"}, call.arguments)
        expect(call.call_id == "call_w", call.call_id)
        # The second turn: the call and its output go back as input items.
        r = client.responses.create(
            model="tools-model",
            tools=[WEATHER],
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
        )
        expect(r.status == "completed", r.status)
        return f"{len(deltas)} argument deltas"

    def resume():
        # Read part of a slow stream, drop it, then resume after the last event seen.
        seen = []
        stream = client.responses.create(model="slow-model", input="count", stream=True)
        for e in stream:
            seen.append(e)
            if e.type == "response.output_text.delta" and len(seen) >= 6:
                break
        stream.close()
        rid = seen[0].response.id
        last = seen[-1].sequence_number
        with client.responses.stream(response_id=rid, starting_after=last) as resumed:
            rest = list(resumed)
            final = resumed.get_final_response()
        expect(rest and rest[0].sequence_number == last + 1, f"resumed at {rest[0].sequence_number if rest else None}")
        seqs = [e.sequence_number for e in seen + rest]
        expect(seqs == list(range(len(seqs))), f"no gap, no repeat: {seqs}")
        text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
        expect(text == "".join(f"t{i} " for i in range(12)), f"text {text!r}")
        expect(final.output_text == text, f"final {final.output_text!r}")
        return f"resumed after {last}"

    def keep_alives():
        events = list(client.responses.create(model="sleepy-model", input="slowly", stream=True))
        check_sequence(events)
        done = events[-1].response
        expect(done.output_text == "t0 t1 ", f"output_text {done.output_text!r}")
        return f"{len(events)} events"

    def refusals():
        try:
            client.responses.create(model=MODEL, input="x", previous_response_id="resp_123")
        except openai.BadRequestError as e:
            expect(e.param == "previous_response_id", f"param {e.param!r}")
            return "BadRequestError"
        raise AssertionError("no exception raised")

    check("responses.create(stream=True): the event sequence, text and usage", create_stream)
    check("responses.create: the object, and retrieve", create_object)
    check("responses.stream: events and get_final_response", stream_helper)
    check("responses.stream with function calls, then their output as the next input", function_calls)
    check("responses.stream(response_id=..., starting_after=N) resumes a dropped stream", resume)
    check("a slow stream with keep-alives between events completes", keep_alives)
    check("previous_response_id is a BadRequestError naming it", refusals)

    if failures:
        print(f"FAIL responses-python: {len(failures)} check(s) failed: {', '.join(failures)}", flush=True)
        return 1
    print("PASS responses-python: every check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
