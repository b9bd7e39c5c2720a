#!/usr/bin/env bash
# Queues without a daemon, measured:
#  1. CPU used by N queued tasks waiting WAIT seconds (their supervisors'
#     utime+stime from /proc/PID/stat; goal: ~0);
#  2. time from a slot freeing (the running task's supervisor records its
#     end) to the next task's start (its recorded start), over a chain of
#     tasks in a one-slot queue (goal: <= 10 ms);
#  3. a queue of N `sleep 0.1` tasks with 2 slots: total wall time for bgt,
#     `tsp -S 2` and pueue (`parallel 2`), where installed, with ratios.
# pueue is not in Debian and `cargo install pueue` takes long: it is skipped
# when absent. Nothing here is a pass/fail test.
#
#   scripts/bench-queue.sh               # N=100 WAIT=30
#   N=50 WAIT=10 scripts/bench-queue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
WAIT=${WAIT:-30}
CHAIN=${CHAIN:-30}

. scripts/common.sh
need tsp || (apt-get install -y -qq task-spooler >/dev/null 2>&1 || true)

cargo build --release --quiet
BGT=$PWD/target/release/bgt
bench_home
TICK=$(getconf CLK_TCK)

# Sum of utime+stime (clock ticks) of the given pids.
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        fields=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $fields
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

echo "== 1. CPU of $N queued tasks waiting ${WAIT}s ($(nproc) cores, $(uname -m))"
"$BGT" run --queue idle -- sleep $((WAIT + 30)) >/dev/null
for _ in $(seq "$N"); do "$BGT" run --queue idle -- true >/dev/null; done
pids=$("$BGT" status --state queued --json | python3 -c '
import json, sys
print(" ".join(str(t["supervisor_pid"]) for t in json.load(sys.stdin)["tasks"]))')
count=$(echo "$pids" | wc -w)
before=$(cpu_ticks $pids)
sleep "$WAIT"
after=$(cpu_ticks $pids)
used=$(( (after - before) * 1000 / TICK ))
echo "$count queued supervisors used ${used} ms of CPU in ${WAIT} s (resolution $((1000 / TICK)) ms)"
rss=$(for p in $pids; do awk '/^Rss:/ {s+=$2} END {print s}' /proc/$p/smaps_rollup 2>/dev/null; done | awk '{s+=$1} END {printf "%.1f", s/NR/1024}')
echo "RSS per queued supervisor: ${rss} MiB (shared pages counted in each)"
"$BGT" stop --all --grace 1s >/dev/null
"$BGT" cleanup >/dev/null

echo
echo "== 2. slot free -> next start, $CHAIN tasks in a one-slot queue"
for _ in $(seq "$CHAIN"); do "$BGT" run --queue chain -- sleep 0.05 >/dev/null; done
"$BGT" wait --quiet $("$BGT" status --queue chain --json | python3 -c '
import json, sys
print(" ".join(t["id"] for t in json.load(sys.stdin)["tasks"]))') >/dev/null
"$BGT" status --queue chain --json | python3 -c '
import json, sys
from datetime import datetime
def t(s): return datetime.fromisoformat(s.replace("Z", "+00:00")[:26] + "+00:00")
tasks = sorted(json.load(sys.stdin)["tasks"], key=lambda t: t["started"])
gaps = sorted((t(b["started"]) - t(a["ended"])).total_seconds() * 1000 for a, b in zip(tasks, tasks[1:]))
print(f"latency over {len(gaps)} hand-overs: median {gaps[len(gaps)//2]:.2f} ms, max {gaps[-1]:.2f} ms, min {gaps[0]:.2f} ms")'
"$BGT" cleanup >/dev/null

echo
echo "== 3. $N x sleep 0.1, 2 slots: total wall time (ideal $(python3 -c "print($N*0.1/2)") s)"
now() { date +%s.%N; }
start=$(now)
for _ in $(seq "$N"); do "$BGT" run --queue two --slots 2 -- sleep 0.1 >/dev/null; done
"$BGT" wait --quiet $("$BGT" status --queue two --json | python3 -c '
import json, sys
print(" ".join(t["id"] for t in json.load(sys.stdin)["tasks"]))') >/dev/null
bgt_s=$(python3 -c "print(round($(now) - $start, 2))")
echo "bgt --queue --slots 2: ${bgt_s} s"
if need tsp; then
    tsp -S 2 >/dev/null
    start=$(now)
    for _ in $(seq "$N"); do tsp sleep 0.1 >/dev/null; done
    tsp -w >/dev/null 2>&1 || true
    while tsp | grep -qE 'running|queued'; do sleep 0.01; done
    tsp_s=$(python3 -c "print(round($(now) - $start, 2))")
    echo "tsp -S 2:              ${tsp_s} s   (bgt/tsp = $(python3 -c "print(round($bgt_s / $tsp_s, 2))"))"
else
    echo "tsp: not installed (apt-get install task-spooler)"
fi
if need pueue && need pueued; then
    cat >"$TMP/pueue.yml" <<EOF
shared:
  pueue_directory: $TMP/pueue
  runtime_directory: $TMP/pueue
EOF
    pueued -c "$TMP/pueue.yml" -d >/dev/null 2>&1
    pueue -c "$TMP/pueue.yml" parallel 2 >/dev/null
    start=$(now)
    for _ in $(seq "$N"); do pueue -c "$TMP/pueue.yml" add -- sleep 0.1 >/dev/null; done
    pueue -c "$TMP/pueue.yml" wait >/dev/null
    pueue_s=$(python3 -c "print(round($(now) - $start, 2))")
    echo "pueue parallel 2:      ${pueue_s} s   (bgt/pueue = $(python3 -c "print(round($bgt_s / $pueue_s, 2))"))"
else
    echo "pueue: not installed (not in Debian; cargo install pueue is slow): skipped"
fi
