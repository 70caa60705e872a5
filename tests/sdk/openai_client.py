"""The official `openai` Python SDK against a running spillway.

Usage: python openai_client.py BASE_URL API_KEY

1. a chat call on route `chat`;
2. the same call streamed: the chunks must reassemble into the same text;
3. a call on route `tight`, which spillway answers first with 429: the SDK's own retry logic
   must wait what `retry-after-ms` says, then succeed.

Prints one JSON line with what it saw; exits non-zero on any failure.
"""

import json
import sys
import time

import openai

try:  # the SDK moved to httpx2 in its 3.x releases
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx


def main() -> int:
    base_url, api_key = sys.argv[1], sys.argv[2]
    seen = []

    def on_response(response):
        seen.append(
            {
                "t": time.monotonic(),
                "status": response.status_code,
                "retry_after_ms": response.headers.get("retry-after-ms"),
                "retry_after": response.headers.get("retry-after"),
                "should_retry": response.headers.get("x-should-retry"),
                "retry_count": response.request.headers.get("x-stainless-retry-count"),
                "cache": response.headers.get("x-spillway-cache"),
            }
        )

    http_client = httpx.Client(event_hooks={"response": [on_response]}, timeout=30.0)
    client = openai.OpenAI(base_url=base_url, api_key=api_key, http_client=http_client, max_retries=3)
    messages = [{"role": "user", "content": "Name three rivers."}]

    plain = client.chat.completions.create(model="chat", messages=messages, max_tokens=60, temperature=0)
    text = plain.choices[0].message.content
    assert text, "empty answer"
    assert plain.usage.total_tokens > 0

    def stream_text(msgs):
        return "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="chat", messages=msgs, max_tokens=60, temperature=0, stream=True
            )
            if chunk.choices
        )

    def last_cache_status():
        return seen[-1]["cache"]

    # Cache: a streamed hit from a plain entry...
    streamed = stream_text(messages)
    assert streamed == text, f"stream {streamed!r} != plain {text!r}"
    assert last_cache_status() == "hit", seen[-1]

    # ...and a plain hit from a streamed entry.
    other = [{"role": "user", "content": "Name three lakes."}]
    live = stream_text(other)
    assert last_cache_status() == "miss", seen[-1]
    replayed = client.chat.completions.create(model="chat", messages=other, max_tokens=60, temperature=0)
    assert last_cache_status() == "hit", seen[-1]
    assert replayed.choices[0].message.content == live, (replayed.choices[0].message.content, live)
    assert replayed.usage is not None and replayed.usage.total_tokens > 0
    again = stream_text(other)
    assert again == live and last_cache_status() == "hit"

    seen.clear()
    started = time.monotonic()
    tight = client.chat.completions.create(model="tight", messages=messages, max_tokens=10)
    elapsed = time.monotonic() - started
    assert tight.choices[0].message.content, "empty answer after retrying"
    statuses = [s["status"] for s in seen]
    assert statuses[0] == 429, f"expected a 429 first, saw {statuses}"
    assert statuses[-1] == 200, f"expected success last, saw {statuses}"
    first = seen[0]
    assert first["should_retry"] == "true", first
    waited = seen[1]["t"] - first["t"]
    told = float(first["retry_after_ms"]) / 1000.0
    assert waited >= told * 0.95, f"the SDK waited {waited:.2f}s but was told {told:.2f}s"
    assert seen[1]["retry_count"] == "1", seen[1]

    print(json.dumps({"text": text, "statuses": statuses, "told": told, "waited": waited, "elapsed": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
