#!/usr/bin/env bash
# The README's "Use in CI" example, runnable as is (the test suite runs it):
# start a server, wait until it accepts connections, test against it, stop
# it, and show its errors if anything failed.
set -euo pipefail
PORT=${PORT:-8000}

server=$(bgt run --label web --timeout 15m -- python3 -m http.server "$PORT" --bind 127.0.0.1)
trap 'bgt stop "$server" >/dev/null' EXIT

bgt wait "$server" --for-port "$PORT" --timeout 60s

if ! curl -fsS "http://127.0.0.1:$PORT/" -o /dev/null; then
    echo "tests failed; server errors:" >&2
    bgt output "$server" --stream stderr --filter 'error|exception|traceback' --tail 50 >&2
    exit 1
fi
echo "tests passed"
