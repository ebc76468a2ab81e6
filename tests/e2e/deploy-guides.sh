# shellcheck shell=bash
# The guides' one-file configs under the real systemd (sourced by
# nspawn-deploy.sh, which defines IN, NET, AS_ROOT, fetch, wait_inactive, …;
# the Debian package must be installed in the guest). Each config is taken
# from docs/guides/*.md as written: the ```toml block after <!-- guide: NAME -->
# is installed at the path its first line names, with one change, the idle
# timeout cut to $IDLE so that the test sees it sleep; the ```sh blocks are
# run as they are. Checked: docs/guides/process.md (python3 -m http.server as
# the dynamic user) and docs/guides/databases.md (Debian's PostgreSQL 17
# cluster taken over from its own service, a cold psql answered twice, and
# the backup service that holds it awake with `idlegate inhibit`; Redis, its
# data kept across an idle stop).

# The fenced block that follows <!-- guide: NAME --> in docs/guides/$1.
guide_block() { marked_block "docs/guides/$1" "guide: $2"; }

# Run a guide's ```sh block in the guest as root (stdin passed on), echoing it.
run_guide() {
  info "docs/guides/$1 [$2]:"
  guide_block "$1" "$2" | sed 's/^/      | /'
  AS_ROOT "$(guide_block "$1" "$2")" 2>&1 | sed 's/^/      > /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "docs/guides/$1 block $2 failed"
}

# Install a guide's file block at the path its first line names ("# PATH"),
# with its idle timeout (if any) cut to $IDLE; prints the path.
install_guide_file() {
  local text path
  text=$(guide_block "$1" "$2")
  path=$(printf '%s\n' "$text" | sed -n '1s/^# \(\/[^ ]*\)$/\1/p')
  [ -n "$path" ] || fail "docs/guides/$1 [$2]: the first line names no file: $(printf '%s\n' "$text" | head -n 1)"
  if printf '%s\n' "$text" | grep -q '^idle-timeout = '; then
    text=$(printf '%s\n' "$text" | sed "s/^idle-timeout = .*/idle-timeout = \"$IDLE\"/")
  fi
  mkdir -p "$R$(dirname "$path")"
  printf '%s\n' "$text" >"$R$path"
  printf '%s\n' "$path"
}

guide_process() {
  local path i
  run_guide process.md process-setup
  path=$(install_guide_file process.md process-toml)
  [ "$path" = /etc/idlegate/files.toml ] || fail "process.md's config is $path"
  info "installed $path (idle-timeout $IDLE)"
  run_guide process.md process-start
  [ "$(IN systemctl show -P FragmentPath files.service)" = /run/systemd/generator/files.service ] ||
    fail "files.service is not the generator's"
  for i in 1 2; do
    is_active files.service && fail "files.service active before the client"
    fetch http://127.0.0.1:8000/hello.txt $'Hello from a program started on demand\n'
    ok "cold $i: curl http://127.0.0.1:8000/hello.txt answered by python3 in $LAST_MS ms"
    IN pgrep -f 'http.server 8001' >/dev/null || fail "no python3 http.server running"
    wait_inactive files.service
    IN pgrep -f 'http.server 8001' >/dev/null && fail "python3 still runs after the idle exit"
    ok "python3 gone with it"
  done
  AS_ROOT "systemctl stop files.socket files-control.socket && rm $path && systemctl daemon-reload"
}

# psql in the guest as the guide's role, over TCP through idlegate; sets
# ANSWER and LAST_MS.
guide_psql() {
  local t
  t=$(date +%s%N)
  ANSWER=$(IN env PGPASSWORD=e2e-secret psql -h 127.0.0.1 -U app -d app -Atc "$1" 2>&1) || fail "psql: $ANSWER"
  LAST_MS=$(ms_since "$t")
}

guide_postgres() {
  local path i
  # The guide's first block asks for the role's password twice (createuser --pwprompt).
  info "docs/guides/databases.md [pg-before] (the password on stdin):"
  guide_block databases.md pg-before | sed 's/^/      | /'
  printf 'e2e-secret\ne2e-secret\n' | AS_ROOT "$(guide_block databases.md pg-before)" 2>&1 | sed 's/^/      > /'
  [ "${PIPESTATUS[1]}" -eq 0 ] || fail "docs/guides/databases.md block pg-before failed"
  is_active postgresql@17-main.service && fail "Debian's cluster still runs"
  path=$(install_guide_file databases.md pg-toml)
  [ "$path" = /etc/idlegate/pg.toml ] || fail "databases.md's config is $path"
  info "installed $path (idle-timeout $IDLE)"
  run_guide databases.md pg-start
  for i in 1 2; do
    is_active pg.service && fail "pg.service active before the client"
    IN pgrep -u postgres -x postgres >/dev/null && fail "postgres runs before the client"
    guide_psql 'select 41 + 1'
    [ "$ANSWER" = 42 ] || fail "cold psql answered '$ANSWER'"
    ok "cold $i: psql -h 127.0.0.1 -U app app -c 'select 41 + 1' -> $ANSWER in $LAST_MS ms"
    IN pgrep -u postgres -x postgres >/dev/null || fail "no postgres process of the user postgres"
    wait_inactive pg.service
    IN pgrep -u postgres -x postgres >/dev/null && fail "postgres still runs after the idle exit"
    ok "postgres gone with it"
  done
  IN journalctl --no-pager -o cat -u pg.service --after-cursor "$VARIANT_CURSOR" >"$RUN/journal-pg.txt"
  grep -q 'database system is ready to accept connections' "$RUN/journal-pg.txt" || fail "no postgres log in pg.service's journal"
  grep -q 'FATAL' "$RUN/journal-pg.txt" && { grep FATAL "$RUN/journal-pg.txt" >&2; fail "postgres logged a FATAL"; }
  ok "journal: postgres's own log under pg.service, no FATAL"

  step "docs/guides/databases.md: the backup service holds PostgreSQL awake with idlegate inhibit"
  for b in pg-backup-service pg-backup-timer; do
    path=$(install_guide_file databases.md "$b")
    info "installed $path"
  done
  run_guide databases.md pg-backup-install
  IN test -s /var/lib/postgresql/backup/app.dump || fail "no dump at /var/lib/postgresql/backup/app.dump"
  IN pg_restore -l /var/lib/postgresql/backup/app.dump >/dev/null || fail "the dump does not read back"
  IN journalctl --no-pager -o cat -u pg.service --after-cursor "$VARIANT_CURSOR" |
    grep -q 'inhibited by pid [0-9]* (uid 0): nightly pg_dump' || fail "no 'inhibited by' line for the dump"
  [ "$(IN systemctl show -P Result pg-backup.service)" = success ] || fail "pg-backup.service: $(IN systemctl show -P Result pg-backup.service)"
  IN systemctl is-active --quiet pg-backup.timer || fail "pg-backup.timer not active"
  ok "pg-backup.service woke PostgreSQL, dumped app ($(IN stat -c %s /var/lib/postgresql/backup/app.dump) bytes), released it"
  wait_inactive pg.service
  AS_ROOT "systemctl disable --now pg-backup.timer && rm /etc/systemd/system/pg-backup.service /etc/systemd/system/pg-backup.timer &&
    systemctl stop pg.socket pg-control.socket && rm /etc/idlegate/pg.toml && systemctl daemon-reload"
}

# redis-cli in the guest, to 127.0.0.1:6379 (through idlegate); sets ANSWER and LAST_MS.
guide_redis_cli() {
  local t
  t=$(date +%s%N)
  ANSWER=$(IN redis-cli -h 127.0.0.1 -p 6379 "$@" 2>&1) || fail "redis-cli $*: $ANSWER"
  LAST_MS=$(ms_since "$t")
}

guide_redis() {
  local path
  run_guide databases.md redis-before
  path=$(install_guide_file databases.md redis-toml)
  [ "$path" = /etc/idlegate/redis.toml ] || fail "databases.md's Redis config is $path"
  info "installed $path (idle-timeout $IDLE)"
  run_guide databases.md redis-start
  guide_redis_cli set guide e2e-value
  [ "$ANSWER" = OK ] || fail "redis-cli set answered '$ANSWER'"
  ok "redis-cli set guide e2e-value -> $ANSWER (the guide's redis-cli ping woke it)"
  wait_inactive redis.service
  IN pgrep -x redis-server >/dev/null && fail "redis-server still runs after the idle exit"
  guide_redis_cli get guide
  [ "$ANSWER" = e2e-value ] || fail "cold redis-cli get answered '$ANSWER': the dataset was not kept"
  ok "cold: redis-cli get guide -> $ANSWER in $LAST_MS ms (saved at the idle stop, loaded at the start)"
  wait_inactive redis.service
  AS_ROOT "systemctl stop redis.socket redis-control.socket && rm $path && systemctl daemon-reload"
}

# The guides; the package is installed.
guides() {
  step "docs/guides/process.md: a program as the dynamic user, from the guide's file"
  variant_begin
  guide_process
  step "docs/guides/databases.md: PostgreSQL 17 taken over from Debian's service, from the guide's file"
  variant_begin
  guide_postgres
  step "docs/guides/databases.md: Redis taken over from Debian's service, from the guide's file"
  variant_begin
  guide_redis
}
