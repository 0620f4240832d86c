#!/usr/bin/env bash
# Builds the Debian package: target/debian/uacd_<version>_amd64.deb.
#   scripts/package.sh          a release build, then the package
#   scripts/package.sh --dev    the package around the existing debug build
#                               (what the test suite installs: same files,
#                               same scripts, no second compilation)
# Installs cargo-deb (pinned) into ~/.cargo/bin when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "==> installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi

mkdir -p target
gzip -9n -c pkg/changelog >target/debian-changelog.gz

case "${1:-}" in
  --dev)
    [ -x target/debug/uacd ] || cargo build --quiet
    cargo deb --no-build --profile dev --quiet
    ;;
  "") cargo deb --quiet ;;
  *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac
ls -1t target/debian/uacd_*.deb | head -1
