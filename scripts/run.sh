#!/usr/bin/env bash
# Runs the daemon on the example config (config/uacd.toml: SIP on
# 127.0.0.1:5060, the API on 127.0.0.1:8080, the store in config/uacd.db),
# on a fresh Debian 12 machine too: the C toolchain and Rust are installed
# first when missing, with the same logic as scripts/test.sh.
# Usage: scripts/run.sh [extra uacd run arguments, e.g. --log-format json]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-lib.sh

ensure_packages "${C_TOOLCHAIN[@]}"
ensure_rust
exec cargo run --release --quiet -- run --config config/uacd.toml "$@"
