#!/usr/bin/env bash
# Stress: TASKS tasks started in parallel while READS readers (status and
# incremental output) run interleaved. Prints failure counts (all must be 0)
# and the wall time.
#
#   scripts/stress.sh                 # 500 tasks, 1000 reads, 8 at a time
#   TASKS=2000 READS=4000 JOBS=16 scripts/stress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-500}
READS=${READS:-1000}
JOBS=${JOBS:-8}

cargo build --release --quiet
export BGT=$PWD/target/release/bgt
export BGT_HOME=$(mktemp -d)
work=$(mktemp -d)
trap '"$BGT" stop --all --grace 1s >/dev/null 2>&1; rm -rf "$BGT_HOME" "$work"' EXIT

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
count() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
echo "run failures:         $(count "$work/run-failed")"
echo "read failures:        $(count "$work/read-failed")"
[ -s "$work/run-failed" ] && { echo "run errors:"; sort "$work/run-failed" | uniq -c | head; }
[ -s "$work/read-failed" ] && { echo "read errors:"; sort "$work/read-failed" | uniq -c | head; }
printf 'wall time:            %.2fs to start %d tasks amid %d reads (%d parallel), %.2fs until all ended\n' \
    "$(echo "$started - $start" | bc)" "$TASKS" "$READS" "$JOBS" "$(echo "$end - $start" | bc)"
exit $check
