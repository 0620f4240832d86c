#!/usr/bin/env bash
# First probe of registration cost (uacd only; the benchmark issue adds the
# Kamailio side by side). N connections from one uacd (release build) to a
# SIPp registrar that challenges and verifies every REGISTER; expiry 60 s so
# one refresh cycle happens inside the run. Prints time to all registered,
# uacd CPU-seconds per 1000 REGISTER transactions (initial burst and one
# refresh cycle), RSS/PSS per connection, and the machine's steal.
# Usage: bench/register-probe.sh [N=1000] [REGISTRAR_SCENARIO]
#   REGISTRAR_SCENARIO defaults to ../shared/anchors/sipp/registrar-uas.xml
#   (any SIPp UAS that loops on REGISTER with 401 + verifyauth + 200).
# Binds 127.0.0.90 (uacd) and 127.0.0.91 (SIPp) only; stops both by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
SCEN=${2:-../shared/anchors/sipp/registrar-uas.xml}
[ -f "$SCEN" ] || { echo "registrar scenario $SCEN not found" >&2; exit 1; }
cargo build --release --quiet
WD=$(mktemp -d /tmp/uacd-probe.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
steal() { awk '$1 == "cpu" { print $9; exit }' /proc/stat; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/$3"; }

{
  printf '[sip]\nlisten = ["udp:127.0.0.90:5060"]\n[api]\nlisten = "127.0.0.1:0"\n'
  printf '[[api.tokens]]\ntoken = "bench-token-0123456"\nuser_id = "1"\n'
  printf '[registration]\nmax_register_rate_per_sec = 2000\n'
  for i in $(seq 1 "$N"); do
    printf '[[connection]]\nid = "c%d"\nconnection_name = "c%d"\nuser_name = "u%d"\n' "$i" "$i" "$i"
    printf '[connection.external_uac_settings]\nproxy = "sip:127.0.0.91:5075"\nusername = "u%d"\npassword = "s3cret"\nexpiration_sec = 60\n' "$i"
  done
} >"$WD/uacd.toml"

(cd "$WD" && exec sipp -sf "$(realpath "$OLDPWD/$SCEN")" -i 127.0.0.91 -p 5075 -key realm probe.test \
  -set pw s3cret -nostdin -max_socket 65000 >"$WD/sipp.out" 2>&1) &
PIDS+=($!)
sleep 0.5
RUST_LOG=uacd=info ./target/release/uacd run --config "$WD/uacd.toml" 2>"$WD/uacd.log" &
UPID=$!; PIDS+=("$UPID")
t0=$(date +%s.%N); s0=$(steal)
for _ in $(seq 1 600); do
  n=$(grep -c 'status=success' "$WD/uacd.log" || true)
  [ "$n" -ge "$N" ] && break
  sleep 0.1
done
t1=$(date +%s.%N); c1=$(ticks "$UPID"); s1=$(steal)
[ "$n" -ge "$N" ] || { echo "only $n/$N registered; see $WD" >&2; exit 1; }
rss1=$(kib "$UPID" VmRSS status); pss1=$(kib "$UPID" Pss smaps_rollup)
# One refresh cycle: with expiry 60 s refreshes land 24-30 s after the 200.
sleep 35
c2=$(ticks "$UPID"); s2=$(steal)
rss2=$(kib "$UPID" VmRSS status); pss2=$(kib "$UPID" Pss smaps_rollup)
awk -v n="$N" -v t0="$t0" -v t1="$t1" -v c1="$c1" -v c2="$c2" -v hz="$HZ" \
    -v rss1="$rss1" -v pss1="$pss1" -v rss2="$rss2" -v pss2="$pss2" -v s0="$s0" -v s1="$s1" -v s2="$s2" 'BEGIN {
  txn = 2 * n   # 401 + authenticated REGISTER per registration and per refresh
  printf "N=%d connections\n", n
  printf "time to all registered      %.2f s\n", t1 - t0
  printf "CPU s / 1000 REGISTER txn   initial %.4f   refresh cycle %.4f\n", (c1 / hz) / txn * 1000, ((c2 - c1) / hz) / txn * 1000
  printf "RSS / PSS after register    %.1f / %.1f MiB   after refresh %.1f / %.1f MiB\n", rss1/1024, pss1/1024, rss2/1024, pss2/1024
  printf "RSS per connection          %.2f KiB (whole process / N, upper bound)\n", rss2 / n
  printf "steal ticks during run      %d (register) %d (refresh window)\n", s1 - s0, s2 - s1
}'
