#!/usr/bin/env bash
# Coverage-guided fuzzing of the config file reader and the address parser
# with cargo fuzz (libFuzzer), for FUZZ_SECONDS (default 60) per target.
# Any panic fails the run and leaves the input in fuzz/artifacts/.
#
# cargo fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo fuzz build -O
for target in config address; do
  corpus=$(mktemp -d)
  cp seeds/"$target"/* "$corpus"/
  echo "== fuzz $target for ${SECONDS_PER_TARGET}s"
  cargo fuzz run -O "$target" "$corpus" -- -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+== ERROR|thread .* panicked)' || true
  rm -rf "$corpus"
  if [ -n "$(ls -A artifacts/"$target" 2>/dev/null)" ]; then
    echo "fuzz $target: crash inputs in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: no panics"
