#!/usr/bin/env bash
# End-to-end test of the deploy/ recipes under a real systemd 257 + podman 5.4
# (Quadlet), booted in systemd-nspawn on a host whose PID 1 need not be systemd
# (Debian 12, cgroup v1 hybrid; adapted from shared/testenv/systemd-nspawn-demo.sh).
#
# It installs each variant the way deploy/README.md tells users to (the shell
# blocks marked <!-- e2e: NAME --> there are extracted and run in the guest as
# root), and checks for each: `quadlet -dryrun` of the .container files and
# `systemd-analyze verify` of the installed units (any output fails); cold
# activation over both named sockets answered; idlegate's STATUS= in `systemctl
# status`; idle exit of idlegate and of the backend (inactive, result success);
# re-activation; idlegate's journal lines. Variants: deploy/tidings (backend =
# Quadlet container), deploy/process (backend = a process idlegate starts),
# deploy/quadlet (idlegate itself in a container), deploy/dns (UDP: dnsmasq
# behind a ListenDatagram= socket), the one-file form (the Debian package
# installed in the guest, /etc/idlegate/tidings.toml through the generator, a
# bad file beside it, a user's unit with `systemctl --user`, `dpkg -r`), and
# the README's systemd-socket-activate one-liners, and unit groups (an ordered
# --unit group, one that fails, a StopWhenUnneeded= database behind two apps,
# two backends with Conflicts=), the guides' one-file configs as
# docs/guides/ writes them (deploy-guides.sh: a program, PostgreSQL with its
# backup under idlegate inhibit, Redis), and `[systemd] awake` windows (a timer
# wakes the service with no client and holds it to the window's end). It
# measures cold-start time against the
# floor: `podman start` / `podman run` of the same backend container until its
# port answers. Any failure exits non-zero; the guest is always powered off and
# the host cgroups removed.
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
PKGS=systemd,systemd-sysv,dbus,iproute2,curl,procps,podman,crun,netavark,aardvark-dns,nftables,iptables,ca-certificates,caddy,dnsmasq-base,libpam-systemd,postgresql,python3,redis-server
BASE=$W/rootfs.base
RUN=${E2E_RUNDIR:-$W/run}   # the run's copy of the rootfs and its logs
R=$RUN/rootfs
M=${E2E_MACHINE:-idlegate-e2e}  # machine name, also the name of the host cgroups used
IDLE=3s                 # the short idle timeout the README's drop-in sets
COLD_RUNS=${E2E_COLD_RUNS:-5}  # cold activations per variant, and podman starts for the floor

T0=$(date +%s%N)
STEP=setup
BOOTED=
declare -A COLD READY          # variant -> "ms ms ms"
declare -A SWEEP KILLED MISSING SIGKILLED SILENT   # variant -> what the fault runs measured
FLOOR_START='' FLOOR_RUN=''

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
  if [ -n "${IDLEGATE_DEB:-}" ]; then
    DEB=$(readlink -f "$IDLEGATE_DEB")
  else
    info "deploy/package/build-deb.sh (needs cargo-deb: cargo install cargo-deb)"
    (cd "$REPO" && deploy/package/build-deb.sh 2>&1 | tail -n 1)
    DEB=$(ls "$REPO"/target/debian/idlegate_*.deb | tail -n 1)
  fi
  [ -f "$DEB" ] || fail "no Debian package at $DEB"
  info "$DEB"
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
  mkdir -p "$R/root/idlegate/target/debian"
  cp "$DEB" "$R/root/idlegate/target/debian/"
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
AS_ROOT() { IN systemd-run --quiet --wait --pipe --collect -p WorkingDirectory=/root/idlegate -p Environment=HOME=/root bash -euo pipefail -c "$1"; }

# The ```sh block that follows <!-- e2e: NAME --> in deploy/README.md.
readme_block() { marked_block deploy/README.md "e2e: $1" sh; }
# The ```$3 block (any language without $3) that follows <!-- $2 --> in the file $1 of the checkout.
marked_block() {
  local b fence='^```'"${3:-[a-z]+}"'$'
  b=$(awk -v mark="<!-- $2 -->" -v fence="$fence" '
    index($0, mark) { armed = 1; next }
    armed && $0 ~ fence { inblock = 1; next }
    inblock && /^```$/ { exit }
    inblock { print }' "$REPO/$1")
  [ -n "$b" ] || fail "$1 has no block <!-- $2 -->"
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
  local t u s all
  t=$(date +%s%N)
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
      # idlegate's STATUS= (sent at most 4 times a second). systemd keeps the
      # last run's text until a new one arrives, so wait for this run's.
      local status t
      t=$(date +%s%N)
      while :; do
        status=$(IN systemctl status --no-pager tidings.service | sed -n 's/^ *Status: //p')
        case $status in *"backend ready; "*" in flight"*) break ;; esac
        [ "$(ms_since "$t")" -lt 3000 ] || fail "systemctl status tidings.service: Status: '$status', not idlegate's 'backend ready; N in flight'"
        sleep 0.1
      done
      ok "systemctl status tidings.service: Status: $status"
      # idlegate status reads the state file in the unit's RuntimeDirectory=
      # (the services of tidings/ and process/; quadlet/ keeps it in the container).
      if [ "$variant" != quadlet ]; then
        status=$(IN "${STATUS_BIN:-/usr/local/bin/idlegate}" status --state-file "${STATE_FILE:-/run/tidings/idlegate.state}") ||
          fail "idlegate status: $status"
        case $status in "idlegate: running"*) ;; *) fail "idlegate status: $status" ;; esac
        ok "idlegate status: $(echo "$status" | head -n 1)"
      fi
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
  IN journalctl --no-pager -o cat -u tidings.service --after-cursor "$VARIANT_CURSOR" |
    grep -v -e '^$' | tee "$RUN/journal-$variant.txt" | sed 's/^/      | /' | tail -n 40
  local line
  for line in 'socket-activated: fd [345] (http) -> 127.0.0.1:8080 (tcp)' 'socket-activated: fd [345] (https) -> 127.0.0.1:8443 (tcp)' \
    'backend ready on 127.0.0.1:8080, 127.0.0.1:8443 after [0-9]*ms' "idle for $IDLE: stopping the backend and exiting" \
    'tidings.service: Deactivated successfully'; do
    [ "$(grep -c "$line" "$RUN/journal-$variant.txt")" -ge $((COLD_RUNS + 1)) ] ||
      fail "journal: '$line' not seen in each of the $((COLD_RUNS + 1)) activations"
  done
  ok "journal: each activation took both named sockets, waited for the backend, exited on idle"
  # systemd's "Starting" to "Started" (idlegate's READY=1): exec, sandbox, sockets.
  local ready
  ready=$(IN journalctl --no-pager -o short-unix -u tidings.service --after-cursor "$VARIANT_CURSOR" |
    awk '/systemd\[1\]: Starting tidings.service/ { s = $1 } /systemd\[1\]: Started tidings.service/ && s { printf "%.1f ", ($1 - s) * 1000; s = 0 }')
  READY[$variant]=$ready
  ok "systemd Starting -> Started (READY=1) of tidings.service: $ready ms"
}

# systemd-analyze verify, by the guest's systemd 257, of the units as installed
# (Quadlet's generated ones included); any output is a failure.
verify_installed() {
  local u paths=() out
  for u in tidings.socket tidings-https.socket "$@"; do paths+=("$(IN systemctl show -P FragmentPath "$u")"); done
  out=$(IN systemd-analyze verify "${paths[@]}" 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify failed"; }
  [ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify complained"; }
  ok "systemd-analyze verify (systemd 257, in the guest): ${paths[*]}"
}

# A `systemd-socket-activate` one-liner from the README, as a transient service
# in the guest (with the idle timeout cut from 30s to 3s): both sockets answer,
# idlegate exits on idle, and $2 (a shell test) says the backend is gone.
try_oneliner() {
  local name=$1 gone=$2 block t
  block=$(readme_block "$name" | sed "s/--idle-timeout 30s/--idle-timeout $IDLE/")
  info "deploy/README.md [$name] (--idle-timeout $IDLE):"
  printf '%s\n' "$block" | sed 's/^/      | /'
  IN systemd-run --quiet --collect --unit="try-$name" -p WorkingDirectory=/root/idlegate -p Environment=HOME=/root \
    bash -euo pipefail -c "$block"
  t=$(date +%s%N)
  until [ -n "$(IN ss -Hltn 'sport = :8001')" ]; do
    [ "$(ms_since "$t")" -lt 20000 ] || { IN journalctl -u "try-$name" --no-pager -o cat | tail -n 20; fail "nothing listens on 127.0.0.1:8001"; }
    sleep 0.05
  done
  fetch http://127.0.0.1:8000/ "Good tidings"
  ok "cold: curl http://127.0.0.1:8000/ -> 'Good tidings' in $LAST_MS ms"
  fetch https://localhost:8001/ "Good tidings (https)" -k --resolve localhost:8001:127.0.0.1
  ok "curl -k https://localhost:8001/ -> 'Good tidings (https)' in $LAST_MS ms"
  t=$(date +%s%N)
  while IN systemctl is-active --quiet "try-$name"; do
    [ "$(ms_since "$t")" -lt 30000 ] || fail "try-$name still running 30 s later"
    sleep 0.2
  done
  IN journalctl -u "try-$name" --no-pager -o cat | grep "idle for $IDLE: stopping the backend and exiting" >/dev/null ||
    { IN journalctl -u "try-$name" --no-pager -o cat | tail -n 20; fail "no idle exit in try-$name's journal"; }
  [ -z "$(IN ss -Hltn 'sport = :8000')" ] || fail "127.0.0.1:8000 still listening after the idle exit"
  IN sh -c "$gone" || fail "the backend is still there after the idle exit ($gone)"
  ok "idle exit $(ms_since "$t") ms after the last request; the backend is gone ($gone)"
}

# dns_query NAME: one DNS A query to 127.0.0.1:53 in the guest, over bash's
# /dev/udp (the guest has no DNS tools); sets ANSWER (the answer's address) and LAST_MS.
dns_query() {
  local t
  t=$(date +%s%N)
  ANSWER=$(IN bash -c '
    q="\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    IFS=. read -ra labels <<<"$1"
    for l in "${labels[@]}"; do q+=$(printf "\\\\x%02x%s" "${#l}" "$l"); done
    q+="\x00\x00\x01\x00\x01"
    exec 3<>/dev/udp/127.0.0.1/53
    printf "$q" >&3
    timeout 20 dd bs=512 count=1 status=none <&3 | od -An -tu1 | tr -s " \n" " " |
      awk "{ print \$(NF-3) \".\" \$(NF-2) \".\" \$(NF-1) \".\" \$NF }"' _ "$1") || fail "DNS query for $1 failed"
  LAST_MS=$(ms_since "$t")
}

# `idlegate inhibit` through tidings-control.socket ($1 = the idlegate binary,
# $2.. = backend units): while the stack is stopped, it wakes idlegate, runs
# its command once the backend answers, and holds the stack up past the idle
# timeout while the command runs; the stack idles out once it ends. A second
# inhibit, killed with SIGKILL, releases its hold with it.
inhibit_holds() {
  local bin=$1 control=/run/idlegate/tidings.control t pid rc main journal line
  shift
  local units=(tidings.service "$@") u hold=$((${IDLE%s} * 2 + 1))
  wait_down "${units[@]}"
  IN test -S "$control" || fail "no control socket at $control"
  IN rm -f /run/e2e-backup.ran /run/e2e-backup.done /run/e2e-killed.ran
  local cursor
  cursor=$(IN journalctl -n 1 --show-cursor --no-pager -o cat | sed -n 's/^-- cursor: //p')
  # The command proves the backend was ready before it ran (it asks Caddy
  # directly), then runs until the test says so.
  IN systemd-run --quiet --wait --collect --unit=e2e-backup "$bin" inhibit --control "$control" --why "e2e backup" -- \
    sh -c 'curl -sf -o /dev/null http://127.0.0.1:8080/ && touch /run/e2e-backup.ran && until test -e /run/e2e-backup.done; do sleep 0.05; done' &
  pid=$!
  t=$(date +%s%N)
  until IN test -e /run/e2e-backup.ran; do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" && rc=0 || rc=$?; fail "inhibit ended (status $rc) before its command ran"; }
    [ "$(ms_since "$t")" -lt 30000 ] || fail "inhibit's command did not run within 30 s"
    sleep 0.05
  done
  for u in "${units[@]}"; do is_active "$u" || fail "$u not active while inhibit's command runs"; done
  ok "idlegate inhibit --control $control woke ${units[*]}; its command ran after the backend answered, $(ms_since "$t") ms after inhibit started"
  t=$(date +%s%N)
  while [ "$(ms_since "$t")" -lt $((hold * 1000)) ]; do
    for u in "${units[@]}"; do is_active "$u" || fail "$u $(state "$u") $(ms_since "$t") ms into the hold (idle timeout $IDLE)"; done
    sleep 0.2
  done
  ok "held: ${units[*]} active for ${hold} s while the command ran (idle timeout $IDLE)"
  IN touch /run/e2e-backup.done
  wait "$pid" && rc=0 || rc=$?
  [ "$rc" = 0 ] || fail "idlegate inhibit exited with status $rc"
  ok "the command ended; idlegate inhibit exited 0"
  wait_inactive "${units[@]}"

  # The second one dies by SIGKILL while its command runs: the kernel closes
  # its socket, which releases the hold.
  IN systemd-run --quiet --collect --unit=e2e-killed "$bin" inhibit --control "$control" --why "e2e killed" -- \
    sh -c 'touch /run/e2e-killed.ran && exec sleep 600'
  t=$(date +%s%N)
  until IN test -e /run/e2e-killed.ran; do
    [ "$(ms_since "$t")" -lt 30000 ] || fail "the second inhibit's command did not run within 30 s"
    sleep 0.05
  done
  for u in "${units[@]}"; do is_active "$u" || fail "$u not active under the second inhibit"; done
  main=$(IN systemctl show -P MainPID e2e-killed.service)
  [ -n "$main" ] && [ "$main" != 0 ] || fail "no main pid for e2e-killed.service"
  IN kill -KILL "$main"
  t=$(date +%s%N)
  until IN journalctl --no-pager -o cat -u tidings.service --after-cursor "$cursor" | grep -q 'inhibitor released: .*: e2e killed'; do
    [ "$(ms_since "$t")" -lt 10000 ] || fail "no 'inhibitor released' in the journal 10 s after the SIGKILL"
    sleep 0.05
  done
  ok "SIGKILL to idlegate inhibit (pid $main): idlegate released the hold $(ms_since "$t") ms later"
  wait_inactive "${units[@]}"
  IN systemctl stop e2e-killed.service 2>/dev/null || true

  journal=$(IN journalctl --no-pager -o cat -u tidings.service --after-cursor "$cursor")
  for line in 'inhibited by pid [0-9]* (uid [0-9]*): e2e backup' 'inhibitor released: pid [0-9]* (uid [0-9]*): e2e backup' \
    'inhibited by pid [0-9]* (uid [0-9]*): e2e killed' 'inhibitor released: pid [0-9]* (uid [0-9]*): e2e killed'; do
    printf '%s\n' "$journal" | grep -q "$line" || fail "journal: no '$line'"
  done
  printf '%s\n' "$journal" | grep -e 'inhibit' | sed 's/^/      | /'
  ok "journal: inhibited by / inhibitor released for both"
}

variant_begin() { VARIANT_CURSOR=$(IN journalctl -n 1 --show-cursor --no-pager -o cat | sed -n 's/^-- cursor: //p'); [ -n "$VARIANT_CURSOR" ] || fail 'no journal cursor'; }

# --- the run -------------------------------------------------------------------

# shellcheck source=tests/e2e/deploy-faults.sh
. "$REPO/tests/e2e/deploy-faults.sh"
# shellcheck source=tests/e2e/deploy-groups.sh
. "$REPO/tests/e2e/deploy-groups.sh"
# shellcheck source=tests/e2e/deploy-guides.sh
. "$REPO/tests/e2e/deploy-guides.sh"
# shellcheck source=tests/e2e/deploy-schedules.sh
. "$REPO/tests/e2e/deploy-schedules.sh"

# The faults every variant goes through (deploy-faults.sh); $1 = variant, and
# whether its backend is a container of its own (killed, image removed).
faults() {
  local variant=$1 container=$2
  step "deploy/$variant: the idle-boundary sweep"
  sweep "$variant"
  if [ "$container" = yes ]; then
    step "deploy/$variant: a killed backend container, a missing image"
    killed_backend "$variant"
    missing_image "$variant"
  fi
  step "deploy/$variant: SIGKILL under load"
  sigkill_under_load "$variant"
  step "deploy/$variant: a silent client on a cold start"
  if [ "$variant" = onefile ]; then
    AS_ROOT "sed -i 's/^connection-idle-timeout = .*/connection-idle-timeout = \"5s\"/' /etc/idlegate/tidings.toml"
    silent_client "$variant"
    AS_ROOT "sed -i 's/^connection-idle-timeout = .*/connection-idle-timeout = \"2min\"/' /etc/idlegate/tidings.toml"
  else
    AS_ROOT "printf '[Service]\nEnvironment=IDLEGATE_CONNECTION_IDLE_TIMEOUT=5s\n' >/etc/systemd/system/tidings.service.d/silent.conf && systemctl daemon-reload"
    silent_client "$variant"
    AS_ROOT "rm /etc/systemd/system/tidings.service.d/silent.conf && systemctl daemon-reload"
  fi
}

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
# (/root, not the guest's /tmp: that is a tmpfs over the rootfs directory.)
for f in "$REPO"/deploy/*/*.container; do
  rm -rf "$R/root/quadlet-check" && mkdir "$R/root/quadlet-check" && cp "$f" "$R/root/quadlet-check/"
  out=$(IN env QUADLET_UNIT_DIRS=/root/quadlet-check /usr/libexec/podman/quadlet -dryrun 2>&1) ||
    { echo "$out" >&2; fail "quadlet rejected ${f#"$REPO"/}"; }
  if echo "$out" | grep -v '^#' | grep -iE 'warn|error|unsupported|no files' >/dev/null; then echo "$out" >&2; fail "quadlet complained about ${f#"$REPO"/}"; fi
  n=$(echo "$out" | grep -c '^---.*---$' || true)
  [ "$n" = 1 ] || { echo "$out" >&2; fail "quadlet generated $n units from ${f#"$REPO"/}"; }
  ok "${f#"$REPO"/}: $(echo "$out" | sed -n 's/^---\(.*\)---$/\1/p') generated"
done
rm -rf "$R/root/quadlet-check"

step "backend image: a local stand-in for docker.io/library/caddy:2.6"
run_readme caddy-image

# ---------------------------------------------------------------------------
step "deploy/tidings: install as deploy/README.md says"
variant_begin
run_readme tidings-install
run_readme short-idle
readme_block short-idle | grep "IDLEGATE_IDLE_TIMEOUT=$IDLE" >/dev/null || fail "the README's short-idle drop-in does not set $IDLE"
verify_installed tidings-control.socket tidings.service tidings-backend.service

step "deploy/tidings: cold activation, idle exit, re-activation"
exercise tidings tidings-backend.service
faults tidings yes
step "deploy/tidings: idlegate inhibit through tidings-control.socket"
inhibit_holds /usr/local/bin/idlegate tidings-backend.service

step "floor: podman start of the same backend container until its port answers"
# The container tidings-backend.container describes, by hand (tidings is idle now).
AS_ROOT "podman create -q --name tidings-floor --network host -v /etc/tidings:/etc/caddy:ro -v tidings-caddy-data:/data \
  docker.io/library/caddy:2.6 caddy run --config /etc/caddy/Caddyfile --adapter caddyfile >/dev/null"
floor=$(AS_ROOT '
  answered() { until curl -sf -o /dev/null http://127.0.0.1:8080/; do sleep 0.005; done; }
  for i in $(seq '"$COLD_RUNS"'); do
    t=$(date +%s%N); podman start tidings-floor >/dev/null; answered
    echo start $(( ($(date +%s%N) - t) / 1000000 )); podman stop -t 5 tidings-floor >/dev/null
  done
  podman rm tidings-floor >/dev/null
  for i in $(seq '"$COLD_RUNS"'); do
    t=$(date +%s%N)
    podman run -d --rm --name tidings-floor --network host -v /etc/tidings:/etc/caddy:ro -v tidings-caddy-data:/data \
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
step "one file per service: the package, /etc/idlegate/tidings.toml"
variant_begin
run_readme onefile-install
for f in /usr/bin/idlegate /usr/lib/systemd/system-generators/idlegate-generator /usr/lib/systemd/user-generators/idlegate-generator \
  /usr/share/man/man1/idlegate.1.gz /usr/share/bash-completion/completions/idlegate /usr/share/zsh/vendor-completions/_idlegate \
  /usr/share/fish/vendor_completions.d/idlegate.fish /usr/share/doc/idlegate/examples/deploy/tidings/tidings.toml; do
  IN test -e "$f" || fail "the package has no $f"
done
IN test -d /etc/idlegate || fail "no /etc/idlegate"
[ "$(IN dpkg -L idlegate | grep -c '/etc/systemd/\|\.wants/')" = 0 ] || fail "the package enables something"
ok "installed: the binary, both generators, the manual, bash/zsh/fish completions, the examples, /etc/idlegate"
for u in tidings.socket tidings-https.socket tidings-control.socket tidings.service; do
  path=$(IN systemctl show -P FragmentPath "$u")
  [ "$path" = "/run/systemd/generator/$u" ] || fail "$u comes from '$path', not the generator"
done
for u in tidings.socket tidings-control.socket; do
  IN test -L "/run/systemd/generator/sockets.target.wants/$u" || fail "enable = true made no sockets.target.wants link for $u"
done
[ "$(IN systemctl show -P Listen tidings-control.socket)" = "/run/idlegate/tidings.control (Stream)" ] ||
  fail "tidings-control.socket listens on '$(IN systemctl show -P Listen tidings-control.socket)'"
IN systemctl show -P DropInPaths tidings-backend.service | grep -q 50-idlegate-tidings.conf ||
  fail "tidings-backend.service has no idlegate drop-in"
ok "generated: tidings.socket, tidings-https.socket, tidings-control.socket (/run/idlegate/tidings.control), tidings.service (+ sockets.target.wants), tidings-backend.service's drop-in"
out=$(IN systemctl enable tidings.socket 2>&1) && info "systemctl enable tidings.socket: ok ($out)" ||
  info "systemctl enable tidings.socket refused, as for any generated unit: $(echo "$out" | head -n 1)"
run_readme onefile-short-idle
verify_installed tidings-control.socket tidings.service tidings-backend.service

step "one file per service: cold activation, idle exit, re-activation"
STATE_FILE=/run/idlegate/tidings/idlegate.state STATUS_BIN=/usr/bin/idlegate exercise onefile tidings-backend.service
faults onefile yes
step "one file per service: idlegate inhibit through the generated tidings-control.socket"
inhibit_holds /usr/bin/idlegate tidings-backend.service

step "one file per service: a bad file beside it is skipped, with one line"
AS_ROOT "printf 'upstream = \"nowhere\"\n' >/etc/idlegate/broken.toml && systemctl daemon-reload"
line=$(IN journalctl --no-pager -o cat --after-cursor "$VARIANT_CURSOR" | grep 'broken.toml: skipped:' | tail -n 1)
[ -n "$line" ] || fail "no journal line for the skipped /etc/idlegate/broken.toml"
ok "journal: $line"
check=$(IN /usr/bin/idlegate check --config /etc/idlegate/broken.toml 2>&1) && fail "idlegate check accepted the bad file"
case $line in *"${check#idlegate: }"*) ok "idlegate check --config says the same: $check" ;; *) fail "idlegate check says '$check'" ;; esac
IN systemctl show -P LoadState broken.service | grep -q not-found || fail "a unit was generated from the bad file"
fetch http://localhost/ "Good tidings"
ok "tidings still served (cold, $LAST_MS ms)"
wait_inactive tidings.service tidings-backend.service
AS_ROOT "rm /etc/idlegate/broken.toml"

step "one file per service, for a user: ~/.config/idlegate, systemctl --user"
AS_ROOT 'useradd -m tester && mkdir -p ~tester/.config/idlegate ~tester/www && printf "Good tidings (user)" >~tester/www/index.html
printf "%s\n" "upstream = \"127.0.0.1:8095\"" "idle-timeout = \"3s\"" \
  "command = [\"/usr/bin/caddy\", \"file-server\", \"--listen\", \"127.0.0.1:8095\", \"--root\", \"/home/tester/www\"]" \
  "[systemd]" "listen = [\"127.0.0.1:8096\"]" >~tester/.config/idlegate/hello.toml
chown -R tester: ~tester && loginctl enable-linger tester'
uid=$(IN id -u tester)
UIN() { IN runuser -u tester -- env XDG_RUNTIME_DIR=/run/user/$uid systemctl --user "$@"; }
t=$(date +%s%N)
until IN systemctl is-active --quiet "user@$uid.service"; do
  [ "$(ms_since "$t")" -lt 20000 ] || break
  sleep 0.2
done
if ! IN systemctl is-active --quiet "user@$uid.service"; then
  info "the guest's user manager did not start (user@$uid.service: $(state "user@$uid.service")): user units not tested here"
else
  UIN daemon-reload
  path=$(UIN show -P FragmentPath hello.service)
  case $path in /run/user/$uid/systemd/generator/hello.service) ;; *) fail "hello.service comes from '$path'" ;; esac
  UIN start hello.socket
  fetch http://127.0.0.1:8096/ "Good tidings (user)"
  ok "systemctl --user: hello.socket (generated from ~tester/.config/idlegate/hello.toml) -> cold 'Good tidings (user)' in $LAST_MS ms"
  IN test -S "/run/user/$uid/idlegate/hello.control" || fail "no user control socket at /run/user/$uid/idlegate/hello.control (%t/idlegate/hello.control)"
  [ "$(IN stat -c '%U %a' "/run/user/$uid/idlegate/hello.control")" = "tester 600" ] ||
    fail "the user control socket is $(IN stat -c '%U %a' "/run/user/$uid/idlegate/hello.control"), not tester's with mode 600"
  ok "user: hello-control.socket listens on /run/user/$uid/idlegate/hello.control (tester's, mode 600)"
  status=$(IN runuser -u tester -- /usr/bin/idlegate status --state-file "/run/user/$uid/idlegate/hello/idlegate.state") ||
    fail "idlegate status (user): $status"
  t=$(date +%s%N)
  until [ "$(UIN show -P ActiveState hello.service)" = inactive ]; do
    [ "$(ms_since "$t")" -lt 30000 ] || fail "hello.service (user) did not exit on idle"
    sleep 0.2
  done
  IN pgrep -u tester -x caddy >/dev/null && fail "the user's caddy still runs after the idle exit"
  ok "user: idle exit in $(ms_since "$t") ms from the last check, caddy gone; idlegate status: $(echo "$status" | head -n 1)"
  UIN stop hello.socket hello-control.socket
fi
AS_ROOT 'loginctl disable-linger tester; rm -rf ~tester/.config/idlegate'

# The guides' one-file configs (docs/guides/), while the package is installed.
guides

step "one file per service: a process backend (Caddy file-server) as the dynamic user, with a home"
run_readme onefile-hello
[ "$(IN systemctl show -P FragmentPath hello.service)" = /run/systemd/generator/hello.service ] ||
  fail "hello.service is not the generator's"
IN test -L /run/systemd/generator/sockets.target.wants/hello.socket || fail "enable = true made no link for hello.socket"
fetch http://127.0.0.1:8080/ "Hello from a one-file service"
ok "cold: curl http://127.0.0.1:8080/ -> 'Hello from a one-file service' in $LAST_MS ms"
for i in 1 2 3; do fetch http://127.0.0.1:8080/ "Hello from a one-file service"; done
ok "three more requests answered (a dynamic user's Caddy with HOME=/var/lib/idlegate/hello)"
pid=$(IN pgrep -f 'caddy file-server --listen 127.0.0.1:8081' | head -n 1) || fail "no caddy file-server process"
home=$(IN cat "/proc/$pid/environ" | tr '\0' '\n' | sed -n 's/^HOME=//p')
[ "$home" = /var/lib/idlegate/hello ] || fail "the backend's HOME is '$home', not /var/lib/idlegate/hello"
IN test -d /var/lib/private/idlegate/hello || fail "no state directory /var/lib/private/idlegate/hello"
ok "the backend runs with HOME=$home (StateDirectory=idlegate/hello), uid $(IN stat -c %u /proc/$pid), a dynamic user"

step "one file per service: awake at set hours ([systemd] awake: the timer wakes it, the window holds it)"
awake_windows

step "one file per service: dpkg -r while units run, nothing stopped by hand: the package stops and unloads them"
fetch http://127.0.0.1:8080/ "Hello from a one-file service"
is_active hello.service || fail "hello.service not running before dpkg -r"
is_active tidings.socket || fail "tidings.socket not listening before dpkg -r"
run_readme onefile-uninstall
for u in hello.socket hello-control.socket hello.service tidings.socket tidings-https.socket tidings-control.socket tidings.service \
  office.socket office-control.socket office.service office-awake.timer office-awake.service; do
  [ "$(IN systemctl show -P LoadState "$u")" = not-found ] || fail "$u still loaded after dpkg -r"
  [ "$(IN systemctl show -P ActiveState "$u")" = inactive ] || fail "$u is $(IN systemctl show -P ActiveState "$u") after dpkg -r"
done
IN systemctl list-units --all --no-legend 'hello*' 'tidings*' 'office*' | grep -v 'tidings-backend' | grep . &&
  fail "units still listed after dpkg -r"
AS_ROOT 'rm -rf /etc/idlegate/office.toml /srv/office'   # deploy-schedules.sh's
IN test ! -e /run/systemd/generator/tidings.service || fail "the generated tidings.service is still there"
IN pgrep -f 'caddy file-server' >/dev/null && fail "the hello backend still runs after dpkg -r"
NET curl -sS -m 5 http://127.0.0.1:8080/ >/dev/null 2>&1 && fail "something still listens on 127.0.0.1:8080 after dpkg -r"
NET curl -sS -m 5 http://127.0.0.1:80/ >/dev/null 2>&1 && fail "something still listens on port 80 after dpkg -r"
ok "hello.*, tidings.*, office.* (its awake timer too): not-found and inactive, none listed; its Caddy gone; nothing listens on 8080 or 80"

# ---------------------------------------------------------------------------
step "deploy/process: install"
variant_begin
run_readme process-install
run_readme short-idle
verify_installed tidings-control.socket tidings.service

step "deploy/process: cold activation, idle exit, re-activation"
exercise process
faults process no
grep -q 'idlegate::backend::output: .*"msg":"serving initial configuration"' "$RUN/journal-process.txt" ||
  fail "Caddy's output is not in idlegate's journal"
grep -q 'idlegate::backend: backend stopped: exit status: 0' "$RUN/journal-process.txt" ||
  fail "idlegate did not log Caddy's clean stop"
ok "journal: Caddy's output under idlegate::backend::output; Caddy stopped with status 0 on idle"
run_readme process-uninstall

# ---------------------------------------------------------------------------
step "deploy/dns: install (UDP: dnsmasq behind a ListenDatagram= socket)"
variant_begin
run_readme dns-install
AS_ROOT "mkdir -p /etc/systemd/system/dns-on-demand.service.d && printf '[Service]\nEnvironment=IDLEGATE_IDLE_TIMEOUT=$IDLE\n' >/etc/systemd/system/dns-on-demand.service.d/idle.conf && systemctl daemon-reload"
out=$(IN systemd-analyze verify /etc/systemd/system/dns-on-demand.socket /etc/systemd/system/dns-on-demand-control.socket /etc/systemd/system/dns-on-demand.service 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify failed"; }
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify complained"; }
ok "systemd-analyze verify (systemd 257, in the guest): dns-on-demand.socket dns-on-demand-control.socket dns-on-demand.service"

step "deploy/dns: cold query, flow expiry and idle exit, re-activation"
is_active dns-on-demand.service && fail "dns-on-demand.service active before the first query"
for i in 1 2; do
  dns_query tidings.test
  [ "$ANSWER" = 192.0.2.7 ] || fail "query $i: tidings.test answered '$ANSWER', expected 192.0.2.7"
  ok "cold query $i: tidings.test -> $ANSWER in $LAST_MS ms"
  is_active dns-on-demand.service || fail "dns-on-demand.service not active after the query"
  dns_query tidings.test
  [ "$ANSWER" = 192.0.2.7 ] || fail "warm query: tidings.test answered '$ANSWER'"
  ok "warm query: tidings.test -> $ANSWER in $LAST_MS ms"
  wait_inactive dns-on-demand.service
  IN pgrep -x dnsmasq >/dev/null && fail "dnsmasq still running after the idle exit"
  ok "dnsmasq stopped with it"
done
IN journalctl --no-pager -o cat -u dns-on-demand.service --after-cursor "$VARIANT_CURSOR" |
  grep -v -e '^$' | tee "$RUN/journal-dns.txt" | sed 's/^/      | /' | tail -n 30
for line in 'socket-activated: fd [34] (dns) -> udp:127.0.0.1:5353 (udp)' 'backend ready on udp:127.0.0.1:5353 after [0-9]*ms' \
  'dnsmasq\[[0-9]*\]: query\[A\] tidings.test from 127.0.0.1' "idle for $IDLE: stopping the backend and exiting"; do
  [ "$(grep -c "$line" "$RUN/journal-dns.txt")" -ge 2 ] || fail "journal: '$line' not seen in both activations"
done
ok "journal: both activations took the datagram socket, waited for dnsmasq, answered, exited on idle"
run_readme dns-uninstall

# ---------------------------------------------------------------------------
step "deploy/quadlet: idlegate image, install"
variant_begin
run_readme quadlet-image
run_readme quadlet-install
run_readme short-idle
verify_installed tidings.service tidings-backend.service

step "deploy/quadlet: cold activation, idle exit, re-activation"
exercise quadlet tidings-backend.service
faults quadlet yes

# ---------------------------------------------------------------------------
step "without installing units: systemd-socket-activate one-liners"
try_oneliner try-process '! pgrep -x caddy'
try_oneliner try-container '! podman container exists tidings-backend'
try_oneliner try-quadlet '[ -z "$(podman ps -aq --filter ancestor=localhost/idlegate:latest)" ] && podman rm -f -i -t 5 tidings-backend >/dev/null'

step "deploy/quadlet: uninstall"
run_readme quadlet-uninstall
AS_ROOT '! podman volume exists tidings-caddy-data && ! podman image exists localhost/idlegate:latest && [ ! -e /etc/tidings ] && [ ! -e /etc/containers/systemd/tidings.container ]' ||
  fail "the quadlet uninstall left something behind"
ok "nothing left: no volume, no image, no config"

# ---------------------------------------------------------------------------
step "groups: --unit grp-db.service --unit grp-app.service, started in order, stopped in reverse"
unit_group
step "groups: a unit of the group fails to start"
unit_group_failure
step "groups: one database unit behind two apps (StopWhenUnneeded=)"
shared_unit
step "groups: one heavy backend at a time, Conflicts= between the units (llama-swap's case)"
one_heavy_at_a_time

# ---------------------------------------------------------------------------
step "cold start vs the floor (ms; median of the runs)"
printf '    %-44s %8s   %s\n' "what" "median" "runs"
printf '    %-44s %8s   %s\n' "podman start, until the port answers" "$(median $FLOOR_START)" "$FLOOR_START"
printf '    %-44s %8s   %s\n' "podman run --rm -d, until the port answers" "$(median $FLOOR_RUN)" "$FLOOR_RUN"
for v in tidings process quadlet; do
  printf '    %-44s %8s   %s\n' "cold curl, deploy/$v" "$(median ${COLD[$v]})" "${COLD[$v]}"
done
for v in tidings process quadlet; do
  printf '    %-44s %8s   %s\n' "tidings.service Starting -> READY, $v" "$(median ${READY[$v]})" "${READY[$v]}"
done
step "faults (deploy-faults.sh)"
for v in tidings onefile process quadlet; do
  printf '    %-8s sweep: %s; podman kill -> served: %s ms; image missing -> failure in: %s ms; SIGKILL under load: %s; silent client -> stack stopped in: %s ms\n' \
    "$v" "${SWEEP[$v]:-}" "${KILLED[$v]:--}" "${MISSING[$v]:--}" "${SIGKILLED[$v]:-}" "${SILENT[$v]:-}"
done
