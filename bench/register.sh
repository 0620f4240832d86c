#!/usr/bin/env bash
# Registration scale, uacd and Kamailio's uac module side by side.
#
# N accounts register to REGISTRARS SIPp registrars (sipp/registrar-uas.xml
# on 127.0.0.101, ports 5075, 5076, ...; account i goes to registrar
# (i-1) mod REGISTRARS: 401 with qop=auth, digest verified with
# <verifyauth>, 200 echoing the requested expiry); each registration and each
# refresh is two REGISTER transactions. Expiry EXPIRES (60, uacd's minimum)
# for both. One SIPp registrar costs about 1 ms of CPU per transaction, so
# beyond about 20k accounts use several and a longer EXPIRES (the refresh
# cycle puts 2N transactions into about EXPIRES/2 s). Registrations and
# transactions are counted at the registrars (their -trace_logs files), the
# same way for both daemons.
#   uacd      127.0.0.100:5060/udp, N [[connection]]s in its config file,
#             
#   Kamailio  127.0.0.102:5070/udp, uac module, N rows in an sqlite uacreg
#             table, 
# Per repetition and daemon (fresh daemon and registrar each time):
#   load     CPU of start-up and loading the N accounts, before any REGISTER
#            (uacd: a separate probe run with the N [[connection]]s inactive,
#            from its exec until it logged "uacd started" + 1 s; Kamailio:
#            until its uacreg table is loaded + 1 s)
#   store    uacd: the same, with the N rows already in its store and none
#            in its file (the load probe's rows handed to the API), so only
#            the store read and start-up; Kamailio: its load figure again
#   initial  CPU and time until N 200s: uacd from its exec (it registers at
#            once), CPU minus the load probe's; Kamailio from
#            `uac.reg_active 1` (table loaded before)
#   idle     CPU over IDLE_S with N registered (before any refresh is due)
#   refresh  until every account refreshed once (2N 200s in all): CPU per
#            1000 REGISTER transactions, raw and minus idle rate x window
#   memory   PSS and RSS of the daemon (all processes for Kamailio) after
#            the refresh, per registered connection
# CPU = utime+stime from /proc/PID/stat (and schedstat ns) of the daemon's
# process tree only; steal and other processes' CPU over the rep are noted.
#
# Usage: bench/register.sh [N=10000] [REPS=3]
# Env:   REFRESH=1 (0: skip the refresh cycle) DAEMONS="uacd kamailio"
#        EXPIRES=60 IDLE_S=5 RATE=20000 (uacd max_register_rate_per_sec)
#        REGISTRARS=1 WAIT_S=300 (deadline for all N registered)
#        SMAPS=<dir> (save the daemon's /proc/PID/smaps at the memory point)
#        MEM=fm (Kamailio allocator) SHM_MB=1024 PKG_MB=256 (its shared and
#        per-process memory) FIGS=<file> (summary rows for run.sh)
# 100k: REGISTRARS=4 EXPIRES=300 RATE=2000 WAIT_S=600 SHM_MB=4096 bench/register.sh 100000 1
# Bounded: each wait has a deadline; ~40 s (uacd) + ~70 s (Kamailio) per rep
# at the defaults.
set -u
. "$(dirname "$0")/lib.sh"
need sipp curl kamailio kamcmd sqlite3

N=${1:-10000}
REPS=${2:-3}
EXPIRES=${EXPIRES:-60}
REFRESH=${REFRESH:-1}
IDLE_S=${IDLE_S:-5}
RATE=${RATE:-20000}
REGISTRARS=${REGISTRARS:-1}
WAIT_S=${WAIT_S:-300}
MEM=${MEM:-fm}
DAEMONS=${DAEMONS:-"uacd kamailio"}
STAMP=${STAMP:-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/register-N$N-$STAMP.tsv"
FIGS=${FIGS:-$RESULTS_DIR/register-N$N-$STAMP.figures.tsv}
BASE=/tmp/uacd-bench/register-N$N
rm -rf "$BASE"; mkdir -p "$BASE"
trap stop_all EXIT

REG_IP=127.0.0.101 REG_PORT=5075
UACD_IP=127.0.0.100 UACD_PORT=5060 UACD_API=8100
KAM_IP=127.0.0.102 KAM_PORT=5070
UACD_HEALTH="http://$UACD_IP:$UACD_API/healthz"
for ((k = 0; k < REGISTRARS; k++)); do
  addr_free "$REG_IP" $((REG_PORT + k)) || die "address $REG_IP $((REG_PORT + k)) is busy"
done
for a in "$UACD_IP $UACD_PORT" "$UACD_IP $UACD_API" "$KAM_IP $KAM_PORT"; do
  # shellcheck disable=SC2086
  addr_free $a || die "address $a is busy"
done
case " $DAEMONS " in *" uacd "*) build_uacd ;; esac

printf 'daemon\trep\tN\tt_all_reg_s\tregistered\tinit_txn\tinit_cpu_s\tinit_cpu_s_per_1k_txn\tinit_sched_s_per_1k_txn\tload_sched_s\tidle_cpu_s_per_s\trefresh_window_s\trefreshed\trefresh_txn\trefresh_cpu_s_per_1k_txn\trefresh_cpu_s_per_1k_txn_minus_idle\trefresh_sched_s_per_1k_txn_minus_idle\tbad_digests\tpss_mib\trss_mib\tpss_kib_per_conn\trss_kib_per_conn\tregistrar_cpu_s\tload1\tothers_cpu_frac\tsteal_frac\tstore_load_sched_s\n' >"$OUT"

start_registrars() { # WD: REGISTRAR_PIDS[k] listens on REG_PORT + k
  local k port
  REGISTRAR_PIDS=()
  for ((k = 0; k < REGISTRARS; k++)); do
    port=$((REG_PORT + k))
    mkdir -p "$1/sipp$k"
    # -deadcall_wait: uacd keeps its Call-ID for the life of a connection, so a
    # refresh reuses the Call-ID of an ended SIPp "call"; SIPp would discard it
    # for the default 33 s dead-call window
    (cd "$1/sipp$k" && exec sipp -sf "$SIPP_DIR/registrar-uas.xml" -i "$REG_IP" -p "$port" \
      -key realm registrar.test -set pw s3cret -nostdin -buff_size 4194304 -deadcall_wait 500 \
      -trace_err -trace_logs >"$1/registrar$k.out" 2>&1) &
    REGISTRAR_PIDS[k]=$!; remember_pid "${REGISTRAR_PIDS[k]}"
    wait_udp "$REG_IP" "$port" 5 || die "registrar $k did not start"
  done
}

registrars_cpu() { # -> CPU ticks of all registrars
  local p s=0
  for p in "${REGISTRAR_PIDS[@]}"; do s=$((s + $(cpu_ticks "$p"))); done
  echo "$s"
}

uacd_config() { # FILE ACTIVE(true|false); the store lives beside FILE
  {
    printf '[sip]\nlisten = ["udp:%s:%s"]\n' "$UACD_IP" "$UACD_PORT"
    printf '[api]\nlisten = "%s:%s"\n[[api.tokens]]\ntoken = "bench-token-0123456"\nuser_id = "1"\n' "$UACD_IP" "$UACD_API"
    printf '[store]\npath = "%s"\n' "$(dirname "$1")/uacd.db"
    printf '[registration]\nmax_register_rate_per_sec = %s\n' "$RATE"
    awk -v n="$N" -v ip="$REG_IP" -v port="$REG_PORT" -v k="$REGISTRARS" -v e="$EXPIRES" -v act="$2" 'BEGIN {
      for (i = 1; i <= n; i++) {
        printf "[[connection]]\nid = \"c%d\"\nconnection_name = \"c%d\"\nuser_name = \"u%d\"\nactive = %s\n", i, i, i, act
        printf "[connection.external_uac_settings]\nproxy = \"sip:%s:%s\"\nusername = \"acct%06d\"\npassword = \"s3cret\"\nexpiration_sec = %d\n", ip, port + (i - 1) % k, i, e
      }
    }'
  } >"$1"
}

# start_probe PREFIX: runs uacd on PREFIX.toml (log PREFIX.log) until it
# logged "uacd started" + 1 s, stops it; sets P_TICKS and P_NS to its CPU
# (not in a subshell, so that the exit trap knows the PID)
start_probe() {
  local p i
  RUST_LOG=info,uacd::registration::supervisor=warn "$UACD_BIN" run --config "$1.toml" 2>"$1.log" &
  p=$!; remember_pid "$p"
  for ((i = 0; i < 600; i++)); do grep -q 'uacd started' "$1.log" 2>/dev/null && break; sleep 0.05; done
  grep -q 'uacd started' "$1.log" || die "uacd (probe $1.toml) did not start (see $1.log)"
  sleep 1
  read -r P_TICKS P_NS <<<"$(tree_cpu "$p")"
  stop_pid "$p" 10
}

# live_ok DAEMON: registrations completed so far, read while the run goes
# on (the registrar's log file is only complete once SIPp exits):
#   uacd      lines with status=success in its log (RUST_LOG=info, the default: one
#             per connection that becomes registered; refreshes log nothing)
#   Kamailio  2xx replies to its local transactions (tm.stats), which counts
#             refreshes too
live_ok() {
  if [ "$1" = uacd ]; then
    grep -c 'status=success' "$WD/uacd.log" 2>/dev/null || true
  else
    kam_rpc "$CTL" tm.stats 2>/dev/null | awk '$1 == "2xx:" { print $2 }'
  fi
}

# wait_ok DAEMON TARGET DEADLINE_S: polls until live_ok >= TARGET
wait_ok() {
  local d=$((SECONDS + $3)) ok
  while :; do
    ok=$(live_ok "$1")
    [ "${ok:-0}" -ge "$2" ] && return 0
    [ $SECONDS -ge $d ] && { log "$1: timeout at ${ok:-0}/$2 registered"; return 1; }
    sleep 0.1
  done
}

# registrar_counts -> "init_txn init_ok refresh_txn refresh_ok bad": from the
# registrars' -trace_logs files once they have exited (one line per REGISTER
# transaction: CHAL, OK or BAD, in order); for registrar k with n_k accounts
# the initial burst is everything up to its n_k-th OK, the refresh cycle the
# rest; summed over the registrars
registrar_counts() {
  local k nk
  for ((k = 0; k < REGISTRARS; k++)); do
    nk=$(( N / REGISTRARS + (k < N % REGISTRARS ? 1 : 0) ))
    awk -v n="$nk" '$1 == "BAD" { bad++ }
      { if (ok < n) { it++; if ($1 == "OK") ok++ } else { rt++; if ($1 == "OK") rok++ } }
      END { printf "%d %d %d %d %d\n", it, ok, rt, rok, bad }' \
      "$WD/sipp$k/registrar-uas_${REGISTRAR_PIDS[k]}_logs.log" 2>/dev/null || echo "0 0 0 0 0"
  done | awk '{ for (i = 1; i <= 5; i++) s[i] += $i } END { printf "%d %d %d %d %d\n", s[1], s[2], s[3], s[4], s[5] }'
}

one_rep() { # DAEMON REP
  local dm=$1 rep=$2 WD="$BASE/$1-rep$2" T0 c0 n0 pid
  mkdir -p "$WD"
  start_registrars "$WD"
  local y0 z0 r0
  y0=$(sys_busy_ticks); z0=$(sys_steal_ticks); r0=$(registrars_cpu)
  local Ts W0; Ts=$(now_s); W0=$Ts
  if [ "$dm" = uacd ]; then
    # 1) load probe: the same N connections inactive (nothing is sent) on a
    #    fresh store: exec, config parse, store sync and start-up, then
    #    stopped. Its CPU is subtracted from the measured run's (Kamailio's
    #    window likewise starts with its table loaded). The supervisor's
    #    per-connection "not applicable" info line is filtered out so that
    #    the probe does no logging the measured run does not do.
    local i
    mkdir -p "$WD/load"
    uacd_config "$WD/load/uacd.toml" false
    start_probe "$WD/load/uacd"
    LOAD_TICKS=$P_TICKS; LOAD_NS=$P_NS; PROBE_TICKS=$LOAD_TICKS
    # 1b) the same N rows already in the store and none in the file (what
    #     Kamailio's figure is: a read of its uacreg rows): the probe's rows
    #     handed to the API, then a start on a file with no [[connection]]
    sqlite3 "$WD/load/uacd.db" "UPDATE connections SET owner = 'api'"
    N=0 uacd_config "$WD/load/store.toml" false
    start_probe "$WD/load/store"
    STORE_NS=$P_NS; PROBE_TICKS=$((PROBE_TICKS + P_TICKS))
    # 2) the measured run: the same connections active on a fresh store;
    #    it registers at once, so the window starts at the exec
    uacd_config "$WD/uacd.toml" true
    Ts=$(now_s)
    RUST_LOG=info "$UACD_BIN" run --config "$WD/uacd.toml" 2>"$WD/uacd.log" &
    pid=$!; remember_pid "$pid"
    for ((i = 0; i < 600; i++)); do curl -s --max-time 1 -o /dev/null "$UACD_HEALTH" && break; sleep 0.05; done
    pid_alive "$pid" || die "uacd exited (see $WD/uacd.log)"
  else
    local DB="$WD/uacreg.sqlite"
    CTL="unix:$WD/kamailio_ctl"
    sqlite3 "$DB" </usr/share/kamailio/db_sqlite/standard-create.sql
    sqlite3 "$DB" </usr/share/kamailio/db_sqlite/uac-create.sql
    sqlite3 "$DB" "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $N)
      INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm,
        auth_username, auth_password, auth_proxy, expires, flags, reg_delay, contact_addr, socket)
      SELECT printf('u%06d', i), printf('user%06d', i), 'local.test', printf('acct%06d', i),
        'registrar.test', 'registrar.test', printf('acct%06d', i), 's3cret',
        'sip:$REG_IP:' || ($REG_PORT + (i - 1) % $REGISTRARS), $EXPIRES, 0, 0, '', '' FROM s;"
    start_kamailio "$KAM_DIR/uacreg.cfg" "$WD" -m "${SHM_MB:-1024}" -M "${PKG_MB:-256}" -x "$MEM" -X "$MEM" \
      -A "DBURL=\"sqlite://$DB\"" -A "CTLSOCK=\"$CTL\"" -A "RPCFIFO=\"$WD/kamailio_rpc.fifo\"" \
      -A "RPCDIR=\"$WD/\"" -A "LISTEN=udp:$KAM_IP:$KAM_PORT" -A "CONTACT=\"$KAM_IP:$KAM_PORT\"" \
      -A "REG_TIMER=1" -A "CHILDREN=2"
    pid=$KAM_PID
    wait_udp "$KAM_IP" "$KAM_PORT" 10 || die "kamailio did not start (see $WD/kamailio.log)"
    local i loaded
    for ((i = 0; i < 50; i++)); do kam_rpc "$CTL" core.uptime >/dev/null 2>&1 && break; sleep 0.1; done
    for ((i = 0; i < 600; i++)); do
      loaded=$(kam_rpc "$CTL" stats.get_statistics uac: 2>/dev/null | awk '$1 == "uac:regtotal" {print $3}')
      [ "${loaded:-0}" = "$N" ] && break
      sleep 0.1
    done
    [ "${loaded:-0}" = "$N" ] || die "Kamailio loaded ${loaded:-0}/$N uacreg records"
    sleep 1
  fi
  local ok0=0
  [ "$dm" = kamailio ] && ok0=$(live_ok kamailio)
  if [ "$dm" = uacd ]; then
    # from the exec, minus the load probe's CPU (start-up + loading N)
    c0=$LOAD_TICKS; n0=$LOAD_NS; T0=$Ts
  else
    read -r c0 n0 <<<"$(tree_cpu "$pid")"; T0=$(now_s)
    LOAD_NS=$n0; STORE_NS=$n0; PROBE_TICKS=0
    Ts=$T0; kam_rpc "$CTL" uac.reg_active 1 >/dev/null || die "uac.reg_active failed"
  fi
  wait_ok "$dm" $((ok0 + N)) "$WAIT_S"
  local c1 n1 T1; read -r c1 n1 <<<"$(tree_cpu "$pid")"; T1=$(now_s)
  # idle with N registered
  sleep 1
  local ia ian ib ibn ta tb
  read -r ia ian <<<"$(tree_cpu "$pid")"; ta=$(now_s)
  sleep "$IDLE_S"
  read -r ib ibn <<<"$(tree_cpu "$pid")"; tb=$(now_s)
  local idle; idle=$(awk -v d=$((ibn - ian)) -v w="$(elapsed "$ta" "$tb")" 'BEGIN { printf "%.6f", d / 1e9 / w }')
  local c2=$ib n2=$ibn T2=$tb
  if [ "$REFRESH" = 1 ]; then
    if [ "$dm" = uacd ]; then
      # uacd refreshes a binding 40-50 % into its expiry below 4 Timer F
      # (128 s; 24-30 s for 60 s), else 2 Timer F (64 s) plus 0-10 % before
      # it (registration::state::refresh_delay), and logs nothing when it
      # does: wait until every refresh is due
      local until
      until=$(awk -v t="$T1" -v e="$EXPIRES" 'BEGIN { printf "%.3f", t + (e >= 128 ? e - 64 : e * 0.5) + 2 }')
      while awk -v u="$until" -v n="$(now_s)" 'BEGIN { exit !(n < u) }'; do sleep 0.2; done
    else
      wait_ok "$dm" $((ok0 + 2 * N)) $((EXPIRES + 40))
    fi
    read -r c2 n2 <<<"$(tree_cpu "$pid")"; T2=$(now_s)
  fi
  local pss rss np; read -r pss rss np <<<"$(mem_kib "$pid")"
  [ -n "${SMAPS:-}" ] && { mkdir -p "$SMAPS"; cat "/proc/$pid/smaps" >"$SMAPS/$dm-N$N-rep$rep.smaps"; }
  local y1 z1 r1 win oth stl
  r1=$(registrars_cpu); y1=$(sys_busy_ticks); z1=$(sys_steal_ticks)
  read -r cz _ <<<"$(tree_cpu "$pid")"
  # the daemon started after W0: all of its CPU is inside the window
  win=$(elapsed "$W0" "$(now_s)")
  oth=$(others_frac $((y1 - y0)) $((cz + PROBE_TICKS + r1 - r0)) "$win")
  stl=$(others_frac $((z1 - z0)) 0 "$win")
  # the registrars first: their logs are complete once they exit, before
  # the daemon's unregistrations at shutdown
  local rp
  for rp in "${REGISTRAR_PIDS[@]}"; do stop_pid "$rp" 5; done
  stop_pid "$pid" 10
  local itx iok rtx rok bad
  read -r itx iok rtx rok bad <<<"$(registrar_counts)"
  awk -v dm="$dm" -v rep="$rep" -v N="$N" -v tall="$(elapsed "$Ts" "$T1")" -v reg="$iok" \
    -v itx="$itx" -v ic=$((c1 - c0)) -v ins=$((n1 - n0)) -v lns="$LOAD_NS" -v idle="$idle" \
    -v rw="$(elapsed "$T1" "$T2")" -v rfd="$rok" -v rtx="$rtx" -v rc=$((c2 - c1)) -v rns=$((n2 - n1)) \
    -v to="$bad" -v pss="$pss" -v rss="$rss" -v regc=$((r1 - r0)) -v hz="$CLK_TCK" \
    -v l1="$(load1)" -v oth="$oth" -v stl="$stl" -v sns="$STORE_NS" 'BEGIN {
      ics = ic / hz; rcs = rc / hz
      printf "%s\t%d\t%d\t%.3f\t%d\t%d\t%.2f\t%.4f\t%.4f\t%.3f\t%.6f\t%.1f\t%d\t%d\t%.4f\t%.4f\t%.4f\t%d\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%.3f\n",
        dm, rep, N, tall, reg, itx, ics, itx ? ics / itx * 1000 : 0, itx ? ins / 1e9 / itx * 1000 : 0, lns / 1e9, idle,
        rw, rfd, rtx, rtx ? rcs / rtx * 1000 : 0, rtx ? (rcs - idle * rw) / rtx * 1000 : 0,
        rtx ? (rns / 1e9 - idle * rw) / rtx * 1000 : 0, to, pss / 1024, rss / 1024, pss / N, rss / N,
        regc / hz, l1, oth, stl, sns / 1e9 }' >>"$OUT"
  tail -n 1 "$OUT" >&2
}

log "register bench: N=$N reps=$REPS expires=$EXPIRES refresh=$REFRESH daemons=$DAEMONS -> $OUT"
for ((r = 1; r <= REPS; r++)); do
  for dm in $DAEMONS; do one_rep "$dm" "$r"; done
done

colv() { # DAEMON COLUMN -> values over the reps
  awk -F'\t' -v d="$1" -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next } $1 == d { print $k }' "$OUT" | tr '\n' ' '
}
for dm in $DAEMONS; do
  s=$(med "$(colv "$dm" steal_frac)"); o=$(med "$(colv "$dm" others_cpu_frac)")
  sec="register N=$N"
  emit_fig "$FIGS" "$sec" "time to all registered" "$dm" s "$(colv "$dm" t_all_reg_s)" "$s" "$o"
  emit_fig "$FIGS" "$sec" "CPU start-up + loading N connections (before any REGISTER)" "$dm" cpu-s "$(colv "$dm" load_sched_s)" "$s" "$o"
  emit_fig "$FIGS" "$sec" "CPU start-up, N connections already in the store (Kamailio: the same figure)" "$dm" cpu-s "$(colv "$dm" store_load_sched_s)" "$s" "$o"
  emit_fig "$FIGS" "$sec" "CPU / 1000 REGISTER txn, initial (minus load)" "$dm" cpu-s "$(colv "$dm" init_sched_s_per_1k_txn)" "$s" "$o"
  if [ "$REFRESH" = 1 ]; then
    emit_fig "$FIGS" "$sec" "CPU / 1000 REGISTER txn, refresh (minus idle)" "$dm" cpu-s "$(colv "$dm" refresh_sched_s_per_1k_txn_minus_idle)" "$s" "$o"
    emit_fig "$FIGS" "$sec" "accounts refreshed" "$dm" n "$(colv "$dm" refreshed)" "$s" "$o"
  fi
  emit_fig "$FIGS" "$sec" "idle CPU with N registered" "$dm" cpu-s/s "$(colv "$dm" idle_cpu_s_per_s)" "$s" "$o"
  emit_fig "$FIGS" "$sec" "PSS per registered connection" "$dm" KiB "$(colv "$dm" pss_kib_per_conn)" "$s" "$o"
  emit_fig "$FIGS" "$sec" "RSS per registered connection" "$dm" KiB "$(colv "$dm" rss_kib_per_conn)" "$s" "$o"
  emit_fig "$FIGS" "$sec" "registrar: bad digests" "$dm" n "$(colv "$dm" bad_digests)" "$s" "$o"
done
log "raw rows: $OUT"
