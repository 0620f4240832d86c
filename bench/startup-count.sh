#!/usr/bin/env bash
# Instructions uacd spends starting on N connections already in its store
# (what bench/register.sh's "N connections already in the store" row times),
# counted by valgrind's callgrind: the same total for the same binary and
# store whatever else the machine is doing, so two commits compare exactly.
# The N rows are inactive (no REGISTER leaves the box) and API-owned (the
# start reads them from the store, not from the file).
#
# Usage: bench/startup-count.sh [N=10000] [TOP=25]
# Env:   UACD_BIN (default target/release/uacd), NO_BUILD=1
# Prints the total and the TOP functions by inclusive count; the callgrind
# file stays in /tmp/uacd-bench/startup-count/ for callgrind_annotate.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

N=${1:-10000}
TOP=${2:-25}
IP=127.0.0.135 PORT=5560 API=8860
WD=/tmp/uacd-bench/startup-count
rm -rf "$WD"; mkdir -p "$WD"
trap stop_all EXIT
EXTRA_PACKAGES=(valgrind:callgrind_annotate)
need valgrind callgrind_annotate sqlite3 curl
build_uacd
addr_free "$IP" "$PORT" || die "$IP:$PORT is in use"

config() { # FILE WITH_CONNECTIONS(0|1)
  {
    printf '[sip]\nlisten = ["udp:%s:%s"]\n[api]\nlisten = "%s:%s"\n' "$IP" "$PORT" "$IP" "$API"
    printf '[[api.tokens]]\ntoken = "bench-token-0123456"\nuser_id = "1"\n[store]\npath = "%s/uacd.db"\n' "$WD"
    if [ "$2" = 1 ]; then awk -v n="$N" 'BEGIN {
      for (i = 1; i <= n; i++) {
        printf "[[connection]]\nid = \"c%d\"\nconnection_name = \"c%d\"\nuser_name = \"u%d\"\nactive = false\n", i, i, i
        printf "[connection.external_uac_settings]\nproxy = \"sip:127.0.0.136:5060\"\nusername = \"acct%06d\"\npassword = \"s3cret\"\n", i
      }
    }'; fi
  } >"$1"
}

# wait_started LOG PID DEADLINE_S: until LOG says "uacd started"
wait_started() {
  local d=$((SECONDS + $3))
  until grep -q 'uacd started' "$1" 2>/dev/null; do
    pid_alive "$2" || die "uacd exited (see $1)"
    [ $SECONDS -lt $d ] || die "uacd did not start within $3 s (see $1)"
    sleep 0.1
  done
}

# 1) the store: N rows written by a first start on a file that has them
config "$WD/load.toml" 1
RUST_LOG=info "$UACD_BIN" run --config "$WD/load.toml" 2>"$WD/load.log" &
pid=$!; remember_pid "$pid"
wait_started "$WD/load.log" "$pid" 120
stop_pid "$pid" 10
sqlite3 "$WD/uacd.db" "UPDATE connections SET owner = 'api'"

# 2) the counted start: until "uacd started", then 1 s of idle, as the probe
config "$WD/store.toml" 0
log "callgrind: start on $N stored connections"
RUST_LOG=info valgrind --tool=callgrind --callgrind-out-file="$WD/callgrind.out" \
  "$UACD_BIN" run --config "$WD/store.toml" 2>"$WD/store.log" &
pid=$!; remember_pid "$pid"
wait_started "$WD/store.log" "$pid" 300
sleep 1
stop_pid "$pid" 30
callgrind_annotate "$WD/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { print "total instructions: " $1 }'
callgrind_annotate --inclusive=yes "$WD/callgrind.out" 2>/dev/null |
  grep -E '^ *[0-9,]+ \( *[0-9.]+%\) ' | grep -E 'uacd::|rusqlite|sqlite3_step|serde_json::de::from|rustls|quanta' |
  grep -E '\]$' | grep -v '{{closure}}' | head -n "$TOP"
log "callgrind file: $WD/callgrind.out"
