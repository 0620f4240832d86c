# Shared by scripts/test.sh and scripts/run.sh (sourced, not run): what a
# fresh Debian 12 machine needs installed, installed only when missing.

log() { printf '==> %s\n' "$*" >&2; }

# apt_install PKG...: as root, or through sudo.
apt_install() {
  command -v apt-get >/dev/null || { log "missing $* and no apt-get: install them by hand"; exit 1; }
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  log "installing $*"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_packages PKG:PROBE...: installs (in one apt call) each package whose
# probe (a command, or an absolute path) is missing.
ensure_packages() {
  local missing=() entry pkg probe
  for entry in "$@"; do
    pkg=${entry%%:*} probe=${entry#*:}
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      case $probe in
        /*) [ -e "$probe" ] || missing+=("$pkg") ;;
        *) command -v "$probe" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg") ;;
      esac
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
}

# The C toolchain that ring and the bundled SQLite build with.
C_TOOLCHAIN=(gcc:cc libc6-dev:/usr/include/stdio.h)

# ensure_rust [COMPONENT...]: cargo on PATH (rustup, stable, minimal profile,
# when there is none: Debian's rustc is too old for edition 2024), with the
# given rustup components.
ensure_rust() {
  [ -x "$HOME/.cargo/bin/cargo" ] && case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
  if ! command -v cargo >/dev/null; then
    command -v curl >/dev/null || apt_install curl ca-certificates
    log "installing Rust (rustup, stable, minimal profile)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
      sh -s -- -y --quiet --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if [ "$#" -gt 0 ] && command -v rustup >/dev/null; then
    local c
    for c in "$@"; do
      rustup component list --installed 2>/dev/null | grep -q "^$c" || { log "rustup component add $c"; rustup component add "$c"; }
    done
  fi
}
