# Awake at set hours ([systemd] awake, docs/guides/schedules.md) for
# tests/e2e/nspawn-deploy.sh (sourced by it; uses its IN, NET, AS_ROOT,
# fetch, state, is_active, wait_inactive, ok, info, fail, ms_since). Needs
# the package installed (the generator). The backend is a Caddy file server
# that idlegate starts; the windows are a few seconds long, in the guest's
# local time.

# The guest's local HH:MM:SS, $1 seconds from now.
guest_clock() { IN date -d "@$(($(IN date +%s) + $1))" +%H:%M:%S; }

# office.toml with the window $1 (idle timeout 3 s); the units generated
# and started as at boot (enable = true: the sockets and the timer).
office_install() {
  AS_ROOT "mkdir -p /srv/office && printf 'Office app' >/srv/office/index.html
cat >/etc/idlegate/office.toml <<'TOML'
upstream = \"127.0.0.1:8097\"
idle-timeout = \"3s\"
command = [\"/usr/bin/caddy\", \"file-server\", \"--listen\", \"127.0.0.1:8097\", \"--root\", \"/srv/office\"]

[systemd]
listen = [\"127.0.0.1:8098\"]
enable = true
awake = [\"$1\"]
TOML
systemctl daemon-reload
systemctl start office.socket office-control.socket office-awake.timer"
}

# Waits up to $1 s for office.service to be active; $2 says when it should have been.
office_woken() {
  local since
  since=$(date +%s%N)
  until is_active office.service; do
    [ "$(ms_since "$since")" -lt $(($1 * 1000)) ] || fail "office.service not woken $2"
    sleep 0.2
  done
}

# Asserts office.service stays active (and its Caddy runs) until $1 s from now.
office_held_for() {
  local t
  t=$(date +%s%N)
  while [ "$(ms_since "$t")" -lt $(($1 * 1000)) ]; do
    is_active office.service || fail "office.service $(state office.service) $(ms_since "$t") ms into the hold (idle timeout 3s)"
    sleep 0.5
  done
  IN pgrep -f 'caddy file-server --listen 127.0.0.1:8097' >/dev/null || fail "no Caddy under the hold"
}

awake_windows() {
  local start end t cursor journal line
  cursor=$(IN journalctl -n 1 --show-cursor --no-pager -o cat | sed -n 's/^-- cursor: //p')

  # 1. A window that starts in 20 s: the timer's start (OnActiveSec=0)
  # wakes nothing; its OnCalendar= does, at the start, with no client.
  start=$(guest_clock 20) end=$(guest_clock 45)
  office_install "$start..$end"
  for u in office-awake.timer office-awake.service; do
    [ "$(IN systemctl show -P FragmentPath "$u")" = "/run/systemd/generator/$u" ] || fail "$u is not the generator's"
  done
  IN test -L /run/systemd/generator/timers.target.wants/office-awake.timer || fail "enable = true made no timers.target.wants link"
  out=$(IN systemd-analyze verify /run/systemd/generator/office-awake.timer /run/systemd/generator/office-awake.service 2>&1) ||
    { echo "$out" >&2; fail "systemd-analyze verify of the awake units failed"; }
  [ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify complained about the awake units"; }
  ok "generated office-awake.timer (OnCalendar=$(IN systemctl show -P TimersCalendar office-awake.timer | sed 's/.*OnCalendar=\([^;]*\);.*/\1/')) and office-awake.service; verified by systemd 257"
  t=$(date +%s%N)
  until [ "$(IN systemctl show -P Result office-awake.service)" = success ] && [ "$(IN systemctl show -P NRestarts office-awake.service)" = 0 ] &&
    IN journalctl --no-pager -o cat -u office-awake.service --after-cursor "$cursor" | grep -q 'nothing to hold'; do
    [ "$(ms_since "$t")" -lt 15000 ] || fail "office-awake.service did not run at the timer's start"
    sleep 0.2
  done
  is_active office.service && fail "office.service woke before its window ($start..$end)"
  ok "the timer's start, before the window: office-awake.service said nothing to hold; office.service stays asleep"
  t=$(date +%s%N)
  office_woken 40 "by $start (guest time $(guest_clock 0))"
  ok "woken at $(guest_clock 0) for the window $start..$end, with no client"
  office_held_for 15
  fetch http://127.0.0.1:8098/ "Office app"
  ok "held past the idle timeout (3s) for 15 s; served warm in $LAST_MS ms"
  until [ "$(state office-awake.service)" = inactive ]; do
    [ "$(ms_since "$t")" -lt 60000 ] || fail "office-awake.service still $(state office-awake.service) after the window's end $end"
    sleep 0.2
  done
  ok "the window ended at $(guest_clock 0): office-awake.service $(state office-awake.service) ($(IN systemctl show -P Result office-awake.service))"
  wait_inactive office.service

  # 2. A window in progress when the timer starts (a boot at 09:00 in a
  # window from 08:00): held at once, to its end.
  start=$(guest_clock -60) end=$(guest_clock 20)
  IN systemctl stop office-awake.timer
  office_install "$start..$end"
  t=$(date +%s%N)
  office_woken 30 "when the timer started inside $start..$end"
  ok "the timer started inside $start..$end: office.service woken at once ($(ms_since "$t") ms)"
  office_held_for 12
  wait_inactive office.service
  [ "$(IN systemctl show -P Result office-awake.service)" = success ] || fail "office-awake.service: $(IN systemctl show -P Result office-awake.service)"

  journal=$(IN journalctl --no-pager -o cat -u office.service --after-cursor "$cursor")
  for line in 'inhibited by pid [0-9]* (uid 0): awake at set hours' 'inhibitor released: .*awake at set hours'; do
    [ "$(printf '%s\n' "$journal" | grep -c "$line")" -ge 2 ] || fail "journal: '$line' not seen for both windows"
  done
  printf '%s\n' "$journal" | grep -e 'inhibit' -e 'idle for' | sed 's/^/      | /'
  ok "journal: both windows held and released the service"
  # Left installed, the timer active: `dpkg -r` must stop it (prerm).
  is_active office-awake.timer || fail "office-awake.timer is $(state office-awake.timer)"
}
