#!/usr/bin/env bash
# Benchmarks `bgt output` against tail / grep / rg on a big, noisy dev-server
# log, then measures how much context cleaning, presets and filters save on a
# small realistic log.
#
# Usage: scripts/bench-output.sh [--big] [--size-mb N] [--runs N]
#   default log size 100 MiB; --big (or SIZE_MB=1024) for 1 GiB.
#   RUNS=N overrides the number of timed runs per command.
# Needs: cargo, python3, hyperfine >= 1.15 (installed with apt-get when
# missing); rg is benchmarked only when installed.
# All temporary files live under /tmp and are removed on exit.
set -euo pipefail

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

SIZE_MB=${SIZE_MB:-100}
RUNS=${RUNS:-}
while [[ $# -gt 0 ]]; do
    case $1 in
        --big) SIZE_MB=1024 ;;
        --size-mb) SIZE_MB=${2:?--size-mb needs a number}; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $SIZE_MB =~ ^[0-9]+$ && $SIZE_MB -ge 8 ]] || { echo "SIZE_MB must be an integer >= 8" >&2; exit 2; }
if [[ -z $RUNS ]]; then
    if (( SIZE_MB >= 512 )); then RUNS=3; else RUNS=10; fi
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

hr() { printf '%s\n' "------------------------------------------------------------------------------"; }
section() { echo; hr; echo "$*"; hr; }
q() { printf '%q' "$1"; }

# ---------------------------------------------------------------- tools ----
SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    if DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y "$@" >/dev/null 2>&1; then
        return 0
    fi
    if (( APT_UPDATED == 0 )); then
        APT_UPDATED=1
        "${SUDO[@]}" apt-get update >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y "$@" >/dev/null 2>&1 && return 0
    fi
    return 1
}

if ! command -v hyperfine >/dev/null 2>&1; then
    echo "installing hyperfine (apt-get) ..."
    apt_install hyperfine || { echo "error: could not install hyperfine" >&2; exit 1; }
fi
if ! hyperfine --help 2>/dev/null | grep -q -- '--output'; then
    echo "error: hyperfine $(hyperfine --version) lacks --output=pipe; need >= 1.15" >&2
    exit 1
fi
if ! command -v rg >/dev/null 2>&1; then
    echo "ripgrep not found; trying apt-get install ripgrep (optional) ..."
    apt_install ripgrep || echo "  (ripgrep unavailable: rg is left out of the comparison)"
fi
HAVE_RG=0
command -v rg >/dev/null 2>&1 && HAVE_RG=1
command -v python3 >/dev/null 2>&1 || { echo "error: python3 is needed (log generator, JSON)" >&2; exit 1; }

echo "building bgt (cargo build --release) ..."
cargo build --release --quiet
BGT="$ROOT/target/release/bgt"
[[ -x $BGT ]] || { echo "error: $BGT not built" >&2; exit 1; }

# ---------------------------------------------------------- temp dirs ----
TMP=$(mktemp -d /tmp/bgt-bench.XXXXXX)
BGT_HOME=$(mktemp -d /tmp/bgt-bench-home.XXXXXX)
export BGT_HOME
cleanup() {
    "$BGT" stop --all --grace 1s >/dev/null 2>&1 || true
    rm -rf "$TMP" "$BGT_HOME"
}
trap cleanup EXIT

# UTF-8 locale for wc -m (character counts), when one exists.
WC_LOCALE=C
if locale -a 2>/dev/null | grep -qiE '^(C\.utf-?8|en_US\.utf-?8)$'; then
    WC_LOCALE=$(locale -a | grep -iE '^(C\.utf-?8|en_US\.utf-?8)$' | head -1)
fi
chars() { LC_ALL=$WC_LOCALE wc -m | tr -d ' '; }

# ------------------------------------------------------------ generator ----
GEN="$TMP/gen.py"
cat >"$GEN" <<'PY'
"""Noisy Next.js / Vite / Express dev-server log generator.

big PATH BYTES : ~256 KiB template blocks (varied numbers), written rotated in
                 random order until BYTES (whole lines, never over BYTES)
chunk PATH     : exactly 1 MiB of whole lines (appended by the --since bench)
small PATH     : ~400-line realistic log (blank lines, \r progress, 3 stack
                 traces, 7 ERROR + 3 WARN lines)
"""
import random, sys

ESC = "\x1b"
def c(code, s): return f"{ESC}[{code}m{s}{ESC}[0m"

PNPM_NEXT = "/app/node_modules/.pnpm/next@14.2.3_react-dom@18.2.0_react@18.2.0/node_modules/next"
PNPM_EXPRESS = "/app/node_modules/.pnpm/express@4.19.2/node_modules/express"
API = ["/api/users/{i}", "/api/users/{i}/orders", "/api/orders/{i}", "/api/products?page={p}&limit=20",
       "/api/session", "/api/cart/{i}/items", "/api/search?q=shoes&page={p}", "/api/health",
       "/api/notifications?since={t}", "/api/products/{i}/reviews", "/api/auth/refresh", "/api/feed?cursor={t}"]
STATIC = ["/_next/static/chunks/main.js", "/_next/static/chunks/webpack.js", "/_next/static/chunks/pages/_app.js",
          "/_next/static/chunks/app/layout.js", "/_next/static/css/app/layout.css", "/_next/static/media/inter.woff2",
          "/favicon.ico", "/assets/index-{h}.js", "/assets/index-{h}.css", "/src/App.tsx", "/@vite/client",
          "/node_modules/.vite/deps/react-dom_client.js?v={h}", "/_next/static/webpack/{h}.webpack.hot-update.json",
          "/logo.svg", "/robots.txt"]
SRC = ["/src/App.tsx", "/src/components/Button.tsx", "/src/pages/index.tsx", "/src/hooks/useCart.ts",
       "/src/components/Header.tsx", "/src/styles/globals.css", "/src/lib/api.ts"]
PAGES = ["/", "/dashboard", "/products/[id]", "/api/users/[id]", "/cart", "/login", "/settings"]
ERRS = ["ECONNREFUSED 127.0.0.1:5432", "ETIMEDOUT while calling payments API",
        "Cannot read properties of undefined (reading 'id')", "relation \"orders\" does not exist",
        "invalid input syntax for type uuid", "JWT expired", "Redis connection lost"]
WARNS = ["slow query took {ms}ms: SELECT * FROM orders WHERE user_id = $1", "deprecated option 'useNewUrlParser' ignored",
         "request to /api/search took {ms}ms", "memory usage high: {mb} MB", "retrying upstream request (attempt {n}/3)"]
FRAMES = ["    at Object.handler (/app/src/api/users.ts:{l}:{c})",
          "    at async getUser (/app/src/lib/db.ts:{l}:{c})",
          "    at Layer.handle [as handle_request] (" + PNPM_EXPRESS + "/lib/router/layer.js:95:5)",
          "    at next (" + PNPM_EXPRESS + "/lib/router/route.js:149:13)",
          "    at DevServer.renderToResponseWithComponentsImpl (" + PNPM_NEXT + "/dist/server/base-server.js:{l}:{c})",
          "    at async DevServer.handleRequestImpl (" + PNPM_NEXT + "/dist/server/base-server.js:{l}:{c})",
          "    at async Server.requestListener (" + PNPM_NEXT + "/dist/server/lib/start-server.js:{l}:{c})",
          "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
          "    at async Promise.all (index 0)",
          "    at Pool.connect (/app/node_modules/.pnpm/pg-pool@3.6.2_pg@8.11.5/node_modules/pg-pool/index.js:45:11)"]


class Gen:
    def __init__(self, seed, color=0.3):
        self.r = random.Random(seed)
        self.color = color  # share of access lines with morgan's colour codes

    def hexid(self):
        return "%08x" % self.r.getrandbits(32)

    def access(self):  # morgan 'dev': METHOD URL STATUS TIME ms - SIZE
        r = self.r
        m = r.choices(["GET", "POST", "PUT", "DELETE", "PATCH"], [80, 10, 4, 3, 3])[0]
        path = r.choice(API).format(i=r.randint(1, 99999), p=r.randint(1, 50), t=r.randint(10**9, 2 * 10**9))
        st = r.choices([200, 304, 201, 204, 400, 401, 404, 500], [70, 10, 6, 4, 3, 3, 3, 1])[0]
        if m != "GET" and st == 304:
            st = 200
        ms = r.expovariate(1 / 25.0)
        size = r.randint(0, 20000)
        if r.random() < self.color:  # morgan colours the status code
            col = 32 if st < 300 else 36 if st < 400 else 33 if st < 500 else 31
            return f"{ESC}[0m{m} {path} {ESC}[{col}m{st}{ESC}[0m {ms:.3f} ms - {size}{ESC}[0m"
        return f"{m} {path} {st} {ms:.3f} ms - {size}"

    def static(self):
        r = self.r
        path = r.choice(STATIC).format(h=self.hexid())
        st = r.choices([200, 304, 404], [60, 38, 2])[0]
        size = r.randint(100, 400000) if st == 200 else "-"
        return f"GET {path} {st} {r.expovariate(1 / 3.0):.3f} ms - {size}"

    def hmr(self):
        r = self.r
        k = r.randint(0, 5)
        ts = f"{r.randint(1, 12)}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} {r.choice(['AM', 'PM'])}"
        if k == 0:
            return "[HMR] connected"
        if k == 1:
            return (f"{ESC}[2m{ts}{ESC}[22m {ESC}[36m{ESC}[1m[vite]{ESC}[22m{ESC}[39m "
                    f"{ESC}[32mhmr update {ESC}[39m{ESC}[2m{r.choice(SRC)}{ESC}[22m")
        if k == 2:
            return f"[vite] hmr update {r.choice(SRC)}"
        if k == 3:
            return "[Fast Refresh] rebuilding"
        if k == 4:
            return f"[Fast Refresh] done in {r.randint(20, 900)}ms"
        return f"{ts} [vite] page reload {r.choice(SRC)}"

    def compiled(self):
        r = self.r
        p = r.choice(PAGES)
        if r.random() < 0.3:
            return f" ○ Compiling {p} ..."
        mark = f"{ESC}[32m✓{ESC}[39m" if r.random() < 0.5 else "✓"
        return f" {mark} Compiled {p} in {r.randint(40, 4000)}ms ({r.randint(300, 3000)} modules)"

    def misc(self):
        r = self.r
        k = r.randint(0, 3)
        if k == 0:
            return f"GET {r.choice(PAGES).replace('[id]', str(r.randint(1, 999)))} 200 in {r.randint(5, 900)}ms"
        if k == 1:
            return ('prisma:query SELECT "public"."User"."id" FROM "public"."User" '
                    'WHERE "id" = $1 LIMIT $2 OFFSET $3')
        if k == 2:
            return f"info  - loaded {PNPM_NEXT}/dist/server/base-server.js in {r.randint(1, 90)}ms"
        return f"[auth] session refreshed for user {r.randint(1, 99999)}"

    def warn(self):
        r = self.r
        msg = r.choice(WARNS).format(ms=r.randint(500, 9000), mb=r.randint(500, 4000), n=r.randint(1, 3))
        line = f"WARN  [db] {msg} (req {self.hexid()})"
        return c("33", line) if r.random() < 0.5 else line

    def error(self, out, stack=None):
        """ERROR line, then (stack=True, or half the time when None) a 5-9 frame trace."""
        r = self.r
        msg = r.choice(ERRS)
        line = (f"ERROR [api] {r.choice(['GET', 'POST'])} /api/users/{r.randint(1, 99999)} "
                f"failed: {msg} (req {self.hexid()})")
        out.append(c("31", line) if r.random() < 0.5 else line)
        if stack or (stack is None and r.random() < 0.5):
            out.append(f"Error: {msg}")
            for f in r.sample(FRAMES, r.randint(5, 9)):
                out.append(f.format(l=r.randint(1, 3000), c=r.randint(1, 80)))

    def lines(self, n, err_rate=0.001):
        r = self.r
        out = []
        kinds = [self.access, self.static, self.hmr, self.compiled, self.misc]
        weights = [70, 18, 5, 3, 4]
        while len(out) < n:
            x = r.random()
            if x < err_rate * 0.6:
                self.error(out)
            elif x < err_rate:
                out.append(self.warn())
            else:
                out.append(r.choices(kinds, weights)[0]())
        return out


def block(seed, target):
    g = Gen(seed)
    parts, size = [], 0
    while size < target:
        s = ("\n".join(g.lines(200)) + "\n").encode()
        parts.append(s)
        size += len(s)
    return b"".join(parts)


def big(path, total):
    blocks = [block(i, 256 << 10) for i in range(48 if total > (64 << 20) else 16)]
    r = random.Random(99)
    written = 0
    with open(path, "wb", buffering=1 << 20) as f:
        while written < total:
            b = r.choice(blocks)
            cut = b.find(b"\n", r.randrange(len(b))) + 1  # rotate at a line boundary
            chunk = b[cut:] + b[:cut]
            if written + len(chunk) > total:
                chunk = chunk[:chunk.rfind(b"\n", 0, total - written) + 1]
                if not chunk:
                    break
            f.write(chunk)
            written += len(chunk)


def chunk(path, total=1 << 20):
    g = Gen(12345)
    buf = bytearray()
    while True:
        for line in g.lines(50):
            b = (line + "\n").encode()
            if len(buf) + len(b) > total - 200:
                fill = "GET /api/padding?x= 200 1.000 ms - 0"
                fill = fill.replace("x=", "x=" + "a" * (total - len(buf) - 1 - len(fill)))
                buf += (fill + "\n").encode()
                assert len(buf) == total, len(buf)
                with open(path, "wb") as f:
                    f.write(bytes(buf))
                return
            buf += b


def small(path):
    """A dev server as a person sees it: every request coloured (FORCE_COLOR),
    a page load pulls a burst of static chunks, hot reload comes in bursts."""
    g = Gen(7, color=1.0)
    r = g.r
    out = ["", "> shop-web@0.1.0 dev /app", "> next dev", "",
           f"  {ESC}[1m{ESC}[35m▲ Next.js 14.2.3{ESC}[39m{ESC}[22m",
           "  - Local:        http://localhost:3000", "  - Environments: .env.local", "",
           f" {ESC}[32m✓{ESC}[39m Starting...",
           "Downloading swc package @next/swc-linux-x64-gnu... 12%\r"
           "Downloading swc package @next/swc-linux-x64-gnu... 57%\r"
           "Downloading swc package @next/swc-linux-x64-gnu... 100%",
           f" {ESC}[32m✓{ESC}[39m Ready in 2.3s", " ○ Compiling / ...",
           f" {ESC}[32m✓{ESC}[39m Compiled / in 4.1s (1187 modules)", ""]
    # event index -> True: ERROR + stack trace, False: ERROR alone, None: WARN
    plan = {12: True, 25: False, 33: None, 45: True, 55: False, 63: None,
            75: True, 83: False, 90: None, 95: False}
    for i in range(100):
        if i in plan:
            if plan[i] is None:
                out.append(g.warn())
            else:
                g.error(out, plan[i])
            continue
        if i == 50:
            out.append("Collecting page data ... 30%\rCollecting page data ... 80%\rCollecting page data ... done")
        kind = r.choices(["page", "api", "hmr", "misc"], [35, 35, 20, 10])[0]
        if kind == "page":  # a page request, then the browser fetches its chunks
            out.append(g.access())
            out.extend(g.static() for _ in range(r.randint(4, 12)))
        elif kind == "api":
            out.extend(g.access() for _ in range(r.randint(1, 4)))
        elif kind == "hmr":
            out.append(g.hmr())
            out.append(g.compiled())
        else:
            out.append(g.misc())
        if r.random() < 0.1:
            out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "big":
        big(sys.argv[2], int(sys.argv[3]))
    elif mode == "chunk":
        chunk(sys.argv[2])
    elif mode == "small":
        small(sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")
PY

# ------------------------------------------------------------- helpers ----
task_field() { # task_field TASK FIELD
    "$BGT" status "$1" --json | python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$2"
}
wait_task() { # wait_task TASK: poll until the task is no longer running
    local state i
    for ((i = 0; i < 6000; i++)); do
        state=$(task_field "$1" state)
        [[ $state != running && $state != starting ]] && { echo "$state"; return 0; }
        sleep 0.1
    done
    echo "error: task $1 still running after 10 minutes" >&2
    return 1
}

# summarize JSON REFERENCE_NAME: table of name, mean, stddev, min, ratio vs reference
summarize() {
    python3 - "$1" "$2" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
ref = next(r for r in res if r["command"] == sys.argv[2])
w = max(len(r["command"]) for r in res)
print(f"  {'command':<{w}}  {'mean s':>9}  {'± stddev':>9}  {'min s':>9}  {'user s':>8}  {'sys s':>8}  {'vs ' + sys.argv[2]:>10}")
for r in res:
    ratio = r["mean"] / ref["mean"]
    rs = f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"
    print(f"  {r['command']:<{w}}  {r['mean']:9.4f}  {r['stddev'] or 0:9.4f}  {r['min']:9.4f}  {r['user']:8.4f}  {r['system']:8.4f}  {rs + 'x':>10}")
PY
}
mean_of() { # mean_of JSON NAME
    python3 -c 'import json,sys; print(next(r["mean"] for r in json.load(open(sys.argv[1]))["results"] if r["command"]==sys.argv[2]))' "$1" "$2"
}
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2]):.2f}")' "$1" "$2"; }

HF=(hyperfine --warmup 2 --runs "$RUNS" --output=pipe --style basic)
run_hf() { # run_hf JSON hyperfine-args... ; hyperfine's own progress goes to stdout, indented
    local json=$1; shift
    "${HF[@]}" --export-json "$json" "$@" 2>&1 | sed 's/^/  | /'
}

# --------------------------------------------------------------- header ----
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | sed -n 1p || true)
section "bgt output benchmark - log ${SIZE_MB} MiB - $(nproc) CPUs, $(uname -m)"
echo "  machine    : $(uname -sr) $(uname -m), nproc=$(nproc)${CPU:+, $CPU}"
echo "  bgt        : $("$BGT" --version) ($BGT)"
echo "  hyperfine  : $(hyperfine --version), warmup 2, runs $RUNS, --output=pipe"
echo "  grep       : $(grep --version | sed -n 1p)"
echo "  tail       : $(tail --version | sed -n 1p)"
if (( HAVE_RG )); then echo "  rg         : $(rg --version 2>/dev/null | sed -n 1p)"; else echo "  rg         : not installed (skipped)"; fi
echo "  BGT_HOME   : $BGT_HOME (temporary)"

# ------------------------------------------------------------- big log ----
section "Generating a ${SIZE_MB} MiB noisy dev-server log"
LOG="$TMP/devserver.log"
CHUNK="$TMP/chunk-1MiB.log"
t0=$(date +%s%N)
python3 "$GEN" big "$LOG" $((SIZE_MB * 1024 * 1024))
python3 "$GEN" chunk "$CHUNK"
t1=$(date +%s%N)
LOG_BYTES=$(stat -c %s "$LOG")
LOG_LINES=$(wc -l <"$LOG")
printf '  generated %s bytes, %s lines in %s s (+ 1 MiB append chunk)\n' "$LOG_BYTES" "$LOG_LINES" "$(python3 -c 'import sys; print(f"{(int(sys.argv[2])-int(sys.argv[1]))/1e9:.1f}")' "$t0" "$t1")"
printf '  ERROR lines: %s, WARN lines: %s, stack frames: %s\n' \
    "$(grep -c ERROR "$LOG")" "$(grep -c WARN "$LOG")" "$(grep -c '^    at ' "$LOG")"

# --max-log-size 0: under the default limit (256 MiB) the supervisor frees
# the oldest part of a 1 GiB log, and the peers would scan zeros.
"$BGT" run --label big --max-log-size 0 -- cat "$LOG" >/dev/null
state=$(wait_task big)
DIR=$(task_field big dir)
STDOUT_LOG="$DIR/stdout.log"
got=$(stat -c %s "$STDOUT_LOG")
[[ $got -eq $LOG_BYTES ]] || { echo "error: task log has $got bytes, expected $LOG_BYTES (state $state)" >&2; exit 1; }
on_disk=$(( $(stat -c '%b * %B' "$STDOUT_LOG") ))
(( on_disk * 10 >= got * 9 )) || { echo "error: task log holds only $on_disk of $got bytes on disk (freed by a log limit?)" >&2; exit 1; }
rm -f "$LOG" # the task's stdout.log is the benchmark log from here on
echo "  task 'big' ($state) wrote it to $STDOUT_LOG"
cat "$STDOUT_LOG" >/dev/null # page cache warm for every tool alike

Q_BGT=$(q "$BGT")
Q_LOG=$(q "$STDOUT_LOG")

# ------------------------------------------------------------ a. tail ----
section "a. tail: last 50 lines"
echo "  bgt keeps a persisted line-count index (index.json in the task dir): the"
echo "  first read builds it, and the 2 warmup runs do that here - timed runs show"
echo "  the steady state."
run_hf "$TMP/tail.json" -N \
    -n "bgt --tail 50" "$Q_BGT output big --tail 50 --raw --stream stdout" \
    -n "tail -n 50" "tail -n 50 $Q_LOG"
echo
summarize "$TMP/tail.json" "tail -n 50"

# ---------------------------------------------------------- b. filter ----
section "b. filter: lines matching ERROR|WARN"
cs=(-n "bgt --filter (case-sensitive)" "$Q_BGT output big --filter 'ERROR|WARN' --max-lines 0 --raw --stream stdout --case-sensitive"
    -n "grep -E" "grep -E 'ERROR|WARN' $Q_LOG")
ci=(-n "bgt --filter (ignore case, default)" "$Q_BGT output big --filter 'ERROR|WARN' --max-lines 0 --raw --stream stdout"
    -n "grep -iE" "grep -iE 'ERROR|WARN' $Q_LOG")
if (( HAVE_RG )); then
    cs+=(-n "rg" "rg 'ERROR|WARN' $Q_LOG")
    ci+=(-n "rg -i" "rg -i 'ERROR|WARN' $Q_LOG")
fi
n_bgt=$("$BGT" output big --filter 'ERROR|WARN' --max-lines 0 --raw --stream stdout --case-sensitive 2>/dev/null | wc -l)
n_grep=$(grep -cE 'ERROR|WARN' "$STDOUT_LOG")
n_bgt_i=$("$BGT" output big --filter 'ERROR|WARN' --max-lines 0 --raw --stream stdout 2>/dev/null | wc -l)
n_grep_i=$(grep -ciE 'ERROR|WARN' "$STDOUT_LOG")
echo "  matching lines: case-sensitive bgt $n_bgt / grep $n_grep; ignore-case bgt $n_bgt_i / grep $n_grep_i"
echo
echo "  b1. case-sensitive"
run_hf "$TMP/filter-cs.json" -N "${cs[@]}"
echo
summarize "$TMP/filter-cs.json" "grep -E"
echo
echo "  b2. case-insensitive (bgt's default for --filter)"
run_hf "$TMP/filter-ci.json" -N "${ci[@]}"
echo
summarize "$TMP/filter-ci.json" "grep -iE"

# ----------------------------------------------------------- c. since ----
section "c. --since: read only what was appended (1 MiB per run)"
"$BGT" output big --since --cursor bench --max-lines 0 --raw --stream stdout >/dev/null 2>&1
echo "  cursor 'bench' moved to the end of the log; before each run, --prepare appends"
echo "  1 MiB of whole lines to stdout.log (the full reads get no append). 'cat' is"
echo "  there only as an I/O floor for reading the whole log."
run_hf "$TMP/since.json" \
    --prepare "head -c 1048576 $(q "$CHUNK") >> $Q_LOG" \
    -n "bgt --since (+1 MiB)" "$Q_BGT output big --since --cursor bench --max-lines 0 --raw --stream stdout" \
    --prepare "true" \
    -n "bgt full read (no cursor)" "$Q_BGT output big --max-lines 0 --raw --stream stdout" \
    --prepare "true" \
    -n "cat (whole log)" "cat $Q_LOG"
BENCH_END_BYTES=$(stat -c %s "$STDOUT_LOG")
echo
summarize "$TMP/since.json" "bgt full read (no cursor)"
# sanity: one more append, the --since read must return exactly the new 1 MiB
head -c 1048576 "$CHUNK" >>"$STDOUT_LOG"
since_bytes=$("$BGT" output big --since --cursor bench --max-lines 0 --raw --stream stdout 2>/dev/null | wc -c)
echo
echo "  check: after one more 1 MiB append, --since returned $since_bytes bytes (expected 1048576)"

# ---------------------------------------------------------- verdict ----
section "Goals (timings above)"
tail_r=$(ratio "$(mean_of "$TMP/tail.json" "bgt --tail 50")" "$(mean_of "$TMP/tail.json" "tail -n 50")")
# The filter's peer is the faster of grep -E and rg (rg -i for ignore-case).
best_of() { # best_of JSON NAME... : the smallest mean among NAMEs present
    python3 -c 'import json,sys; r={x["command"]:x["mean"] for x in json.load(open(sys.argv[1]))["results"]}; print(min(r[n] for n in sys.argv[2:] if n in r))' "$@"
}
CS_PEER="grep -E"; CI_PEER="grep -iE"
if (( HAVE_RG )); then CS_PEER="faster of grep -E and rg"; CI_PEER="rg -i"; fi
cs_r=$(ratio "$(mean_of "$TMP/filter-cs.json" "bgt --filter (case-sensitive)")" "$(best_of "$TMP/filter-cs.json" "grep -E" "rg")")
ci_r=$(ratio "$(mean_of "$TMP/filter-ci.json" "bgt --filter (ignore case, default)")" "$(best_of "$TMP/filter-ci.json" "$CI_PEER")")
since_r=$(python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2])*100:.1f}")' \
    "$(mean_of "$TMP/since.json" "bgt --since (+1 MiB)")" "$(mean_of "$TMP/since.json" "bgt full read (no cursor)")")
bytes_r=$(python3 -c 'import sys; print(f"{1048576/int(sys.argv[1])*100:.1f}")' "$BENCH_END_BYTES")
since_ms=$(python3 -c 'import sys; print(f"{float(sys.argv[1])*1000:.1f}")' "$(mean_of "$TMP/since.json" "bgt --since (+1 MiB)")")
full_ms_mib=$(python3 -c 'import sys; print(f"{float(sys.argv[1])*1000/(int(sys.argv[2])/1048576):.1f}")' \
    "$(mean_of "$TMP/since.json" "bgt full read (no cursor)")" "$BENCH_END_BYTES")
verdict() { python3 -c 'import sys; print("OK  " if eval(sys.argv[1]) else "MISS")' "$1"; }
echo "  $(verdict "$tail_r <= 2") tail   : bgt/tail = ${tail_r}x (goal <= 2x)"
echo "  $(verdict "$cs_r <= 1") filter : bgt / ${CS_PEER} = ${cs_r}x (goal <= 1x)"
echo "  $(verdict "$ci_r <= 1") filter : bgt / ${CI_PEER} = ${ci_r}x, case-insensitive (goal <= 1x)"
echo "  $(verdict "$since_ms <= 2 * $full_ms_mib + 5") since  : --since after +1 MiB = ${since_ms} ms; full read = ${full_ms_mib} ms per MiB of log"
echo "               (goal: cost proportional to new bytes, i.e. <= 2x the full read's per-MiB cost + 5 ms start-up)"
echo "               --since costs ${since_r}% of a full read; the new bytes are ${bytes_r}% of the log"

# --------------------------------------------------- context savings ----
section "Context saved on a small realistic dev-server log (not timed)"
SMALL="$TMP/small-devserver.log"
python3 "$GEN" small "$SMALL"
"$BGT" run --label small -- cat "$SMALL" >/dev/null
wait_task small >/dev/null
printf '  input: %s lines, %s chars (ANSI colours, pnpm paths, blank lines, \\r progress, 3 stack traces)\n' \
    "$(wc -l <"$SMALL")" "$(chars <"$SMALL")"
FILTER='error|warn|exception|fail'
NAMES=("raw" "cleaned" "cleaned + presets next,express" "filter '$FILTER'" "presets + filter")
ARGS=("--raw --max-lines 0"
      "--max-lines 0"
      "--max-lines 0 --preset next --preset express"
      "--max-lines 0 --filter $FILTER"
      "--max-lines 0 --preset next --preset express --filter $FILTER")
raw_chars=0
printf '\n  %-34s %8s %8s %8s\n' "mode" "chars" "lines" "saved"
for i in "${!NAMES[@]}"; do
    read -r -a args <<<"${ARGS[$i]}"
    "$BGT" output small "${args[@]}" >"$TMP/out$i.txt" 2>/dev/null
    n=$(chars <"$TMP/out$i.txt")
    l=$(wc -l <"$TMP/out$i.txt")
    (( i == 0 )) && raw_chars=$n
    printf '  %-34s %8s %8s %7s%%\n' "${NAMES[$i]}" "$n" "$l" \
        "$(python3 -c 'import sys; print(f"{(1-int(sys.argv[1])/int(sys.argv[2]))*100:.0f}")' "$n" "$raw_chars")"
done
echo "  (stdout characters only, wc -m; bgt's one-line summary goes to stderr and is not counted)"

# every ERROR line of the input must survive the filter (compare ANSI-stripped text)
ERR_TOTAL=$(grep -c ERROR "$SMALL")
grep ERROR "$SMALL" | sed -e 's/\x1b\[[0-9;?]*[ -\/]*[@-~]//g' -e 's/\r$//' >"$TMP/errors.txt"
echo
for i in 3 4; do
    kept=0
    while IFS= read -r line; do
        if grep -qF -- "$line" "$TMP/out$i.txt"; then kept=$((kept + 1)); fi
    done <"$TMP/errors.txt"
    echo "  errors kept (${NAMES[$i]}): $kept/$ERR_TOTAL$([[ $kept -eq $ERR_TOTAL ]] || echo '   <-- ERROR LINES LOST')"
done
echo
echo "  output of 'bgt output small --max-lines 0 --preset next --preset express --filter '$FILTER'':"
sed 's/^/    /' "$TMP/out4.txt"
echo
echo "  reference bash reader (Medusa.js boot log): cleaning saves 52%, filtering 96%"

# ------------------------------------- real captured dev-server logs ----
section "Context saved on real captured dev-server logs (tests/data/logs)"
LOGS="$PWD/tests/data/logs"
printf '  %-17s %8s %9s %9s %9s %9s  %s\n' "capture" "raw" "cleaned" "+preset" "+filter" "saved" "problem lines kept"
for cap in next:next next16:next express:express express-combined:express django:django vite:vite rails:rails; do
    name=${cap%%:*} preset=${cap##*:}
    out="$LOGS/$name.stdout.log" err="$LOGS/$name.stderr.log"
    [ -f "$out" ] || continue
    "$BGT" run --label "cap-$name" -- sh -c 'cat "$1"; cat "$2" >&2' _ "$out" "$err" >/dev/null
    wait_task "cap-$name" >/dev/null
    n_raw=$("$BGT" output "cap-$name" --raw --max-lines 0 2>/dev/null | chars)
    n_clean=$("$BGT" output "cap-$name" --max-lines 0 2>/dev/null | chars)
    n_preset=$("$BGT" output "cap-$name" --max-lines 0 --preset "$preset" 2>/dev/null | chars)
    "$BGT" output "cap-$name" --max-lines 0 --preset "$preset" --filter "$FILTER" 2>/dev/null >"$TMP/cap.txt"
    n_filter=$(chars <"$TMP/cap.txt")
    # Every line mentioning a problem in the raw log must survive preset + filter.
    cat "$out" "$err" | sed -e 's/\x1b\[[0-9;?]*[ -\/]*[@-~]//g' -e 's/\r$//' | grep -iE "$FILTER" | sed 's/^[[:space:]]*//' >"$TMP/problems.txt" || true
    total=$(wc -l <"$TMP/problems.txt") kept=0
    while IFS= read -r line; do grep -qF -- "$line" "$TMP/cap.txt" && kept=$((kept + 1)); done <"$TMP/problems.txt"
    printf '  %-17s %8s %9s %9s %9s %8s%%  %s/%s\n' "$name" "$n_raw" "$n_clean" "$n_preset" "$n_filter" \
        "$(python3 -c 'import sys; print(f"{(1-int(sys.argv[1])/int(sys.argv[2]))*100:.0f}")' "$n_filter" "$n_raw")" "$kept" "$total"
done
echo "  (chars of stdout; +preset = cleaned with that stack's preset; +filter = preset and --filter '$FILTER')"
echo
echo "done."
exit 0
