#!/usr/bin/env bash
# The Debian package as an operator meets it, on this machine (root or sudo;
# CI has no systemd as PID 1, so the unit's ExecStart is run by hand as the
# unit's User=): build it around the debug build, lintian, dpkg -i, check
# files, owners and modes, `uacd check-config` as the uacd user, ExecStart as
# that user until /healthz answers with the generated token, then purge and
# check that purge removed what the package made. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> package: %s\n' "$*" >&2; }
fail() { printf 'package test FAILED: %s\n' "$*" >&2; exit 1; }
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

if dpkg-query -W -f='${Status}' uacd 2>/dev/null | grep -q 'install ok installed'; then
  fail "a uacd package is already installed here; this test would replace and purge it"
fi

deb=$(scripts/package.sh --dev | tail -1)
log "built $deb"

log "lintian"
# Overrides, each explained in pkg/lintian-overrides.
if ! out=$(lintian --fail-on error,warning --tag-display-limit 0 "$deb" 2>&1); then
  printf '%s\n' "$out" >&2
  fail "lintian"
fi

pid=""
cleanup() {
  [ -n "$pid" ] && $sudo kill "$pid" 2>/dev/null || true
  $sudo env DEBIAN_FRONTEND=noninteractive dpkg --purge uacd >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "dpkg -i"
$sudo env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null

expect_stat() { # path owner:group mode
  local got
  got=$($sudo stat -c '%U:%G %a' "$1") || fail "$1 missing"
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect_stat /usr/bin/uacd root:root 755
expect_stat /etc/uacd/uacd.toml root:uacd 640
expect_stat /etc/uacd/api-token root:uacd 640
expect_stat /var/lib/uacd uacd:uacd 700
unit=$(dpkg -L uacd | grep -E '/systemd/system/uacd\.service$') || fail "no unit in the package"
expect_stat "$unit" root:root 644
dpkg-query -W -f='${Conffiles}\n' uacd | grep -q ' /etc/uacd/uacd.toml ' || fail "uacd.toml is not a conffile"
getent passwd uacd | grep -q ':/usr/sbin/nologin$' || fail "the uacd user has a login shell: $(getent passwd uacd)"
grep -qx 'User=uacd' "$unit" || fail "the unit does not run as uacd"
[ "$(wc -c </etc/uacd/api-token)" -ge 32 ] || fail "the generated token is short"

log "check-config as uacd"
$sudo runuser -u uacd -- /usr/bin/uacd check-config --config /etc/uacd/uacd.toml

exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
log "ExecStart as uacd: $exec_start"
# shellcheck disable=SC2086 # ExecStart is a command line
$sudo env RUST_LOG=info setpriv --reuid=uacd --regid=uacd --init-groups $exec_start \
  >/tmp/uacd-package-test.log 2>&1 &
pid=$!
python3 - <<'PY' || { tail -20 /tmp/uacd-package-test.log >&2; fail "/healthz did not answer"; }
import time, urllib.request
token = open("/etc/uacd/api-token").read().strip()
deadline = time.time() + 30
while True:
    try:
        req = urllib.request.Request("http://127.0.0.1:8080/healthz", headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(req, timeout=2) as r:
            if r.status == 200:
                break
    except Exception as e:
        if time.time() > deadline:
            raise SystemExit(f"healthz: {e}")
    time.sleep(0.2)
PY
expect_stat /var/lib/uacd/uacd.db uacd:uacd 600
$sudo kill -TERM "$pid"
wait "$pid" || fail "the daemon exited non-zero on SIGTERM: $(tail -5 /tmp/uacd-package-test.log)"
pid=""

log "dpkg --purge"
$sudo env DEBIAN_FRONTEND=noninteractive dpkg --purge uacd >/dev/null
for gone in /usr/bin/uacd /etc/uacd/uacd.toml /etc/uacd/api-token /var/lib/uacd "$unit" \
  /etc/systemd/system/multi-user.target.wants/uacd.service; do
  [ ! -e "$gone" ] || fail "$gone is still there after purge"
done
trap - EXIT
log "ok"
