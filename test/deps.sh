#!/usr/bin/env bash
# Install fieldcrypt's build and test dependencies (Debian 12, as root). Idempotent:
# does nothing, not even apt-get update, when every package is already installed.
set -euo pipefail

pkgs=(
  postgresql-15 postgresql-server-dev-15 libssl-dev libkrb5-dev  # build (libpq-be.h needs gssapi.h)
  postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl      # pgTAP + pg_prove
  libipc-run-perl perl libdbd-pg-perl                             # TAP tests (Cluster; DBD::Pg for bind parameters)
  postgresql-15-pgaudit openssl softhsm2
  postgresql-15-repack                                            # pg_repack (TAP 131, 150)
  pgbackrest                                                      # pgBackRest (TAP 160)
  libp11-kit-dev opensc                                           # HSM tenant key: pkcs11.h; pkcs11-tool in tests
  nettle-dev libnettle8                                           # AES-256-GCM of short messages (src/keys/gcm_nettle.c)
)

# Citus (optional: the TAP suite test/t/200_citus.pl runs only where it is installed) is
# built from source when its tarball is beside the repository (../shared/citus-*.tar.xz, or
# FC_CITUS_TARBALL), into the PostgreSQL installation of PG_CONFIG (default: the system one;
# `make deps` passes the Makefile's). Its build needs these packages.
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
repo=$(cd "$(dirname "$0")/.." && pwd)
citus_tarball=${FC_CITUS_TARBALL:-$(ls -1 "$repo"/../shared/citus-*.tar.xz 2>/dev/null | sort -V | tail -n 1 || true)}
[[ -z $citus_tarball || ! -r $citus_tarball ]] || pkgs+=(libcurl4-openssl-dev liblz4-dev libzstd-dev)

# build_citus: configure, build and install Citus from $citus_tarball into the PostgreSQL of
# $PG_CONFIG. The build tree is cached under /var/cache/fieldcrypt-citus, keyed by the
# tarball's checksum, the PostgreSQL version and the pg_config path, so a later run only
# reinstalls (seconds) or does nothing when the installed citus.so is that build's.
build_citus() {
  local ver sum key dir lib src log
  ver=$("$PG_CONFIG" --version | awk '{print $2}')
  sum=$(sha256sum "$citus_tarball" | cut -c1-16)
  key=$sum-pg$ver-$(printf '%s' "$PG_CONFIG" | sha256sum | cut -c1-8)
  dir=${FC_CITUS_CACHE:-/var/cache/fieldcrypt-citus}/$key
  lib=$("$PG_CONFIG" --pkglibdir)/citus.so
  if [[ -f $dir/built && -f $lib ]] && cmp -s "$dir/src/src/backend/distributed/citus.so" "$lib"; then
    echo "deps: Citus $(basename "$citus_tarball" .tar.xz) installed ($dir)"
    return 0
  fi
  ((EUID == 0)) || { echo "deps: Citus not installed; run as root to build it" >&2; return 1; }
  src=$dir/src log=$dir/build.log
  if [[ ! -f $dir/built ]]; then
    echo "deps: building $(basename "$citus_tarball") against PostgreSQL $ver (several minutes; log: $log)"
    rm -rf "$dir" && mkdir -p "$dir/x" && tar -xJf "$citus_tarball" -C "$dir/x"
    if [[ -f $dir/x/configure ]]; then mv "$dir/x" "$src"; else mv "$dir"/x/*/ "$src" && rmdir "$dir/x"; fi
    # PostgreSQL 15.20 exports have_createdb_privilege(); Citus's compat header defines a
    # static one for PostgreSQL < 16 too. Leave it out where the server header declares it.
    if grep -q 'have_createdb_privilege' "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h"; then
      perl -0pi -e 's/\nstatic inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n/\n/s' \
        "$src/src/include/pg_version_compat.h"
    fi
    (cd "$src" && ./configure PG_CONFIG="$PG_CONFIG" && make -j"$(nproc)") >"$log" 2>&1 ||
      { tail -n 30 "$log" >&2; echo "deps: Citus build failed" >&2; return 1; }
    touch "$dir/built"
  fi
  (cd "$src" && make install) >>"$log" 2>&1 || { tail -n 30 "$log" >&2; return 1; }
  echo "deps: Citus installed into $("$PG_CONFIG" --pkglibdir)"
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#pkgs[@]} packages present"
  [[ -z $citus_tarball ]] || build_citus
  exit 0
fi

((EUID == 0)) || { echo "deps: missing ${missing[*]}; run as root to install" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
echo "deps: apt-get update"
apt-get update -q >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
echo "deps: installing ${missing[*]}"
apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
echo "deps: done"
[[ -z $citus_tarball ]] || build_citus
