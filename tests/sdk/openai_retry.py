"""The official `openai` Python SDK, with its default retries, making CALLS chat calls in a row.

Usage: python openai_retry.py BASE_URL API_KEY MODEL CALLS

Prints one JSON line: how many calls succeeded, every HTTP status the SDK saw (its retries
included), and the wall-clock seconds the calls took. Exits non-zero when a call failed.
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
    base_url, api_key, model, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    statuses = []
    http_client = httpx.Client(
        event_hooks={"response": [lambda r: statuses.append(r.status_code)]}, timeout=30.0
    )
    client = openai.OpenAI(base_url=base_url, api_key=api_key, http_client=http_client)
    started = time.monotonic()
    ok = 0
    for i in range(calls):
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"call {i}"}],
            max_tokens=20,
        )
        if answer.choices[0].message.content:
            ok += 1
    print(json.dumps({"ok": ok, "statuses": statuses, "seconds": time.monotonic() - started}))
    return 0 if ok == calls else 1


if __name__ == "__main__":
    sys.exit(main())
