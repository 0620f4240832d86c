#!/usr/bin/env bash
# Coverage-guided fuzzing of uacd on stable Rust: libFuzzer (the libfuzzer-sys
# crate builds it from source with the C++ compiler) over binaries that rustc
# instruments with SanitizerCoverage (`-Cpasses=sancov-module` and
# `-Cllvm-args=...`, stable codegen options; no nightly, no cargo-fuzz, no
# cargo install). Targets are in fuzz/fuzz_targets/, their seed corpora in
# fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh smoke                 every target for FUZZ_SMOKE_SECONDS
#                                         (default 20; 5 targets: 100 s in all);
#                                         fails on any crash, panic, hang or OOM
#   scripts/fuzz.sh long TARGET N         N executions (e.g. 10000000), or N
#                                         seconds with an `s` suffix (e.g. 3600s);
#                                         new inputs go to fuzz/work/TARGET/
#   scripts/fuzz.sh cmin TARGET [work]    minimises fuzz/corpus/TARGET (libFuzzer
#                                         -merge=1), taking in fuzz/work/TARGET's
#                                         finds too with `work`
#   scripts/fuzz.sh repro TARGET FILE...  runs the target on saved inputs
#   scripts/fuzz.sh build                 builds every target
#   scripts/fuzz.sh list                  names the targets
#
# A crash or hang leaves its input in fuzz/artifacts/TARGET/ (not committed);
# move it to fuzz/regressions/TARGET/ with the fix: every run replays those. Builds go to FUZZ_TARGET_DIR
# (default fuzz/target), never the main crate's target dir: every dependency is
# instrumented. Long runs are niced (FUZZ_NICE, default 19).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '==> %s\n' "$*" >&2; }

TARGETS=(parser framing digest route config)
SMOKE_SECONDS=${FUZZ_SMOKE_SECONDS:-20}
NICE=${FUZZ_NICE:-19}
# One input taking longer than this is a hang.
TIMEOUT_SEC=${FUZZ_TIMEOUT_SEC:-10}
# Inputs up to a realistic message: past 8 KiB a SIP message is rare, and
# longer inputs slow the search more than they add.
MAX_LEN=${FUZZ_MAX_LEN:-8192}

# --- install: a C++ compiler for libFuzzer, a stable Rust -----------------
ensure_tools() {
  [ -x "$HOME/.cargo/bin/cargo" ] && case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
  command -v cargo >/dev/null || { log "no cargo: run scripts/test.sh once, or install Rust with rustup"; exit 1; }
  if ! command -v c++ >/dev/null 2>&1; then
    command -v apt-get >/dev/null || { log "no C++ compiler and no apt-get: install g++ by hand"; exit 1; }
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    log "installing g++ (libfuzzer-sys compiles libFuzzer)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
  fi
}

HOST=""
TARGET_DIR=""
build() {
  ensure_tools
  HOST=$(rustc -vV | sed -n 's/^host: //p')
  TARGET_DIR=${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}
  # --target keeps the flags off build scripts and proc macros (they are not
  # linked with libFuzzer). Flags as cargo-fuzz sets them, without -Zsanitizer:
  # the lib forbids unsafe code, and panics and overflow checks are the oracle.
  local flags="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
  flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
  flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cforce-frame-pointers=yes"
  # Not --locked: fuzz/Cargo.lock follows the main crate's dependencies as
  # they change (cargo keeps the versions already locked).
  log "building fuzz targets (release, instrumented) into $TARGET_DIR"
  (cd fuzz && RUSTFLAGS="$flags" CARGO_TARGET_DIR="$TARGET_DIR" nice -n "$NICE" \
    cargo build --release --quiet --target "$HOST" --bins)
}

bin_of() { echo "$TARGET_DIR/$HOST/release/$1"; }

check_target() {
  local t
  for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
  log "unknown target $1 (one of: ${TARGETS[*]})"; exit 2
}

dict_of() {
  case $1 in
    config) echo "-dict=$ROOT/fuzz/dict/toml.dict" ;;
    *) echo "-dict=$ROOT/fuzz/dict/sip.dict" ;;
  esac
}

# run TARGET LOG WORKDIR LIBFUZZER-ARGS...: fuzzes with WORKDIR as the corpus
# that grows and the committed one as seeds; fails on any finding.
run() {
  local t=$1 out=$2 work=$3
  shift 3
  mkdir -p "$work" "fuzz/artifacts/$t"
  # Inputs that once failed are replayed first, as seeds.
  local seeds=("fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  set +e
  nice -n "$NICE" "$(bin_of "$t")" "$work" "${seeds[@]}" \
    "$(dict_of "$t")" -max_len="$MAX_LEN" -timeout="$TIMEOUT_SEC" -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 "$@" >"$out" 2>&1
  local rc=$?
  set -e
  local execs secs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1 s/p' "$out" | tail -1)
  if [ "$rc" -ne 0 ] || grep -qE '^==[0-9]+== ERROR|deadly signal|panicked at|ALARM: working on the last Unit|out-of-memory' "$out"; then
    log "$t: FAILED (exit $rc); the input is in fuzz/artifacts/$t/:"
    grep -E 'panicked at|ERROR|ALARM|out-of-memory|Test unit written|^thread' "$out" | head -20 >&2 || true
    tail -30 "$out" >&2
    return 1
  fi
  log "$t: ${execs:-?} executions${secs:+ in $secs}, corpus $(find "$work" -type f | wc -l) new + $(find "fuzz/corpus/$t" -type f | wc -l) seeds, no crash"
}

case ${1:-} in
  list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
  build)
    build
    ;;
  smoke)
    build
    failed=0
    for t in "${TARGETS[@]}"; do
      work=$(mktemp -d)
      out=$(mktemp)
      run "$t" "$out" "$work" -max_total_time="$SMOKE_SECONDS" || failed=1
      rm -rf "$work" "$out"
    done
    [ "$failed" = 0 ] || { log "fuzz smoke failed"; exit 1; }
    log "fuzz smoke passed (${#TARGETS[@]} targets, ${SMOKE_SECONDS} s each)"
    ;;
  long)
    [ $# -eq 3 ] || { log "usage: scripts/fuzz.sh long TARGET EXECUTIONS|SECONDSs"; exit 2; }
    check_target "$2"
    build
    case $3 in
      *s) limit=(-max_total_time="${3%s}") ;;
      *) limit=(-runs="$3") ;;
    esac
    mkdir -p fuzz/work
    out="fuzz/work/$2.log"
    log "fuzzing $2 (${limit[*]}), log in $out"
    run "$2" "$out" "fuzz/work/$2" "${limit[@]}"
    ;;
  cmin)
    [ $# -ge 2 ] || { log "usage: scripts/fuzz.sh cmin TARGET [work]"; exit 2; }
    check_target "$2"
    build
    new=$(mktemp -d)
    dirs=("fuzz/corpus/$2")
    [ "${3:-}" = work ] && dirs+=("fuzz/work/$2")
    mkdir -p fuzz/work
    nice -n "$NICE" "$(bin_of "$2")" -merge=1 -max_len="$MAX_LEN" -timeout="$TIMEOUT_SEC" \
      "$new" "${dirs[@]}" >"fuzz/work/$2.cmin.log" 2>&1 ||
      { tail -20 "fuzz/work/$2.cmin.log" >&2; exit 1; }
    rm -rf "fuzz/corpus/$2"
    mv "$new" "fuzz/corpus/$2"
    log "$2: corpus minimised to $(find "fuzz/corpus/$2" -type f | wc -l) files"
    ;;
  repro)
    [ $# -ge 3 ] || { log "usage: scripts/fuzz.sh repro TARGET FILE..."; exit 2; }
    check_target "$2"
    t=$2
    shift 2
    build
    "$(bin_of "$t")" "$@"
    ;;
  *)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
