#!/usr/bin/env bash
# Builds the Debian package: target/debian/idlegate_VERSION_ARCH.deb.
#
#   cargo install cargo-deb    # once
#   deploy/package/build-deb.sh
#
# The manual page and the completions are made by the binary itself
# (`idlegate --generate …`), so they always match its flags.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
cargo build --release --locked
out=target/package
mkdir -p "$out"
bin=target/release/idlegate
"$bin" --generate man | gzip -9n >"$out/idlegate.1.gz"
"$bin" --generate complete-bash >"$out/idlegate.bash"
"$bin" --generate complete-zsh >"$out/_idlegate"
"$bin" --generate complete-fish >"$out/idlegate.fish"
cargo deb --no-build --locked "$@"
