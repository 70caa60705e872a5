#!/usr/bin/env bash
# Re-creates eval.jsonl: a small recording made by `spillway serve --record` in front of a
# local spillway-mock (no keys, no network). Run from the repository root:
#   scenarios/recordings/make-eval-recording.sh
set -euo pipefail
cargo build -q -p spillway -p spillway-mock
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

target/debug/spillway-mock --listen 127.0.0.1:0 --keys rec-key-1,rec-key-2 > "$work/mock.out" &
until grep -q listening "$work/mock.out" 2>/dev/null; do sleep 0.1; done
mock=$(sed -n 's/^listening on //p' "$work/mock.out")

cat > "$work/spillway.toml" <<TOML
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "groq"
base_url = "$mock/openai/v1"
keys = ["env:REC_KEY_1", "env:REC_KEY_2"]

[[routes]]
model = "llama-3.1-8b"
targets = [{ provider = "groq", model = "llama-3.1-8b-instant" }]

[cache]
path = "$work/cache"
TOML
REC_KEY_1=rec-key-1 REC_KEY_2=rec-key-2 RUST_LOG=warn target/debug/spillway serve \
  --config "$work/spillway.toml" --record scenarios/recordings/eval.jsonl > "$work/proxy.out" &
proxy_pid=$!
until grep -q listening "$work/proxy.out" 2>/dev/null; do sleep 0.1; done
proxy=$(sed -n 's/^listening on //p' "$work/proxy.out")

questions=("What is a weir?" "Name three river deltas." "Explain spillways in one sentence."
  "What limits a reservoir's capacity?" "Describe a canal lock." "What is a weir?"
  "How do flood gauges work?" "Name three river deltas.")
for round in 1 2 3 4 5; do
  for i in "${!questions[@]}"; do
    stream=false
    [ $(( (round + i) % 3 )) -eq 0 ] && stream=true
    curl -s "$proxy/v1/chat/completions" -H 'content-type: application/json' \
      -d "{\"model\":\"llama-3.1-8b\",\"temperature\":0,\"max_tokens\":60,\"stream\":$stream,
           \"messages\":[{\"role\":\"user\",\"content\":\"${questions[$i]} (batch $((round % 3)))\"}]}" > /dev/null
    sleep 0.$(( (i * 7 + round * 3) % 9 + 1 ))
  done
done
kill -TERM "$proxy_pid"; wait "$proxy_pid" || true
wc -l scenarios/recordings/eval.jsonl
