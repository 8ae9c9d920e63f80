#!/usr/bin/env bash
# `make test` driver (run as root, after `make install`). Runs every suite and sums:
#   pg_regress  REGRESS list of the Makefile: sql/NAME.sql vs expected/NAME.out   1 per test
#   pgtap       test/pgtap/*.sql, each in a fresh database with pgtap            1 per assertion
#               (over TLS; files marked "-- transports: tls socket" over the Unix socket too)
#   isolation   test/isolation/specs/NAME.spec vs test/isolation/expected/NAME.out  1 per spec
#   tap         test/t/*.pl with prove, as user postgres                         1 per assertion
# Outputs stay in results/ (git-ignored). The last line is "N passed, N failed"; the exit
# status is non-zero if anything failed, a suite could not run, or no test ran at all. A TAP
# file that skips itself whole (200_citus.pl where Citus is not installed) counts nothing and
# is listed on a "not run:" line of the summary, with its reason.
# pg_regress runs three times: as is, then (pg_regress_tam) with default_table_access_method =
# encrypted_heap for the whole cluster (ALTER SYSTEM), so that every table the tests create
# without USING, in every database they create, is an encrypted_heap table, and then again
# (pg_regress_tam_nocache) after a restart with fieldcrypt.tde_cache_size = 0, so that
# encrypted_heap reads run with the decrypted-row cache on and off. The expected outputs are
# the same. FC_REGRESS_TAM_PASS=0 skips the second and third passes.
# Filters for development (all unset in `make test`): FC_SUITES="regress regress_tam pgtap
# isolation tap layers" runs only those suites, FC_REGRESS="topic ..." only those pg_regress
# topics, FC_ISOLATION="spec ..." only those isolation specs, FC_TAP="041 090" only the TAP
# files whose names start with these prefixes (test/mutation/run.sh runs one test at a time).
set -uo pipefail   # no -e: every suite runs and failures are counted
cd "$(dirname "$0")/.." || exit 1
source test/lib.sh

PGXS_TEST=${FC_PGBIN:-/usr/lib/postgresql/15/bin}/../lib/pgxs/src/test
OUT=$PWD/results
CLUSTER_CONF=()    # extra postgresql.conf lines for the pg_regress/pgTAP/isolation cluster
# Suites written before re-encryption assert that older generations stay after a key change
# and change keys back to back: they run with it postponed. test/t/07x_reencrypt* turn it on.
CLUSTER_CONF+=("fieldcrypt.reencrypt = off")
# The pg_regress topics index encrypted_heap tables (in the regress_tam pass, every table):
# the plaintext-index guard would add a WARNING to each such index and make the two passes
# differ. The cluster allows them; sql/tde_guard.sql tests warn and refuse, and that the
# default is warn.
CLUSTER_CONF+=("fieldcrypt.tde_plain_indexes = allow")
# The decrypted-row cache is off by default; the cluster runs with one (the pg_regress_tam
# pass reads through it, pg_regress_tam_nocache again without it).
CLUSTER_CONF+=("fieldcrypt.tde_cache_size = '128MB'")

total_pass=0 total_fail=0 summary=() not_run=()
record() {  # SUITE PASSED FAILED [NOTE]
  summary+=("$(printf '%-15s %d passed, %d failed%s' "$1:" "$2" "$3" "${4:+ ($4)}")")
  total_pass=$((total_pass + $2)) total_fail=$((total_fail + $3))
}

# Counts from TAP::Harness output (prove, pg_prove): "PASSED FAILED [FAILING FILE...]".
# A failing file counts its failed assertions, or 1 if it died, exited non-zero or broke its plan.
tap_counts() {
  awk '
    function flush() {
      if (file != "" && (f = failed ? failed : (wstat || bad))) { fails += f; files = files " " file }
      file = ""
    }
    /^[^ ].* \(Wstat: [0-9]+.* Tests: [0-9]+ Failed: [0-9]+\)$/ {
      flush(); file = $1; bad = 0
      match($0, /Wstat: [0-9]+/); wstat = substr($0, RSTART + 7, RLENGTH - 7) + 0
      match($0, /Failed: [0-9]+\)$/); failed = substr($0, RSTART + 8, RLENGTH - 9) + 0
      asserts_failed += failed; next
    }
    /^  Parse errors:/ { bad = 1 }
    /^Files=[0-9]+, Tests=[0-9]+,/ { flush(); split($2, a, /[=,]/); tests = a[2]; seen = 1 }
    END { flush(); if (!seen) print 0, 1; else print tests - asserts_failed, (fails + 0) files }
  ' "$1"
}

fresh_db() {  # NAME [SQL run in it afterwards]
  fc_psql -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" \
    -c "CREATE DATABASE \"$1\" TEMPLATE template0" &&
    { [[ -z ${2:-} ]] || fc_psql -d "$1" -c "$2"; }
}

# run_regress SUITE PROGRAM INPUTDIR DB SETUP_SQL TEST...: pg_regress-style run, 1 count per test.
run_regress() {
  local suite=$1 prog=$2 indir=$3 db=$4 setup=$5; shift 5
  local out=$OUT/$suite n=$# passed failed rc
  ((n > 0)) || { record "$suite" 0 0; return; }
  [[ -n $cluster ]] || { record "$suite" 0 1 "cluster did not start"; return; }
  echo "== $suite: $n tests"
  mkdir -p "$out"
  fresh_db "$db" "$setup" || { record "$suite" 0 1 "could not prepare database $db"; return; }
  "$prog" --use-existing --host=127.0.0.1 --port="$FC_PORT" --user=postgres \
    --inputdir="$indir" --outputdir="$out" --dbname="$db" "$@" 2>&1 | tee "$out/run.log"
  rc=${PIPESTATUS[0]}
  passed=$(grep -cE '\.\.\. ok( |$)' "$out/run.log")
  failed=$((n - passed))
  ((rc == 0 || failed > 0)) || failed=1
  if ((failed > 0)) && [[ -s $out/regression.diffs ]]; then
    echo "---- $suite: $out/regression.diffs (first 200 lines) ----"
    head -n 200 "$out/regression.diffs"
  fi
  record "$suite" "$passed" "$failed"
}

# wait_default_am AM: until a new session of the cluster sees default_table_access_method = AM.
wait_default_am() {
  local _
  for _ in $(seq 1 100); do
    [[ $(fc_psql -At -c 'SHOW default_table_access_method' 2>/dev/null) == "$1" ]] && return 0
    sleep 0.1
  done
  return 1
}

# The pg_regress suite again, with default_table_access_method = encrypted_heap set for the
# whole cluster. Tests create their own databases (from template0), so a per-database setting
# would not reach them. ALTER SYSTEM checks the name against pg_am of the current database, so
# it runs in a database that has the extension, which then checks that a new table is an
# encrypted_heap table. The setting is removed afterwards, whatever happened, before the other
# suites run on the same cluster.
run_regress_tam() {
  local suite=$1; shift
  [[ -n $cluster ]] || { record "$suite" 0 1 "cluster did not start"; return; }
  if fresh_db fc_regress_tam_am 'CREATE EXTENSION fieldcrypt' &&
     fc_psql -d fc_regress_tam_am -c 'ALTER SYSTEM SET default_table_access_method = encrypted_heap' \
       -c 'SELECT pg_reload_conf()' >/dev/null &&
     wait_default_am encrypted_heap &&
     [[ $(fc_psql -d fc_regress_tam_am -At -c 'CREATE TEMP TABLE tam_probe (i int)' \
            -c "SELECT fieldcrypt.is_encrypted('tam_probe')") == t ]]; then
    run_regress "$suite" "$PGXS_TEST/regress/pg_regress" . fc_regress \
      'CREATE EXTENSION IF NOT EXISTS fieldcrypt' "$@"
  else
    record "$suite" 0 1 "could not set default_table_access_method = encrypted_heap"
  fi
  fc_psql -c 'ALTER SYSTEM RESET default_table_access_method' -c 'SELECT pg_reload_conf()' >/dev/null &&
    wait_default_am heap &&
    fc_psql -c 'DROP DATABASE IF EXISTS fc_regress_tam_am WITH (FORCE)' ||
    record "$suite" 0 1 "could not reset default_table_access_method"
}

# set_cache_size SIZE: restart the test cluster with fieldcrypt.tde_cache_size = SIZE and check
# that the server runs with it (SHOW gives it back in its own unit).
set_cache_size() {
  fc_psql -c "ALTER SYSTEM SET fieldcrypt.tde_cache_size = '$1'" >/dev/null &&
    fc_cluster_restart "$cluster" &&
    [[ $(fc_psql -At -c 'SHOW fieldcrypt.tde_cache_size') == "$2" ]]
}

# The pg_regress_tam pass again with the decrypted-row cache off; the cluster gets its default
# size back afterwards.
run_regress_tam_nocache() {
  [[ -n $cluster ]] || { record pg_regress_tam_nocache 0 1 "cluster did not start"; return; }
  if set_cache_size 0 0; then
    run_regress_tam pg_regress_tam_nocache "$@"
  else
    record pg_regress_tam_nocache 0 1 "could not restart with fieldcrypt.tde_cache_size = 0"
  fi
  fc_psql -c 'ALTER SYSTEM RESET fieldcrypt.tde_cache_size' >/dev/null && fc_cluster_restart "$cluster" &&
    [[ $(fc_psql -At -c 'SHOW fieldcrypt.tde_cache_size') == 128MB ]] ||
    record pg_regress_tam_nocache 0 1 "could not restart with the cluster's fieldcrypt.tde_cache_size"
}

run_pgtap() {
  local n=${#pgtap_files[@]} f log rc passed=0 failed=0 p x _
  ((n > 0)) || { record pgtap 0 0; return; }
  [[ -n $cluster ]] || { record pgtap 0 1 "cluster did not start"; return; }
  echo "== pgtap: $n files"
  mkdir -p "$OUT/pgtap"
  for f in "${pgtap_files[@]}"; do
    # over TCP with TLS; a file whose header says "-- transports: tls socket" also over the
    # Unix socket. psql variable :transport tells the file which (it checks that it is so).
    local transports=(tls)
    grep -q '^-- transports: tls socket$' "$f" && transports+=(socket)
    for tr in "${transports[@]}"; do
      log=$OUT/pgtap/$(basename "$f" .sql)-$tr.log
      if ! fresh_db fc_pgtap 'CREATE EXTENSION pgtap'; then
        failed=$((failed + 1)); echo "pgtap: could not prepare a database for $f"; continue
      fi
      echo "pgtap: $f over $tr"
      if [[ $tr == tls ]]; then
        pg_prove --psql-bin "$PGBIN/psql" --dbname fc_pgtap --set transport=tls "$f" 2>&1 | tee "$log"
      else
        PGSSLMODE=disable pg_prove --psql-bin "$PGBIN/psql" --host "$FC_SOCKDIR" --dbname fc_pgtap \
          --set transport=socket "$f" 2>&1 | tee "$log"
      fi
      rc=${PIPESTATUS[0]}
      read -r p x _ < <(tap_counts "$log")
      ((rc == 0 || x > 0)) || x=1
      passed=$((passed + p)) failed=$((failed + x))
    done
  done
  record pgtap "$passed" "$failed"
}

run_tap() {
  local n=${#tap_files[@]} dir tdir=$FC_REPO/test/t f args=() rc passed failed bad
  ((n > 0)) || { record tap 0 0; return; }
  echo "== tap: $n files"
  fc_tmpdir dir || { record tap 0 1 "no temp dir"; return; }
  if ! fc_as_pg test -r "$tdir/FcNode.pm"; then   # repo not readable by postgres: use a copy
    cp -r test/t "$dir/t" && chown -R postgres: "$dir/t" && tdir=$dir/t
  fi
  for f in "${tap_files[@]}"; do args+=("$tdir/${f##*/}"); done
  # PG_TEST_TIMEOUT_DEFAULT bounds PostgreSQL::Test's other waits (wait_for_log, background
  # psql queries) at 90 s instead of 180 s; FcNode bounds poll_query_until (see FcNode.pm).
  fc_as_pg env -C "$dir" -u PGHOST -u PGPORT -u PGUSER -u PGSSLMODE -u PGDATABASE \
    PG_TEST_TIMEOUT_DEFAULT="${PG_TEST_TIMEOUT_DEFAULT:-90}" \
    HOME="$dir" TESTDIR="$dir" PG_TEST_PORT_DIR="$dir/portlock" FC_REPO="$FC_REPO" \
    PATH="$PGBIN:$PATH" PERL5LIB="$PGXS_TEST/perl:$tdir" PG_REGRESS="$PGXS_TEST/regress/pg_regress" \
    prove --norc "${args[@]}" 2>&1 | tee "$OUT/tap.log"
  rc=${PIPESTATUS[0]}
  read -r passed failed bad < <(tap_counts "$OUT/tap.log")
  ((rc == 0 || failed > 0)) || failed=1
  for f in $bad; do
    f=${f##*/}
    echo "---- tap: tail of regress_log_${f%.pl} ----"
    tail -n 60 "$dir/tmp_check/log/regress_log_${f%.pl}" 2>/dev/null
  done
  cp -r "$dir/tmp_check/log" "$OUT/tap_logs" 2>/dev/null
  record tap "$passed" "$failed"
  # A file that skipped itself whole (plan skip_all: e.g. 200_citus without Citus) ran no
  # test: it adds nothing to "passed" and is listed as not run, with its reason.
  while IFS= read -r f; do
    not_run+=("tap ${f%% *}: ${f#*skipped: }")
  done < <(sed -n 's|^.*/\([^/ ]*\.pl\) \.* skipped: |\1 skipped: |p' "$OUT/tap.log")
}

# layers: the shape of src/ (test/check-layers.pl over the objects `make install` built).
run_layers() {
  echo "== layers"
  if perl test/check-layers.pl; then record layers 1 0; else record layers 0 1; fi
}

suite_on() { [[ -z ${FC_SUITES:-} || " $FC_SUITES " == *" $1 "* ]]; }

rm -rf "$OUT" && mkdir -p "$OUT"
shopt -s nullglob
pgtap_files=(test/pgtap/*.sql)
specs=(test/isolation/specs/*.spec)
specs=("${specs[@]##*/}") && specs=("${specs[@]%.spec}")
[[ -z ${FC_ISOLATION:-} ]] || read -ra specs <<<"$FC_ISOLATION"
tap_files=(test/t/*.pl)
if [[ -n ${FC_TAP:-} ]]; then
  kept=()
  for f in "${tap_files[@]}"; do
    for p in $FC_TAP; do [[ ${f##*/} == "$p"* ]] && { kept+=("$f"); break; }; done
  done
  tap_files=("${kept[@]}")
fi
suite_on pgtap || pgtap_files=()
suite_on isolation || specs=()
suite_on tap || tap_files=()
if regress_list=$(MAKEFLAGS='' make -s --no-print-directory print-REGRESS); then
  read -ra regress_tests <<<"${FC_REGRESS:-$regress_list}"
else
  regress_tests=(); record pg_regress 0 1 "could not read REGRESS from the Makefile"
fi

suite_on regress_tam || FC_REGRESS_TAM_PASS=0
suite_on regress || suite_on regress_tam || regress_tests=()
suite_on layers && run_layers

cluster=
if ((${#regress_tests[@]} + ${#pgtap_files[@]} + ${#specs[@]} > 0)); then
  fc_cluster_start tests "${CLUSTER_CONF[@]}" && cluster=tests
fi
if suite_on regress; then
  run_regress pg_regress "$PGXS_TEST/regress/pg_regress" . fc_regress '' "${regress_tests[@]}"
fi
if [[ ${FC_REGRESS_TAM_PASS:-1} == 1 ]] && ((${#regress_tests[@]} > 0)); then
  run_regress_tam pg_regress_tam "${regress_tests[@]}"
  run_regress_tam_nocache "${regress_tests[@]}"
fi
run_pgtap
# A step of an isolation spec is cancelled after PGISOLATIONTIMEOUT seconds (and the spec
# given up after twice that), not 300: every step here takes under 2 s, so a lock that blocks
# where it should refuse, or a step that never ends, fails the spec within a minute.
PGISOLATIONTIMEOUT=${PGISOLATIONTIMEOUT:-30} \
  run_regress isolation "$PGXS_TEST/isolation/pg_isolation_regress" test/isolation fc_isolation '' "${specs[@]}"
[[ -z $cluster ]] || fc_cluster_stop "$cluster"
run_tap

echo "== summary"
printf '%s\n' "${summary[@]}"
((${#not_run[@]} == 0)) || printf 'not run: %s\n' "${not_run[@]}"
((total_pass + total_fail > 0)) || echo "no test ran at all: that is a failure"
echo "$total_pass passed, $total_fail failed"
((total_fail == 0 && total_pass > 0))
