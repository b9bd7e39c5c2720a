#!/usr/bin/env bash
# Stress: TASKS tasks started in parallel while READS readers (status and
# incremental output) run interleaved. Prints failure counts (all must be 0)
# and the wall time. Then chaos: CHAOS tasks started while a killer sends
# SIGKILL to random supervisors; counts untracked processes (a process with
# a BGT_TASK_ID marker whose task `run` did not report, is gone, or is
# neither running nor lost — a lost task's processes are still found and
# stopped by `bgt stop`) and processes left after stopping everything. Both
# must be 0.
#
#   scripts/stress.sh                 # 500 tasks, 1000 reads, 8 at a time, 200 chaos tasks
#   TASKS=2000 READS=4000 JOBS=16 CHAOS=1000 scripts/stress.sh
#   BGT=target/debug/bgt TASKS=50 READS=100 scripts/stress.sh   # no release build
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-500}
READS=${READS:-1000}
JOBS=${JOBS:-8}
CHAOS=${CHAOS:-200}

# BGT=path/to/bgt uses that binary instead of building a release one.
if [ -z "${BGT:-}" ]; then
    cargo build --release --quiet
    BGT=$PWD/target/release/bgt
fi
export BGT
export BGT_HOME=$(mktemp -d)
CHAOS_HOME=$(mktemp -d)
work=$(mktemp -d)
# Stops what is left (lost tasks' processes included) in a state directory.
stop_everything() {
    local lost
    BGT_HOME=$1 "$BGT" stop --all --grace 1s >/dev/null 2>&1 || true
    lost=$(BGT_HOME=$1 "$BGT" status --json 2>/dev/null | python3 -c '
import json, sys
print(" ".join(t["id"] for t in json.load(sys.stdin)["tasks"] if t["state"] == "lost"))' || true)
    [ -z "$lost" ] || BGT_HOME=$1 "$BGT" stop $lost --grace 1s >/dev/null 2>&1 || true
}
trap 'stop_everything "$BGT_HOME"; stop_everything "$CHAOS_HOME"; rm -rf "$BGT_HOME" "$CHAOS_HOME" "$work"' EXIT

# One job: start a task, or read (status, incremental output, filtered tail).
cat >"$work/job.sh" <<'JOB'
#!/bin/sh
kind=$1 n=$2 work=$WORK
if [ "$kind" = run ]; then
    if id=$("$BGT" run --label "s$((n % 20))" -- sh -c "echo task $n; echo warn $n >&2; exit $((n % 5))" 2>"$work/err.$n"); then
        echo "$id" >>"$work/ids"
    else
        cat "$work/err.$n" >>"$work/run-failed"
    fi
else
    case $((n % 3)) in
        0) "$BGT" status --json >/dev/null 2>"$work/err.r$n" ;;
        1) "$BGT" output "s$((n % 20))" --since --cursor "c$((n % 4))" --json >/dev/null 2>"$work/err.r$n" ;;
        2) "$BGT" output "s$((n % 20))" --filter warn --tail 5 >/dev/null 2>"$work/err.r$n" ;;
    esac || {
        # Reading a label that no task has yet is expected early on; anything else fails.
        grep -q "no task matches" "$work/err.r$n" || cat "$work/err.r$n" >>"$work/read-failed"
    }
fi
rm -f "$work/err.$n" "$work/err.r$n"
JOB
chmod +x "$work/job.sh"

start=$(date +%s.%N)
# Starts and reads are interleaved in one parallel stream of jobs.
{
    for i in $(seq 1 "$TASKS"); do echo "run $i"; done
    for i in $(seq 1 "$READS"); do echo "read $i"; done
} | shuf | WORK=$work xargs -P "$JOBS" -L 1 "$work/job.sh"
started=$(date +%s.%N)

# Wait for every task to end, then check every record.
for id in $(cat "$work/ids"); do "$BGT" wait "$id" >/dev/null 2>&1 || true; done
end=$(date +%s.%N)

"$BGT" status --json >"$work/status.json"
set +e
python3 - "$work/status.json" "$work/ids" "$TASKS" <<'PY'
import json, sys
tasks = json.load(open(sys.argv[1]))["tasks"]
ids = open(sys.argv[2]).read().split()
want = int(sys.argv[3])
by_id = {t["id"]: t for t in tasks}
bad_state = [t["id"] for t in tasks if t["state"] != "exited"]
import re
bad_exit = []
for t in tasks:
    n = int(re.search(r"task (\d+)", t["command"]).group(1))
    if t["exit_code"] != n % 5:
        bad_exit.append(t["id"])
print(f"tasks started:        {len(ids)} / {want}")
print(f"distinct ids:         {len(set(ids))}")
print(f"records readable:     {len(tasks)}")
print(f"not exited cleanly:   {len(bad_state)}")
print(f"wrong exit code:      {len(bad_exit)}")
failures = (want - len(ids)) + (len(ids) - len(set(ids))) + (want - len(tasks)) + len(bad_state) + len(bad_exit)
open("/dev/stderr", "w")
sys.exit(1 if failures else 0)
PY
check=$?
set -e
count() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
echo "run failures:         $(count "$work/run-failed")"
echo "read failures:        $(count "$work/read-failed")"
[ -s "$work/run-failed" ] && { echo "run errors:"; sort "$work/run-failed" | uniq -c | head; }
[ -s "$work/read-failed" ] && { echo "read errors:"; sort "$work/read-failed" | uniq -c | head; }
printf 'wall time:            %.2fs to start %d tasks amid %d reads (%d parallel), %.2fs until all ended\n' \
    "$(echo "$started - $start" | bc)" "$TASKS" "$READS" "$JOBS" "$(echo "$end - $start" | bc)"

# Chaos: supervisors SIGKILLed at random moments, the start handshake included.
cat >"$work/chaos.sh" <<'JOB'
#!/bin/sh
if id=$("$BGT" run -- sleep 300 2>>"$WORK/chaos-run-failed"); then echo "$id" >>"$WORK/chaos-ids"; fi
JOB
chmod +x "$work/chaos.sh"
: >"$work/chaos-ids"
: >"$work/chaos-run-failed"
: >"$work/killed"
# The killer watches for new supervisors and SIGKILLs half of them after
# 0-3 ms, so some die during the start handshake.
python3 - "$CHAOS_HOME" "$work" <<'PY' &
import os, random, signal, sys, time
home, work = sys.argv[1], sys.argv[2]
pattern = f"__supervise\0{home}/".encode()
seen = set()
with open(f"{work}/killed", "a") as killed:
    while not os.path.exists(f"{work}/chaos-done"):
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid in seen:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if pattern not in f.read():
                        continue
            except OSError:
                continue
            seen.add(pid)
            if random.random() < 0.5:
                time.sleep(random.random() * 0.003)
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    print(pid, file=killed, flush=True)
                except OSError:
                    pass
PY
killer=$!
seq 1 "$CHAOS" | BGT_HOME=$CHAOS_HOME WORK=$work xargs -P "$JOBS" -n 1 "$work/chaos.sh"
touch "$work/chaos-done"
wait "$killer"

# Processes carrying a marker of this state directory, as "pid id" lines.
marked() {
    for env in /proc/[0-9]*/environ; do
        { tr '\0' '\n' <"$env"; } 2>/dev/null | awk -v home="BGT_HOME=$CHAOS_HOME" -v pid="${env#/proc/}" '
            $0 == home { mine = 1 } /^BGT_TASK_ID=/ { id = substr($0, 13) }
            END { if (mine && id != "") { sub("/environ", "", pid); print pid, id } }' || true
    done
}
marked >"$work/marked"
BGT_HOME=$CHAOS_HOME "$BGT" status --json >"$work/chaos-status.json"
untracked=$(python3 - "$work/chaos-status.json" "$work/chaos-ids" "$work/marked" <<'PY'
import json, sys
states = {t["id"]: t["state"] for t in json.load(open(sys.argv[1]))["tasks"]}
printed = set(open(sys.argv[2]).read().split())
bad = 0
for line in open(sys.argv[3]):
    pid, task = line.split()
    if task not in printed or states.get(task) not in ("running", "starting", "lost"):
        bad += 1
        print(f"untracked: pid {pid} of {task} ({states.get(task, 'no task')})", file=sys.stderr)
print(bad)
PY
)
lost=$(python3 -c 'import json,sys; print(sum(t["state"] == "lost" for t in json.load(open(sys.argv[1]))["tasks"]))' "$work/chaos-status.json")
stop_everything "$CHAOS_HOME"
marked >"$work/marked-after"
echo "chaos:                $CHAOS runs, $(count "$work/killed") supervisors killed, $(count "$work/chaos-ids") ids printed, $(count "$work/chaos-run-failed") runs failed, $lost lost"
echo "untracked processes:  $untracked"
echo "left after stopping:  $(count "$work/marked-after")"
[ "$untracked" = 0 ] && [ ! -s "$work/marked-after" ] || check=1
exit $check
