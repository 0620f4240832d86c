#!/usr/bin/env bash
# Proves tests/kamailio/registrar.cfg: starts Kamailio on 127.0.0.5 (udp+tcp 5060,
# tls 5061 with a self-signed cert made here), registers over all three transports
# with a stdlib Python REGISTER client (default: the anchors' sip_register.py; set
# SIP_REGISTER=/path to use another with the same flags), checks that a wrong
# password is refused, reads the binding and counters with kamcmd, and stops
# Kamailio by PID. Bounded (~5 s). Exit 0 = every check passed.
# Usage: tests/kamailio/selftest.sh        (KEEP_WD=1 keeps the temp dir)
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CFG="$HERE/registrar.cfg"
IP=127.0.0.5 PORT=5060 TLS_PORT=5061 PW=s3cret
SIP_REGISTER="${SIP_REGISTER:-$HERE/../../../shared/anchors/tools/sip_register.py}"
[ -f "$SIP_REGISTER" ] || SIP_REGISTER=/work/shared/anchors/tools/sip_register.py
for b in kamailio kamcmd openssl python3; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install kamailio kamailio-tls-modules kamailio-utils-modules openssl python3)"; exit 1; }
done
WD="$(mktemp -d "${TMPDIR:-/tmp}/uacd-kam-selftest.XXXXXX")"
KPID=""
stop() {
  if [ -n "$KPID" ]; then
    kill -TERM "$KPID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$KPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$KPID" 2>/dev/null; wait "$KPID" 2>/dev/null
  fi
  [ "${KEEP_WD:-0}" = 1 ] || rm -rf "$WD"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

hexaddr() { printf '%02X%02X%02X%02X:%04X' $(echo "$1" | awk -F. '{print $4, $3, $2, $1}') "$2"; }
wait_listen() { # proto ip port
  local h i; h=$(hexaddr "$2" "$3")
  for ((i = 0; i < 100; i++)); do
    if [ "$1" = udp ]; then grep -q " $h " /proc/net/udp && return 0
    else grep -q " $h 00000000:0000 0A " /proc/net/tcp && return 0; fi
    sleep 0.05
  done
  return 1
}

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pbx.test" \
  -keyout "$WD/key.pem" -out "$WD/cert.pem" >"$WD/openssl.log" 2>&1 || { cat "$WD/openssl.log"; exit 1; }
cat >"$WD/tls.cfg" <<TLS
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = $WD/key.pem
certificate = $WD/cert.pem

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
TLS
CTL="unix:$WD/kamailio_ctl"
ARGS=(-f "$CFG" -m 64 -M 8 -A "LISTEN_ADDR=$IP" -A "SIP_PORT=$PORT" -A "TLS_PORT=$TLS_PORT"
  -A "PASSWORD=\"$PW\"" -A "CTLSOCK=\"$CTL\"" -A WITH_TLS -A "TLSCFG=\"$WD/tls.cfg\"")
kamailio "${ARGS[@]}" -c >"$WD/check.log" 2>&1 || { cat "$WD/check.log"; exit 1; }
kamailio "${ARGS[@]}" -DD -E >"$WD/kamailio.log" 2>&1 &
KPID=$!
wait_listen udp $IP $PORT && wait_listen tcp $IP $PORT && wait_listen tcp $IP $TLS_PORT \
  || { echo "Kamailio did not come up"; tail -30 "$WD/kamailio.log"; exit 1; }

PASS=0 FAIL=0
check() { if [ "$2" = "$3" ]; then PASS=$((PASS + 1)); echo "PASS  $1"; else FAIL=$((FAIL + 1)); echo "FAIL  $1 (got $2)"; fi; }
reg() { # transport user password
  python3 "$SIP_REGISTER" --transport "$1" --host $IP --port "$([ "$1" = tls ] && echo $TLS_PORT || echo $PORT)" \
    --domain pbx.test --user "$2" --password "$3" --contact "sip:$2@127.0.0.6:5099;transport=$1" --expires 120 \
    --timeout 5 >>"$WD/reg.log" 2>&1
}
reg udp alice wrong; check "UDP REGISTER with a wrong password is refused" $? 1
reg udp alice $PW;   check "UDP REGISTER with digest -> 200" $? 0
reg tcp bob $PW;     check "TCP REGISTER with digest -> 200" $? 0
reg tls carol $PW;   check "TLS REGISTER with digest -> 200" $? 0
kamcmd -s "$CTL" ul.dump >"$WD/ul.txt" 2>&1
for u in alice bob carol; do
  grep -q "Address: sip:$u@127.0.0.6:5099" "$WD/ul.txt"; check "ul.dump has $u's binding" $? 0
done
grep -q "Expires: 1[12][0-9]" "$WD/ul.txt"; check "ul.dump shows the granted expiry (120)" $? 0
kamcmd -s "$CTL" stats.get_statistics usrloc: >"$WD/stats.txt" 2>&1
n=$(awk -F' = ' '/usrloc:registered_users/ {print $2}' "$WD/stats.txt")
check "usrloc:registered_users = 3" "${n:-none}" 3
echo "kamailio registrar selftest: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
