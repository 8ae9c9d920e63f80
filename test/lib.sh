# test/lib.sh: throwaway PostgreSQL 15 clusters for fieldcrypt's test, demo and bench
# scripts. Source it (as root); clusters run as OS user postgres.
#
#   fc_cluster_start NAME [postgresql.conf line...]   start a TLS cluster on a free port
#   fc_cluster_use NAME        point FC_* and PG* at an already started cluster
#   fc_cluster_restart NAME / fc_cluster_stop NAME
#   fc_psql ARGS...            psql -X -v ON_ERROR_STOP=1 -q (TLS, via PG* variables)
#   fc_as_pg CMD...            run a command as postgres
#   fc_tmpdir VAR              set VAR to a new postgres-owned temp dir, removed on exit
# Every cluster and temp dir is stopped and removed on exit, error, Ctrl-C or kill.
# FC_PRELOAD overrides the default shared_preload_libraries ('fieldcrypt').

PGBIN=${FC_PGBIN:-/usr/lib/postgresql/15/bin}
FC_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FC_REPO
declare -gA FC_CLUSTERS=() FC_PORTS=()   # name -> base dir, name -> port
declare -ga FC_TMPDIRS=()

fc_as_pg() { (cd / && runuser -u postgres -- "$@"); }

fc_psql() { "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -q "$@"; }

fc_tmpdir() {
  local _fc_d
  _fc_d=$(mktemp -d /tmp/fc-tmp.XXXXXX) && FC_TMPDIRS+=("$_fc_d") && chown postgres: "$_fc_d" &&
    printf -v "$1" %s "$_fc_d"
}

# A TCP port on 127.0.0.1 nobody listens on (pure bash: a refused connect means free).
fc_free_port() {
  local port
  while :; do
    port=$((15000 + RANDOM % 17000))
    (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

fc_cluster_start() {
  local name=$1; shift
  [[ -z ${FC_CLUSTERS[$name]:-} ]] || { echo "fc: cluster $name is already running" >&2; return 1; }
  local dir; dir=$(mktemp -d "/tmp/fc-$name.XXXXXX") || return 1
  FC_CLUSTERS[$name]=$dir
  chown postgres: "$dir" || return 1
  local data=$dir/data log=$dir/server.log

  if ! fc_as_pg "$PGBIN/initdb" -D "$data" --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
    echo "fc: initdb failed for cluster $name:" >&2; cat "$dir/initdb.log" >&2; return 1
  fi
  if ! fc_as_pg openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
      -keyout "$data/server.key" -out "$data/server.crt" >"$dir/openssl.log" 2>&1; then
    echo "fc: certificate generation failed:" >&2; cat "$dir/openssl.log" >&2; return 1
  fi
  chmod 600 "$data/server.key" "$data/server.crt"
  cat >"$data/pg_hba.conf" <<EOF
local     all all              trust
hostssl   all all 127.0.0.1/32 trust
hostnossl all all 127.0.0.1/32 trust
EOF
  {
    echo "# fieldcrypt test harness"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = 0"
    echo "unix_socket_directories = '$dir'"
    echo "ssl = on"
    echo "shared_preload_libraries = '${FC_PRELOAD-fieldcrypt}'"
    echo "logging_collector = off"
    printf '%s\n' "$@"
  } >>"$data/postgresql.conf"

  local _ port
  for _ in 1 2 3 4 5; do
    port=$(fc_free_port)
    sed -i "s/^port = [0-9]*\$/port = $port/" "$data/postgresql.conf"
    : >"$log"; chown postgres: "$log"
    if fc_as_pg "$PGBIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null 2>&1; then
      FC_PORTS[$name]=$port
      fc_cluster_use "$name"
      return 0
    fi
    grep -q 'could not bind\|could not create any TCP/IP sockets' "$log" || break
  done
  echo "fc: cluster $name failed to start; tail of $log:" >&2
  tail -n 30 "$log" >&2
  return 1
}

fc_cluster_use() {
  local dir=${FC_CLUSTERS[$1]:?fc: no cluster $1}
  export FC_PORT=${FC_PORTS[$1]} FC_DATA=$dir/data FC_LOG=$dir/server.log FC_SOCKDIR=$dir
  export PGHOST=127.0.0.1 PGPORT=$FC_PORT PGUSER=postgres PGSSLMODE=require PGDATABASE=postgres
}

fc_cluster_restart() {
  local dir=${FC_CLUSTERS[$1]:?fc: no cluster $1}
  fc_as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -m fast restart >/dev/null ||
    { echo "fc: restart of $1 failed; tail of log:" >&2; tail -n 30 "$dir/server.log" >&2; return 1; }
}

fc_cluster_stop() {
  local dir=${FC_CLUSTERS[$1]:-}
  [[ -n $dir ]] || return 0
  fc_stop_postmasters "$dir"
  rm -rf "$dir"
  unset "FC_CLUSTERS[$1]" "FC_PORTS[$1]"
}

# Stop every postmaster whose data directory lies under $1 (ours or a TAP test's).
fc_stop_postmasters() {
  local pidfile data pid
  while IFS= read -r pidfile; do
    data=${pidfile%/postmaster.pid}
    fc_as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      fc_as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || {
        pid=$(head -n 1 "$pidfile" 2>/dev/null)
        [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] && kill -9 "$pid"
      }
  done < <(find "$1" -name postmaster.pid 2>/dev/null)
}

fc_cleanup() {
  local name d
  for name in "${!FC_CLUSTERS[@]}"; do fc_cluster_stop "$name"; done
  for d in "${FC_TMPDIRS[@]}"; do fc_stop_postmasters "$d"; rm -rf "$d"; done
  FC_TMPDIRS=()
}
trap 'fc_cleanup' EXIT
trap 'fc_cleanup; exit 129' HUP
trap 'fc_cleanup; exit 130' INT
trap 'fc_cleanup; exit 143' TERM
