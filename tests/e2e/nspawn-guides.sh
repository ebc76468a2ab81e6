#!/usr/bin/env bash
# Only the guides' part of nspawn-deploy.sh (tests/e2e/deploy-guides.sh): boot
# the guest, install the Debian package, run the guides' configs as written.
# The same checks run inside the whole nspawn-deploy.sh; this is the quick
# way to run them alone (about a minute with a cached rootfs).
#
#   IDLEGATE_BIN=target/release/idlegate IDLEGATE_DEB=target/debian/idlegate_….deb tests/e2e/nspawn-guides.sh
set -euo pipefail
E2E_LIB_ONLY=1
# shellcheck source=tests/e2e/nspawn-deploy.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/nspawn-deploy.sh"
trap shutdown EXIT
[ "$(id -u)" = 0 ] || fail "run as root"

step "host packages, idlegate binary"
host_packages
idlegate_binary
step "guest rootfs (Debian $SUITE)"
rootfs_base
rootfs_run
step "boot the guest (systemd-nspawn --boot)"
boot
step "the Debian package"
AS_ROOT 'dpkg -i target/debian/idlegate_*.deb >/dev/null'
ok "installed: $(IN dpkg-query -W idlegate)"
guides
