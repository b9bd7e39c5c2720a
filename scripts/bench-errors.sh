#!/usr/bin/env bash
# "Find out why it failed" on each captured failure (tests/data/logs/errors
# and the Django capture): characters returned by
#   (a) --filter error --no-blocks   (b) --filter error (blocks)   (c) --tail 50
# and whether the app's own first frame (file:line) is among them.
# Usage: scripts/bench-errors.sh [path/to/bgt]   (default: target/release/bgt)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BGT=${1:-$ROOT/target/release/bgt}
[[ -x $BGT ]] || { cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"; }
export BGT_HOME=$(mktemp -d /tmp/bgt-errbench.XXXXXX)
trap 'rm -rf "$BGT_HOME"' EXIT
L=$ROOT/tests/data/logs
# file | filter | app frame that must be present
cases=(
  "errors/python-chained.stderr.log|error|shop/orders.py\", line 17"
  "errors/python-syntax.stderr.log|error|line 3"
  "django.stderr.log|error|web/views.py\", line 30"
  "errors/node-cause.stderr.log|error|node-api/config.js:7:11"
  "errors/java-caused-by.stderr.log|error|InvoiceService.java:"
  "errors/rust-panic.stderr.log|error|./main.rs:"
  "errors/go-panic.stderr.log|error|main.go:"
  "errors/ruby-error.stderr.log|error|worker.rb:"
  "errors/tsc-pretty.stderr.log|error|src/cart.ts"
  "errors/esbuild.stderr.log|error|src/main.ts:"
)
printf '| capture | (a) --no-blocks | (b) blocks | (c) --tail 50 |\n|---|---|---|---|\n'
for c in "${cases[@]}"; do
  IFS='|' read -r file filter frame <<<"$c"
  id=$("$BGT" run -- cat "$L/$file")
  for _ in $(seq 100); do "$BGT" status "$id" --json | grep -q '"state": *"running"' || break; sleep 0.05; done
  cell() {
    local out; out=$("$BGT" output "$id" --stream stdout "$@" 2>/dev/null)
    local has=no; [[ $out == *"$frame"* ]] && has=yes
    printf '%s chars, frame %s' "${#out}" "$has"
  }
  printf '| %s | %s | %s | %s |\n' "$file" "$(cell --filter "$filter" --no-blocks)" \
    "$(cell --filter "$filter")" "$(cell --tail 50)"
done
