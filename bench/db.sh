#!/usr/bin/env bash
# Database-backed benchmark: the user lookup `GET /api/v1/users/{id}` (ids uniform over USERS
# users, a new id per request) through each stack's read path to a private PostgreSQL, in one
# run on this machine, rounds alternating the order of the targets.
#
#   palisade   the reference server, --workers 2: L1 (moka, per worker) → L2 (Redis) →
#              PostgreSQL (sqlx pool), with single flight, the `db` breaker and every default
#              layer on (rate limit raised so it never rejects)
#   aiohttp    aiohttp + gunicorn, 2 workers: L1 (LRU + TTL) → L2 (redis-py) → PostgreSQL
#              (asyncpg pool) with single flight — seed 001's path (bench/python/userstore.py)
#   fastapi    FastAPI + uvicorn[standard], 2 workers, the same read path
#   bare-db    axum + sqlx, no middleware and no cache: one query per request (the floor)
#
# Cache lifetimes are the same everywhere (Palisade's defaults: L1 5 s, L2 30 s) and so are the pools (8 connections
# per worker process). PostgreSQL and Redis are private (temporary directory, free ports) and
# stopped when the script exits.
#
#   bench/db.sh                          # 3 rounds x 10 s per target
#   DURATION=5 ROUNDS=2 bench/db.sh      # quick mode
#
# Environment (all optional): DURATION=10 ROUNDS=3 WARMUP=5 CONNECTIONS=64 THREADS=2
# USERS=10000 TARGETS="palisade aiohttp fastapi bare-db" SKIP_BUILD=1 OUT=bench/results
# PALISADE=path (the palisade binary under test).
#
# Writes $OUT/db-<timestamp>.md (table + ratios) and the raw runs in $OUT/db-<timestamp>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-5}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
USERS="${USERS:-10000}"
TARGETS="${TARGETS:-palisade aiohttp fastapi bare-db}"
SKIP_BUILD="${SKIP_BUILD:-0}"
OUT="${OUT:-bench/results}"
BIN="target/release"
PALISADE="${PALISADE:-$BIN/palisade}"
VENV="bench/.venv"
export USERS

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_DIR="$(realpath -m "$OUT/db-$STAMP")"
mkdir -p "$RUN_DIR/logs"
RUNS="$RUN_DIR/runs.jsonl"
: >"$RUNS"

log() { printf '[db-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
wants() { [[ " $TARGETS " == *" $1 "* ]]; }

command -v wrk >/dev/null || die "wrk is required (apt-get install wrk)"
command -v psql >/dev/null || die "psql is required (apt-get install postgresql-client)"
command -v redis-server >/dev/null || die "redis-server is required"
PG_BIN="${PG_BIN:-$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")}"
[[ -x "$PG_BIN/initdb" ]] || die "initdb not found (apt-get install postgresql, or PG_BIN=dir)"

if [[ "$SKIP_BUILD" != 1 ]]; then
  log "building release binaries"
  cargo build --release -q -p palisade-server --bin palisade
  cargo build --release -q --manifest-path bench/apps/Cargo.toml --target-dir target
fi
[[ -x "$PALISADE" ]] || die "$PALISADE is missing (run without SKIP_BUILD=1)"
if wants bare-db; then [[ -x "$BIN/bench-bare-db" ]] || die "$BIN/bench-bare-db is missing"; fi
if wants aiohttp || wants fastapi; then
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r bench/python/requirements.txt
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------
# Private PostgreSQL and Redis, and the processes under test (each the leader of its own
# process group, stopped with the group on exit).

declare -A PID=() PORT=()
PG_DIR="$RUN_DIR/pg"
PG_PORT="$(free_port)"
REDIS_PORT="$(free_port)"
as_pg=()
[[ $(id -u) -eq 0 ]] && as_pg=(runuser -u postgres --)

cleanup() {
  local t
  for t in "${!PID[@]}"; do kill -TERM -- "-${PID[$t]}" 2>/dev/null || true; done
  for t in "${!PID[@]}"; do
    for _ in $(seq 50); do kill -0 "${PID[$t]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-${PID[$t]}" 2>/dev/null || true
  done
  if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
    "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # start NAME CMD...: in a new session, logging to $RUN_DIR/logs/NAME.log
  local name="$1"
  shift
  setsid "$@" >"$RUN_DIR/logs/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
}

wait_http() { # wait_http NAME URL: until URL answers 200 (30 s)
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    [[ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$2" || true)" == 200 ]] && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || { tail -20 "$RUN_DIR/logs/$1.log" >&2; die "$1 exited"; }
    sleep 0.1
  done
  tail -20 "$RUN_DIR/logs/$1.log" >&2
  die "$1 not ready after 30 s"
}

log "PostgreSQL on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT"
mkdir -p "$PG_DIR"
[[ $(id -u) -eq 0 ]] && chown postgres "$PG_DIR"
"${as_pg[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >"$RUN_DIR/logs/initdb.log" 2>&1
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" -w -o \
  "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
for _ in $(seq 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# Palisade: every layer on with the defaults; the rate-limit policy raised so it never rejects.
cat >"$RUN_DIR/palisade.toml" <<EOF
[database]
url = "$DB_URL"

[cache]
redis_url = "$REDIS_URL"

[[rate_limit.policy]]
name = "api"
key = "client_ip"
rate = 10000000
burst = 1000000
store = "shm"
EOF

start_target() {
  local t="$1" port
  port="$(free_port)"
  PORT[$t]="$port"
  case "$t" in
    palisade)
      PORT[palisade-admin]="$(free_port)"
      start "$t" "$PALISADE" --config "$RUN_DIR/palisade.toml" --workers 2 \
        --bind "127.0.0.1:$port" --admin-addr "127.0.0.1:${PORT[palisade-admin]}" \
        --admin-token-file "$RUN_DIR/admin.token"
      ;;
    aiohttp)
      start "$t" env DATABASE_URL="$DB_URL" REDIS_URL="$REDIS_URL" \
        "$VENV/bin/gunicorn" --chdir bench/python aiohttp_db_app:app \
        -k aiohttp.GunicornWebWorker -w 2 -b "127.0.0.1:$port" --log-level warning
      ;;
    fastapi)
      start "$t" env DATABASE_URL="$DB_URL" REDIS_URL="$REDIS_URL" \
        "$VENV/bin/uvicorn" --app-dir bench/python fastapi_db_app:app --workers 2 \
        --host 127.0.0.1 --port "$port" --no-access-log --log-level warning
      ;;
    bare-db)
      start "$t" env DATABASE_URL="$DB_URL" "$BIN/bench-bare-db" "127.0.0.1:$port"
      ;;
    *) die "unknown target $t" ;;
  esac
  wait_http "$t" "http://127.0.0.1:$port/plaintext"
}

# Palisade first: its supervisor applies the schema migrations; then USERS more users.
wants palisade || die "TARGETS must include palisade (it creates the schema)"
start_target palisade
for _ in $(seq 100); do
  psql -qtA "$DB_URL" -c "SELECT 1 FROM users LIMIT 1" >/dev/null 2>&1 && break
  sleep 0.1
done
psql -qtA "$DB_URL" -v ON_ERROR_STOP=1 >/dev/null <<SQL
DELETE FROM users;
INSERT INTO users (id, name, email, email_key)
  SELECT g, 'User ' || g, 'user' || g || '@example.com', 'user' || g || '@example.com'
  FROM generate_series(1, $USERS) g;
SQL
redis-cli -p "$REDIS_PORT" flushall >/dev/null
log "$USERS users in PostgreSQL"

for t in $TARGETS; do
  [[ "$t" == palisade ]] || start_target "$t"
done

# Every target answers the same user the same way.
want="$(psql -qtA "$DB_URL" -c "SELECT json_build_object('id', id, 'name', name, 'email', email) FROM users WHERE id = 4242")"
for t in $TARGETS; do
  got="$(curl -s "http://127.0.0.1:${PORT[$t]}/api/v1/users/4242")"
  python3 -c 'import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); sys.exit(0 if {k:a[k] for k in ("id","name","email")}=={k:b[k] for k in ("id","name","email")} else 1)' \
    "$want" "$got" || die "$t answered $got for user 4242 (want $want)"
done

# ---------------------------------------------------------------------------------------------
# Rounds

run_wrk() { # run_wrk TARGET SECONDS LABEL
  local out="$RUN_DIR/wrk-$3.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2s" --timeout 5s -s bench/wrk/users_random.lua \
    "http://127.0.0.1:${PORT[$1]}" >"$out" 2>&1 || die "wrk failed against $1: $(tail -3 "$out")"
  grep '^{"requests"' "$out" || die "no wrk summary for $1 (see $out)"
}

for t in $TARGETS; do
  log "warm-up $t (${WARMUP}s)"
  run_wrk "$t" "$WARMUP" "warmup-$t" >/dev/null
done
read -r -a order <<<"$TARGETS"
for round in $(seq "$ROUNDS"); do
  for i in "${!order[@]}"; do
    t="${order[$(((i + round - 1) % ${#order[@]}))]}"
    load="$(cut -d' ' -f1 /proc/loadavg)"
    line="$(run_wrk "$t" "$DURATION" "r$round-$t")"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(target=sys.argv[2], round=int(sys.argv[3]), load=float(sys.argv[4])); print(json.dumps(d))' \
      "$line" "$t" "$round" "$load" >>"$RUNS"
    log "round $round $t: $(tail -1 "$RUNS" | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d["err_connect"]+d["err_read"]+d["err_write"]+d["err_timeout"]; print("%.0f rps, p99 %.2f ms, non-2xx %d, errors %d" % (d["requests"]*1e6/d["duration_us"], d["p99_us"]/1000, d["non2xx"], e))')"
  done
done

# Palisade's own view of the run: the users cache (hit ratios) and the database breaker.
for c in caches/users breakers/db; do
  curl -s -m 5 -H "Authorization: Bearer $(cat "$RUN_DIR/admin.token")" \
    "http://127.0.0.1:${PORT[palisade-admin]}/admin/v1/$c" >"$RUN_DIR/palisade-${c//\//-}.json" || true
done

python3 - "$RUNS" "$RUN_DIR" >"$OUT/db-$STAMP.md" <<'PY'
import json, os, platform, statistics, subprocess, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
targets = list(dict.fromkeys(r["target"] for r in runs))
rounds = sorted({r["round"] for r in runs})
rps = lambda r: r["requests"] * 1e6 / r["duration_us"]
by = {(r["target"], r["round"]): r for r in runs}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"# Database-backed user lookup — {os.path.basename(sys.argv[2])}\n")
print(f"Machine: {os.cpu_count()} CPUs ({cpu}), {platform.platform()}; load generator wrk "
      f"-t{os.environ.get('THREADS','2')} -c{os.environ.get('CONNECTIONS','64')}, "
      f"{os.environ.get('DURATION','10')} s per run, {len(rounds)} rounds alternating the order; "
      f"ids uniform over {os.environ.get('USERS','10000')} users.\n")
print("| target | rps (median of rounds) | p50 ms | p99 ms | non-2xx | socket errors | load avg |")
print("|---|---:|---:|---:|---:|---:|---:|")
for t in targets:
    rs = [by[(t, n)] for n in rounds if (t, n) in by]
    errs = sum(r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"] for r in rs)
    print(f"| {t} | {statistics.median(map(rps, rs)):,.0f} | "
          f"{statistics.median(r['p50_us'] for r in rs)/1000:.2f} | "
          f"{statistics.median(r['p99_us'] for r in rs)/1000:.2f} | "
          f"{sum(r['non2xx'] for r in rs)} | {errs} | {statistics.median(r['load'] for r in rs):.1f} |")
if "palisade" in targets:
    print("\nPalisade ÷ other, per round (rps; p99 as other ÷ Palisade, > 1 means Palisade is faster):\n")
    print("| vs | " + " | ".join(f"round {n}" for n in rounds) + " | median rps ratio |")
    print("|---|" + "---:|" * (len(rounds) + 1))
    for t in targets:
        if t == "palisade":
            continue
        ratios = [rps(by[("palisade", n)]) / rps(by[(t, n)]) for n in rounds]
        p99s = [by[(t, n)]["p99_us"] / max(by[("palisade", n)]["p99_us"], 1) for n in rounds]
        cells = [f"{a:.2f}× (p99 {b:.1f}×)" for a, b in zip(ratios, p99s)]
        print(f"| {t} | " + " | ".join(cells) + f" | **{statistics.median(ratios):.2f}×** |")
try:
    stats = json.load(open(os.path.join(sys.argv[2], "palisade-caches-users.json")))["stats"]
    ratio = lambda d: d["hits"] / max(d["hits"] + d["misses"], 1)
    print(f"\nPalisade's users cache over the whole run (admin API, both workers): L1 hit ratio "
          f"{ratio(stats['l1']):.1%} ({stats['l1']['hits']} hits), L2 hit ratio of L1 misses "
          f"{ratio(stats['l2']):.1%}, {stats['l2']['misses']} database loads, "
          f"L2 errors {stats['l2']['errors']}, stale served {stats['stale_served']}.")
except (OSError, KeyError, ValueError, TypeError) as e:
    print(f"\n(users cache statistics unavailable: {e})")
PY
cat "$OUT/db-$STAMP.md"
