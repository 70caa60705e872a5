#!/usr/bin/env bash
# Runs every test of the workspace, first installing what the tests need when it is missing:
# redis-server (for the fleet's tests; apt-get, as root) and a Python virtual environment with
# the official openai SDK in .venv (for the SDK's tests). A need that cannot be met is said, and
# the tests that need it show as ignored with the reason; nothing is skipped silently.
#
#   scripts/test.sh [ARGS...]     # ARGS go to `cargo test --workspace`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "--- installing redis-server (the fleet's tests start their own)"
    apt-get install -y -qq redis-server >/dev/null ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq redis-server >/dev/null; } ||
      echo "test.sh: could not install redis-server; the fleet's tests will show as ignored" >&2
  else
    echo "test.sh: redis-server is not installed and this is not root with apt-get;" \
      "the fleet's tests will show as ignored (install redis-server to run them)" >&2
  fi
fi

if [ -z "${SPILLWAY_PYTHON:-}" ]; then
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import openai' 2>/dev/null; then
    echo "--- creating .venv with the openai SDK (the SDK's tests use it)"
    python3 -m venv .venv &&
      .venv/bin/python -m pip install --quiet --disable-pip-version-check openai ||
      echo "test.sh: could not set up .venv with the openai SDK; its tests will show as ignored" >&2
  fi
  if [ -x .venv/bin/python ]; then
    export SPILLWAY_PYTHON="$PWD/.venv/bin/python"
  fi
fi

echo "--- cargo test --workspace $*"
exec cargo test --workspace "$@"
