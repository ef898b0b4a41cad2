#!/usr/bin/env bash
# Load benchmark: Palisade against bare axum, the off-the-shelf tower stack and the seed Python
# stacks, in one run on this machine. See docs/benchmarks.md for what it measures and how to read
# the output.
#
#   bench/run.sh                         # full run: 3 rounds x 10 s per target and path
#   DURATION=5 ROUNDS=2 bench/run.sh     # quick mode
#
# Environment (all optional):
#   DURATION=10      seconds of load per (target, path) measurement
#   ROUNDS=3         rounds; each round measures every (target, path) once, in a rotated order
#   WARMUP=2         seconds of warm-up load per (target, path) before the first round
#   CONNECTIONS=64   wrk connections;  THREADS=2  wrk threads
#   TARGETS="bare offshelf layers palisade palisade-w2 aiohttp fastapi"   (subset to run)
#   PATHS="/plaintext /api/v1/users/1 /names"
#   LIMITED=1        also measure the cost of a 429 (offshelf-429, palisade-429 on /plaintext)
#   FLOOD=1          rate-limit key flood: in-process (FLOOD_KEYS=1000000) and over HTTP
#                    against the server (FLOOD_SECS=15, a new x-api-key per request)
#   SKIP_BUILD=1     use the binaries already in target/release
#   PROFILE=1        after the rounds, record `perf` on palisade (single process, /plaintext)
#   MICRO=1          also run every layer's criterion micro-benchmarks (`cargo bench -p palisade`,
#                    short settings) into $OUT/<timestamp>/micro.txt
#   PINNED=1         servers on CPU 1 (`taskset -c 1`), wrk on CPU 0 (`taskset -c 0`, THREADS=1
#                    unless set); `palisade-w2` stays unpinned (two workers on one core say
#                    nothing). Ratios are per round, rounds alternate the order.
#   CALLGRIND=1      instead of the load rounds: user-space instructions per request of every
#                    single-process target in $TARGETS under `valgrind --tool=callgrind`,
#                    counted over CALLGRIND_REQUESTS=5000 keep-alive requests on each of $PATHS
#                    after a warm-up (instrumentation is switched on for the measured requests
#                    only, so start-up and warm-up are not counted)
#   PALISADE=path    the palisade binary to measure (default target/release/palisade), e.g. a
#                    copy built from another commit, for before/after numbers
#   OUT=bench/results
#
# Writes $OUT/<timestamp>.md, .json and .png (rps and p99 per target and path), and the raw
# measurements in $OUT/<timestamp>/. Every server listens on 127.0.0.1 on a free port and is
# stopped when the script exits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
TARGETS="${TARGETS:-bare offshelf layers palisade palisade-w2 aiohttp fastapi}"
PATHS="${PATHS:-/plaintext /api/v1/users/1 /names}"
LIMITED="${LIMITED:-1}"
FLOOD="${FLOOD:-1}"
FLOOD_KEYS="${FLOOD_KEYS:-1000000}"
FLOOD_SECS="${FLOOD_SECS:-15}"
SKIP_BUILD="${SKIP_BUILD:-0}"
PROFILE="${PROFILE:-0}"
MICRO="${MICRO:-0}"
OUT="${OUT:-bench/results}"
PINNED="${PINNED:-0}"
CALLGRIND="${CALLGRIND:-0}"
CALLGRIND_REQUESTS="${CALLGRIND_REQUESTS:-5000}"
if [[ "$PINNED" == 1 ]]; then
  THREADS="${THREADS_PINNED:-1}"
  SERVER_WRAP=(taskset -c 1)
  LOAD_WRAP=(taskset -c 0)
else
  SERVER_WRAP=()
  LOAD_WRAP=()
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_DIR="$OUT/$STAMP"
mkdir -p "$RUN_DIR/logs"
RUNS="$RUN_DIR/runs.jsonl"
MEM="$RUN_DIR/memory.jsonl"
FLOODS="$RUN_DIR/flood.jsonl"
: >"$RUNS"
: >"$MEM"
: >"$FLOODS"
VENV="bench/.venv"
BIN="target/release"
PALISADE="${PALISADE:-$BIN/palisade}" # the Palisade binary under test (e.g. a copy of main's)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Tools

need_apt() {
  local pkg="$1"
  log "installing $pkg with apt-get"
  if [[ $(id -u) -ne 0 ]]; then
    die "$pkg is missing and this is not root: apt-get install $pkg"
  fi
  if [[ -z "${APT_UPDATED:-}" ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
}

command -v wrk >/dev/null || need_apt wrk
command -v gnuplot >/dev/null || need_apt gnuplot-nox
command -v curl >/dev/null || need_apt curl
if [[ "$CALLGRIND" == 1 ]]; then
  command -v valgrind >/dev/null || need_apt valgrind
fi
command -v python3 >/dev/null || die "python3 is required"

wants() { # wants TARGET: whether TARGET is in $TARGETS
  [[ " $TARGETS " == *" $1 "* ]]
}

if [[ "$SKIP_BUILD" != 1 ]]; then
  log "building release binaries"
  cargo build --release -q -p palisade-server --bin palisade
  cargo build --release -q --manifest-path bench/apps/Cargo.toml --target-dir target
fi
for b in palisade bench-bare bench-offshelf bench-layers bench-flood; do
  [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing (run without SKIP_BUILD=1)"
done

if wants aiohttp || wants fastapi; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  log "installing the seed stacks into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r bench/python/requirements.txt
fi

# ---------------------------------------------------------------------------------------------
# Processes

declare -A PID=()  # target -> pid of the process we started (leader of its own process group)
declare -A PORT=() # target -> port

cleanup() {
  local t pid
  for t in "${!PID[@]}"; do
    pid="${PID[$t]}"
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for t in "${!PID[@]}"; do
    pid="${PID[$t]}"
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start TARGET CMD...: runs CMD in a new session (so the whole tree can be stopped), logs to
# $RUN_DIR/logs/TARGET.log.
start() {
  local target="$1" wrap=("${SERVER_WRAP[@]}")
  shift
  [[ "$target" == palisade-w2 ]] && wrap=()
  setsid "${wrap[@]}" "$@" >"$RUN_DIR/logs/$target.log" 2>&1 </dev/null &
  PID[$target]=$!
}

wait_ready() {
  local target="$1" port="$2" deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if [[ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/plaintext" || true)" =~ ^(200|429)$ ]]; then
      return 0
    fi
    kill -0 "${PID[$target]}" 2>/dev/null || {
      tail -20 "$RUN_DIR/logs/$target.log" >&2
      die "$target exited during start-up"
    }
    sleep 0.1
  done
  tail -20 "$RUN_DIR/logs/$target.log" >&2
  die "$target not ready on port $port after 30 s"
}

# Palisade configuration: every layer on with the defaults, except the rate-limit policy, which
# is raised so it never rejects (the limiter still checks every request) and applies to every
# path. The admin endpoint is on (a free port, a private token file).
palisade_config() {
  local file="$1" admin_port="$2" policy="$3"
  cat >"$file" <<EOF
[admin]
addr = "127.0.0.1:$admin_port"
token_file = "$RUN_DIR/admin.token"

$policy
EOF
}

POLICY_OPEN='[[rate_limit.policy]]
name = "api"
key = "client_ip"
rate = 10000000
burst = 1000000
store = "shm"'
# One request per hour per client IP: after the first, every request is a 429.
POLICY_LIMITED='[[rate_limit.policy]]
name = "api"
key = "client_ip"
rate = 1
per = "1h"
burst = 1
store = "shm"'
# Keyed by a header, sized to the default bound: the HTTP key flood.
POLICY_FLOOD='[[rate_limit.policy]]
name = "api"
key = { header = "x-api-key" }
rate = 10000000
burst = 1000000
store = "local"
max_keys = 100000'

python3 -c 'import secrets; print(secrets.token_hex(32))' >"$RUN_DIR/admin.token"
chmod 600 "$RUN_DIR/admin.token"

start_target() {
  local t="$1" port admin
  port="$(free_port)"
  PORT[$t]="$port"
  case "$t" in
    bare) start "$t" "$BIN/bench-bare" "127.0.0.1:$port" ;;
    offshelf) start "$t" "$BIN/bench-offshelf" "127.0.0.1:$port" ;;
    offshelf-429) start "$t" env OFFSHELF_LIMITED=1 "$BIN/bench-offshelf" "127.0.0.1:$port" ;;
    # Palisade's layers (drain, observe, body limit, rate limit) on axum::serve, no log subscriber:
    # the difference to `palisade` is the server's log subscriber and connection handling.
    layers) start "$t" "$BIN/bench-layers" "127.0.0.1:$port" ;;
    palisade | palisade-w2 | palisade-429 | palisade-flood)
      admin="$(free_port)"
      local policy="$POLICY_OPEN" mode=(--single-process)
      [[ "$t" == palisade-429 ]] && policy="$POLICY_LIMITED"
      [[ "$t" == palisade-flood ]] && policy="$POLICY_FLOOD"
      [[ "$t" == palisade-w2 ]] && mode=(--workers 2)
      palisade_config "$RUN_DIR/$t.toml" "$admin" "$policy"
      PORT[$t-admin]="$admin"
      start "$t" "$PALISADE" --config "$RUN_DIR/$t.toml" "${mode[@]}" --bind "127.0.0.1:$port"
      ;;
    aiohttp)
      start "$t" "$VENV/bin/gunicorn" --chdir bench/python aiohttp_app:app \
        -k aiohttp.GunicornWebWorker -w 2 -b "127.0.0.1:$port" --log-level warning
      ;;
    fastapi)
      start "$t" "$VENV/bin/uvicorn" --app-dir bench/python fastapi_app:app --workers 2 \
        --host 127.0.0.1 --port "$port" --no-access-log --log-level warning
      ;;
    *) die "unknown target $t" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Measurements

# The pids of a process and all its descendants.
tree_pids() {
  local p="$1" c
  echo "$p"
  for c in $(pgrep -P "$p" 2>/dev/null || true); do
    tree_pids "$c"
  done
}

# "rss_kb pss_kb cpu_ticks nprocs max_process_rss_kb" summed over the tree of pid $1.
tree_stats() {
  local rss=0 pss=0 cpu=0 n=0 max=0 p v
  for p in $(tree_pids "$1"); do
    [[ -r /proc/$p/status ]] || continue
    v="$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || true)"
    rss=$((rss + ${v:-0}))
    ((${v:-0} > max)) && max=${v:-0}
    v="$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)"
    pss=$((pss + ${v:-0}))
    # utime + stime (fields 14 and 15; the command name in field 2 has no spaces here).
    v="$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true)"
    cpu=$((cpu + ${v:-0}))
    n=$((n + 1))
  done
  echo "$rss $pss $cpu $n $max"
}

TICKS="$(getconf CLK_TCK)"

admin_snapshot() { # admin_snapshot TARGET: the admin snapshot JSON of a Palisade target
  curl -s -m 5 -H "Authorization: Bearer $(cat "$RUN_DIR/admin.token")" \
    "http://127.0.0.1:${PORT[$1-admin]}/admin/v1/snapshot"
}

# measure TARGET PATH ROUND LABEL [LUA]: one wrk run; appends a JSON record to $RUNS.
measure() {
  local t="$1" path="$2" round="$3" label="$4" lua="${5:-bench/wrk/report.lua}"
  local port="${PORT[$t]}" pid="${PID[$t]}" load before after peak_rss=0 peak_pss=0 out line
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  read -r _ _ before _ _ <<<"$(tree_stats "$pid")"
  local snap_before="$RUN_DIR/snap-$label-before.json"
  [[ -n "${PORT[$t-admin]:-}" ]] && admin_snapshot "$t" >"$snap_before"
  out="$RUN_DIR/wrk-$label.txt"
  "${LOAD_WRAP[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s -s "$lua" \
    "http://127.0.0.1:$port$path" >"$out" 2>&1 &
  local wrk_pid=$!
  sleep 1
  while kill -0 "$wrk_pid" 2>/dev/null; do
    read -r rss pss _ _ _ <<<"$(tree_stats "$pid")"
    ((rss > peak_rss)) && peak_rss=$rss
    ((pss > peak_pss)) && peak_pss=$pss
    sleep 1
  done
  wait "$wrk_pid" || die "wrk failed against $t$path: $(tail -3 "$out")"
  read -r _ _ after _ _ <<<"$(tree_stats "$pid")"
  line="$(grep '^{"requests"' "$out" || true)"
  [[ -n "$line" ]] || die "no wrk summary for $t$path (see $out)"
  if [[ "$t" == palisade-w2 ]]; then
    # Each worker's share of the requests, from the supervisor's counters (heartbeats lag).
    sleep 1
    admin_snapshot "$t" | python3 -c '
import json, sys
before = {w["pid"]: w["requests"] for w in json.load(open(sys.argv[1]))["workers"]}
after = {w["pid"]: w["requests"] for w in json.load(sys.stdin)["workers"]}
served = {p: n - before.get(p, 0) for p, n in after.items()}
total = sum(served.values()) or 1
print("  worker shares: " + ", ".join(f"{p}: {100 * n / total:.1f} %" for p, n in sorted(served.items())))
' "$snap_before" >&2 || log "no worker shares for $t"
  fi
  printf '{"target":"%s","path":"%s","round":%s,"loadavg":"%s","cpu_s":%s,"peak_rss_kb":%s,"peak_pss_kb":%s,"wrk":%s}\n' \
    "$t" "$path" "$round" "$load" "$(awk -v d=$((after - before)) -v t="$TICKS" 'BEGIN{printf "%.2f", d/t}')" \
    "$peak_rss" "$peak_pss" "$line" >>"$RUNS"
  python3 - "$line" "$t" "$path" "$round" "$load" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1])
rps = r["requests"] / (r["duration_us"] / 1e6)
errs = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
print(f"  round {sys.argv[4]} {sys.argv[2]:<14} {sys.argv[3]:<17} {rps:>10.0f} rps  "
      f"p50 {r['p50_us']/1000:6.2f} ms  p99 {r['p99_us']/1000:7.2f} ms  errors {errs}  "
      f"non-2xx {r['non2xx']}  (load {sys.argv[5]})")
PY
}

memory_record() { # memory_record TARGET PHASE
  local rss pss cpu n max
  read -r rss pss cpu n max <<<"$(tree_stats "${PID[$1]}")"
  printf '{"target":"%s","phase":"%s","rss_kb":%s,"pss_kb":%s,"processes":%s,"max_process_rss_kb":%s}\n' \
    "$1" "$2" "$rss" "$pss" "$n" "$max" >>"$MEM"
}

# ---------------------------------------------------------------------------------------------
# Run

read -r -a TARGET_LIST <<<"$TARGETS"
read -r -a PATH_LIST <<<"$PATHS"

# ---------------------------------------------------------------------------------------------
# Instructions per request (CALLGRIND=1)

# keep_alive PORT PATH N: N sequential GETs of PATH on one keep-alive connection; fails on any
# status but 200.
keep_alive() {
  python3 - "$@" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    conn.request("GET", path)
    res = conn.getresponse()
    res.read()
    if res.status != 200:
        sys.exit(f"{path}: status {res.status}")
PY
}

if [[ "$CALLGRIND" == 1 ]]; then
  CG="$RUN_DIR/callgrind.jsonl"
  : >"$CG"
  for t in "${TARGET_LIST[@]}"; do
    [[ "$t" == palisade-w2 || "$t" == aiohttp || "$t" == fastapi ]] && continue
    for p in "${PATH_LIST[@]}"; do
      label="$t$(tr '/' '_' <<<"$p")"
      SERVER_WRAP=(valgrind --tool=callgrind --instr-atstart=no
        "--callgrind-out-file=$RUN_DIR/callgrind-$label.out")
      start_target "$t"
      wait_ready "$t" "${PORT[$t]}"
      keep_alive "${PORT[$t]}" "$p" 500
      callgrind_control -i on "${PID[$t]}" >/dev/null
      keep_alive "${PORT[$t]}" "$p" "$CALLGRIND_REQUESTS"
      callgrind_control -d "$label" "${PID[$t]}" >/dev/null
      callgrind_control -i off "${PID[$t]}" >/dev/null
      dump="$(ls -t "$RUN_DIR/callgrind-$label.out"* | grep -v '\.out$' | head -1 || true)"
      [[ -n "$dump" ]] || dump="$RUN_DIR/callgrind-$label.out"
      ir="$(awk '/^(summary|totals):/{print $2; exit}' "$dump")"
      # Time-driven work that runs inline on a request: the live statistics' once-a-second
      # flush. Under callgrind the requests take ~50x longer, so it would be counted ~50x too
      # often per request; it is reported apart and left out of the per-request count.
      timed="$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
        awk '/StatsRecorder::flush \[/ && !n++ {gsub(",", "", $1); print $1}')"
      printf '{"target":"%s","path":"%s","requests":%s,"instructions":%s,"once_a_second":%s}\n' \
        "$t" "$p" "$CALLGRIND_REQUESTS" "${ir:-0}" "${timed:-0}" >>"$CG"
      log "callgrind $t $p: $(((${ir:-0} - ${timed:-0}) / CALLGRIND_REQUESTS)) instructions/request"
      kill -TERM -- "-${PID[$t]}" 2>/dev/null || true
      wait "${PID[$t]}" 2>/dev/null || true
      unset "PID[$t]"
    done
  done
  python3 - "$CG" <<'PY' | tee "$OUT/$STAMP-callgrind.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
per = {(r["target"], r["path"]): (r["instructions"] - r["once_a_second"]) / r["requests"] for r in rows}
print("| target | path | instructions/request | vs bare | once-a-second flush (excluded) |")
print("|---|---|---:|---:|---:|")
for r in rows:
    t, p = r["target"], r["path"]
    bare = per.get(("bare", p))
    ratio = f"{per[(t, p)] / bare:.2f}x" if bare else "-"
    print(f"| {t} | `{p}` | {per[(t, p)]:,.0f} | {ratio} | {r['once_a_second']:,} |")
PY
  log "wrote $OUT/$STAMP-callgrind.md and $CG"
  exit 0
fi
LIMITED_LIST=()
[[ "$LIMITED" == 1 ]] && LIMITED_LIST=(offshelf-429 palisade-429)

log "starting ${TARGET_LIST[*]} ${LIMITED_LIST[*]}"
for t in "${TARGET_LIST[@]}" "${LIMITED_LIST[@]}"; do
  start_target "$t"
done
for t in "${TARGET_LIST[@]}" "${LIMITED_LIST[@]}"; do
  wait_ready "$t" "${PORT[$t]}"
done
sleep 2
for t in "${TARGET_LIST[@]}"; do
  memory_record "$t" idle
done

# Every (target, path) pair of a round; each round starts at a different pair, so every target
# is measured early and late, next to different neighbours.
PAIRS=()
for p in "${PATH_LIST[@]}"; do
  for t in "${TARGET_LIST[@]}"; do
    PAIRS+=("$t $p")
  done
done
for t in "${LIMITED_LIST[@]}"; do
  PAIRS+=("$t /plaintext")
done

log "warm-up: ${WARMUP} s per pair"
for pair in "${PAIRS[@]}"; do
  read -r t p <<<"$pair"
  "${LOAD_WRAP[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:${PORT[$t]}$p" >/dev/null 2>&1 ||
    die "warm-up failed for $t$p"
done
for t in "${TARGET_LIST[@]}"; do
  memory_record "$t" warm
done

n=${#PAIRS[@]}
log "$ROUNDS rounds x $n pairs x ${DURATION} s (about $((ROUNDS * n * (DURATION + 1) / 60)) min)"
for ((r = 1; r <= ROUNDS; r++)); do
  offset=$(((r - 1) * n / ROUNDS))
  for ((i = 0; i < n; i++)); do
    read -r t p <<<"${PAIRS[$(((i + offset) % n))]}"
    measure "$t" "$p" "$r" "r$r-$t-$(tr '/' '_' <<<"$p")"
  done
done

for t in "${TARGET_LIST[@]}"; do
  memory_record "$t" after
done

# Rate-limit state under a key flood.
if [[ "$FLOOD" == 1 ]]; then
  log "key flood in process: $FLOOD_KEYS new client IPs through each limiter"
  for impl in palisade governor; do
    "$BIN/bench-flood" "$impl" "$FLOOD_KEYS" >>"$FLOODS"
  done
  log "key flood over HTTP: a new x-api-key on every request for ${FLOOD_SECS} s"
  start_target palisade-flood
  wait_ready palisade-flood "${PORT[palisade-flood]}"
  sleep 1
  memory_record palisade-flood before-flood
  DURATION="$FLOOD_SECS" measure palisade-flood /plaintext 0 flood bench/wrk/flood.lua
  memory_record palisade-flood after-flood
  curl -s -H "Authorization: Bearer $(cat "$RUN_DIR/admin.token")" \
    "http://127.0.0.1:${PORT[palisade-flood-admin]}/admin/v1/limits/api" \
    >"$RUN_DIR/flood-admin.json" || true
  python3 - "$RUN_DIR/flood-admin.json" "$(tail -1 "$RUNS")" >>"$FLOODS" <<'PY'
import json, sys
try:
    snap = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    snap = {}
run = json.loads(sys.argv[2])
def find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = find(v, key)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = find(v, key)
            if found is not None:
                return found
    return None
print(json.dumps({
    "impl": "palisade-server-http",
    "keys_sent": run["wrk"]["requests"],
    "keys_tracked": find(snap, "keys"),
    "capacity": find(snap, "capacity"),
    "non2xx": run["wrk"]["non2xx"],
}))
PY
fi

if [[ "$PROFILE" == 1 ]]; then
  if command -v perf >/dev/null; then
    for t in bare layers palisade; do
      wants "$t" || continue
      log "perf: $t, /plaintext, ${DURATION} s"
      perf record -F 1999 -o "$RUN_DIR/perf-$t.data" -p "${PID[$t]}" -- sleep "$DURATION" \
        >/dev/null 2>&1 &
      perf_pid=$!
      sleep 0.2
      wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        "http://127.0.0.1:${PORT[$t]}/plaintext" >"$RUN_DIR/perf-$t.wrk" 2>&1
      wait "$perf_pid" || true
      python3 bench/perf_summary.py "$RUN_DIR/perf-$t.data" \
        "$(awk '/requests in/{print $1}' "$RUN_DIR/perf-$t.wrk")" >"$RUN_DIR/perf-$t.txt" ||
        log "perf summary failed for $t"
    done
    log "perf summaries: $RUN_DIR/perf-*.txt"
  else
    log "perf not found; skipping the profile"
  fi
fi

if [[ "$MICRO" == 1 ]]; then
  # Stop the servers first: the micro-benchmarks want the CPUs.
  cleanup
  PID=()
  log "micro-benchmarks: cargo bench -p palisade (all layers)"
  cargo bench -q -p palisade -- --warm-up-time 1 --measurement-time 3 >"$RUN_DIR/micro.txt" 2>&1 ||
    log "cargo bench failed; see $RUN_DIR/micro.txt"
fi

# ---------------------------------------------------------------------------------------------
# Report

META="$RUN_DIR/meta.json"
python3 - "$META" <<PY
import json, os, platform, subprocess, sys
cpu = "unknown"
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
mem_kb = 0
with open("/proc/meminfo") as f:
    for line in f:
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""
json.dump({
    "stamp": "$STAMP",
    "nproc": os.cpu_count(),
    "cpu": cpu,
    "mem_gib": round(mem_kb / 1048576, 1),
    "kernel": platform.release(),
    "rustc": out("rustc", "--version"),
    "wrk": out("wrk", "--version").splitlines()[0] if out("wrk", "--version") else "",
    "python": out("$VENV/bin/python", "--version") if os.path.exists("$VENV/bin/python") else "",
    "git": out("git", "rev-parse", "--short", "HEAD") + (" (dirty)" if out("git", "status", "--porcelain") else ""),
    "duration_s": $DURATION, "rounds": $ROUNDS, "warmup_s": $WARMUP,
    "connections": $CONNECTIONS, "threads": $THREADS,
    "loadavg_end": open("/proc/loadavg").read().split()[:3],
}, open(sys.argv[1], "w"), indent=1)
PY

python3 bench/report.py "$RUN_DIR" "$OUT/$STAMP"
log "wrote $OUT/$STAMP.md, $OUT/$STAMP.json, $OUT/$STAMP.png"
cat "$OUT/$STAMP.md"
