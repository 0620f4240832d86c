#!/usr/bin/env bash
# The one command that sets up and runs the whole uacd test suite on a fresh
# Debian 12 machine (root, apt reachable), and what .ci/run executes:
#   1. installs the interop peers with apt when missing (apt-get update only then):
#      sip-tester (SIPp), kamailio + tls + utils modules (kamcmd), openssl, python3
#   1b. installs schemathesis (PyPI, pinned) into .venv-test/ for the API contract test
#   2. makes sure rustfmt and clippy are installed (rustup component add)
#   3. cargo fmt --check, cargo clippy -D warnings, cargo test --all-targets,
#      cargo test --doc (there is a lib); fails on the first failure.
# Interop tests run with UACD_REQUIRE_PEERS=1: a missing peer fails them.
# Usage: scripts/test.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# --- 1. peers -------------------------------------------------------------
# package:command-that-proves-it
PEERS=(sip-tester:sipp kamailio:kamailio kamailio-tls-modules:/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so
  kamailio-utils-modules:/usr/lib/x86_64-linux-gnu/kamailio/modules/utils.so openssl:openssl python3:python3
  prometheus:promtool systemd:systemd-analyze)
missing=()
for entry in "${PEERS[@]}"; do
  pkg=${entry%%:*} probe=${entry#*:}
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    case $probe in
      /*) [ -e "$probe" ] || missing+=("$pkg") ;;
      *) command -v "$probe" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || { log "missing ${missing[*]} and no apt-get: install them by hand"; exit 1; }
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  log "installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# kamailio/kamcmd live in /usr/sbin
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac
for b in sipp kamailio kamcmd openssl promtool systemd-analyze; do
  command -v "$b" >/dev/null || { log "$b still missing after install"; exit 1; }
done

# --- 1b. schemathesis (contract test) --------------------------------------
# From PyPI into a venv of our own (Debian 12's python3 is externally managed),
# pinned; tests/api_contract.rs finds it through UACD_SCHEMATHESIS.
SCHEMATHESIS_VERSION=4.32.5
VENV=.venv-test
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    command -v apt-get >/dev/null || { log "python3-venv missing and no apt-get: install it by hand"; exit 1; }
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    log "installing python3-venv"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
export UACD_SCHEMATHESIS="$PWD/$VENV/bin/schemathesis"
"$UACD_SCHEMATHESIS" --version >/dev/null || { log "schemathesis does not run"; exit 1; }

# --- 2. toolchain components ----------------------------------------------
command -v cargo >/dev/null || { log "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || { log "rustup component add $c"; rustup component add "$c"; }
  done
fi

# --- 3. checks and tests ----------------------------------------------------
export UACD_REQUIRE_PEERS=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "cargo fmt --all -- --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

# Show the per-binary summaries ("test result: ...") even though the output is long.
run_tests() {
  local out rc
  out=$(mktemp)
  set +e
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  echo "---- summary: $* ----"
  grep -E '^(test result:|     Running|   Doc-tests)|FAILED|panicked' "$out" | grep -v '^test .* ok$' || true
  grep -E '^test result:' "$out" >>"$ALL_RESULTS" || true
  rm -f "$out"
  return "$rc"
}

ALL_RESULTS=$(mktemp)
trap 'rm -f "$ALL_RESULTS"' EXIT

log "cargo test --all-targets"
run_tests cargo test --all-targets "$@"

if [ -f src/lib.rs ]; then
  log "cargo test --doc"
  run_tests cargo test --doc "$@"
fi
log "all checks passed"
# One closing line with the totals over every test binary.
awk '{ for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$ALL_RESULTS"
