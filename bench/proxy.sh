#!/usr/bin/env bash
# Calls per second through uacd and through Kamailio tm+rr, side by side.
#
# Caller: SIPp UAC sipp/uac-rr.xml on 127.0.0.112:5092 (INVITE with SDP, 180,
# 200, ACK and BYE along the Record-Route set, 200; INVITE and BYE tracked as
# transactions). Callee: SIPp UAS sipp/uas-rr.xml on 127.0.0.113:5095 (copies
# Record-Route). Proxy, one at a time:
#   uacd      127.0.0.110:5060/udp. Its one connection registers (expiry
#             3600) to a SIPp registrar on 127.0.0.112:5075, so the caller on
#             127.0.0.112 passes the source check; destination_uri is the
#             numeric sip:1006@127.0.0.113:5095 (no DNS in the hot path);
#             the caller dials sip:bench@127.0.0.110:5060 (the user_name)
#   Kamailio  127.0.0.111:5090/udp, kamailio/proxy.cfg: record_route,
#             $ru = sip:1006@127.0.0.113:5095, t_relay (the anchor config)
# Each run is a fresh UAC at a fixed -r for RATE x DUR calls. Proxy CPU
# (utime+stime and schedstat of its process tree) from just before the UAC
# starts until TAIL_S after it exits, per 1000 calls; INVITE->200 from SIPp
# -trace_rtt (1 ms resolution); PSS/RSS of the proxy after the run.
#
# Usage:
#   bench/proxy.sh rates ["200 500 1000"] [DUR=10] [REPS=3]
#   bench/proxy.sh max [START=1000] [STEP=250] [DUR=5] [REPS=3]
#       steps the rate up by 2 x STEP until a run has a failed call or falls
#       5 % behind, then tries the STEP in between once; reports the highest
#       clean rate (SIPp shares the 2 cores). Half the runs of a linear
#       search at the same resolution, so that run.sh stays under 15 min.
# Env: DAEMONS="uacd kamailio" TAIL_S=5 (2 in max mode) MAX_RATE=6000 MEM=fm
#      LATE_S=<s> (rates mode: log PSS/RSS every 5 s for that long after each
#      rate, to tell live objects from what the allocator keeps)
#      FIGS=<file> (summary rows for run.sh)
set -u
. "$(dirname "$0")/lib.sh"
need sipp curl kamailio kamcmd

MODE=${1:-rates}
if [ "$MODE" = max ]; then
  START=${2:-1000}; STEP=${3:-250}; DUR=${4:-5}; REPS=${5:-3}; TAIL_S=${TAIL_S:-2}
  # a clean run ends about DUR s after it starts; one past the rate would
  # wait out its lost calls' timers (32 s) only to be called unclean anyway
  RUN_TIMEOUT=$((DUR + 8))
else
  RATES=${2:-"200 500 1000"}; DUR=${3:-10}; REPS=${4:-3}; TAIL_S=${TAIL_S:-5}
  RUN_TIMEOUT=$((DUR * 3 + 30))
fi
MAX_RATE=${MAX_RATE:-6000}
MEM=${MEM:-fm}
DAEMONS=${DAEMONS:-"uacd kamailio"}
STAMP=${STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/proxy-$MODE-$STAMP.tsv"
FIGS=${FIGS:-$RESULTS_DIR/proxy-$MODE-$STAMP.figures.tsv}
BASE=${BASE:-/tmp/uacd-bench/proxy-$MODE}
rm -rf "$BASE"; mkdir -p "$BASE"
trap stop_all EXIT

# Addresses overridable, so that two benchmarks can run side by side.
UACD_IP=${UACD_IP:-127.0.0.110} UACD_PORT=5060 UACD_API=8110
KAM_IP=${KAM_IP:-127.0.0.111} KAM_PORT=5090
CALLER_IP=${CALLER_IP:-127.0.0.112} CALLER_PORT=5092 REG_PORT=5075
DEST_IP=${DEST_IP:-127.0.0.113} DEST_PORT=5095
for a in "$UACD_IP $UACD_PORT" "$UACD_IP $UACD_API" "$KAM_IP $KAM_PORT" "$CALLER_IP $CALLER_PORT" \
  "$CALLER_IP $REG_PORT" "$DEST_IP $DEST_PORT"; do
  # shellcheck disable=SC2086
  addr_free $a || die "address $a is busy"
done
case " $DAEMONS " in *" uacd "*) build_uacd ;; esac

printf 'daemon\trate\trep\tcalls\tsuccessful\tfailed\tretrans\tachieved_cps\twall_s\tcpu_s\tcpu_s_per_1k_calls\tsched_s_per_1k_calls\tsched_s_per_1k_minus_idle\tuac_cpu_s_per_1k\tuas_cpu_s_per_1k\trtt_mean_ms\trtt_p50_ms\trtt_p90_ms\trtt_p99_ms\trtt_max_ms\tudp_rcvbuf_errors\tpss_mib\trss_mib\tload1\tothers_cpu_frac\tsteal_frac\n' >"$OUT"

self_child_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $14 + $15 }'; }
rcvbuf_errors() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp; }

# start_proxy DAEMON: starts the proxy (and, for uacd, its registrar) and the
# UAS; sets PROXY_PID, TARGET_DOMAIN, TARGET_USER, IDLE
start_proxy() {
  local dm=$1 WD="$BASE/$1"
  mkdir -p "$WD/uas" "$WD/reg"
  if [ "$dm" = uacd ]; then
    (cd "$WD/reg" && exec sipp -sf "$SIPP_DIR/registrar-uas.xml" -i "$CALLER_IP" -p "$REG_PORT" \
      -key realm registrar.test -set pw s3cret -nostdin -deadcall_wait 500 >"$WD/registrar.out" 2>&1) &
    REGISTRAR_PID=$!; remember_pid "$REGISTRAR_PID"
    wait_udp "$CALLER_IP" "$REG_PORT" 5 || die "registrar did not start"
    start_uacd_registered "$WD" "[sip]
listen = [\"udp:$UACD_IP:$UACD_PORT\"]" "sip:1006@$DEST_IP:$DEST_PORT" 2
    PROXY_PID=$UACD_PID
    TARGET_DOMAIN="$UACD_IP:$UACD_PORT"; TARGET_USER=bench
  else
    start_kamailio "$KAM_DIR/proxy.cfg" "$WD" -m 512 -M 16 -x "$MEM" -X "$MEM" \
      -A "CTLSOCK=\"unix:$WD/kamailio_ctl\"" -A "CHILDREN=2" -A "LISTEN=udp:$KAM_IP:$KAM_PORT" \
      -A "TARGET=\"sip:1006@$DEST_IP:$DEST_PORT\""
    PROXY_PID=$KAM_PID
    wait_udp "$KAM_IP" "$KAM_PORT" 10 || die "kamailio did not start (see $WD/kamailio.log)"
    TARGET_DOMAIN="$KAM_IP:$KAM_PORT"; TARGET_USER=1006
  fi
  (cd "$WD/uas" && exec sipp -sf "$SIPP_DIR/uas-rr.xml" -i "$DEST_IP" -p "$DEST_PORT" -nostdin \
    -buff_size 4194304 >"$WD/uas.out" 2>&1) &
  UAS_PID=$!; remember_pid "$UAS_PID"
  wait_udp "$DEST_IP" "$DEST_PORT" 5 || die "SIPp UAS did not start"
  sleep 1
  local i0 i1 ta tb
  read -r _ i0 <<<"$(tree_cpu "$PROXY_PID")"; ta=$(now_s)
  sleep 2
  read -r _ i1 <<<"$(tree_cpu "$PROXY_PID")"; tb=$(now_s)
  IDLE=$(awk -v d=$((i1 - i0)) -v w="$(elapsed "$ta" "$tb")" 'BEGIN { printf "%.6f", d / 1e9 / w }')
  log "$dm proxy pid $PROXY_PID up, idle ${IDLE} cpu-s/s"
}

stop_proxy() {
  stop_pid "$UAS_PID" 5
  stop_pid "$PROXY_PID" 10
  [ -n "${REGISTRAR_PID:-}" ] && stop_pid "$REGISTRAR_PID" 5
  REGISTRAR_PID=
}

# run_once DAEMON RATE REP -> appends a row; 0 when clean (no failure, on rate)
run_once() {
  local dm=$1 rate=$2 rep=$3 calls=$(($2 * DUR))
  local rd="$BASE/$dm/r$rate-$rep"
  mkdir -p "$rd"
  local k0 kn0 k1 kn1 s0 s1 u0 u1 t0 t1 e0 e1 rc y0 y1 z0 z1
  e0=$(rcvbuf_errors); y0=$(sys_busy_ticks); z0=$(sys_steal_ticks)
  u0=$(cpu_ticks "$UAS_PID"); s0=$(self_child_ticks)
  read -r k0 kn0 <<<"$(tree_cpu "$PROXY_PID")"; t0=$(now_s)
  (cd "$rd" && exec sipp -sf "$SIPP_DIR/uac-rr.xml" -key domain "$TARGET_DOMAIN" "$TARGET_DOMAIN" \
    -s "$TARGET_USER" -i "$CALLER_IP" -p "$CALLER_PORT" \
    -r "$rate" -m "$calls" -nostdin -buff_size 4194304 \
    -timeout "$RUN_TIMEOUT" -timeout_error \
    -trace_stat -stf stat.csv -fd 1 -trace_rtt -rtt_freq 50 -trace_err \
    >"$rd/uac.out" 2>&1)
  rc=$?
  s1=$(self_child_ticks); t1=$(now_s)
  sleep "$TAIL_S"
  read -r k1 kn1 <<<"$(tree_cpu "$PROXY_PID")"; u1=$(cpu_ticks "$UAS_PID")
  e1=$(rcvbuf_errors); y1=$(sys_busy_ticks); z1=$(sys_steal_ticks)
  local wall tot last succ fail retr cps rtt pss rss oth stl
  wall=$(elapsed "$t0" "$t1"); tot=$(elapsed "$t0" "$(now_s)")
  last=$(tail -n 1 "$rd/stat.csv" 2>/dev/null)
  succ=$(cut -d';' -f16 <<<"$last"); fail=$(cut -d';' -f18 <<<"$last")
  retr=$(cut -d';' -f58 <<<"$last")
  succ=${succ:-0}; fail=${fail:-0}; retr=${retr:-0}
  cps=$(awk -v c="$succ" -v f="$fail" -v w="$wall" 'BEGIN { printf "%.1f", (c + f) / w }')
  rtt=$(tail -q -n +2 "$rd"/*_rtt.csv 2>/dev/null | cut -d';' -f2 | sort -n | awk '
    { v[NR] = $1; s += $1 }
    function q(x,  i) { i = int(NR * x + 0.5); if (i < 1) i = 1; return v[i] }
    END { if (NR == 0) { print "nan nan nan nan nan"; exit }
      printf "%.2f %s %s %s %s\n", s / NR, q(0.50), q(0.90), q(0.99), v[NR] }')
  read -r pss rss _ <<<"$(mem_kib "$PROXY_PID")"
  oth=$(others_frac $((y1 - y0)) $((k1 - k0 + s1 - s0 + u1 - u0)) "$tot")
  stl=$(others_frac $((z1 - z0)) 0 "$tot")
  awk -v dm="$dm" -v oth="$oth" -v stl="$stl" -v rate="$rate" -v rep="$rep" -v calls="$calls" -v succ="$succ" -v fail="$fail" -v retr="$retr" \
    -v cps="$cps" -v wall="$wall" -v tot="$tot" -v kt=$((k1 - k0)) -v kn=$((kn1 - kn0)) -v idle="$IDLE" \
    -v ut=$((s1 - s0)) -v st=$((u1 - u0)) -v rtt="$rtt" -v errs=$((e1 - e0)) -v pss="$pss" -v rss="$rss" \
    -v l1="$(load1)" -v hz="$CLK_TCK" 'BEGIN {
      split(rtt, r, " ")
      n = succ + fail; if (n == 0) n = 1
      printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.2f\t%.2f\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\t%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%.1f\t%s\t%s\t%s\n",
        dm, rate, rep, calls, succ, fail, retr, cps, wall, kt / hz, kt / hz / n * 1000, kn / 1e9 / n * 1000,
        (kn / 1e9 - idle * tot) / n * 1000, ut / hz / n * 1000, st / hz / n * 1000,
        r[1], r[2], r[3], r[4], r[5], errs, pss / 1024, rss / 1024, l1, oth, stl }' >>"$OUT"
  tail -n 1 "$OUT" >&2
  [ "$rc" = 0 ] && [ "$fail" = 0 ] && [ "$succ" = "$calls" ] &&
    awk -v c="$cps" -v r="$rate" 'BEGIN { exit !(c >= 0.95 * r) }'
}

colv() { # DAEMON RATE COLUMN -> values over the reps
  awk -F'\t' -v d="$1" -v r="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
    $1 == d && (r == "" || $2 == r) { print $k }' "$OUT" | tr '\n' ' '
}

log "proxy bench: mode=$MODE daemons=$DAEMONS dur=${DUR}s reps=$REPS -> $OUT"
for dm in $DAEMONS; do
  start_proxy "$dm"
  if [ "$MODE" = max ]; then
    MAXES=""
    for ((rep = 1; rep <= REPS; rep++)); do
      best=0 failed=""
      for ((rate = START; rate <= MAX_RATE; rate += 2 * STEP)); do
        if run_once "$dm" "$rate" "$rep"; then best=$rate; else failed=$rate; break; fi
      done
      if [ -n "$failed" ] && [ "$best" -gt 0 ] && [ $((best + STEP)) -lt "$failed" ]; then
        run_once "$dm" $((best + STEP)) "$rep" && best=$((best + STEP))
      fi
      log "$dm rep $rep: highest clean rate $best cps"
      MAXES="$MAXES $best"
    done
    emit_fig "$FIGS" "proxy max rate" "max clean rate (${STEP}-cps steps from $START, ${DUR} s)" "$dm" calls/s "$MAXES" \
      "$(med "$(colv "$dm" "" steal_frac)")" "$(med "$(colv "$dm" "" others_cpu_frac)")"
  else
    for rate in $RATES; do
      for ((rep = 1; rep <= REPS; rep++)); do
        run_once "$dm" "$rate" "$rep" || log "$dm rate $rate rep $rep: not clean (failures or behind rate)"
      done
      s=$(med "$(colv "$dm" "$rate" steal_frac)"); o=$(med "$(colv "$dm" "$rate" others_cpu_frac)")
      sec="proxy $rate calls/s"
      emit_fig "$FIGS" "$sec" "CPU / 1000 calls" "$dm" cpu-s "$(colv "$dm" "$rate" sched_s_per_1k_calls)" "$s" "$o"
      emit_fig "$FIGS" "$sec" "failed calls" "$dm" n "$(colv "$dm" "$rate" failed)" "$s" "$o"
      emit_fig "$FIGS" "$sec" "INVITE->200 p50" "$dm" ms "$(colv "$dm" "$rate" rtt_p50_ms)" "$s" "$o"
      emit_fig "$FIGS" "$sec" "INVITE->200 p90" "$dm" ms "$(colv "$dm" "$rate" rtt_p90_ms)" "$s" "$o"
      emit_fig "$FIGS" "$sec" "INVITE->200 p99" "$dm" ms "$(colv "$dm" "$rate" rtt_p99_ms)" "$s" "$o"
      emit_fig "$FIGS" "$sec" "PSS after run" "$dm" MiB "$(colv "$dm" "$rate" pss_mib)" "$s" "$o"
      if [ -n "${LATE_S:-}" ]; then
        for ((w = 0; w < LATE_S; w += 5)); do
          sleep 5; read -r pss rss _ <<<"$(mem_kib "$PROXY_PID")"
          log "$dm +$((w + 5))s after rate $rate: pss $((pss / 1024)) MiB rss $((rss / 1024)) MiB"
        done
      fi
    done
  fi
  stop_proxy
done
log "raw rows: $OUT"
