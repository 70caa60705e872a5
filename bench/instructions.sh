#!/usr/bin/env bash
# CPU instructions per request, counted by valgrind (callgrind): the same figure on a busy or an
# idle machine, for the same binaries and inputs. Wall-clock latency on a shared 2-core machine
# swings by tens of percent between runs; this count does not, so it shows whether a change to
# the request path made the proxy do less work.
#
#   bench/instructions.sh [N1 N2]    # default 200 1200
#
# Each subject runs under callgrind, in front of a spillway-mock (not counted), and gets N1
# requests at concurrency 1 in one run and N2 in another; (count(N2) - count(N1)) / (N2 - N1)
# is the cost of one request without start-up and shutdown. Subjects: the bench's bare
# forwarder; spillway on the cache-miss path (every prompt distinct); spillway on the cache-hit
# path (one prompt). For spillway the cache writer thread's share is shown apart: it runs beside
# the request, not in its way, but on the same cores.
#
# Needs valgrind (`apt-get install -y valgrind`). Takes a few minutes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
n1="${1:-200}"
n2="${2:-1200}"
if ! command -v valgrind >/dev/null; then
  echo "instructions: valgrind is not installed (apt-get install -y valgrind)" >&2
  exit 1
fi
if ! [[ "$n1" =~ ^[0-9]+$ && "$n2" =~ ^[0-9]+$ ]] || ((n2 <= n1)); then
  echo "instructions: N1 and N2 must be whole numbers with N2 > N1 (got $n1 $n2)" >&2
  exit 2
fi

cargo build --release --quiet -p spillway -p spillway-harness
# The binaries just built: under CARGO_TARGET_DIR when it is set, else ./target.
target_dir="${CARGO_TARGET_DIR:-target}"
harness="$target_dir/release/spillway-harness"
proxy="$target_dir/release/spillway"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits (at most 120 s: valgrind starts slowly) for `listening on http://ADDR` in $1; prints ADDR.
address_in() {
  for _ in $(seq 1 600); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then
      sed -n 's/^listening on //p' "$1" | head -1
      return 0
    fi
    sleep 0.2
  done
  echo "instructions: nothing listening after 120 s; see $1" >&2
  return 1
}

# run NAME SUBJECT REQUESTS DISTINCT: starts a mock and SUBJECT under callgrind (in a folder of
# its own), sends REQUESTS, stops both; sets TOTAL (instructions over the subject's life) and
# WRITER (the cache writer's part).
run() {
  local subject="$2" requests="$3" distinct="$4" dir="$work/$1-$3"
  rm -rf "$dir"
  mkdir -p "$dir"
  "$harness" serve-mock >"$dir/mock.out" 2>"$dir/mock.err" &
  local mock_pid=$!
  pids+=("$mock_pid")
  local mock
  mock="$(address_in "$dir/mock.out")"
  local path model
  if [[ "$subject" == forwarder ]]; then
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/cg.%p" \
      "$harness" serve-forwarder --upstream "$mock" >"$dir/subject.out" 2>"$dir/subject.err" &
    path=/openai/v1/chat/completions
    model=llama-3.1-8b-instant
  else
    cat >"$dir/spillway.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[cache]
path = "$dir/cache"

[[providers]]
name = "mock"
base_url = "$mock/openai/v1"
keys = ["env:BENCH_KEY"]
unknown_limits_in_flight = 0

[[routes]]
model = "bench"
targets = [{ provider = "mock", model = "llama-3.1-8b-instant" }]
EOF
    RUST_LOG=warn BENCH_KEY=bench-key \
      valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/cg.%p" \
      "$proxy" serve --config "$dir/spillway.toml" >"$dir/subject.out" 2>"$dir/subject.err" &
    path=/v1/chat/completions
    model=bench
  fi
  local subject_pid=$!
  pids+=("$subject_pid")
  local url
  url="$(address_in "$dir/subject.out")"
  "$harness" load --url "$url$path" --model "$model" --key bench-key --concurrency 1 \
    --requests "$requests" --duration 900s --warmup 0s --distinct "$distinct" \
    --prefix "$subject $requests " >"$dir/load.out" 2>&1 ||
    { echo "instructions: the load failed; see $dir/load.out" >&2; cat "$dir/load.out" >&2; return 1; }
  # SIGINT: spillway finishes its cache writes and exits; the forwarder just exits.
  kill -INT "$subject_pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$subject_pid" 2>/dev/null || break; sleep 0.2; done
  kill "$subject_pid" 2>/dev/null || true
  kill "$mock_pid" 2>/dev/null || true
  wait "$subject_pid" "$mock_pid" 2>/dev/null || true
  local total=0 writer=0 f n
  for f in "$dir"/cg.*-*; do
    n="$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$f" | head -1)"
    total=$((total + ${n:-0}))
    if grep -q 'spillway_store::writer::run' "$f"; then
      writer=$((writer + ${n:-0}))
    fi
  done
  TOTAL="$total"
  WRITER="$writer"
}

echo "instructions per request (callgrind; ($n2 - $n1) requests at concurrency 1)"
printf '%-16s %12s %12s %12s\n' subject total "async side" "cache writer"
forwarder_total=""
for case in "forwarder 1000000" "spillway-miss 1000000" "spillway-hit 1"; do
  read -r name distinct <<<"$case"
  subject="${name%%-*}"
  run "$name" "$subject" "$n1" "$distinct"
  t1="$TOTAL" w1="$WRITER"
  run "$name" "$subject" "$n2" "$distinct"
  t2="$TOTAL" w2="$WRITER"
  per=$(((t2 - t1) / (n2 - n1)))
  writer=$(((w2 - w1) / (n2 - n1)))
  [[ -z "$forwarder_total" ]] && forwarder_total="$per"
  printf '%-16s %12d %12d %12d   %s\n' "$name" "$per" "$((per - writer))" "$writer" \
    "$(awk -v a="$per" -v b="$forwarder_total" 'BEGIN { printf "%.2fx the forwarder", a / b }')"
done
