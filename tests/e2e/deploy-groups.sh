# Unit groups and the one-heavy-backend-at-a-time recipe (README "Groups: an
# app and its database") for tests/e2e/nspawn-deploy.sh (sourced by it; uses
# its R, IN, NET, AS_ROOT, fetch, state, wait_inactive, ok, info, fail,
# ms_since). The backends are Caddy file servers as plain units; idlegate is
# the checkout's binary behind hand-written sockets.

GROUP_BIN=/root/idlegate/target/release/idlegate

# group_unit NAME PORT TEXT [UNIT-LINES] [SERVICE-LINES]: a Caddy file server
# on 127.0.0.1:PORT answering TEXT.
group_unit() {
  mkdir -p "$R/srv/$1"
  printf '%s' "$3" >"$R/srv/$1/index.html"
  printf '[Unit]\nDescription=%s\n%s\n[Service]\n%s\nExecStart=/usr/bin/caddy file-server --listen 127.0.0.1:%s --root /srv/%s\n' \
    "$1" "${4:-}" "${5:-}" "$2" "$1" >"$R/etc/systemd/system/$1.service"
}

# group_proxy NAME PORT ARGS...: NAME.socket on 127.0.0.1:PORT starting
# NAME.service, idlegate with ARGS.
group_proxy() {
  local name=$1 port=$2
  shift 2
  printf '[Socket]\nListenStream=127.0.0.1:%s\n' "$port" >"$R/etc/systemd/system/$name.socket"
  printf '[Service]\nExecStart=%s %s\n' "$GROUP_BIN" "$*" >"$R/etc/systemd/system/$name.service"
}

mono() { IN systemctl show -P "$2" "$1"; }

# --unit grp-db.service --unit grp-app.service: the app's start begins once
# the database is active (its ExecStartPre= takes a second), and at idle the
# database's stop begins once the app is stopped.
unit_group() {
  group_unit grp-db 8211 "db" "" "ExecStartPre=/usr/bin/sleep 1"
  group_unit grp-app 8212 "app"
  group_proxy grp 8210 --unit grp-db.service --unit grp-app.service --upstream 127.0.0.1:8212 --idle-timeout 3s
  IN systemctl daemon-reload
  IN systemctl start grp.socket
  fetch http://127.0.0.1:8210/ "app"
  ok "cold request through --unit grp-db.service --unit grp-app.service answered by the app in $LAST_MS ms"
  local db_active app_begins
  db_active=$(mono grp-db.service ActiveEnterTimestampMonotonic)
  app_begins=$(mono grp-app.service InactiveExitTimestampMonotonic)
  [ "$db_active" -gt 0 ] && [ "$app_begins" -ge "$db_active" ] ||
    fail "the app's start began at $app_begins, before the database was active at $db_active"
  ok "start order: grp-app.service began $(((app_begins - db_active) / 1000)) ms after grp-db.service was active (after its 1 s ExecStartPre=)"
  wait_inactive grp.service grp-app.service grp-db.service
  local app_stopped db_stop_begins
  app_stopped=$(mono grp-app.service InactiveEnterTimestampMonotonic)
  db_stop_begins=$(mono grp-db.service ActiveExitTimestampMonotonic)
  [ "$db_stop_begins" -ge "$app_stopped" ] ||
    fail "the database's stop began at $db_stop_begins, before the app was stopped at $app_stopped"
  ok "stop order: grp-db.service's stop began $(((db_stop_begins - app_stopped) / 1000)) ms after grp-app.service was stopped"
  IN systemctl stop grp.socket
}

# llama-swap's case with units: Conflicts= between the two backends lets one
# run at a time. Starting B (through its idlegate) stops A; A's next client
# starts A again, and that stops B.
one_heavy_at_a_time() {
  group_unit llm-a 8221 "model a" "Conflicts=llm-b.service"
  group_unit llm-b 8222 "model b" "Conflicts=llm-a.service"
  group_proxy llm-a-proxy 8220 --unit llm-a.service --upstream 127.0.0.1:8221 --mode http --idle-timeout 60s
  group_proxy llm-b-proxy 8230 --unit llm-b.service --upstream 127.0.0.1:8222 --mode http --idle-timeout 60s
  IN systemctl daemon-reload
  IN systemctl start llm-a-proxy.socket llm-b-proxy.socket
  fetch http://127.0.0.1:8220/ "model a"
  ok "A's client: 'model a' in $LAST_MS ms (llm-a.service $(state llm-a.service))"
  fetch http://127.0.0.1:8230/ "model b"
  [ "$(state llm-a.service)" = inactive ] || fail "llm-a.service is $(state llm-a.service) while B runs"
  ok "B's client: 'model b' in $LAST_MS ms; Conflicts= stopped llm-a.service (inactive), both idlegates still up ($(state llm-a-proxy.service), $(state llm-b-proxy.service))"
  fetch http://127.0.0.1:8220/ "model a"
  [ "$(state llm-b.service)" = inactive ] || fail "llm-b.service is $(state llm-b.service) after A came back"
  ok "A's next client: 'model a' in $LAST_MS ms, A started again and B stopped"
  IN systemctl stop llm-a-proxy.socket llm-b-proxy.socket llm-a-proxy.service llm-b-proxy.service llm-a.service llm-b.service
}

# --unit grp-db.service --unit grp-bad.service, whose start fails: the client
# gets the clean failure (502), the journal names the failed unit, and the
# database is stopped again.
unit_group_failure() {
  group_unit grp-bad 8242 "bad" "" "ExecStartPre=/usr/bin/false"
  group_proxy grpf 8240 --unit grp-db.service --unit grp-bad.service --upstream 127.0.0.1:8242 --mode http --idle-timeout 60s
  IN systemctl daemon-reload
  local cursor code line t
  cursor=$(IN journalctl -n 1 --show-cursor --no-pager -o cat | sed -n 's/^-- cursor: //p')
  IN systemctl start grpf.socket
  code=$(NET curl -s -o /dev/null -w '%{http_code}' -m 30 http://127.0.0.1:8240/) || true
  [ "$code" = 502 ] || fail "the client got '$code', not 502"
  line=$(IN journalctl --no-pager -o cat -u grpf.service --after-cursor "$cursor" | grep 'backend failed: ' | head -n 1)
  case $line in *grp-bad.service*) ;; *) fail "the failure does not name grp-bad.service: '$line'" ;; esac
  t=$(date +%s%N)
  until [ "$(state grp-db.service)" = inactive ]; do
    [ "$(ms_since "$t")" -lt 20000 ] || fail "grp-db.service is still $(state grp-db.service) after the failed start"
    sleep 0.2
  done
  ok "grp-bad.service failed: the client got 502, grp-db.service stopped again; journal: $line"
  IN systemctl stop grpf.socket grpf.service
}

# One database unit behind two apps, through systemd's own count: db with
# StopWhenUnneeded=yes, each app Requires= and After= it, idlegate names only
# the app. The first app's idle exit leaves the database up; the last stops it.
shared_unit() {
  group_unit shdb 8251 "db" "StopWhenUnneeded=yes"
  group_unit shapp1 8252 "app1" "Requires=shdb.service
After=shdb.service"
  group_unit shapp2 8253 "app2" "Requires=shdb.service
After=shdb.service"
  group_proxy sh1 8250 --unit shapp1.service --upstream 127.0.0.1:8252 --idle-timeout 3s
  group_proxy sh2 8260 --unit shapp2.service --upstream 127.0.0.1:8253 --idle-timeout 60s
  IN systemctl daemon-reload
  IN systemctl start sh1.socket sh2.socket
  fetch http://127.0.0.1:8250/ "app1"
  fetch http://127.0.0.1:8260/ "app2"
  wait_inactive sh1.service shapp1.service
  [ "$(state shdb.service)" = active ] || fail "shdb.service is $(state shdb.service) while shapp2.service needs it"
  ok "the first app idled out; shdb.service is still active for the second"
  IN systemctl stop sh2.service
  local t
  t=$(date +%s%N)
  until [ "$(state shdb.service)" = inactive ]; do
    [ "$(ms_since "$t")" -lt 20000 ] || fail "shdb.service is still $(state shdb.service) with no app left"
    sleep 0.2
  done
  ok "the second app stopped; StopWhenUnneeded= stopped shdb.service $(ms_since "$t") ms later"
  IN systemctl stop sh1.socket sh2.socket
}
