#!/usr/bin/env bash
# Validates sipp-scenarios/registrar-*.xml without uacd: each registrar runs against
# sipp-scenarios/uac-register.xml, once behaving (registrar must exit 0) and once
# misbehaving in the way the registrar is meant to catch (registrar must exit non-zero).
# Traffic: 127.0.0.62 (registrar, udp 5060) <-> 127.0.0.63 (UAC, udp 5070). ~1 min.
# Usage: scripts/sipp-selftest.sh [NAME_FILTER]     exit 0 = every case as expected
set -uo pipefail
cd "$(dirname "$0")/.."
S="$PWD/sipp-scenarios"
WD="$(mktemp -d "${TMPDIR:-/tmp}/uacd-sipp-selftest.XXXXXX")"
REG_IP=127.0.0.62 UAC_IP=127.0.0.63 PORT=5060
FILTER="${1:-}"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_udp IP PORT: until something is bound there (/proc/net/udp, hex little-endian IP).
wait_udp() {
  local hex i
  hex=$(printf '%02X%02X%02X%02X:%04X' $(echo "$1" | awk -F. '{print $4, $3, $2, $1}') "$2")
  for ((i = 0; i < 100; i++)); do
    grep -q " $hex " /proc/net/udp && return 0
    sleep 0.05
  done
  return 1
}

PASS=0 FAIL=0
# case NAME EXPECT(0|nonzero) REGISTRAR "registrar args" "uac args"
case_() {
  local name=$1 expect=$2 reg=$3 rargs=$4 uargs=$5 d rc got
  [[ -n "$FILTER" && "$name" != *"$FILTER"* ]] && return 0
  d="$WD/$name"; mkdir -p "$d"
  # shellcheck disable=SC2086
  (cd "$d" && exec sipp -sf "$S/$reg.xml" -i $REG_IP -p $PORT -key realm pbx.test -set pw s3cret \
    -m 1 -nostdin -timeout 30 -timeout_error -trace_err -trace_msg -trace_logs $rargs >registrar.out 2>&1) &
  local rp=$!; PIDS+=("$rp")
  wait_udp $REG_IP $PORT || { echo "FAIL  $name: registrar did not bind"; FAIL=$((FAIL + 1)); return; }
  # shellcheck disable=SC2086
  (cd "$d" && exec sipp -sf "$S/uac-register.xml" $REG_IP:$PORT -i $UAC_IP -p 5070 -s alice -au alice \
    -key domain pbx.test -m 1 -nostdin -timeout 20 -timeout_error -trace_err -trace_msg $uargs >uac.out 2>&1) &
  local up=$!; PIDS+=("$up")
  wait "$rp"; rc=$?
  kill "$up" 2>/dev/null; wait "$up" 2>/dev/null
  PIDS=()
  if [ "$rc" = 0 ]; then got=0; else got=nonzero; fi
  if [ "$got" = "$expect" ]; then
    PASS=$((PASS + 1)); printf 'PASS  %-34s registrar exit %s\n' "$name" "$rc"
  else
    FAIL=$((FAIL + 1)); printf 'FAIL  %-34s registrar exit %s, expected %s (logs: %s)\n' "$name" "$rc" "$expect" "$d"
  fi
  grep -h "CHECK FAILED\|Regexp\|regexp" "$d"/registrar*errors.log 2>/dev/null | sed 's/^/        /' | cut -c1-160 | head -3
}

G="-key expires_grant 3"
R="-set refreshes 2 -set refresh_ms 300"
case_ digest-ok                 0       registrar-digest "$G" "-ap s3cret $R"
case_ digest-wrong-password     nonzero registrar-digest "$G" "-ap wrong $R"
case_ digest-to-tag             nonzero registrar-digest "$G" "-ap s3cret $R -set to_extra ;tag=x"
case_ digest-two-contacts       nonzero registrar-digest "$G" "-ap s3cret $R -set contact_extra ,<sip:x@127.0.0.1>"
case_ digest-cseq-decreases     nonzero registrar-digest "$G" "-ap s3cret $R -set cseq_suffix 9"
case_ digest-new-call-id        nonzero registrar-digest "$G" "-ap s3cret $R -set cid_refresh_suffix x"
case_ digest-late-refresh       nonzero registrar-digest "-key expires_grant 1" "-ap s3cret -set refreshes 1 -set refresh_ms 1300"
case_ 423-ok                    0       registrar-423 "" "-ap s3cret -set exp 60"
case_ 423-no-short-expiry       nonzero registrar-423 "" "-ap s3cret -set exp 300"
case_ stale-ok                  0       registrar-stale "" "-ap s3cret"
case_ reject-wrong-password     0       registrar-reject "" "-ap wrong"
case_ reject-right-password     nonzero registrar-reject "" "-ap s3cret"
case_ same-nonce-gives-up       0       registrar-same-nonce "" "-ap s3cret"
case_ same-nonce-retries        nonzero registrar-same-nonce "" "-ap s3cret -set retry_same_nonce 1"
case_ unregister-ok             0       registrar-unregister "" "-ap s3cret -set exp 3600 -set unregister 1"
case_ unregister-none           nonzero registrar-unregister "" "-ap s3cret -set exp 3600"

echo "sipp scenario selftest: $PASS passed, $FAIL failed (work dir $WD)"
[ "$FAIL" = 0 ]
