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

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#pkgs[@]} packages present"
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
