# shellcheck shell=bash
# Shared helpers for the bench scripts (sourced, not executed). Adapted from
# the project's Kamailio anchor harness.
# Everything here works on PIDs this harness started itself; nothing is
# looked up or killed by process name.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
SIPP_DIR="$BENCH_DIR/sipp"
KAM_DIR="$BENCH_DIR/kamailio"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
UACD_BIN="${UACD_BIN:-$CARGO_TARGET_DIR/release/uacd}"
CLK_TCK="$(getconf CLK_TCK)"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# The Debian packages the benchmarks run (package:probe), installed with
# apt when missing, as scripts/test.sh installs the test peers; a fresh
# machine lacks kamailio-sqlite-modules (Kamailio's uacreg table) even
# after the test suite ran.
BENCH_PACKAGES=(sip-tester:sipp curl:curl python3:python3 sqlite3:sqlite3 util-linux:setpriv
  kamailio:kamailio kamailio-utils-modules:/usr/lib/x86_64-linux-gnu/kamailio/modules/utils.so
  kamailio-sqlite-modules:/usr/lib/x86_64-linux-gnu/kamailio/modules/db_sqlite.so)

# need CMD...: the bench packages installed (once per run), then each CMD on PATH.
need() {
  if [ -z "${BENCH_PACKAGES_OK:-}" ]; then
    # A subshell: setup-lib.sh has its own log().
    (. "$REPO_DIR/scripts/setup-lib.sh" && ensure_packages "${BENCH_PACKAGES[@]}" "${EXTRA_PACKAGES[@]}") ||
      die "could not install the bench's packages: ${BENCH_PACKAGES[*]%%:*} ${EXTRA_PACKAGES[*]%%:*}"
    export BENCH_PACKAGES_OK=1
  fi
  case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac
  local b
  for b in "$@"; do command -v "$b" >/dev/null 2>&1 || die "missing $b after installing ${BENCH_PACKAGES[*]%%:*}"; done
}

# PIDs started by this script, stopped by stop_all on exit.
STARTED_PIDS=()
remember_pid() { STARTED_PIDS+=("$1"); [ -n "${PIDFILE_LIST:-}" ] && echo "$1" >>"$PIDFILE_LIST"; }

# pid_alive PID: true while PID exists and is not a zombie.
pid_alive() {
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$st" != "Z" ]
}

# stop_pid PID [grace_seconds]: SIGTERM, wait, then SIGKILL; only that PID.
stop_pid() {
  local pid=$1 grace=${2:-5} i
  pid_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < grace * 10; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null; fi
  wait "$pid" 2>/dev/null
  return 0
}

stop_all() {
  local i
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED_PIDS[$i]}" 5
  done
  STARTED_PIDS=()
}

# descendants PID: PID itself plus every descendant (from one `ps` snapshot;
# reading /proc/*/status with awk is not safe: mawk aborts when a short-lived
# process vanishes between the glob and the open).
descendants() {
  ps -e -o pid= -o ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      if (!(root in parent)) exit
      found[root] = 1; changed = 1
      while (changed) {
        changed = 0
        for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; changed = 1 }
      }
      for (p in found) print p
    }' | sort -n
}

# cpu_ticks PID...: sum of utime+stime (clock ticks) over the given PIDs.
cpu_ticks() {
  local p sum=0 t
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    # fields after the ")" of comm: state is $1, utime is $12, stime is $13
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# cpu_ns PID...: sum of on-CPU time in ns from /proc/PID/schedstat (precise
# cross-check of utime+stime, which the kernel samples per tick).
# Summed over every thread (/proc/PID/task/*/schedstat): /proc/PID/schedstat
# alone is the main thread only (uacd's tokio workers are threads).
cpu_ns() {
  local p sum=0 t f
  for p in "$@"; do
    for f in /proc/"$p"/task/*/schedstat; do
      [ -r "$f" ] || continue
      read -r t _ <"$f" 2>/dev/null || continue
      sum=$((sum + ${t:-0}))
    done
  done
  echo "$sum"
}
tree_cpu_ns() { cpu_ns $(descendants "$1"); }

# tree_cpu_ticks ROOTPID: CPU ticks of ROOTPID and all its descendants.
tree_cpu_ticks() { cpu_ticks $(descendants "$1"); }

# mem_kib ROOTPID: prints "pss_kib rss_kib nproc" summed over the process tree.
mem_kib() {
  local p pss=0 rss=0 n=0 a b
  for p in $(descendants "$1"); do
    [ -r "/proc/$p/smaps_rollup" ] || continue
    a=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")
    b=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup")
    pss=$((pss + ${a:-0})); rss=$((rss + ${b:-0})); n=$((n + 1))
  done
  echo "$pss $rss $n"
}

ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ip_hex A.B.C.D: the address as /proc/net/{udp,tcp} prints it (little endian).
ip_hex() { local IFS=.; set -- $1; printf '%02X%02X%02X%02X' "$4" "$3" "$2" "$1"; }
# wait_bound FILE TAIL IP PORT TIMEOUT_S: waits until /proc/net/FILE has a
# socket on IP:PORT whose line goes on with TAIL.
wait_bound() {
  local key i
  key="$(ip_hex "$3"):$(printf '%04X' "$4")"
  for ((i = 0; i < ${5:-10} * 10; i++)); do
    grep -q "^ *[0-9]*: $key $2" "/proc/net/$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# wait_udp / wait_tcp IP PORT TIMEOUT_S: something is bound (udp) or
# listening (tcp, state 0A) on IP:PORT.
wait_udp() { wait_bound udp "" "$@"; }
wait_tcp() { wait_bound tcp "00000000:0000 0A" "$@"; }
# addr_free IP PORT: nothing bound to IP:PORT (udp, or tcp listening).
addr_free() {
  local key
  key="$(ip_hex "$1"):$(printf '%04X' "$2")"
  ! awk -v k="$key" '$2 == k && (FILENAME ~ /udp/ || $4 == "0A") { f = 1 } END { exit !f }' \
    /proc/net/udp /proc/net/tcp 2>/dev/null
}

# stats MIN MEDIAN MAX of numbers on stdin (one per line).
min_med_max() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "n/a n/a n/a"; exit }
    med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%s %s %s\n", v[1], med, v[NR] }'
}

# start_kamailio CFG WORKDIR [extra args...]: starts Kamailio in the foreground
# mode (-DD: the creator process stays our child), logs to WORKDIR/kamailio.log,
# sets KAM_PID.
start_kamailio() {
  local cfg=$1 wd=$2; shift 2
  kamailio -f "$cfg" -c "$@" >"$wd/kamailio-check.log" 2>&1 || { cat "$wd/kamailio-check.log" >&2; die "kamailio config check failed: $cfg"; }
  kamailio -f "$cfg" -DD -E "$@" >"$wd/kamailio.log" 2>&1 &
  KAM_PID=$!
  remember_pid "$KAM_PID"
  echo "$KAM_PID" >"$wd/kamailio.pid"
}


# tree_cpu ROOTPID: prints "ticks ns" (utime+stime clock ticks, schedstat ns)
# summed over ROOTPID and its descendants, from one process list.
tree_cpu() {
  local pids
  pids=$(descendants "$1")
  # shellcheck disable=SC2086
  echo "$(cpu_ticks $pids) $(cpu_ns $pids)"
}

# kam_rpc CTLSOCK CMD...: kamcmd with a timeout.
kam_rpc() { local s=$1; shift; timeout 20 kamcmd -s "$s" "$@"; }

# tm_stat CTLSOCK FIELD: one integer from `kamcmd tm.stats`.
tm_stat() { kam_rpc "$1" tm.stats 2>/dev/null | awk -v f="$2" '$1 == f ":" { print $2 }'; }

# sys_busy_ticks: busy jiffies of all CPUs (user+nice+system+irq+softirq);
# sys_steal_ticks: jiffies the hypervisor gave to someone else (steal).
sys_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
sys_steal_ticks() { awk '$1 == "cpu" { print $9; exit }' /proc/stat; }
# others_frac BUSY_DELTA OUR_TICKS WINDOW_S: share of the machine (0..1) used by
# processes other than ours during the window (noise indicator).
others_frac() {
  awk -v b="$1" -v o="$2" -v w="$3" -v n="$(nproc)" -v hz="$CLK_TCK" \
    'BEGIN { f = (b - o) / (w * n * hz); if (f < 0) f = 0; printf "%.2f", f }'
}

# Make SIGINT/SIGTERM run the EXIT trap (which stops what we started).
# emit_fig FILE SECTION METRIC DAEMON UNIT VALUES STEAL OTHERS: one summary row
# (min median max of VALUES, a whitespace-separated list) for run.sh's table.
emit_fig() {
  local f=$1 sec=$2 met=$3 d=$4 unit=$5 vals=$6 stl=$7 oth=$8 mmm
  mmm=$(printf '%s\n' $vals | grep -v '^$' | min_med_max)
  [ -s "$f" ] || printf 'section\tmetric\tdaemon\tunit\tmin\tmedian\tmax\tsteal_frac_med\tothers_cpu_frac_med\n' >"$f"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sec" "$met" "$d" "$unit" "$(tr ' ' '\t' <<<"$mmm")" "$stl" "$oth" >>"$f"
}
# med VALUES: median of a whitespace-separated list.
med() { printf '%s\n' $1 | grep -v '^$' | min_med_max | awk '{ print $2 }'; }
# load1: the 1-minute load average.
load1() { awk '{ print $1 }' /proc/loadavg; }

# build_uacd: release build of uacd (CARGO_TARGET_DIR honoured).
build_uacd() {
  [ "${NO_BUILD:-0}" = 1 ] && [ -x "$UACD_BIN" ] && return 0
  (cd "$REPO_DIR" && cargo build --release --quiet) || die "cargo build --release failed"
  [ -x "$UACD_BIN" ] || die "no binary at $UACD_BIN"
}

# metric_sum URL NAME [LABEL_REGEX]: sum of a Prometheus metric's samples
# whose label set matches LABEL_REGEX (all samples without it).
metric_sum() {
  curl -s --max-time 5 "$1" | awk -v n="$2" -v re="${3:-.}" '
    index($0, n) == 1 && (substr($0, length(n) + 1, 1) == "{" || substr($0, length(n) + 1, 1) == " ") && $0 ~ re { s += $NF }
    END { printf "%d\n", s }'
}

trap 'exit 130' INT
trap 'exit 143' TERM

# start_uacd_registered WD SIP_SECTIONS DEST TIMEOUT_1XX: writes WD/uacd.toml
# (SIP_SECTIONS: the [sip] section and any other before [api]; then the API
# on UACD_IP:UACD_API, the store in WD and one connection, user "bench",
# registering to the SIPp registrar on CALLER_IP:REG_PORT with
# destination_uri DEST), starts uacd and waits (20 s at most) until it has
# registered. Sets UACD_PID.
start_uacd_registered() {
  local wd=$1 sections=$2 dest=$3 t1xx=$4 i ok=0
  cat >"$wd/uacd.toml" <<EOF
$sections
[api]
listen = "$UACD_IP:$UACD_API"
[[api.tokens]]
token = "bench-token-0123456"
user_id = "1"
[store]
path = "$wd/uacd.db"
[routing]
timeout_1xx_sec = $t1xx
[[connection]]
id = "c1"
connection_name = "bench PBX"
user_name = "bench"
[connection.external_uac_settings]
proxy = "sip:$CALLER_IP:$REG_PORT"
username = "acct000001"
password = "s3cret"
expiration_sec = 3600
[connection.internal_uac_settings]
destination_uri = "$dest"
EOF
  RUST_LOG=info "$UACD_BIN" run --config "$wd/uacd.toml" 2>"$wd/uacd.log" &
  UACD_PID=$!; remember_pid "$UACD_PID"
  for ((i = 0; i < 200; i++)); do
    ok=$(grep -c 'status=success' "$wd/uacd.log" 2>/dev/null)
    [ "${ok:-0}" -ge 1 ] && break
    sleep 0.1
  done
  [ "${ok:-0}" -ge 1 ] || die "uacd did not register (see $wd/uacd.log)"
}
