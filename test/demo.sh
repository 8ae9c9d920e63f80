#!/usr/bin/env bash
# `make demo` driver: runs test/demo.sql over TLS against a throwaway cluster, echoing
# every line. ON_ERROR_STOP stays off: the demo deliberately shows refused operations.
# FC_DEMO_CONF may hold one extra postgresql.conf line, e.g. "shared_preload_libraries='pgaudit,fieldcrypt'".
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f test/demo.sql ]] || { echo "demo: test/demo.sql does not exist yet" >&2; exit 1; }
source test/lib.sh
fc_cluster_start demo ${FC_DEMO_CONF:+"$FC_DEMO_CONF"}
echo "demo: cluster on 127.0.0.1:$FC_PORT (TLS), server log $FC_LOG"
timeout 110 "$PGBIN/psql" -X -a -v ON_ERROR_STOP=0 -f test/demo.sql
