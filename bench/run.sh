#!/usr/bin/env bash
# uacd vs Kamailio, the whole benchmark in one run (see README, Benchmarks):
# registration scale, calls per second (fixed rates + max clean rate),
# failover latency. Prints one table (min / median / max over the reps, the
# ratio uacd/Kamailio of the medians, the machine's steal and other load)
# and writes every raw row and the table as TSV under bench/results/<stamp>/.
#
# Usage: bench/run.sh [--quick] [--n N]
#   default  N=10000 accounts with one refresh cycle, 3 reps; calls at 200,
#            500, 1000 calls/s for 8 s, 3 reps; max clean rate from 1000 in
#            250-cps steps of 5 s, 3 reps; failover 5 calls per case
#            (about 14 min on 2 cores)
#   --quick  N=1000 without the refresh cycle, 1 rep; calls at 1000 calls/s
#            for 5 s, 1 rep; max clean rate 1 rep in 1000-cps steps of 3 s;
#            failover 2 calls per case
#            (< 2 min)
#   --n N    number of accounts. Above 20000 the registration part uses
#            4 SIPp registrars, EXPIRES=300, RATE=2000, WAIT_S=600 and
#            Kamailio SHM_MB=4096 unless set (one registrar saturates, and a
#            60 s expiry would ask for N/30 refreshes a second): allow ~6 min
#            per rep and daemon
# Env: REPS, RATES, DUR, SKIP="register proxy max failover" (any of them)
set -u
cd "$(dirname "$0")"
. ./lib.sh

QUICK=0; N=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --n) N=$2; shift ;;
    *) die "usage: bench/run.sh [--quick] [--n N]" ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  N=${N:-1000}; REPS=${REPS:-1}; RATES=${RATES:-"1000"}; DUR=${DUR:-5}; REFRESH=0; FO_CALLS=2; MAX_REPS=1; MAX_DUR=3; MAX_START=1000; MAX_STEP=1000
else
  N=${N:-10000}; REPS=${REPS:-3}; RATES=${RATES:-"200 500 1000"}; DUR=${DUR:-8}; REFRESH=1; FO_CALLS=5; MAX_REPS=$REPS; MAX_DUR=5; MAX_START=1000; MAX_STEP=250
fi
if [ "$N" -gt 20000 ]; then
  export REGISTRARS=${REGISTRARS:-4} EXPIRES=${EXPIRES:-300} RATE=${RATE:-2000} WAIT_S=${WAIT_S:-600} \
    SHM_MB=${SHM_MB:-4096}
fi
SKIP=${SKIP:-}
export STAMP; STAMP=$(date -u +%Y%m%dT%H%M%SZ)
export RESULTS_DIR="$BENCH_DIR/results/$STAMP"
mkdir -p "$RESULTS_DIR"
export FIGS="$RESULTS_DIR/figures.tsv"
# Build once here (a stale binary must never be measured), then the parts
# skip their own build.
build_uacd
export NO_BUILD=1
T_START=$SECONDS
S0=$(sys_steal_ticks); B0=$(sys_busy_ticks); W0=$(now_s)
log "bench run $STAMP: N=$N reps=$REPS rates=$RATES dur=${DUR}s quick=$QUICK load1=$(load1) -> $RESULTS_DIR"
skip() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }
skip register || REFRESH=$REFRESH ./register.sh "$N" "$REPS" || log "register.sh failed"
skip proxy || ./proxy.sh rates "$RATES" "$DUR" "$REPS" || log "proxy.sh rates failed"
skip max || ./proxy.sh max "$MAX_START" "$MAX_STEP" "$MAX_DUR" "$MAX_REPS" || log "proxy.sh max failed"
skip failover || ./failover.sh "$FO_CALLS" || log "failover.sh failed"
S1=$(sys_steal_ticks); B1=$(sys_busy_ticks); W1=$(now_s)

TABLE="$RESULTS_DIR/table.tsv"
[ -s "$FIGS" ] || die "no figures were produced"
# one line per (section, metric): uacd min/med/max, Kamailio min/med/max, ratio of medians
awk -F'\t' 'NR > 1 {
    k = $1 SUBSEP $2
    if (!(k in seen)) { seen[k] = 1; order[++n] = k; sec[k] = $1; met[k] = $2; unit[k] = $4 }
    v[k, $3] = $5 " / " $6 " / " $7; m[k, $3] = $6; st[k, $3] = $8; ot[k, $3] = $9
  }
  END {
    printf "section\tmetric\tunit\tuacd min / med / max\tkamailio min / med / max\tratio uacd/kamailio (medians)\tsteal uacd · kam\tothers uacd · kam\n"
    for (i = 1; i <= n; i++) {
      k = order[i]
      u = ((k, "uacd") in v) ? v[k, "uacd"] : "-"
      ka = ((k, "kamailio") in v) ? v[k, "kamailio"] : "-"
      r = "-"
      if (((k, "uacd") in m) && ((k, "kamailio") in m) && m[k, "kamailio"] + 0 != 0) r = sprintf("%.2f", m[k, "uacd"] / m[k, "kamailio"])
      printf "%s\t%s\t%s\t%s\t%s\t%s\t%s · %s\t%s · %s\n", sec[k], met[k], unit[k], u, ka, r,
        st[k, "uacd"], ((k, "kamailio") in st) ? st[k, "kamailio"] : "-", ot[k, "uacd"], ((k, "kamailio") in ot) ? ot[k, "kamailio"] : "-"
    }
  }' "$FIGS" >"$TABLE"

STEAL=$(awk -v s=$((S1 - S0)) -v w="$(elapsed "$W0" "$W1")" -v n="$(nproc)" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", s / (w * n * hz) }')
BUSY=$(awk -v s=$((B1 - B0)) -v w="$(elapsed "$W0" "$W1")" -v n="$(nproc)" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", s / (w * n * hz) }')
{
  echo
  echo "== uacd vs Kamailio $(kamailio -v 2>/dev/null | awk 'NR == 1 { print $3 }') (fm allocator), $(date -u +%F), $(nproc) cores, run $STAMP =="
  echo "N=$N accounts, reps=$REPS, rates: $RATES calls/s x ${DUR} s; wall $((SECONDS - T_START)) s;" \
    "machine over the run: steal $STEAL of all CPU, busy $BUSY (ours included), load1 now $(load1)"
  echo "steal / others = median over the reps of the hypervisor's steal and other processes' CPU, as fractions of the machine"
  column -t -s $'\t' "$TABLE"
  echo "TSV: $TABLE (raw rows beside it)"
} | tee "$RESULTS_DIR/table.txt"
