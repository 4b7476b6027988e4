#!/usr/bin/env bash
# Starts one real signal server on 127.0.0.1, detached (its own session, output
# to a log), waits until it answers, and prints how to reach it.
#
#   cluster/signals/start.sh KIND STATE_DIR [--port N] [--config FILE] [--tls]
#       [--user U] [--password P] [--database D] [--timeout SECONDS] [-- ARGS...]
#
# KIND is redis, postgres, prometheus or alertmanager. --port defaults to a
# free port. --config (prometheus, alertmanager: required) is the server's
# config file, written by the caller. ARGS after -- go to the server as they
# are. --user/--password/--database (postgres only; default hgo/hgo/hgo) make
# a login role with CREATEDB and a database it owns, on first start only.
# --tls (redis, postgres): TLS only, with a throwaway CA and a certificate for
# localhost and 127.0.0.1 made by tls.sh in STATE_DIR/KIND/tls/ (kept). Redis
# then listens on --tls-port only (no client certificates); PostgreSQL takes
# hostssl connections and rejects plain ones (hostnossl ... reject).
#
# STATE_DIR/KIND/ holds the server's data and KIND.log; it is kept, so a
# second start of the same KIND in the same STATE_DIR finds its data again.
# STATE_DIR/pids gets "PID KIND BINARY" (read by stop.sh), STATE_DIR/env gets
# `export HGO_<KIND>_...=` lines, and the same NAME=VALUE lines go to stdout:
#   redis         HGO_REDIS_PORT, HGO_REDIS_URL=redis://127.0.0.1:PORT
#                 (--tls: rediss://127.0.0.1:PORT and HGO_REDIS_CA=CA_PEM_PATH)
#   postgres      HGO_POSTGRES_PORT, HGO_POSTGRES_URL=postgresql://U:P@127.0.0.1:PORT/D,
#                 HGO_POSTGRES_SOCKET_DIR, HGO_POSTGRES_BIN (psql, pg_isready, ...)
#                 (--tls: the same URL, no sslmode in it, and HGO_POSTGRES_CA)
#   prometheus    HGO_PROMETHEUS_PORT, HGO_PROMETHEUS_URL=http://127.0.0.1:PORT
#   alertmanager  HGO_ALERTMANAGER_PORT, HGO_ALERTMANAGER_URL=http://127.0.0.1:PORT
# Exits 1, after printing the end of the server's log and stopping it, if it
# exits or is not ready within --timeout (default $HGO_SIGNALS_TIMEOUT or 60).
# Stop it with cluster/signals/stop.sh STATE_DIR [KIND].
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; }
[ $# -ge 1 ] && case $1 in -h|--help) usage; exit 0 ;; esac
[ $# -ge 2 ] || { usage >&2; exit 2; }
KIND=$1 STATE=$2; shift 2
case $KIND in redis|postgres|prometheus|alertmanager) ;; *) echo "unknown KIND '$KIND' (see --help)" >&2; exit 2 ;; esac
PORT='' CONFIG='' TLS=0 PG_USER=hgo PG_PASSWORD=hgo PG_DATABASE=hgo TIMEOUT=${HGO_SIGNALS_TIMEOUT:-60}
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --port) PORT=$2; shift 2 ;;           --port=*) PORT=${1#*=}; shift ;;
    --config) CONFIG=$2; shift 2 ;;       --config=*) CONFIG=${1#*=}; shift ;;
    --tls) TLS=1; shift ;;
    --user) PG_USER=$2; shift 2 ;;        --user=*) PG_USER=${1#*=}; shift ;;
    --password) PG_PASSWORD=$2; shift 2 ;; --password=*) PG_PASSWORD=${1#*=}; shift ;;
    --database) PG_DATABASE=$2; shift 2 ;; --database=*) PG_DATABASE=${1#*=}; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;     --timeout=*) TIMEOUT=${1#*=}; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $PORT in ''|[1-9]*) ;; *) echo "--port wants a number, got '$PORT'" >&2; exit 2 ;; esac
case $PORT in *[!0-9]*) echo "--port wants a number, got '$PORT'" >&2; exit 2 ;; esac
case $TIMEOUT in ''|*[!0-9]*) echo "--timeout wants whole seconds, got '$TIMEOUT'" >&2; exit 2 ;; esac
case $KIND:$TLS in redis:*|postgres:*|*:0) ;; *) echo "--tls is for redis and postgres" >&2; exit 2 ;; esac
case $KIND in
  prometheus|alertmanager)
    [ -n "$CONFIG" ] || { echo "$KIND needs --config FILE" >&2; exit 2; }
    [ -f "$CONFIG" ] || { echo "no such config file: $CONFIG" >&2; exit 2; }
    CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG") ;;
esac
if [ "$KIND" = postgres ]; then
  # they go into SQL and a URL unquoted
  [[ $PG_USER =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "--user: lowercase letters, digits, _" >&2; exit 2; }
  [[ $PG_DATABASE =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "--database: lowercase letters, digits, _" >&2; exit 2; }
  [[ $PG_PASSWORD =~ ^[A-Za-z0-9_.~-]+$ ]] || { echo "--password: letters, digits, _ . ~ -" >&2; exit 2; }
fi

"$here/install.sh" "$KIND" >/dev/null

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
DIR=$STATE/$KIND
LOGFILE=$DIR/$KIND.log
mkdir -p "$DIR"
touch "$STATE/pids" "$STATE/env"

# ours PID BINARY: the process exists and runs BINARY (as in ../down.sh)
ours() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$2" ]
}
# locked CMD...: pids and env are shared by the servers of one STATE_DIR
locked() { ( flock 8; "$@" ) 8>"$STATE/.lock"; }

while read -r p n b; do
  if [ "$n" = "$KIND" ] && ours "$p" "$b"; then
    echo "$KIND already runs in $STATE (pid $p); stop it first: $here/stop.sh $STATE $KIND" >&2
    exit 1
  fi
done <"$STATE/pids"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "$PORT" ]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
if port_in_use "$PORT"; then echo "port $PORT on 127.0.0.1 is already in use" >&2; exit 1; fi

t0=$(date +%s%N)
elapsed_ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }
PID=
# Started but not yet ready: stop it again on failure or interruption.
cleanup() {
  [ -n "$PID" ] || return 0
  kill -KILL -- "-$PID" 2>/dev/null || kill -KILL "$PID" 2>/dev/null || true
  local _; for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  locked sed -i "/^$PID $KIND /d" "$STATE/pids"
  PID=
}
trap 'cleanup; exit 130' INT TERM
trap 'cleanup' EXIT
fail() {
  slog "FAILED: $KIND: $* (after $(elapsed_ms) ms)"
  if [ -f "$LOGFILE" ]; then
    echo "----- last lines of $LOGFILE -----" >&2
    tail -n 40 "$LOGFILE" >&2
    echo "-----" >&2
  fi
  exit 1
}

# launch CMD...: start CMD in a session of its own (so stop.sh can reach what
# it forks), stdin from /dev/null, output to LOGFILE. From a script, setsid
# execs without forking, so $! is the server's pid. Recorded in pids once the
# wrappers (setsid, setpriv, sh) have exec'd the server itself.
launch() {
  echo "----- $(date -u +%Y-%m-%dT%H:%M:%SZ) start.sh: $*" >>"$LOGFILE"
  setsid "$@" </dev/null >>"$LOGFILE" 2>&1 &
  PID=$!
  local exe='' _
  for _ in $(seq 100); do
    exe=$(readlink "/proc/$PID/exe" 2>/dev/null) || fail "exited at once"
    case ${exe##*/} in setsid|setpriv|unshare|sh|dash|bash) sleep 0.02 ;; *) break ;; esac
  done
  locked record "$PID $KIND $exe"
}

# alive: the server runs (it is our child: once it exits it is a zombie
# until this script ends, which kill -0 does not tell)
alive() {
  local s
  s=$(sed 's/^.*) //' "/proc/$PID/stat" 2>/dev/null) || return 1
  [ -n "$s" ] && [ "${s%% *}" != Z ]
}

record() { echo "$1" >>"$STATE/pids"; }

# wait_ready CHECK...: until CHECK succeeds; fail if the server exits first
wait_ready() {
  local deadline=$(( $(date +%s) + TIMEOUT ))
  while :; do
    alive || fail "exited"
    if "$@" >/dev/null 2>&1; then return 0; fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "not ready within ${TIMEOUT}s"
    sleep 0.1
  done
}

http_ok() { # URL
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 2 "$1"
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"
  fi
}

REDIS_TLS_ARGS=()
redis_ping() { [ "$("$REDIS_CLI" ${REDIS_TLS_ARGS[@]+"${REDIS_TLS_ARGS[@]}"} -h 127.0.0.1 -p "$PORT" ping)" = PONG ]; }
pg_up() { "$POSTGRES_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

declare -a ENV_LINES=()

# make_tls: the CA and server certificate in DIR/tls (kept across starts)
TLS_DIR=$DIR/tls
make_tls() {
  "$here/tls.sh" "$TLS_DIR" >/dev/null || fail "could not make the TLS certificates"
}

start_redis() {
  mkdir -p "$DIR/data"
  local listen=(--port "$PORT") scheme=redis
  if [ "$TLS" = 1 ]; then
    make_tls
    # the TLS port only; clients are not asked for a certificate
    listen=(--port 0 --tls-port "$PORT" --tls-cert-file "$TLS_DIR/server.crt"
      --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.crt"
      --tls-auth-clients no)
    REDIS_TLS_ARGS=(--tls --cacert "$TLS_DIR/ca.crt")
    scheme=rediss
  fi
  # no persistence, no password, loopback only
  launch "$REDIS_SERVER" --bind 127.0.0.1 "${listen[@]}" --dir "$DIR/data" \
    --daemonize no --save '' --appendonly no --protected-mode yes --logfile '' \
    ${EXTRA[@]+"${EXTRA[@]}"}
  wait_ready redis_ping
  ENV_LINES=("HGO_REDIS_PORT=$PORT" "HGO_REDIS_URL=$scheme://127.0.0.1:$PORT")
  [ "$TLS" = 0 ] || ENV_LINES+=("HGO_REDIS_CA=$TLS_DIR/ca.crt")
}

# PostgreSQL refuses to run as root; initdb and postgres run as one of:
#   setpriv  the user HGO_SIGNALS_PG_USER (default nobody), owning data/ and
#            run/, with CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE) as an
#            ambient capability to reach STATE_DIR inside root-only folders (a
#            0700 temp dir). Only if that user can reach the binaries without
#            it: postgres checks its own path with access(), which ignores
#            capabilities (true for /usr/lib/postgresql, not for /root/.cache).
#   userns   uid 1000 in a user namespace of its own that maps it to root:
#            postgres sees a non-root uid, the files stay root's, any path
#            works. Needs user namespaces (unshare --user).
# HGO_SIGNALS_PG_RUNAS=setpriv|userns forces one; auto tries them in this
# order. The choice is kept in STATE_DIR/postgres/runas for later starts.
pg_runas() { # MODE: print the command prefix, then the folder of the binaries
  # to run and the owner to give data/ (NUL-separated), or why not
  local mode=$1 user=${HGO_SIGNALS_PG_USER:-nobody} group bnd cap real
  case $mode in
    setpriv)
      group=$(id -gn "$user" 2>/dev/null) || { echo "no user $user (HGO_SIGNALS_PG_USER)"; return 1; }
      bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
      if (( 0x$bnd & (1 << 2) )); then cap=dac_read_search
      elif (( 0x$bnd & (1 << 1) )); then cap=dac_override
      else echo "may not grant CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE"; return 1
      fi
      real=$(readlink -f "$POSTGRES_BIN/postgres")
      setpriv --reuid="$user" --regid="$group" --clear-groups -- test -x "$real" ||
        { echo "$user cannot reach $real"; return 1; }
      printf '%s\0' setpriv --reuid="$user" --regid="$group" --clear-groups \
        --inh-caps="+$cap" --ambient-caps="+$cap" -- "$(dirname "$real")" "$user:$group" ;;
    userns)
      unshare --user --map-user=1000 --map-group=1000 true 2>/dev/null ||
        { echo "user namespaces are not available (unshare --user failed)"; return 1; }
      printf '%s\0' unshare --user --map-user=1000 --map-group=1000 -- "$POSTGRES_BIN" "" ;;
    *) echo "HGO_SIGNALS_PG_RUNAS: auto, setpriv or userns, not '$mode'"; return 1 ;;
  esac
}

start_postgres() {
  local data=$DIR/data run=$DIR/run first=0 mode why='' m
  # a unix socket path is at most 107 bytes
  [ ${#run} -le 90 ] || fail "STATE_DIR is too long for a unix socket path ($run)"
  [ -s "$data/PG_VERSION" ] || rm -f "$DIR/runas"
  mode=${HGO_SIGNALS_PG_RUNAS:-auto}
  [ -s "$DIR/runas" ] && mode=$(cat "$DIR/runas")
  local modes=("$mode"); [ "$mode" = auto ] && modes=(setpriv userns)
  local as_pg=()
  for m in "${modes[@]}"; do
    if mapfile -d '' -t as_pg < <(pg_runas "$m") && [ ${#as_pg[@]} -gt 2 ]; then
      mode=$m; break
    fi
    why+=" $m: ${as_pg[*]%$'\n'};"
    as_pg=()
  done
  [ ${#as_pg[@]} -gt 0 ] || fail "cannot run postgres as non-root:$why"
  local owner=${as_pg[-1]} bindir=${as_pg[-2]}
  as_pg=("${as_pg[@]:0:${#as_pg[@]}-2}")
  if [ ! -s "$data/PG_VERSION" ]; then
    first=1
    rm -rf "$data" "$run"
    mkdir -p "$data" "$run"
    chmod 700 "$data"
    echo postgres >"$run/pw"
    [ -z "$owner" ] || chown -R "$owner" "$data" "$run"
    slog "initdb as non-root ($mode)"
    "${as_pg[@]}" "$bindir/initdb" -D "$data" -U postgres --pwfile="$run/pw" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale --no-sync \
      >>"$LOGFILE" 2>&1 || { rm -f "$run/pw"; fail "initdb failed"; }
    rm -f "$run/pw"
    echo "$mode" >"$DIR/runas"
    cat >>"$data/postgresql.conf" <<EOF

# cluster/signals/start.sh: loopback only, fast and unsafe (test data)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$run'
fsync = off
synchronous_commit = off
full_page_writes = off
jit = off
shared_buffers = 32MB
max_connections = 100
EOF
  fi
  mkdir -p "$run"
  [ -z "$owner" ] || chown "$owner" "$run"
  local tls_args=() check_url_params=''
  if [ "$TLS" = 1 ]; then
    make_tls
    # TLS over TCP or nothing; the unix socket stays as it is. Its own hba
    # file, so the same data starts without --tls as before.
    printf '%s\n' 'local all all trust' 'hostssl all all 127.0.0.1/32 scram-sha-256' \
      'hostnossl all all 127.0.0.1/32 reject' >"$TLS_DIR/pg_hba.conf"
    # postgres wants its key owned by itself (or root) and 0600
    [ -z "$owner" ] || chown -R "$owner" "$TLS_DIR"
    tls_args=(-c ssl=on -c "ssl_cert_file=$TLS_DIR/server.crt" -c "ssl_key_file=$TLS_DIR/server.key"
      -c "hba_file=$TLS_DIR/pg_hba.conf")
    check_url_params="?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.crt"
  fi
  # the port on the command line: a restart may pick another one
  launch "${as_pg[@]}" "$bindir/postgres" -D "$data" -p "$PORT" \
    ${tls_args[@]+"${tls_args[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
  wait_ready pg_up
  if [ "$first" = 1 ]; then
    "$POSTGRES_BIN/psql" -X -q -h "$run" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" \
      -c "CREATE DATABASE $PG_DATABASE OWNER $PG_USER" >>"$LOGFILE" 2>&1 ||
      fail "could not create role $PG_USER and database $PG_DATABASE"
    echo "$PG_USER $PG_PASSWORD $PG_DATABASE" >"$DIR/credentials"
  elif [ -s "$DIR/credentials" ]; then
    # credentials are made on first start only
    read -r PG_USER PG_PASSWORD PG_DATABASE <"$DIR/credentials"
  fi
  local url=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DATABASE
  [ "$(PGCONNECT_TIMEOUT=5 "$POSTGRES_BIN/psql" -X -At "$url$check_url_params" -c 'select 1' 2>>"$LOGFILE")" = 1 ] ||
    fail "$PG_USER cannot log in over TCP"
  ENV_LINES=("HGO_POSTGRES_PORT=$PORT" "HGO_POSTGRES_URL=$url"
    "HGO_POSTGRES_SOCKET_DIR=$run" "HGO_POSTGRES_BIN=$POSTGRES_BIN")
  [ "$TLS" = 0 ] || ENV_LINES+=("HGO_POSTGRES_CA=$TLS_DIR/ca.crt")
}

start_prometheus() {
  mkdir -p "$DIR/data"
  # --web.enable-lifecycle: POST /-/reload after rewriting the config
  launch "$PROMETHEUS" --config.file="$CONFIG" --storage.tsdb.path="$DIR/data" \
    --web.listen-address="127.0.0.1:$PORT" --web.enable-lifecycle ${EXTRA[@]+"${EXTRA[@]}"}
  wait_ready http_ok "http://127.0.0.1:$PORT/-/ready"
  ENV_LINES=("HGO_PROMETHEUS_PORT=$PORT" "HGO_PROMETHEUS_URL=http://127.0.0.1:$PORT")
}

start_alertmanager() {
  mkdir -p "$DIR/data"
  # --cluster.listen-address= : no gossip (it would bind 0.0.0.0:9094)
  launch "$ALERTMANAGER" --config.file="$CONFIG" --storage.path="$DIR/data" \
    --web.listen-address="127.0.0.1:$PORT" --cluster.listen-address= ${EXTRA[@]+"${EXTRA[@]}"}
  wait_ready http_ok "http://127.0.0.1:$PORT/-/ready"
  ENV_LINES=("HGO_ALERTMANAGER_PORT=$PORT" "HGO_ALERTMANAGER_URL=http://127.0.0.1:$PORT")
}

"start_$KIND"
alive || fail "exited"
prefix=HGO_$(echo "$KIND" | tr '[:lower:]' '[:upper:]')_
write_env() {
  grep -v "^export $prefix" "$STATE/env" >"$STATE/env.tmp" || true
  printf 'export %s\n' "${ENV_LINES[@]}" >>"$STATE/env.tmp"
  mv "$STATE/env.tmp" "$STATE/env"
}
locked write_env
slog "$KIND ready on 127.0.0.1:$PORT in $(elapsed_ms) ms (pid $PID, log $LOGFILE)"
PID=   # ready: no cleanup
printf '%s\n' "${ENV_LINES[@]}"
