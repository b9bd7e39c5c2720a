#!/usr/bin/env bash
# Cost of the state directory as history grows: `status` (table and JSON),
# naming one task by id, by label and by id prefix, among 100, 1,000 and
# 10,000 finished tasks; and `status` with 300 running tasks whose main
# process exited while a child lives on (the /proc walk). Prints hyperfine
# means; nothing here is a pass/fail test.
#
#   scripts/bench-state.sh              # 100, 1000, 10000 tasks
#   COUNTS="1000" scripts/bench-state.sh
#   BEFORE=/path/to/older/bgt scripts/bench-state.sh   # each line also for
#                                       # that build, in the same run
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
    "$BGT" wait --quiet "$seed" >/dev/null
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
    # A copy is a new file: its record names the copy's logs, as the
    # supervisor of a real task would have.
    for stream, end in (meta.get("logs_at_end") or {}).items():
        end["ino"] = os.stat(os.path.join(dst, stream + ".log")).st_ino
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
    # Both builds read the history once first (the copies' line-count
    # indexes name the seed's inodes and are rebuilt on first read).
    "$BGT" status >/dev/null
    runs=()
    for bin in ${BEFORE:+"$BEFORE"} "$BGT"; do
        tag=""
        [ "$bin" = "$BGT" ] || tag=" [before]"
        runs+=(-n "status (table)$tag" "$bin status"
            -n "status --json$tag" "$bin status --json"
            -n "status ID$tag" "$bin status $id"
            -n "status LABEL$tag" "$bin status web"
            -n "status PREFIX$tag" "$bin status $prefix")
    done
    hyperfine --warmup 3 --min-runs 10 --output=pipe -N "${runs[@]}" \
        2>/dev/null | grep -E "^Benchmark|Time \(mean"
done

echo "== status with $LIVE running tasks whose main process exited (a child lives on)"
export BGT_HOME=$TMP/live
for _ in $(seq "$LIVE"); do "$BGT" run -- sh -c 'sleep 600 & exit 0' >/dev/null; done
sleep 1
runs=()
[ -z "${BEFORE:-}" ] || runs+=(-n "status ($LIVE live descendants) [before]" "$BEFORE status")
runs+=(-n "status ($LIVE live descendants)" "$BGT status")
hyperfine --warmup 2 --min-runs 10 --output=pipe -N "${runs[@]}" 2>/dev/null | grep -E "^Benchmark|Time \(mean"
