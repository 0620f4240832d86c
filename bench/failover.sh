#!/usr/bin/env bash
# Failover latency of uacd: time from a dead first target to the call
# reaching the second one, for a transport error and for silence.
#
# destination_uri = 1006@fail.test (UDP) or 1006@fail.test;transport=tcp;
# a small DNS server (tools/dns_srv.py on 127.0.0.124:5353) serves SRV
# priority 10 -> 127.0.0.122 (dead), 20 -> 127.0.0.123 (SIPp uas-rr.xml).
#   transport  TCP, nothing listens on 127.0.0.122: connection refused
#   silence    UDP, SIPp uas-silent scenario on 127.0.0.122 never answers:
#              uacd fails over after timeout_1xx_sec (TIMEOUT_1XX, 1 s)
# uacd (127.0.0.120) is registered to a SIPp registrar on 127.0.0.121:5075;
# the caller (sipp/uac-rr.xml on 127.0.0.121:5092) places CALLS calls, one
# every 2 s (greylist_sec = 0 so each call meets the dead target again).
# Figure: INVITE->200 at the caller (SIPp rtd, ms) per call; the failover
# count in uacd's log ("call target failed; trying the next") must equal CALLS.
#
# Usage: bench/failover.sh [CALLS=5]
# Env: TIMEOUT_1XX=1 FIGS=<file>
set -u
. "$(dirname "$0")/lib.sh"
need sipp curl python3

CALLS=${1:-5}
TIMEOUT_1XX=${TIMEOUT_1XX:-1}
STAMP=${STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/failover-$STAMP.tsv"
FIGS=${FIGS:-$RESULTS_DIR/failover-$STAMP.figures.tsv}
BASE=/tmp/uacd-bench/failover
rm -rf "$BASE"; mkdir -p "$BASE"
trap stop_all EXIT

UACD_IP=127.0.0.120 UACD_PORT=5060 UACD_API=8120
CALLER_IP=127.0.0.121 CALLER_PORT=5092 REG_PORT=5075
DEAD_IP=127.0.0.122 LIVE_IP=127.0.0.123 UDP_PORT=5095 TCP_PORT=5096
DNS_IP=127.0.0.124 DNS_PORT=5353
for a in "$UACD_IP $UACD_PORT" "$UACD_IP $UACD_API" "$CALLER_IP $CALLER_PORT" "$CALLER_IP $REG_PORT" \
  "$DEAD_IP $UDP_PORT" "$DEAD_IP $TCP_PORT" "$LIVE_IP $UDP_PORT" "$LIVE_IP $TCP_PORT" "$DNS_IP $DNS_PORT"; do
  # shellcheck disable=SC2086
  addr_free $a || die "address $a is busy"
done
build_uacd

cat >"$BASE/zone" <<EOF
_sip._udp.fail.test SRV 10 0 $UDP_PORT dead.fail.test
_sip._udp.fail.test SRV 20 0 $UDP_PORT live.fail.test
_sip._tcp.fail.test SRV 10 0 $TCP_PORT dead.fail.test
_sip._tcp.fail.test SRV 20 0 $TCP_PORT live.fail.test
dead.fail.test A $DEAD_IP
live.fail.test A $LIVE_IP
fail.test A $DEAD_IP
EOF
python3 "$BENCH_DIR/tools/dns_srv.py" "$DNS_IP" "$DNS_PORT" "$BASE/zone" 2>"$BASE/dns.log" &
remember_pid $!
wait_udp "$DNS_IP" "$DNS_PORT" 5 || die "DNS server did not start"
mkdir -p "$BASE/reg"
(cd "$BASE/reg" && exec sipp -sf "$SIPP_DIR/registrar-uas.xml" -i "$CALLER_IP" -p "$REG_PORT" \
  -key realm registrar.test -set pw s3cret -nostdin -deadcall_wait 500 >"$BASE/registrar.out" 2>&1) &
remember_pid $!
wait_udp "$CALLER_IP" "$REG_PORT" 5 || die "registrar did not start"

printf 'case\tcall\tinvite_to_200_ms\n' >"$OUT"

one_case() { # CASE
  local c=$1 WD="$BASE/$1" dest tflag=() dead_pid="" uacd_pid live_pid
  mkdir -p "$WD/live" "$WD/dead" "$WD/uac"
  if [ "$c" = transport ]; then
    dest="1006@fail.test;transport=tcp"; tflag=(-t t1)
    (cd "$WD/live" && exec sipp -sf "$SIPP_DIR/uas-rr.xml" -i "$LIVE_IP" -p "$TCP_PORT" -t t1 -nostdin >"$WD/live.out" 2>&1) &
    live_pid=$!; remember_pid "$live_pid"
    wait_tcp "$LIVE_IP" "$TCP_PORT" 5 || die "live UAS did not start"
  else
    dest="1006@fail.test"
    (cd "$WD/live" && exec sipp -sf "$SIPP_DIR/uas-rr.xml" -i "$LIVE_IP" -p "$UDP_PORT" -nostdin >"$WD/live.out" 2>&1) &
    live_pid=$!; remember_pid "$live_pid"
    (cd "$WD/dead" && exec sipp -sf "$REPO_DIR/sipp-scenarios/uas-silent.xml" -i "$DEAD_IP" -p "$UDP_PORT" -d 3000 -nostdin >"$WD/dead.out" 2>&1) &
    dead_pid=$!; remember_pid "$dead_pid"
    wait_udp "$LIVE_IP" "$UDP_PORT" 5 && wait_udp "$DEAD_IP" "$UDP_PORT" 5 || die "UAS did not start"
  fi
  start_uacd_registered "$WD" "[sip]
listen = [\"udp:$UACD_IP:$UACD_PORT\", \"tcp:$UACD_IP:$UACD_PORT\"]
[dns]
nameservers = [\"$DNS_IP:$DNS_PORT\"]
greylist_sec = 0" "$dest" "$TIMEOUT_1XX"
  uacd_pid=$UACD_PID
  (cd "$WD/uac" && exec sipp -sf "$SIPP_DIR/uac-rr.xml" -key domain "$UACD_IP:$UACD_PORT" "$UACD_IP:$UACD_PORT" \
    -s bench -i "$CALLER_IP" -p "$CALLER_PORT" -r 1 -rp 2000 -m "$CALLS" -nostdin \
    -timeout $((CALLS * 2 + 30)) -timeout_error -trace_rtt -rtt_freq 1 -trace_err >"$WD/uac.out" 2>&1)
  local rc=$? fo
  fo=$(grep -c 'call target failed; trying the next' "$WD/uacd.log")
  [ "$rc" = 0 ] || log "$c: caller exited $rc (see $WD/uac)"
  [ "${fo:-0}" = "$CALLS" ] || log "$c: uacd counted ${fo:-0} failovers for $CALLS calls"
  tail -q -n +2 "$WD"/uac/*_rtt.csv 2>/dev/null | cut -d';' -f2 | awk -v c="$c" '{ printf "%s\t%d\t%s\n", c, NR, $1 }' >>"$OUT"
  stop_pid "$uacd_pid" 10
  stop_pid "$live_pid" 5
  [ -n "$dead_pid" ] && stop_pid "$dead_pid" 5
  local vals; vals=$(awk -F'\t' -v c="$c" '$1 == c { print $3 }' "$OUT" | tr '\n' ' ')
  log "$c: INVITE->200 ms per call: $vals (failovers counted: ${fo:-0})"
  local lbl="first target dead, transport error (TCP refused)"
  [ "$c" = silence ] && lbl="first target silent (timeout_1xx_sec = $TIMEOUT_1XX s)"
  emit_fig "$FIGS" "failover" "$lbl: INVITE->200 via 2nd target" uacd ms "$vals" "n/a" "n/a"
}

one_case transport
one_case silence
log "raw rows: $OUT"
