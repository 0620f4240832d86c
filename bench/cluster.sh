#!/usr/bin/env bash
# Cluster mode at scale: K=3 uacd nodes (127.0.0.126..128) on one PostgreSQL
# 15 (started here as nobody on 127.0.0.1, fsync on), N connections (all in
# each node's config file) registering to one UDP registrar
# (tools/registrar_src.py on 127.0.0.125:5075, 200 to everything, one log
# line per REGISTER with its source node). Figures:
#   initial   time from the start of the nodes until every connection has
#             registered once, and the share of each node
#   steady    over IDLE_S: PostgreSQL CPU (its whole process tree, % of one
#             core) and transactions/s (pg_stat_database commits+rollbacks;
#             nearly every statement is its own transaction)
#   takeover  kill -9 of node 3: time until every connection whose last
#             REGISTER came from it has registered from another node
#             (lease_sec + pacing at max_register_rate_per_sec)
# Never run it beside the test suite (it uses the whole machine).
#
# Usage: bench/cluster.sh [N=30000]
# Env: LEASE=10 RATE=2000 (max_register_rate_per_sec per node) IDLE_S=10
#      WAIT_S=600 UACD_BIN (default target/release/uacd) FIGS=<file>
set -u
. "$(dirname "$0")/lib.sh"
EXTRA_PACKAGES=(postgresql:/usr/lib/postgresql/15/bin/postgres)
need python3 setpriv

N=${1:-30000}
LEASE=${LEASE:-10}
RATE=${RATE:-2000}
IDLE_S=${IDLE_S:-10}
WAIT_S=${WAIT_S:-600}
PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/postgres" ] || die "PostgreSQL 15 missing (apt-get install postgresql)"
[ -x "$UACD_BIN" ] || die "no $UACD_BIN (cargo build --release)"
STAMP=${STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS_DIR"
FIGS=${FIGS:-$RESULTS_DIR/cluster-N$N-$STAMP.figures.tsv}
BASE=/tmp/uacd-bench/cluster
rm -rf "$BASE"; mkdir -p "$BASE"
trap stop_all EXIT
trap "exit 1" INT TERM

REG_IP=127.0.0.125 REG_PORT=5075 PG_PORT=${PG_PORT:-54391}
NODES=(127.0.0.126 127.0.0.127 127.0.0.128)
for ip in "${NODES[@]}"; do addr_free "$ip" 5060 || die "address $ip:5060 is busy"; done
addr_free "$REG_IP" "$REG_PORT" || die "address $REG_IP:$REG_PORT is busy"
addr_free 127.0.0.1 "$PG_PORT" || die "port $PG_PORT is busy (PG_PORT=...)"

log "PostgreSQL on 127.0.0.1:$PG_PORT"
mkdir -p "$BASE/pg"; chown nobody:nogroup "$BASE/pg"
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
as_nobody "$PGBIN/initdb" -D "$BASE/pg/data" -U uacd --auth=trust -E UTF8 >"$BASE/initdb.log" 2>&1 || die "initdb failed"
# setpriv itself in the background (not a function: $! would be a subshell)
# execs postgres, so that $! is the postmaster.
setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$PGBIN/postgres" -D "$BASE/pg/data" -h 127.0.0.1 -p "$PG_PORT" -k "$BASE/pg" \
  -c max_connections=100 2>"$BASE/pg/postgres.log" &
PG_PID=$!; remember_pid "$PG_PID"
# PostgreSQL's fast shutdown (SIGINT) once the nodes are gone; SIGTERM (what
# stop_all sends) waits for clients.
trap 'stop_all; kill -INT "$PG_PID" 2>/dev/null' EXIT
wait_tcp 127.0.0.1 "$PG_PORT" 30 || die "postgres did not start"
URL="postgres://uacd@127.0.0.1:$PG_PORT/postgres"
psql_q() { "$PGBIN/psql" -X -A -t -d "$URL" -c "$1"; }

python3 "$BENCH_DIR/tools/registrar_src.py" "$REG_IP" "$REG_PORT" "$BASE/registrar.log" 60 2>"$BASE/registrar.err" &
remember_pid $!
wait_udp "$REG_IP" "$REG_PORT" 10 || die "registrar did not start"

log "config: $N connections"
awk -v n="$N" -v reg="$REG_IP:$REG_PORT" 'BEGIN {
  for (i = 1; i <= n; i++) {
    printf "[[connection]]\nid = \"b%d\"\nconnection_name = \"B %d\"\nuser_name = \"uacd-b%d\"\n", i, i, i
    printf "[connection.external_uac_settings]\nproxy = \"sip:%s\"\nusername = \"r%d\"\npassword = \"pw\"\nexpiration_sec = 60\n\n", reg, i
  }
}' >"$BASE/connections.toml"

NODE_PIDS=()
start_node() { # index
  local k=$1 ip=${NODES[$1]} d="$BASE/n$1"
  mkdir -p "$d"
  cat >"$d/uacd.toml" <<TOML
[sip]
listen = ["udp:$ip:5060"]
[api]
listen = "$ip:8080"
[[api.tokens]]
token = "bench-token-0123456789"
user_id = "1"
[store]
url = "$URL"
[cluster]
node_id = "n$k"
lease_sec = $LEASE
[registration]
max_register_rate_per_sec = $RATE
TOML
  cat "$BASE/connections.toml" >>"$d/uacd.toml"
  RUST_LOG=info,uacd::registration=warn "$UACD_BIN" run --config "$d/uacd.toml" 2>"$d/uacd.log" &
  NODE_PIDS[$k]=$!; remember_pid "${NODE_PIDS[$k]}"
}

users_seen() { awk '$4 > 0 { u[$2] = 1 } END { print length(u) }' "$BASE/registrar.log" 2>/dev/null || echo 0; }

T0=$(now_s)
for k in 0 1 2; do start_node "$k"; done
log "waiting for $N registered"
for ((i = 0; i < WAIT_S; i++)); do
  [ "$(users_seen)" -ge "$N" ] && break
  for k in 0 1 2; do pid_alive "${NODE_PIDS[$k]}" || die "node $k exited: $(tail -3 "$BASE/n$k/uacd.log")"; done
  sleep 1
done
[ "$(users_seen)" -ge "$N" ] || die "only $(users_seen) of $N registered after ${WAIT_S}s"
T_ALL=$(elapsed "$T0" "$(now_s)")
SHARE=$(awk '$4 > 0 { last[$2] = $3 } END { for (u in last) n[last[u]]++; for (s in n) printf "%s=%d ", s, n[s] }' "$BASE/registrar.log")
log "all $N registered in ${T_ALL}s ($SHARE)"

xacts() { psql_q "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database"; }
C0=$(tree_cpu_ticks "$PG_PID"); X0=$(xacts); S0=$(now_s)
sleep "$IDLE_S"
C1=$(tree_cpu_ticks "$PG_PID"); X1=$(xacts); S1=$(now_s)
DT=$(elapsed "$S0" "$S1")
PG_CPU=$(awk -v c=$((C1 - C0)) -v hz="$CLK_TCK" -v t="$DT" 'BEGIN { printf "%.1f", 100 * c / hz / t }')
TPS=$(awk -v x=$((X1 - X0)) -v t="$DT" 'BEGIN { printf "%.0f", x / t }')
log "steady: PostgreSQL ${PG_CPU}% of a core, ${TPS} transactions/s"

VICTIM=${NODES[2]}
awk -v ip="$VICTIM" '$4 > 0 { last[$2] = $3 } END { for (u in last) if (last[u] == ip) print u }' "$BASE/registrar.log" >"$BASE/victim.users"
NV=$(wc -l <"$BASE/victim.users")
T1=$(now_s)
kill -KILL "${NODE_PIDS[2]}"
log "kill -9 of node 3 ($NV connections)"
moved() {
  awk -v t1="$T1" -v ip="$VICTIM" 'NR == FNR { want[$1] = 1; next }
    $1 > t1 && $3 != ip && $4 > 0 && ($2 in want) { got[$2] = 1 }
    END { print length(got) }' "$BASE/victim.users" "$BASE/registrar.log"
}
for ((i = 0; i < WAIT_S; i++)); do
  [ "$(moved)" -ge "$NV" ] && break
  sleep 0.5
done
T_TAKE=$(elapsed "$T1" "$(now_s)")
[ "$(moved)" -ge "$NV" ] || die "only $(moved) of $NV taken over after ${WAIT_S}s"
log "takeover: $NV connections registered by the others in ${T_TAKE}s (lease_sec $LEASE, rate $RATE/s per node)"

printf 'n\tlease_sec\trate\tinitial_s\tshare\tpg_cpu_pct\tpg_tps\ttakeover_n\ttakeover_s\n' >"$FIGS"
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$N" "$LEASE" "$RATE" "$T_ALL" "$SHARE" "$PG_CPU" "$TPS" "$NV" "$T_TAKE" >>"$FIGS"
cat "$FIGS"
