#!/usr/bin/env bash
# make bench: gatehouse against nginx and HAProxy, side by side in one run, on 127.0.0.1 only.
# Writes bench/RESULTS.md (figures are ratios to peers measured in the same run).
#   BENCH_THREADS   worker threads for gatehouse and every peer (default 1)
#   BENCH_DURATION  seconds per wrk round (default 5); BENCH_ROUNDS (default 3)
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS="$ROOT/../shared/bench-peers"
[ -x "$PEERS/peers.sh" ] || { echo "bench: $PEERS/peers.sh not found (shared/ sits beside the repo)"; exit 2; }
GH="$ROOT/$BUILD/src/gatehouse"
THREADS=${BENCH_THREADS:-1}
DURATION=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
export NGINX_WORKERS=$THREADS HAPROXY_THREADS=$THREADS
D=$(mktemp -d /tmp/gatehouse-bench-XXXXXX)
# PostgreSQL refuses to run as root; its directory belongs to the postgres user then.
PGD=$(mktemp -d /tmp/gatehouse-bench-pg-XXXXXX)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
AS_PG=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$PGD"
  AS_PG=(/usr/sbin/runuser -u postgres --)
fi
cleanup() {
  for pid in "${GH_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  "$PEERS/peers.sh" stop "$D" || true
  [ -d "$PGD/data" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$D" "$PGD"
}
GH_PIDS=()
trap cleanup EXIT

# Serves config file $1 (logging beside it) and waits until it listens.
serve() {
  local log=${1%.toml}.log
  "$GH" serve --config "$1" >"$log" 2>&1 &
  GH_PIDS+=($!)
  for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.05; done
  grep -q listening "$log" || { cat "$log"; exit 1; }
}
# Writes $1 with port $2 changed to $3 and the TOML $5 appended to file $4, and serves that.
serve_variant() {
  sed -e "s|127.0.0.1:$2|127.0.0.1:$3|" "$1" >"$4"
  printf '%b' "$5" >>"$4"
  serve "$4"
}

# Creates 1000 keys through the API of the gatehouse on port $1 (init JSON in $2) into file $3.
create_keys() {
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import json, sys, time, urllib.error, urllib.request
port, info, path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
with open(path, "w") as out:
    for i in range(1000):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/orgs/{info['org_id']}/keys",
            data=json.dumps({"label": f"bench {i}", "scopes": ["read:findings"]}).encode(),
            headers={"Authorization": "Bearer " + info["api_key"]}, method="POST")
        while True:  # past the control plane's rate limit, wait as the 429 says
            try:
                out.write(json.load(urllib.request.urlopen(req))["key"] + "\n")
                break
            except urllib.error.HTTPError as e:
                if e.code != 429:
                    raise
                time.sleep(int(e.headers.get("Retry-After", "1")))
PY
}

echo "bench: starting peers"
"$PEERS/peers.sh" start upstream 18001 "$D"

cat >"$D/gatehouse.toml" <<TOML
threads = $THREADS
data_dir = "$D/data"
scopes = ["read:findings"]
[[listeners]]
address = "127.0.0.1:18010"
[log]
access_log = false
level = "warn"
[[routes]]
name = "echo"
path_prefix = "/api/echo"
upstream = "http://127.0.0.1:18001"
scopes = ["read:findings"]
TOML
INIT=$("$GH" init --data-dir "$D/data" --json 2>/dev/null)
serve "$D/gatehouse.toml"

echo "bench: creating 1000 keys through the API"
create_keys 18010 "$INIT" "$D/keys.txt"

# The same gatehouse and database with the audit log off, for issue 4's "audit on within 10%
# of audit off" (SQLite serves both processes; the keys are the same).
serve_variant "$D/gatehouse.toml" 18010 18012 "$D/gatehouse-noaudit.toml" '[audit]\nenabled = false\n'
# And with [audit] fsync = false: answered once the event is in the audit journal (kill -9 safe).
serve_variant "$D/gatehouse.toml" 18010 18013 "$D/gatehouse-nofsync.toml" '[audit]\nfsync = false\n'

# And with rate limits on (issue 6): every request decided against global, org and key limits
# set high enough never to refuse, against nginx-keyauth's limit_req per key.
# (A policy admits at most one request per microsecond: 1M/s, the most any of them can say.)
serve_variant "$D/gatehouse.toml" 18010 18014 "$D/gatehouse-limits.toml" \
  '[rate_limits]\nglobal = { requests = 1000000000, window = "1000s" }\nper_org = { requests = 1000000000, window = "1000s" }\nper_key = { requests = 1000000, window = "1s" }\n'
# The same limits with the audit log off: like for like with nginx, which records nothing
# (access_log off) and so pays for no durable record per request.
serve_variant "$D/gatehouse-limits.toml" 18014 18015 "$D/gatehouse-limits-noaudit.toml" \
  '[audit]\nenabled = false\n'

echo "bench: starting PostgreSQL and a gatehouse on it"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGD/data" -U gatehouse_admin --auth=trust --locale=C >/dev/null
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -l "$PGD/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=18020 -c unix_socket_directories=$PGD" start >/dev/null
PG_OWNER=postgres://gatehouse_admin@127.0.0.1:18020/postgres
PG_APP=postgres://gh_app@127.0.0.1:18020/postgres
"$GH" migrate --storage "$PG_OWNER" --app-role gh_app >/dev/null
sed -e "s|127.0.0.1:18010|127.0.0.1:18011|" -e "s|$D/data|$D/pgdata|" "$D/gatehouse.toml" \
  >"$D/gatehouse-pg.toml"
echo "storage = \"$PG_APP\"" | cat - "$D/gatehouse-pg.toml" >"$D/gatehouse-pg.toml.new"
mv "$D/gatehouse-pg.toml.new" "$D/gatehouse-pg.toml"
INIT_PG=$("$GH" init --data-dir "$D/pgdata" --storage "$PG_APP" --json 2>/dev/null)
serve "$D/gatehouse-pg.toml"
create_keys 18011 "$INIT_PG" "$D/keys-pg.txt"

"$PEERS/peers.sh" start nginx-static 18002 "$D"
"$PEERS/peers.sh" start nginx-proxy 18003 "$D" 18001
"$PEERS/peers.sh" start nginx-keyauth 18004 "$D" 18001 "$D/keys.txt"
"$PEERS/peers.sh" start nginx-authreq 18005 "$D" 18001 "$D/keys.txt"
"$PEERS/peers.sh" start haproxy-keyauth 18006 "$D" 18001 "$D/keys.txt"

compare() {  # connections, then compare.py arguments
  local c=$1
  shift
  "$PEERS/compare.py" --rounds "$ROUNDS" --duration "$DURATION" --connections "$c" --keys "$D/keys.txt" "$@"
}

OUT="$D/results.txt"
{
  for c in 64 256; do
    echo "### Forward-auth, wrk -t1 -c$c -d${DURATION}s, median of $ROUNDS rounds, 1000 rotating keys"
    echo '```'
    # The original URI rides in the path, Envoy style: the key-rotating wrk script replaces
    # extra -H headers, so X-Original-URI would never arrive.
    # -audit-off: the spine alone (issue 2), like for like with nginx, which records nothing.
    compare "$c" \
      nginx-static=http://127.0.0.1:18002/ \
      gatehouse-authz=http://127.0.0.1:18010/v1/authz/check/api/echo \
      gatehouse-authz-audit-off=http://127.0.0.1:18012/v1/authz/check/api/echo
    echo '```'
    echo
    echo "### Proxy path (key auth + proxy to the same upstream), wrk -t1 -c$c"
    echo '```'
    compare "$c" \
      nginx-keyauth=http://127.0.0.1:18004/api/echo \
      haproxy-keyauth=http://127.0.0.1:18006/api/echo \
      nginx-authreq=http://127.0.0.1:18005/api/echo \
      nginx-proxy=http://127.0.0.1:18003/api/echo \
      gatehouse=http://127.0.0.1:18010/api/echo \
      gatehouse-audit-off=http://127.0.0.1:18012/api/echo
    echo '```'
    echo
    echo "### Proxy path with rate limits (global + org + key) vs nginx limit_req per key, wrk -t1 -c$c"
    echo '```'
    compare "$c" \
      nginx-keyauth=http://127.0.0.1:18004/api/echo \
      gatehouse-limits=http://127.0.0.1:18014/api/echo \
      gatehouse-limits-audit-off=http://127.0.0.1:18015/api/echo \
      gatehouse=http://127.0.0.1:18010/api/echo
    echo '```'
    echo
    echo "### Proxy path, audit log on vs off, wrk -t1 -c$c"
    echo "audit-on (the default, fsync = true): answered once the event's batch is committed with an"
    echo "fsync. audit-on-nofsync: answered once the event is in the audit journal (kill -9 safe);"
    echo "the store takes it in the background."
    echo '```'
    compare "$c" \
      gatehouse-audit-off=http://127.0.0.1:18012/api/echo \
      gatehouse-audit-on=http://127.0.0.1:18010/api/echo \
      gatehouse-audit-on-nofsync=http://127.0.0.1:18013/api/echo
    echo '```'
    echo
  done
  echo "### Audit writer throughput while wrk drives the proxy (SQLite file, synchronous=FULL)"
  echo "bench_audit pushes events from 4 threads through the group-committing writer until each"
  echo "is durable; meanwhile wrk -c64 runs the proxy path with the audit log on. Target: >= 50k"
  echo "events/s. journal:0 is the server's fsync = true path: each event acknowledged by its"
  echo "batch's commit with an fsync (issue 4's figure). journal:1 is the fsync = false path:"
  echo "acknowledged once in the journal, counted once the store has it too. The proxy figure"
  echo "below is the same run's wrk result."
  echo '```'
  "$PEERS/compare.py" --rounds 1 --duration $((DURATION * 2)) --connections 64 --keys "$D/keys.txt" \
    gatehouse-audit-on=http://127.0.0.1:18010/api/echo >"$D/under-load.txt" 2>&1 &
  LOAD_PID=$!
  sleep 1
  "$ROOT/$BUILD/bench/bench_audit" --benchmark_filter=BM_AuditWriterDurable \
    --benchmark_min_time=$((DURATION / 2 > 1 ? DURATION / 2 : 1)) 2>/dev/null | grep -E '^BM_'
  wait "$LOAD_PID" || true
  cat "$D/under-load.txt"
  echo '```'
  echo
  echo "### Audit writer CPU per event when each request waits for its event (bench_audit)"
  echo "N requests in flight, each submitting its next event once the last is durable, as"
  echo "wrk -cN does to the proxy: batches never exceed N. cpu_us_per_event is the whole"
  echo "process's CPU time per event, which is what the audit log takes from a busy machine."
  echo "It has no peer: it is the writer's own cost, to compare between builds; the peer"
  echo "comparison for issue 4 is the audit-on over audit-off proxy table above."
  echo '```'
  "$ROOT/$BUILD/bench/bench_audit" --benchmark_filter=BM_AuditWriterClosedLoop 2>/dev/null |
    grep -E '^(Benchmark|BM_)'
  echo '```'
  echo
  echo "### On PostgreSQL: gatehouse backed by a local PostgreSQL, wrk -t1 -c64, 1000 rotating keys"
  echo "Peers that check no keys, since these keys exist only in this gatehouse's database."
  echo '```'
  "$PEERS/compare.py" --rounds "$ROUNDS" --duration "$DURATION" --connections 64 --keys "$D/keys-pg.txt" \
    nginx-static=http://127.0.0.1:18002/ \
    gatehouse-pg-authz=http://127.0.0.1:18011/v1/authz/check/api/echo
  "$PEERS/compare.py" --rounds "$ROUNDS" --duration "$DURATION" --connections 64 --keys "$D/keys-pg.txt" \
    nginx-proxy=http://127.0.0.1:18003/api/echo \
    gatehouse-pg=http://127.0.0.1:18011/api/echo
  echo '```'
  echo
  echo "### In-process verification (Google Benchmark, $BUILD/bench/bench_verify)"
  echo "The /postgres rows use a PgStore on the same local PostgreSQL; a cache hit never touches it."
  echo '```'
  GATEHOUSE_BENCH_POSTGRES="$PG_APP" "$ROOT/$BUILD/bench/bench_verify" --benchmark_min_time=1 2>/dev/null
  echo '```'
  echo
  echo "### Rate limiter alone (Google Benchmark, $BUILD/bench/bench_limiter, one core)"
  echo "Target (issue 6): >= 10M decisions/s; memory with 1M distinct live subjects."
  echo '```'
  "$ROOT/$BUILD/bench/bench_limiter" --benchmark_min_time=1 2>/dev/null
  echo '```'
  echo
  echo "### JSON Schema validation of request bodies (Google Benchmark, $BUILD/bench/bench_schema)"
  echo "Peer in the same run: parsing the same chat-completions body alone (BM_ParseOnly). The"
  echo "argument is the number of messages (about 200 bytes each)."
  echo '```'
  "$ROOT/$BUILD/bench/bench_schema" --benchmark_min_time=1 2>/dev/null
  echo '```'
} | tee "$OUT"

{
  echo "# Benchmark results"
  echo
  echo "Produced by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d), $(nproc) cores,"
  echo "$(uname -m), threads per server: $THREADS. Numbers from different runs are not"
  echo "comparable; the ratios within one table are. The 'ratio' column is each target's median"
  echo "requests/s over the first target's."
  echo
  echo "Targets (issue 2): forward-auth >= 0.9x nginx-static; proxy path >= 1.1x nginx-keyauth and"
  echo "haproxy-keyauth with p99 no worse; in-process cache-hit verification >= 1M/s on one core."
  echo "The -audit-off rows are the spine alone, as issue 2 asked before the audit log existed,"
  echo "like for like with nginx, which records nothing per request."
  echo "Issue 3: cache-hit verification on PostgreSQL as fast as on SQLite."
  echo "Issue 4: audit writer >= 50k events/s on SQLite (fsync on) while the proxy benchmark runs;"
  echo "the proxy path with the audit log on within 10% of audit off."
  echo "Issue 6: the proxy path with rate limits >= 1.0x nginx-keyauth (map + limit_req per key);"
  echo "gatehouse-limits-audit-off is the like-for-like row (nginx records nothing per request)."
  echo
  cat "$OUT"
} >"$ROOT/bench/RESULTS.md"
echo "bench: wrote bench/RESULTS.md"
