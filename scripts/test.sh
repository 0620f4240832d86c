#!/usr/bin/env bash
# The one command that sets up and runs the whole uacd test suite on a fresh
# Debian 12 machine (root, apt reachable), and what .ci/run executes:
#   1. installs with apt what is missing (apt-get update only then): a C
#      toolchain (gcc, libc6-dev: ring and the bundled SQLite build C), the
#      interop peers sip-tester (SIPp), kamailio + tls + utils modules
#      (kamcmd), dnsmasq-base (the dnsmasq binary without the package that
#      starts it as the system's resolver), openssl, prometheus (promtool),
#      systemd (systemd-analyze), lintian, python3 + python3-venv
#   1b. installs schemathesis (PyPI, pinned) into .venv-test/ for the API contract test
#   2. installs Rust with rustup when there is no cargo (Debian's rustc is too
#      old for edition 2024), and rustfmt and clippy
#   3. cargo fmt --check, scripts/check-layout.py (module imports and file
#      sizes), cargo clippy -D warnings, cargo test --all-targets,
#      cargo test --doc (there is a lib), then scripts/package-test.sh (the
#      Debian package built with cargo-deb, installed, run as its user,
#      purged); fails on the first failure.
#   4. scripts/fuzz.sh smoke: every fuzz target (fuzz/) for 20 s under
#      libFuzzer; fails on a crash, panic, hang or OOM (needs g++, step 1).
#      Skipped when test names are given (a filtered run).
# Interop tests fail (never skip) when a peer is missing.
# Usage: scripts/test.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/setup-lib.sh

# --- 1. peers -------------------------------------------------------------
# package:command-that-proves-it
PEERS=(g++:c++ sip-tester:sipp kamailio:kamailio kamailio-tls-modules:/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so
  kamailio-utils-modules:/usr/lib/x86_64-linux-gnu/kamailio/modules/utils.so dnsmasq-base:/usr/sbin/dnsmasq
  openssl:openssl python3:python3 prometheus:promtool systemd:systemd-analyze lintian:lintian
  postgresql:/usr/lib/postgresql/15/bin/postgres util-linux:setpriv)
ensure_packages "${C_TOOLCHAIN[@]}" "${PEERS[@]}"
# kamailio/kamcmd live in /usr/sbin
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac
for b in sipp kamailio kamcmd dnsmasq openssl promtool systemd-analyze lintian; do
  command -v "$b" >/dev/null || { log "$b still missing after install"; exit 1; }
done

# --- 1b. schemathesis (contract test) --------------------------------------
# From PyPI into a venv of our own (Debian 12's python3 is externally managed),
# pinned; tests/api_contract.rs finds it through UACD_SCHEMATHESIS.
SCHEMATHESIS_VERSION=4.32.5
VENV=.venv-test
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
export UACD_SCHEMATHESIS="$PWD/$VENV/bin/schemathesis"
"$UACD_SCHEMATHESIS" --version >/dev/null || { log "schemathesis does not run"; exit 1; }

# --- 2. toolchain components ----------------------------------------------
ensure_rust rustfmt clippy

# --- 3. checks and tests ----------------------------------------------------
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "cargo fmt --all -- --check"
cargo fmt --all -- --check

log "scripts/check-layout.py (no import cycle among src/ modules, no file over 800 lines)"
python3 scripts/check-layout.py

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
log "scripts/package-test.sh (the Debian package, installed and run as its user)"
scripts/package-test.sh

# --- 4. fuzz smoke ----------------------------------------------------------
if [ $# -eq 0 ]; then
  log "scripts/fuzz.sh smoke (every fuzz target, ${FUZZ_SMOKE_SECONDS:-20} s each)"
  scripts/fuzz.sh smoke
fi

log "all checks passed"
# One closing line with the totals over every test binary.
awk '{ for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$ALL_RESULTS"
