#!/usr/bin/env bash
# LiteLLM's proxy as a benchmark peer for `spillway-harness bench --peers litellm`.
#
#   bench/peers/litellm.sh install              # install LiteLLM's proxy into bench/peers/.venv-litellm
#   bench/peers/litellm.sh serve MOCK_BASE_URL  # serve model "bench" -> MOCK/openai/v1, print
#                                               # `listening on http://ADDR` when it answers
#
# Clients authenticate with LITELLM_MASTER_KEY (the bench sets a random one; without it, one is
# made up and requests are refused). Offline-safe: offline mode (no cost-map, catalog or telemetry requests), the bundled cost map,
# no database, no callbacks, warnings only. Exits non-zero with a message on stderr when LiteLLM
# cannot be installed or does not start, so the bench can skip the peer.
#
# LITELLM_VERSION pins the version (default: the newest on PyPI); PYTHON picks the interpreter.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-litellm"
python="${PYTHON:-python3}"

install() {
  if [[ -x "$venv/bin/litellm" ]]; then
    return 0
  fi
  if ! command -v "$python" >/dev/null; then
    echo "litellm peer: no $python to install LiteLLM with" >&2
    return 1
  fi
  echo "litellm peer: installing LiteLLM's proxy into $venv (first run only)" >&2
  "$python" -m venv "$venv" >&2 || { echo "litellm peer: cannot create a virtual environment" >&2; return 1; }
  local spec="litellm[proxy]"
  [[ -n "${LITELLM_VERSION:-}" ]] && spec="litellm[proxy]==${LITELLM_VERSION}"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2; then
    echo "litellm peer: pip could not install $spec" >&2
    rm -rf "$venv"
    return 1
  fi
}

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

serve() {
  local mock="$1"
  install
  local work
  work="$(mktemp -d)"
  cat > "$work/config.yaml" <<YAML
model_list:
  - model_name: bench
    litellm_params:
      model: openai/llama-3.1-8b-instant
      api_base: ${mock}/openai/v1
      api_key: bench-key
litellm_settings:
  drop_params: true
  request_timeout: 60
  num_retries: 0
  callbacks: []
general_settings:
  disable_spend_logs: true
YAML
  local port
  port="$(free_port)"
  export LITELLM_MASTER_KEY="${LITELLM_MASTER_KEY:-sk-$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(24))')}"
  export LITELLM_OFFLINE_MODE=true LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
    DISABLE_ADMIN_UI=True NO_DOCS=True PYTHONUNBUFFERED=1
  unset DATABASE_URL REDIS_HOST REDIS_URL
  "$venv/bin/litellm" --config "$work/config.yaml" --host 127.0.0.1 --port "$port" \
    --num_workers 1 >"$work/litellm.log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
  trap 'exit 0' TERM INT
  for _ in $(seq 1 600); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "litellm peer: LiteLLM exited during start-up; its log:" >&2
      tail -n 30 "$work/litellm.log" >&2
      exit 1
    fi
    if "$venv/bin/python" - "$port" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health/liveliness", timeout=1).read()
PY
      echo "listening on http://127.0.0.1:$port"
      wait "$pid"
      exit 0
    fi
    sleep 0.2
  done
  echo "litellm peer: LiteLLM did not answer within 120 s" >&2
  exit 1
}

case "${1:-}" in
  install) install ;;
  serve) [[ $# -eq 2 ]] || { echo "usage: $0 serve MOCK_BASE_URL" >&2; exit 2; }; serve "$2" ;;
  *) echo "usage: $0 install | serve MOCK_BASE_URL" >&2; exit 2 ;;
esac
