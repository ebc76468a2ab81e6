# Faults and races for tests/e2e/nspawn-deploy.sh (sourced by it; uses its
# IN, NET, AS_ROOT, fetch, state, ok, info, fail, ms_since): clients arriving
# at the worst moments of an idle exit, a killed backend, a missing image,
# SIGKILL under load, a silent client. Each function drives the recipe that is
# installed at the time, with the short idle drop-in (IDLE).

# try_fetch URL EXPECTED [curl options]: like fetch, but returns 1 instead of
# failing the run; sets LAST_MS and LAST_BODY.
try_fetch() {
  local url=$1 want=$2 out
  shift 2
  LAST_BODY=
  out=$(NET curl -sS -m 30 -w '\n%{time_total}' "$@" "$url" 2>&1) || {
    LAST_BODY=$out
    LAST_MS=
    return 1
  }
  LAST_BODY=${out%$'\n'*}
  LAST_MS=$(awk -v t="${out##*$'\n'}" 'BEGIN { printf "%.1f", t * 1000 }')
  [ "$LAST_BODY" = "$want" ]
}

sockets_active() {
  local s
  for s in tidings.socket tidings-https.socket; do
    [ "$(state "$s")" = active ] || fail "$s is $(state "$s") ($(IN systemctl show -P Result "$s"))"
  done
}

# Waits (up to 30 s) until each unit given is inactive or failed.
wait_down() {
  local t u
  t=$(date +%s%N)
  for u in "$@"; do
    until case $(state "$u") in inactive | failed) true ;; *) false ;; esac do
      [ "$(ms_since "$t")" -lt 30000 ] || fail "$u still $(state "$u") 30 s later"
      sleep 0.05
    done
  done
}

# The idle-boundary sweep: each request comes GAP after the previous one
# ended, GAP from 2.90 s to 4.60 s (E2E_SWEEP_STEP apart), so that with the 3 s
# idle timeout the requests meet every moment of the idle exit and of the
# backend's stop. Every request must be answered, and the sockets stay active.
sweep() {
  local variant=$1 gap failed=0 n=0 worst=0 t0
  t0=$(date +%s%N)
  for gap in $(seq 2.90 "${E2E_SWEEP_STEP:-0.1}" 4.60); do
    n=$((n + 1))
    if try_fetch http://localhost/ "Good tidings"; then
      worst=$(awk -v a="$worst" -v b="$LAST_MS" 'BEGIN { print (b > a) ? b : a }')
    else
      failed=$((failed + 1))
      info "request $n (after a gap of ${gap}s) failed: ${LAST_BODY:-no answer}"
    fi
    sleep "$gap"
  done
  sockets_active
  [ "$failed" = 0 ] || fail "$failed of $n requests across the idle exit failed"
  SWEEP[$variant]="$n requests, 0 failed, slowest $worst ms"
  ok "sweep across the idle exit ($variant): $n requests with gaps 2.90-4.60 s, 0 failed (slowest $worst ms), sockets active, in $(($(ms_since "$t0") / 1000)) s"
}

# The backend container is killed while idlegate runs: the next request is
# served within seconds (idlegate, bound to the backend, is stopped with it;
# the next client starts both again).
killed_backend() {
  local variant=$1 t
  fetch http://localhost/ "Good tidings"
  is_active tidings-backend.service || fail "the backend is not running"
  t=$(date +%s%N)
  AS_ROOT "podman kill tidings-backend >/dev/null"
  wait_down tidings.service
  fetch http://localhost/ "Good tidings"
  KILLED[$variant]=$(ms_since "$t")
  sockets_active
  ok "podman kill tidings-backend: the next request served $(ms_since "$t") ms after the kill ($LAST_MS ms itself)"
  wait_down tidings.service tidings-backend.service
}

# The backend's image is missing: a client gets a prompt, clean failure, the
# sockets stay active, and once the image is back the next request succeeds.
missing_image() {
  local variant=$1 t ms
  wait_down tidings.service tidings-backend.service
  AS_ROOT "podman tag docker.io/library/caddy:2.6 localhost/caddy-kept:2.6 && podman rmi docker.io/library/caddy:2.6 >/dev/null"
  t=$(date +%s%N)
  try_fetch http://localhost/ "Good tidings" && fail "answered without an image"
  ms=$(ms_since "$t")
  [ "$ms" -lt 15000 ] || fail "the client waited $ms ms for a backend that cannot start"
  sockets_active
  ok "image missing: the client got a clean failure in $ms ms (${LAST_BODY:-empty reply}); sockets active"
  MISSING[$variant]=$ms
  # Another one while it is still missing: the same, and still no start limit.
  wait_down tidings.service tidings-backend.service
  try_fetch http://localhost/ "Good tidings" && fail "answered without an image"
  sockets_active
  AS_ROOT "podman tag localhost/caddy-kept:2.6 docker.io/library/caddy:2.6 && podman rmi localhost/caddy-kept:2.6 >/dev/null"
  wait_down tidings.service tidings-backend.service
  fetch http://localhost/ "Good tidings"
  ok "image back: the next request served in $LAST_MS ms"
  wait_down tidings.service tidings-backend.service
}

# SIGKILL to idlegate's service under parallel load: a handful of failed
# requests at most, no start limit hit, the next request served within 2 s.
sigkill_under_load() {
  local variant=$1 out total failed t
  fetch http://localhost/ "Good tidings"
  [ "$variant" = quadlet ] || no_shared_shm
  # 4 clients, one request after another each, for 6 s.
  IN bash -c 'for c in 1 2 3 4; do
      ( end=$((SECONDS + 6)); while [ $SECONDS -lt $end ]; do
          if [ "$(curl -sS -m 30 http://localhost/ 2>/dev/null)" = "Good tidings" ]; then echo "ok $(date +%s%N)"; else echo failed; fi
        done ) &
    done; wait' >"$RUN/load-$variant.txt" &
  local load=$!
  sleep 2
  IN systemctl kill -s SIGKILL tidings.service
  t=$(date +%s%N)
  wait $load
  total=$(wc -l <"$RUN/load-$variant.txt")
  failed=$(grep -c failed "$RUN/load-$variant.txt" || true)
  # The outage: the longest time between two answers (any client) around
  # the kill, which is what a user of the site sees.
  local next
  next=$(awk '$1 == "ok" { print $2 }' "$RUN/load-$variant.txt" | sort -n |
    awk -v t="$t" 'NR > 1 && $1 > t { d = $1 - p; if (d > m) m = d } { p = $1 } END { printf "%d", m / 1000000 }')
  [ "$(awk -v t="$t" '$1 == "ok" && $2 > t' "$RUN/load-$variant.txt" | wc -l)" -gt 0 ] || fail "no request answered after the SIGKILL"
  [ "$next" -le 2000 ] || fail "no answer for $next ms around the SIGKILL"
  fetch http://localhost/ "Good tidings"
  sockets_active
  local u
  for u in tidings.service tidings-backend.service; do
    [ "$(IN systemctl show -P Result "$u")" != start-limit-hit ] || fail "$u hit its start limit"
  done
  [ "$failed" -le 10 ] || fail "$failed of $total requests failed around the SIGKILL"
  SIGKILLED[$variant]="$failed of $total failed, longest gap between answers $next ms"
  ok "SIGKILL under load: $failed of $total requests failed; longest gap between answers $next ms; no start limit hit; sockets active"
  wait_down tidings.service tidings-backend.service
}

# A client that connects and never sends a byte (a port scanner, a half-open
# connection) on a cold start: the connection idle timeout closes it, and the
# whole stack stops on idle after it.
silent_client() {
  local variant=$1 t
  wait_down tidings.service tidings-backend.service
  t=$(date +%s%N)
  NET bash -c 'exec 3<>/dev/tcp/127.0.0.1/80; timeout 60 cat <&3 >/dev/null' &
  local silent=$!
  local w
  w=$(date +%s%N)
  until is_active tidings.service; do
    [ "$(ms_since "$w")" -lt 10000 ] || fail "the silent connection did not activate tidings.service"
    sleep 0.05
  done
  wait $silent || true
  ok "the silent connection was closed by idlegate $(ms_since "$t") ms after it connected"
  wait_down tidings.service
  [ "$(state tidings-backend.service)" != active ] || wait_down tidings-backend.service
  SILENT[$variant]=$(ms_since "$t")
  ok "silent client on a cold start: the stack stopped $(ms_since "$t") ms after it connected"
}

# The running service's processes cannot reach the host's /dev/shm
# (InaccessiblePaths=): it is an empty node with no permissions there.
no_shared_shm() {
  local pid mode
  pid=$(IN systemctl show -P MainPID tidings.service)
  [ -n "$pid" ] && [ "$pid" != 0 ] || fail "tidings.service is not running"
  mode=$(IN nsenter -t "$pid" -m stat -c %a /dev/shm) || fail "cannot look at the service's /dev/shm"
  [ "$mode" = 0 ] || fail "the service's /dev/shm has mode $mode, not 0 (inaccessible)"
  ok "the service cannot use /dev/shm (mode $mode in its namespace)"
}
