#!/usr/bin/env bash
# End-to-end test of the deploy/ recipes under a real systemd 257 + podman 5.4
# (Quadlet), booted in systemd-nspawn on a host whose PID 1 need not be systemd
# (Debian 12, cgroup v1 hybrid; adapted from shared/testenv/systemd-nspawn-demo.sh).
#
# It installs each variant the way deploy/README.md tells users to (the shell
# blocks marked <!-- e2e: NAME --> there are extracted and run in the guest),
# and checks: cold activation answered, STATUS= in systemctl status, idle exit
# of idlegate and of the backend, re-activation, idlegate's journal lines.
# Variants: deploy/tidings (backend = Quadlet container), deploy/process
# (backend = a process idlegate starts), deploy/quadlet (idlegate itself in a
# container). It also measures cold-start time against the floor: podman start
# of the same backend container until its port answers.
#
#   IDLEGATE_BIN=path/to/idlegate tests/e2e/nspawn-deploy.sh
#
# Without IDLEGATE_BIN it runs `cargo build --release --locked` first. Needs
# root; installs systemd-container, mmdebstrap and curl with apt-get when
# missing. The guest rootfs (Debian trixie, ~360 MB, ~30 s to build) is cached
# in $E2E_WORKDIR (default /var/tmp/idlegate-e2e); each run boots a fresh copy.
set -euo pipefail

REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
W=${E2E_WORKDIR:-/var/tmp/idlegate-e2e}
SUITE=trixie
PKGS=systemd,systemd-sysv,dbus,iproute2,curl,procps,podman,crun,netavark,aardvark-dns,nftables,iptables,ca-certificates,caddy
BASE=$W/rootfs.base
RUN=$W/run
R=$RUN/rootfs
M=idlegate-e2e          # machine name, also the name of the host cgroups used
IDLE=3s                 # the short idle timeout the README's drop-in sets
COLD_RUNS=${E2E_COLD_RUNS:-3}

T0=$(date +%s%N)
STEP=setup
BOOTED=
declare -A COLD                # variant -> "ms ms ms"
FLOOR_START= FLOOR_RUN=

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
step() { STEP=$*; printf '\n=== [%6.1fs] %s\n' "$(($(ms_since "$T0") / 100))e-1" "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
fail() { printf '\nFAIL (%s): %s\n' "$STEP" "$*" >&2; exit 1; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# --- host side -------------------------------------------------------------

host_packages() {
  local need=()
  command -v systemd-nspawn >/dev/null || need+=(systemd-container)
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  command -v curl >/dev/null || need+=(curl)
  command -v nsenter >/dev/null || need+=(util-linux)
  if [ ${#need[@]} -gt 0 ]; then
    info "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

idlegate_binary() {
  if [ -n "${IDLEGATE_BIN:-}" ]; then
    BIN=$(readlink -f "$IDLEGATE_BIN")
  else
    info "cargo build --release --locked"
    (cd "$REPO" && cargo build --release --locked 2>&1 | tail -n 2)
    BIN=$REPO/target/release/idlegate
  fi
  [ -x "$BIN" ] || fail "no idlegate binary at $BIN"
  info "$BIN: $("$BIN" --version)"
}

# The base rootfs is cached; it is rebuilt when the suite or the package list changes.
rootfs_base() {
  local stamp="$SUITE $PKGS"
  if [ -x "$BASE/lib/systemd/systemd" ] && [ "$(cat "$BASE.stamp" 2>/dev/null)" = "$stamp" ]; then
    info "cached: $BASE"
    return
  fi
  rm -rf "$BASE" "$BASE.tmp"
  mkdir -p "$W"
  info "mmdebstrap $SUITE (log: $W/mmdebstrap.log)"
  mmdebstrap --variant=minbase --include="$PKGS" "$SUITE" "$BASE.tmp" >"$W/mmdebstrap.log" 2>&1 ||
    { tail -n 20 "$W/mmdebstrap.log" >&2; fail "mmdebstrap failed"; }
  mv "$BASE.tmp" "$BASE"
  echo "$stamp" >"$BASE.stamp"
}

# A fresh copy of the base for this run, with the checkout the README's commands
# run from (/root/idlegate: deploy/ and target/release/idlegate) and the podman
# settings this nested setup needs.
rootfs_run() {
  rm -rf "$RUN"
  mkdir -p "$RUN"
  cp -a "$BASE" "$R"
  echo "$M" >"$R/etc/hostname"
  mkdir -p "$R/root/idlegate/target/release"
  cp -a "$REPO/deploy" "$R/root/idlegate/deploy"
  install -m 755 "$BIN" "$R/root/idlegate/target/release/idlegate"
  # Nested in nspawn: no setrlimit beyond the current limits, no pids cgroup
  # limit, no session keyring.
  cat >"$R/etc/containers/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
pids_limit = 0
keyring = false
EOF
}

cgroup_enter() {  # move the calling shell ($1 = pid) into host cgroup $2 in both hierarchies
  local h
  for h in systemd unified; do
    mkdir -p "/sys/fs/cgroup/$h/$2"
    echo "$1" >"/sys/fs/cgroup/$h/$2/cgroup.procs"
  done
}

boot() {
  # nspawn runs from its own cgroup (no host systemd to ask for a scope); the
  # guest gets a pure cgroup v2 tree, a private network (netavark needs
  # CAP_NET_ADMIN there; its rules stay off the host) and the eBPF device filter.
  (
    cgroup_enter "$BASHPID" "$M/nspawn"
    export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
    exec systemd-nspawn --boot -D "$R" --machine="$M" --register=no --keep-unit \
      --console=passive --private-network --system-call-filter=bpf
  ) >"$RUN/nspawn.log" 2>&1 </dev/null &
  NSPAWN_PID=$!
  BOOTED=1
  local i s=
  for i in $(seq 1 300); do
    LEADER=$(pgrep -P "$NSPAWN_PID" | head -n 1 || true)
    [ -n "$LEADER" ] && s=$(nsenter -t "$LEADER" -a systemctl is-system-running 2>/dev/null || true)
    case $s in
      running) ok "systemd in the guest: $s"; return ;;
      degraded) ok "systemd in the guest: $s"; IN systemctl --failed --no-legend; return ;;
    esac
    sleep 0.1
  done
  tail -n 30 "$RUN/nspawn.log" >&2
  fail "guest did not boot (state: $s)"
}

shutdown() {
  local rc=$?
  set +e
  if [ -n "$BOOTED" ]; then
    [ $rc -ne 0 ] && [ -n "${LEADER:-}" ] &&
      IN journalctl -b --no-pager -o short-precise -n 200 >"$RUN/guest-journal-tail.txt" 2>&1
    kill -TERM "$NSPAWN_PID" 2>/dev/null
    local i
    for i in $(seq 1 300); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$NSPAWN_PID" 2>/dev/null && { echo "guest did not power off; killing nspawn" >&2; kill -KILL "$NSPAWN_PID"; }
    wait "$NSPAWN_PID" 2>/dev/null
    journalctl -D "$R/var/log/journal" --no-pager -o short-precise >"$RUN/guest-journal.txt" 2>&1
  fi
  local h
  for h in systemd unified; do
    [ -d "/sys/fs/cgroup/$h/$M" ] && find "/sys/fs/cgroup/$h/$M" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -rf "/run/systemd/nspawn/propagate/$M" 2>/dev/null
  if [ $rc -eq 0 ]; then
    printf '\n=== PASS in %ss (logs in %s)\n' "$(($(ms_since "$T0") / 1000))" "$RUN"
  else
    printf '\n=== FAILED at "%s" after %ss; guest journal: %s/guest-journal.txt\n' "$STEP" "$(($(ms_since "$T0") / 1000))" "$RUN" >&2
  fi
  exit $rc
}

# --- driving the guest -------------------------------------------------------

# A command in all the guest's namespaces (not its cgroup: fine for systemctl
# and journalctl; podman runs through `AS_ROOT` instead).
IN() { nsenter -t "$LEADER" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
# The host's curl in the guest's network namespace.
NET() { nsenter -t "$LEADER" -n "$@"; }
# A root shell command run by the guest's systemd (a real service: podman gets
# its cgroup, capabilities and seccomp as a user's root shell would), output piped back.
AS_ROOT() { IN systemd-run --quiet --wait --pipe --collect -p WorkingDirectory=/root/idlegate bash -euo pipefail -c "$1"; }

# The ```sh block that follows <!-- e2e: NAME --> in deploy/README.md.
readme_block() {
  local b
  b=$(awk -v name="$1" '
    $0 ~ "<!-- e2e: " name " -->" { armed = 1; next }
    armed && /^```sh$/ { inblock = 1; next }
    inblock && /^```$/ { exit }
    inblock { print }' "$REPO/deploy/README.md")
  [ -n "$b" ] || fail "deploy/README.md has no block <!-- e2e: $1 -->"
  printf '%s\n' "$b"
}
# Run a README block in the guest as root, from the checkout, echoing each command.
run_readme() {
  info "deploy/README.md [$1]:"
  readme_block "$1" | sed 's/^/      | /'
  AS_ROOT "$(readme_block "$1")" 2>&1 | sed 's/^/      > /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "README block $1 failed"
}

is_active() { IN systemctl is-active --quiet "$1"; }
state() { IN systemctl show -P ActiveState "$1"; }

# curl URL EXPECTED [curl options]: the body must be EXPECTED; sets LAST_MS.
fetch() {
  local url=$1 want=$2 out body
  shift 2
  out=$(NET curl -sS -m 30 -w '\n%{time_total}' "$@" "$url") || fail "curl $url failed"
  body=${out%$'\n'*}
  LAST_MS=$(awk -v t="${out##*$'\n'}" 'BEGIN { printf "%.1f", t * 1000 }')
  [ "$body" = "$want" ] || fail "curl $url answered '$body', expected '$want'"
}

# Wait until all the given units are inactive (idle exit); prints how long it took.
wait_inactive() {
  local t=$(date +%s%N) u s all
  while :; do
    all=1
    for u in "$@"; do
      s=$(state "$u")
      case $s in inactive | failed) ;; *) all= ;; esac
    done
    [ -n "$all" ] && break
    [ "$(ms_since "$t")" -lt 30000 ] || fail "still running 30 s later: $(for u in "$@"; do printf '%s=%s ' "$u" "$(state "$u")"; done)"
    sleep 0.2
  done
  for u in "$@"; do
    [ "$(state "$u")" = inactive ] || fail "$u ended as $(state "$u"), not inactive"
    [ "$(IN systemctl show -P Result "$u")" = success ] || fail "$u result: $(IN systemctl show -P Result "$u")"
  done
  ok "idle exit: $* inactive (success) $(ms_since "$t") ms after the last request"
}

# The checks every variant goes through. $1 = variant, $2.. = backend units.
exercise() {
  local variant=$1
  shift
  local units=(tidings.service "$@") i ms=()
  IN systemctl is-active --quiet tidings.socket tidings-https.socket || fail "sockets not active"
  for u in "${units[@]}"; do is_active "$u" && fail "$u active before the first client"; done
  ok "tidings.socket, tidings-https.socket listening; ${units[*]} inactive"

  for i in $(seq 1 "$COLD_RUNS"); do
    fetch http://localhost/ "Good tidings"
    ms+=("$LAST_MS")
    ok "cold activation $i: curl http://localhost/ -> 'Good tidings' in $LAST_MS ms"
    for u in "${units[@]}"; do is_active "$u" || fail "$u not active after the request"; done
    if [ "$i" = 1 ]; then
      fetch http://localhost/ "Good tidings"
      ok "warm: http in $LAST_MS ms"
      fetch https://localhost/ "Good tidings (https)" -k
      ok "warm: curl -k https://localhost/ -> 'Good tidings (https)' in $LAST_MS ms"
      local status
      status=$(IN systemctl status --no-pager tidings.service | sed -n 's/^ *Status: //p')
      [ -n "$status" ] || fail "systemctl status tidings.service shows no Status: line"
      ok "systemctl status tidings.service: Status: $status"
      # A client that is not on the loopback (the service's IPAddressAllow=localhost
      # must not apply to the connections accepted on the .socket units' sockets).
      fetch http://192.0.2.1/ "Good tidings" --interface 192.0.2.1
      ok "client from 192.0.2.1 (not loopback) served"
    fi
    wait_inactive "${units[@]}"
  done
  # A cold start over TLS, on the second socket.
  fetch https://localhost/ "Good tidings (https)" -k
  ok "cold activation over https: curl -k https://localhost/ in $LAST_MS ms"
  wait_inactive "${units[@]}"
  COLD[$variant]="${ms[*]}"
  info "journalctl -u tidings.service (this variant):"
  IN journalctl -b --no-pager -o cat -u tidings.service --since "@$VARIANT_SINCE" |
    grep -v -e '^$' | tee "$RUN/journal-$variant.txt" | sed 's/^/      | /' | tail -n 40
  grep -q 'backend ready on 127.0.0.1:8080' "$RUN/journal-$variant.txt" || fail "no 'backend ready on' line in the journal"
  grep -q 'idle for 3s: stopping the backend and exiting' "$RUN/journal-$variant.txt" || fail "no idle exit line in the journal"
}

variant_begin() { VARIANT_SINCE=$(IN date +%s); }

# --- the run -------------------------------------------------------------------

# E2E_LIB_ONLY=1: only define the functions (for poking at a guest by hand).
[ -n "${E2E_LIB_ONLY:-}" ] && return 0
trap shutdown EXIT
[ "$(id -u)" = 0 ] || fail "run as root"

step "host packages, idlegate binary"
host_packages
idlegate_binary

step "guest rootfs (Debian $SUITE: systemd, podman, caddy)"
rootfs_base
rootfs_run
ok "fresh copy in $R"

step "boot the guest (systemd-nspawn --boot)"
boot
info "$(IN systemctl --version | head -n 1); $(IN podman --version); $(IN caddy version 2>/dev/null | cut -d' ' -f1)"
IN ip addr add 192.0.2.1/32 dev lo   # a second, non-loopback address for one client

step "quadlet -dryrun of every .container in deploy/"
for f in "$REPO"/deploy/*/*.container; do
  d=$(mktemp -d -p "$R/tmp")
  cp "$f" "$d/"
  out=$(IN env QUADLET_UNIT_DIRS="/tmp/${d##*/}" /usr/libexec/podman/quadlet -dryrun 2>&1) || { echo "$out" >&2; fail "quadlet rejected ${f#"$REPO"/}"; }
  if echo "$out" | grep -qiE 'warn|error|unsupported'; then echo "$out" >&2; fail "quadlet complained about ${f#"$REPO"/}"; fi
  ok "${f#"$REPO"/}: $(echo "$out" | grep -c '^---') unit(s) generated"
  rm -rf "$d"
done

step "backend image: a local stand-in for docker.io/library/caddy:2.6"
run_readme caddy-image

# ---------------------------------------------------------------------------
step "deploy/tidings: install as deploy/README.md says"
variant_begin
run_readme tidings-install
run_readme short-idle
IN systemd-analyze verify /run/systemd/generator/tidings-backend.service /etc/systemd/system/tidings.service 2>&1 | sed 's/^/      verify> /'

step "deploy/tidings: cold activation, idle exit, re-activation"
exercise tidings tidings-backend.service

step "floor: podman start of the same backend container until its port answers"
AS_ROOT "podman create -q --name tidings-floor -p 127.0.0.1:9080:80 -v /etc/tidings:/etc/caddy:ro -v tidings-caddy-data:/data \
  docker.io/library/caddy:2.6 caddy run --config /etc/caddy/Caddyfile --adapter caddyfile >/dev/null"
floor=$(AS_ROOT '
  answered() { until curl -sf -o /dev/null http://127.0.0.1:9080/; do sleep 0.005; done; }
  for i in 1 2 3; do
    t=$(date +%s%N); podman start tidings-floor >/dev/null; answered
    echo start $(( ($(date +%s%N) - t) / 1000000 )); podman stop -t 5 tidings-floor >/dev/null
  done
  podman rm tidings-floor >/dev/null
  for i in 1 2 3; do
    t=$(date +%s%N)
    podman run -d --rm --name tidings-floor -p 127.0.0.1:9080:80 -v /etc/tidings:/etc/caddy:ro -v tidings-caddy-data:/data \
      docker.io/library/caddy:2.6 caddy run --config /etc/caddy/Caddyfile --adapter caddyfile >/dev/null; answered
    echo run $(( ($(date +%s%N) - t) / 1000000 )); podman stop -t 5 tidings-floor >/dev/null
  done')
FLOOR_START=$(echo "$floor" | awk '$1 == "start" { printf "%s ", $2 }')
FLOOR_RUN=$(echo "$floor" | awk '$1 == "run" { printf "%s ", $2 }')
ok "podman start -> port answers: $FLOOR_START ms"
ok "podman run --rm -d -> port answers: $FLOOR_RUN ms"

step "deploy/tidings: uninstall"
run_readme tidings-uninstall

# ---------------------------------------------------------------------------
step "deploy/process: install"
variant_begin
run_readme process-install
run_readme short-idle

step "deploy/process: cold activation, idle exit, re-activation"
exercise process
grep -q 'idlegate::backend::output' "$RUN/journal-process.txt" || grep -q 'caddy' "$RUN/journal-process.txt" ||
  fail "Caddy's output is not in idlegate's journal"
run_readme process-uninstall

# ---------------------------------------------------------------------------
step "deploy/quadlet: idlegate image, install"
variant_begin
run_readme quadlet-image
run_readme quadlet-install
run_readme short-idle

step "deploy/quadlet: cold activation, idle exit, re-activation"
exercise quadlet tidings-backend.service

# ---------------------------------------------------------------------------
step "cold start vs the floor (ms; median of the runs)"
printf '    %-44s %8s   %s\n' "what" "median" "runs"
printf '    %-44s %8s   %s\n' "podman start, until the port answers" "$(median $FLOOR_START)" "$FLOOR_START"
printf '    %-44s %8s   %s\n' "podman run --rm -d, until the port answers" "$(median $FLOOR_RUN)" "$FLOOR_RUN"
for v in tidings process quadlet; do
  printf '    %-44s %8s   %s\n' "cold curl, deploy/$v" "$(median ${COLD[$v]})" "${COLD[$v]}"
done
