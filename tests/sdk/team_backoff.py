#!/usr/bin/env python3
"""The official OpenAI Python SDK against a Sluice team that is over its request limit.

Usage: python3 team_backoff.py BASE_URL KEY [REQUESTS]

Sends REQUESTS (default 8) chat completions one after another, alternating streaming and
non-streaming, with the SDK's default retry policy (2 retries, honouring `Retry-After`). The
team's limit is far below that pace, so most requests are first answered 429: every one must
still complete, because the SDK waits as long as `Retry-After` says and the retry then fits.

Prints one line per request and a closing PASS line; exits non-zero on any failure.
"""

import sys
import time

from openai import OpenAI


def main():
    base_url, key = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    client = OpenAI(base_url=base_url, api_key=key)
    assert client.max_retries == 2, client.max_retries
    messages = [{"role": "user", "content": "hi"}]
    start = time.monotonic()
    for i in range(n):
        t0 = time.monotonic()
        if i % 2 == 0:
            raw = client.chat.completions.with_raw_response.create(
                model="sluice-demo", messages=messages, max_tokens=3
            )
            completion = raw.parse()
            text = completion.choices[0].message.content
            remaining = raw.headers.get("x-ratelimit-remaining-requests")
            assert remaining is not None, "x-ratelimit-remaining-requests missing"
            assert completion.usage.completion_tokens == 3, completion.usage
        else:
            stream = client.chat.completions.create(
                model="sluice-demo", messages=messages, max_tokens=3, stream=True
            )
            text = "".join(
                c.choices[0].delta.content or "" for c in stream if c.choices
            )
            remaining = "-"
        assert text, f"request {i}: empty answer"
        print(
            f"request {i}: ok in {time.monotonic() - t0:.2f}s "
            f"(remaining-requests {remaining}): {text!r}",
            flush=True,
        )
    print(
        f"PASS team-backoff: {n} requests completed in {time.monotonic() - start:.1f}s",
        flush=True,
    )


if __name__ == "__main__":
    main()
