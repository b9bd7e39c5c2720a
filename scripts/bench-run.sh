#!/usr/bin/env bash
# Start latency of `bgt run` next to nohup, nq, tsp and pueue (whichever are
# installed), the supervisor's memory, and log throughput versus a plain
# shell redirect. Prints means and ratios; nothing here is a pass/fail test.
#
#   scripts/bench-run.sh            # quick: 30 runs each, 256 MiB throughput
#   RUNS=100 MIB=1024 scripts/bench-run.sh
#   BEFORE=/tmp/bgt-old scripts/bench-run.sh   # an older build in the same hyperfine run
#   RT=1 scripts/bench-run.sh       # latency under SCHED_FIFO (root): on a machine
#                                   # busy with other work, scheduling delays
#                                   # otherwise dominate every command's time
#   TMPDIR=/dev/shm scripts/bench-run.sh  # every tool's state on tmpfs: on an ext4
#                                   # without a journal, each file created walks
#                                   # over the inodes freed in the last minutes
#                                   # (a build or a test run frees thousands), so
#                                   # the disk's recent history shows in the times
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
MIB=${MIB:-256}
BEFORE=${BEFORE:-}
RT=${RT:-}

. scripts/common.sh
if ! need hyperfine; then
    (apt-get update -qq && apt-get install -y -qq hyperfine) >/dev/null 2>&1 || { echo "hyperfine is required" >&2; exit 1; }
fi
# The standard tools, where the package registry has them (pueue is not in Debian).
need nq || (apt-get install -y -qq nq >/dev/null 2>&1 || true)
need tsp || (apt-get install -y -qq task-spooler >/dev/null 2>&1 || true)

cargo build --release --quiet
BGT=$PWD/target/release/bgt
bench_home

prio=()
if [ -n "$RT" ] && chrt -f 20 true 2>/dev/null; then prio=(chrt -f 20); fi
echo "== bgt run latency ($(nproc) cores, $(uname -m), $RUNS runs each${prio:+, SCHED_FIFO})"
cmds=("$BGT run -- true" "sh -c 'nohup true >/dev/null 2>&1 &'")
names=("bgt run" "nohup &")
if [ -n "$BEFORE" ]; then cmds+=("$BEFORE run -- true"); names+=("bgt before"); fi
if need nq; then cmds+=("nq true"); names+=("nq"); fi
if need tsp; then tsp true >/dev/null; cmds+=("tsp true"); names+=("tsp"); fi
if need pueue && need pueued; then
    # A private pueued, so the benchmark neither needs nor touches the user's.
    mkdir -p "$TMP/pueue"
    printf 'shared:\n  pueue_directory: %s\n  runtime_directory: %s\n' "$TMP/pueue" "$TMP/pueue" >"$TMP/pueue.yml"
    pueued -d -c "$TMP/pueue.yml" >/dev/null 2>&1
    for _ in $(seq 50); do pueue -c "$TMP/pueue.yml" status >/dev/null 2>&1 && break; sleep 0.1; done
    cmds+=("pueue -c $TMP/pueue.yml add true"); names+=("pueue add")
fi
args=()
for i in "${!cmds[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
"${prio[@]}" hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$TMP/run.json" "${args[@]}" >/dev/null 2>&1 ||
    "${prio[@]}" hyperfine --warmup 3 --runs "$RUNS" --export-json "$TMP/run.json" "${args[@]}" >/dev/null
python3 - "$TMP/run.json" <<'PY'
import json, sys
rs = json.load(open(sys.argv[1]))["results"]
by = {r["command"]: r for r in rs}
peers = [p for p in ("nohup &", "nq") if p in by]
head = "".join(f"{'vs ' + p.split()[0]:>10}" for p in peers)
print(f"{'command':<12} {'mean':>10} {'median':>10} {'stddev':>10}{head}")
for r in rs:
    ratios = "".join(f"{r['median'] / by[p]['median']:>9.2f}x" for p in peers)
    print(f"{r['command']:<12} {r['mean']*1000:>8.2f}ms {r['median']*1000:>8.2f}ms {r['stddev']*1000:>8.2f}ms{ratios}")
print("(ratios of medians: a busy machine adds long outliers to the means)")
PY
need pueue || echo "(pueue not installed: cargo install pueue to include it)"

echo
echo "== resident memory of a supervisor watching 'sleep 30'"
for which in "$BGT" ${BEFORE:+"$BEFORE"}; do
    who="bgt supervisor"
    [ "$which" = "$BGT" ] || who="bgt before    "
    id=$("$which" run -- sleep 30)
    sup=$("$which" status "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor_pid"])')
    awk -v who="$who" '/^(VmRSS|RssAnon|RssFile):/ {printf "%s   %-9s %6d KiB\n", who, $1, $2}' "/proc/$sup/status"
    awk -v who="$who" '/^Pss:/ {printf "%s   %-9s %6d KiB (shared pages split among their users)\n", who, $1, $2}' "/proc/$sup/smaps_rollup"
    if [ "$which" = "$BGT" ]; then main_id=$id; else "$which" stop "$id" >/dev/null; fi
done
if need nq; then
    nq sleep 30 >/dev/null
    sleep 0.2
    npid=$(pgrep -f -n '^nq sleep 30' || true)
    [ -n "$npid" ] && awk '/^VmRSS:/ {printf "nq (for compare) %-9s %6d KiB\n", $1, $2}' "/proc/$npid/status"
fi
if [ -f "$TMP/pueue.yml" ]; then
    ppid=$(pgrep -n pueued || true)
    [ -n "$ppid" ] && awk '/^VmRSS:/ {printf "pueued (daemon)  %-9s %6d KiB\n", $1, $2}' "/proc/$ppid/status"
fi
"$BGT" stop "$main_id" >/dev/null

echo
echo "== status of 1,000 tasks (goal: under 50 ms)"
export BGT_HOME=$TMP/many
seq 1000 | xargs -P 8 -I{} "$BGT" run -- sh -c 'echo {}' >/dev/null
for id in $("$BGT" status --json | python3 -c 'import json,sys; print(" ".join(t["id"] for t in json.load(sys.stdin)["tasks"]))'); do
    "$BGT" wait --quiet "$id" >/dev/null || true
done
hyperfine -N --warmup 3 --runs 20 --output=pipe --export-json "$TMP/status.json" \
    -n "bgt status" "$BGT status" -n "bgt status --json" "$BGT status --json" >/dev/null
python3 - "$TMP/status.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{r['command']:<18} {r['mean']*1000:>7.1f} ms")
PY
export BGT_HOME=$TMP/bgt

echo
echo "== log throughput: a program writing $MIB MiB to stdout"
cat > "$TMP/write.sh" <<SH
#!/bin/sh
head -c $((MIB * 1048576)) /dev/zero | tr '\0' 'x' | fold -w 99
SH
chmod +x "$TMP/write.sh"
hyperfine --warmup 1 --runs 5 --export-json "$TMP/tp.json" \
    -n "shell > file" "$TMP/write.sh > $TMP/out.log" \
    -n "bgt run + wait" "id=\$($BGT run -- $TMP/write.sh) && $BGT wait \$id" >/dev/null
python3 - "$TMP/tp.json" "$MIB" <<'PY'
import json, sys
rs = json.load(open(sys.argv[1]))["results"]; mib = int(sys.argv[2])
base = rs[0]["mean"]
for r in rs:
    print(f"{r['command']:<15} {r['mean']:>7.3f}s {mib / r['mean']:>8.0f} MiB/s {r['mean']/base:>6.2f}x")
PY
