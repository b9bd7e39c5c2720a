# Shared by the bench scripts (sourced, not run): a private state directory
# for bgt and the peers, and a cleanup that stops whatever a run started.
#   need TOOL          true when TOOL is on PATH
#   bench_home         sets TMP, BGT_HOME, TS_SOCKET, NQDIR, TMPDIR; cleans up on exit

need() { command -v "$1" >/dev/null 2>&1; }

bench_home() {
    TMP=$(mktemp -d)
    export TMP BGT_HOME=$TMP/bgt NQDIR=$TMP/nq TS_SOCKET=$TMP/tsp.sock TMPDIR=$TMP
    mkdir -p "$NQDIR"
    trap bench_cleanup EXIT
}

bench_cleanup() {
    "$BGT" stop --all --grace 1s >/dev/null 2>&1 || true
    need tsp && tsp -K >/dev/null 2>&1 || true
    [ -f "$TMP/pueue.yml" ] && pueue -c "$TMP/pueue.yml" shutdown >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
