#!/usr/bin/env bash
# Cost of the state directory as history grows: `status` (table and JSON),
# naming one task by id, by label and by id prefix, among 100, 1,000 and
# 10,000 finished tasks; and `status` with 300 running tasks whose main
# process exited while a child lives on (the /proc walk). Prints hyperfine
# means; nothing here is a pass/fail test.
#
#   scripts/bench-state.sh              # 100, 1000, 10000 tasks
#   COUNTS="1000" scripts/bench-state.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-"100 1000 10000"}
LIVE=${LIVE:-300}

command -v hyperfine >/dev/null || { (apt-get update -qq && apt-get install -y -qq hyperfine) >/dev/null 2>&1 || { echo "hyperfine is required" >&2; exit 1; }; }
cargo build --release --quiet
BGT=$PWD/target/release/bgt
TMP=$(mktemp -d)
cleanup() { BGT_HOME=$TMP/live "$BGT" stop --all --grace 1s >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT

# N finished tasks: one real task copied under fresh ids (what a busy
# machine's history looks like to a reader), every tenth with its own label.
make_history() {
    local home=$1 n=$2
    export BGT_HOME=$home
    local seed
    seed=$("$BGT" run -- sh -c 'echo hello; echo oops >&2')
    "$BGT" wait "$seed" >/dev/null
    python3 - "$home" "$seed" "$n" <<'PY'
import json, os, random, shutil, sys
home, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = os.path.join(home, seed)
meta = json.load(open(os.path.join(src, "meta.json")))
ids = set(os.listdir(home))
for i in range(n - 1):
    while True:
        new = "t-%06x" % random.randrange(1 << 24)
        if new not in ids:
            ids.add(new)
            break
    dst = os.path.join(home, new)
    shutil.copytree(src, dst)
    meta["id"] = new
    meta["label"] = ("job%d" % i) if i % 10 == 0 else None
    with open(os.path.join(dst, "meta.json"), "w") as f:
        json.dump(meta, f)
PY
    # A label a run claimed: the lookup a person types.
    "$BGT" run --label web -- true >/dev/null
}

for n in $COUNTS; do
    home=$TMP/h$n
    make_history "$home" "$n"
    export BGT_HOME=$home
    id=$(ls "$home" | grep '^t-' | sort | tail -1)
    prefix=${id:2:5}
    echo "== $n tasks"
    hyperfine --warmup 3 --min-runs 10 --output=pipe -N \
        -n "status (table)" "$BGT status" \
        -n "status --json" "$BGT status --json" \
        -n "status ID" "$BGT status $id" \
        -n "status LABEL" "$BGT status web" \
        -n "status PREFIX" "$BGT status $prefix" \
        2>/dev/null | grep -E "^Benchmark|Time \(mean"
done

echo "== status with $LIVE running tasks whose main process exited (a child lives on)"
export BGT_HOME=$TMP/live
for _ in $(seq "$LIVE"); do "$BGT" run -- sh -c 'sleep 600 & exit 0' >/dev/null; done
sleep 1
hyperfine --warmup 2 --min-runs 10 --output=pipe -N -n "status ($LIVE live descendants)" "$BGT status" 2>/dev/null | grep -E "^Benchmark|Time \(mean"
