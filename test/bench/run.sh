#!/usr/bin/env bash
# `make bench` driver (run as root, after `make install`). Every number it prints is a
# ratio against plain PostgreSQL measured in the same run, on the same machine:
#
#   1. One cluster with shared_preload_libraries = 'fieldcrypt' and pgcrypto, FC_BENCH_ROWS
#      rows (default 1,000,000) holding a 32-byte secret md5(i::text):
#        a. INSERT ... SELECT from generate_series: text (baseline), encrypted_text,
#           pgcrypto encrypt_iv (aes-cbc) and pgp_sym_encrypt into bytea
#        b. COPY FROM a file: text vs encrypted_text (the input function encrypts)
#        c. full reads: SELECT * to the client (encrypted values arrive as NULL) and
#           COPY t TO '/dev/null' (envelopes in text form, as pg_dump reads them)
#        d. decrypting reads to the client: fieldcrypt.decrypt, decrypt_iv,
#           pgp_sym_decrypt, against reading the text baseline
#   2. A query that touches no encrypted column, with and without fieldcrypt in
#      shared_preload_libraries: pgbench select-only TPS (prepared and simple protocol) and a
#      server-side PL/pgSQL loop of dynamic SELECTs, on two identical clusters (extension
#      created, same pgbench data) that alternate within each round and swap roles halfway,
#      so that a difference between the clusters cancels out. Where perf works, a CPU
#      profile of each workload also gives fieldcrypt's own share of the server's CPU, which
#      unlike the timings does not move with load from other processes.
#   3. encrypted_heap against heap: COPY, sequential scans, index lookups, pgbench TPC-B,
#      on-disk size (test/bench/tam.sh).
#   4. Re-encryption after a key change (test/bench/reencrypt.sh): throughput against a plain
#      UPDATE t SET col = col of the same data, and pgbench TPS while it runs with the default
#      throttle against TPS while it is postponed.
#   5. Online re-encryption of a 1 GB encrypted_heap table after rotate_tde_key against
#      VACUUM FULL of it (test/bench/tam.sh).
#   6. Planning time of a 20-way join over encrypted_heap tables (statistics kept encrypted,
#      through the planner's hooks) against the same over heap tables (test/bench/stats.sh).
#   7. Equality lookups through a keyed hash index (fieldcrypt.text_keyed_ops) against a
#      plain hash index: pgbench TPS, and the cost of one keyed hash from CREATE INDEX times
#      (test/bench/keyed.sh).
#   8. Citus (where it is installed): INSERT and multi-shard SELECT on distributed tables
#      with an encrypted_text column and with encrypted_heap shards, against text/heap on
#      the same coordinator and two workers (test/bench/citus.sh).
#
# Section 1 steps are interleaved across variants and repeated (FC_BENCH_REPEAT, default
# 5); the best (lowest) time is reported, because load from other processes only ever adds
# time; section 2 likewise reports the best TPS of each side, and the median per-round
# ratio next to it. pgp_sym_encrypt/pgp_sym_decrypt (~0.2 ms a row: S2K key stretching on
# every call) run on FC_BENCH_PGP_ROWS rows (default 10,000), scaled linearly to
# FC_BENCH_ROWS and marked as such. Each timed statement runs in a fresh psql session over
# TLS, after a CHECKPOINT; psql's \timing measures it.
#
# Output: tables on stdout and in results/bench.txt (git-ignored), with every sample.
# Knobs: FC_BENCH_ROWS FC_BENCH_REPEAT FC_BENCH_PGP_ROWS FC_BENCH_PGBENCH_SCALE
#        FC_BENCH_PGBENCH_SECONDS FC_BENCH_PGBENCH_ROUNDS FC_BENCH_LOOP_QUERIES FC_BENCH_TAM_SCALE
#        FC_BENCH_TAM_SECONDS FC_BENCH_TPCB_SECONDS FC_BENCH_TPCB_ROUNDS FC_BENCH_HUGEPAGES FC_BENCH_TAM_CACHE FC_BENCH_REENC_ROWS FC_BENCH_REENC_REPEAT
#        FC_BENCH_REENC_SECONDS FC_BENCH_REENC_ROUNDS FC_BENCH_TDE_ROWS;
#        FC_BENCH_STATS_ROWS FC_BENCH_STATS_PLANS FC_BENCH_STATS_ROUNDS;
#        FC_BENCH_KEYED_ROWS FC_BENCH_KEYED_SECONDS FC_BENCH_KEYED_ROUNDS; FC_BENCH_CITUS_ROWS;
#        FC_BENCH_SECTIONS (default "1 2 3 4 5 6 7 8"); FC_BENCH_CRYPTO_LIBRARY (auto, openssl).
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/lib.sh

ROWS=${FC_BENCH_ROWS:-1000000}
REPEAT=${FC_BENCH_REPEAT:-5}
PGP_ROWS=${FC_BENCH_PGP_ROWS:-10000}
PGB_SCALE=${FC_BENCH_PGBENCH_SCALE:-10}
PGB_SECONDS=${FC_BENCH_PGBENCH_SECONDS:-3}
PGB_ROUNDS=${FC_BENCH_PGBENCH_ROUNDS:-10}
LOOP_QUERIES=${FC_BENCH_LOOP_QUERIES:-200000}
SECTIONS=${FC_BENCH_SECTIONS:-1 2 3 4 5 6 7 8}
((PGP_ROWS <= ROWS)) || PGP_ROWS=$ROWS

# Identical settings for every cluster; only shared_preload_libraries differs in section 2.
CONF=("shared_buffers = '512MB'" "max_wal_size = '4GB'")
# FC_BENCH_CRYPTO_LIBRARY=openssl measures every section with OpenSSL only (default: auto).
CRYPTO_CONF=("fieldcrypt.crypto_library = ${FC_BENCH_CRYPTO_LIBRARY:-auto}")
CONF+=("${CRYPTO_CONF[@]}")

OUTFILE=results/bench.txt
mkdir -p results
# Written outside results/: `make test` empties results/ when it starts.
PARTIAL=$(mktemp /tmp/fc-bench.XXXXXX)
trap 'rm -f "$PARTIAL"; fc_cleanup' EXIT
START=$(date +%s)

say() { printf '%s\n' "$*" | tee -a "$PARTIAL"; }
sayf() { local f=$1; shift; printf "$f" "$@" | tee -a "$PARTIAL"; }
log() { printf 'bench: %s\n' "$*" >&2; }   # progress, not part of the results
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
best() { printf '%s\n' $1 | sort -g | head -n 1; }
best_tps() { printf '%s\n' $1 | sort -g | tail -n 1; }
median() { printf '%s\n' $1 | sort -g | awk -v d="${2:-3}" '{ v[NR] = $1 } END { printf "%." d "f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
verdict() { awk "BEGIN { exit !($1) }" && echo PASS || echo MISS; }
commas() { printf "%'d" "$1" 2>/dev/null || printf '%d' "$1"; }

# timed SETUP_SQL TIMED_SQL: run SETUP_SQL, then TIMED_SQL under \timing with its result
# rows sent to /dev/null by psql; print the seconds TIMED_SQL took.
timed() {
  local out ms
  out=$(fc_psql <<EOF
$1
\\pset format unaligned
\\pset tuples_only on
\\o /dev/null
\\timing on
$2
EOF
  ) || { log "failed: $2"; return 1; }
  ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*$/\1/p' <<<"$out")
  [[ -n $ms && $ms != *$'\n'* ]] || { log "no timing for: $2"; printf '%s\n' "$out" >&2; return 1; }
  calc "$ms / 1000"
}

# gcm_line LABEL SQL: which AES-256-GCM implementation SQL used (fieldcrypt.gcm_usage(),
# counted in the one session that runs it), as a line of output for LABEL. Untimed.
gcm_line() {
  local out
  out=$(fc_psql -At <<EOF
CREATE TEMP TABLE gcm0 USING heap AS SELECT * FROM fieldcrypt.gcm_usage();
\\o /dev/null
$2
\\o
SELECT string_agg(u.library || ' ' || (u.seals - g.seals) || ' sealed/' || (u.opens - g.opens) || ' opened', ', ' ORDER BY u.library DESC)
       || ' (fieldcrypt.crypto_library = ' || current_setting('fieldcrypt.crypto_library') || ')'
  FROM fieldcrypt.gcm_usage() u JOIN gcm0 g USING (library);
EOF
  ) || { log "failed: $2"; return 1; }
  printf '  AES-256-GCM, %s: %s\n' "$1" "$out"
}

declare -A S=()   # "step/variant" -> space-separated seconds, or TPS in section 2
sample() {        # STEP VARIANT SETUP_SQL TIMED_SQL
  local t
  t=$(timed "$3" "$4")
  S[$1/$2]="${S[$1/$2]:+${S[$1/$2]} }$t"
  log "$1 $2: $t s"
}

# row STEP VARIANT LABEL BASE_VARIANT [SCALE [NOTE]]: one table line (best time, times the
# baseline, all samples). SCALE multiplies sampled times (pgp rows scaled to ROWS).
row() {
  local step=$1 v=$2 label=$3 base=$4 scale=${5:-1} note=${6:-}
  local b bb
  b=$(calc "$(best "${S[$step/$v]}") * $scale")
  bb=$(best "${S[$step/$base]}")
  sayf '  %-34s %9s s  %8sx   samples: %s%s\n' "$label" "$b" "$(calc "$b / $bb" 2)" "${S[$step/$v]}" "${note:+  $note}"
}
header() { sayf '  %-34s %11s  %9s\n' variant "best time" "vs $1"; }

summary=()
target() {   # DESCRIPTION VALUE CONDITION_ON_x|- TARGET_TEXT
  local v=-
  [[ $3 == - ]] || v=$(verdict "$(sed "s/x/$2/g" <<<"$3")")
  local line; line=$(printf '%-58s %8sx  target %-9s %s' "$1" "$2" "$4" "$v")
  [[ $3 != - ]] || line=$(printf '%-58s %8sx  (no target)' "$1" "$2")
  say "  $line"
  summary+=("$line")
}

say "fieldcrypt make bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "  fieldcrypt $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src sql 2>/dev/null || echo ' (src/sql modified)'), $("$PGBIN/postgres" --version), $(nproc) CPUs, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "  clusters: ${CONF[*]}, everything else default (fsync, synchronous_commit, jit on); TLS client connections"
say "  times: best of $REPEAT runs, interleaved across variants, each after a CHECKPOINT, measured by psql \\timing"

# ---------------------------------------------------------------------------------------
section1() {
  local n key iv pgp_scale dir
  n=$(commas "$ROWS")
  pgp_scale=$(calc "$ROWS / $PGP_ROWS" 6)
  key="'\\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea"
  iv="'\\x0f0e0d0c0b0a09080706050403020100'::bytea"
  local -A type=([text]=text [enc]=fieldcrypt.encrypted_text [aes]=bytea [pgp]=bytea)
  local -A expr=([text]="md5(i::text)" [enc]="md5(i::text)"
    [aes]="encrypt_iv(convert_to(md5(i::text), 'UTF8'), $key, $iv, 'aes-cbc')"
    [pgp]="pgp_sym_encrypt(md5(i::text), 'pass')")
  local -A nrows=([text]=$ROWS [enc]=$ROWS [aes]=$ROWS [pgp]=$PGP_ROWS)

  log "section 1: starting a cluster with shared_preload_libraries = 'fieldcrypt'"
  fc_cluster_start bench "${CONF[@]}"
  fc_psql -c 'CREATE EXTENSION fieldcrypt' -c 'CREATE EXTENSION pgcrypto'
  fc_tmpdir dir
  fc_psql -c "COPY (SELECT i, md5(i::text) FROM generate_series(1, $ROWS) i) TO '$dir/plain.tsv'"
  local v r
  recreate() { echo "SET client_min_messages = warning; DROP TABLE IF EXISTS t_$1; CREATE TABLE t_$1 (id int, secret ${type[$1]}); CHECKPOINT;"; }

  for ((r = 1; r <= REPEAT; r++)); do
    for v in text enc aes pgp; do
      sample insert "$v" "$(recreate "$v")" \
        "INSERT INTO t_$v SELECT i, ${expr[$v]} FROM generate_series(1, ${nrows[$v]}) i;"
    done
  done
  for ((r = 1; r <= REPEAT; r++)); do
    for v in text enc; do
      sample copyin "$v" "$(recreate "$v")" "COPY t_$v FROM '$dir/plain.tsv';"
    done
  done

  # Reads use the tables as loaded last (text, enc: by COPY; aes, pgp: by INSERT).
  fc_psql -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
  local -A size
  for v in text enc aes pgp; do
    size[$v]=$(fc_psql -At -c "SELECT pg_size_pretty(pg_table_size('t_$v'))")
  done
  # Sanity, untimed: every table holds what it should, encrypted values reach clients as NULL.
  local ok
  ok=$(fc_psql -At -c "SELECT (SELECT count(*) FROM t_text WHERE secret = md5(id::text)) = $ROWS
    AND (SELECT count(*) FROM t_enc WHERE fieldcrypt.decrypt(secret) = md5(id::text)) = $ROWS
    AND (SELECT count(*) FROM t_aes
         WHERE convert_from(decrypt_iv(secret, $key, $iv, 'aes-cbc'), 'UTF8') = md5(id::text)) = $ROWS
    AND (SELECT count(*) FROM t_pgp) = $PGP_ROWS
    AND (SELECT count(*) FROM t_pgp WHERE id <= 100 AND pgp_sym_decrypt(secret, 'pass') = md5(id::text))
        = least(100, $PGP_ROWS)")
  [[ $ok == t ]] || { log "sanity check failed: a table does not hold the expected values"; return 1; }
  [[ -z $(fc_psql -At -c 'SELECT secret FROM t_enc LIMIT 1') ]] ||
    { log "sanity check failed: SELECT secret FROM t_enc returned a non-NULL value"; return 1; }
  local -A readq=([text]="SELECT id, secret FROM t_text;"
    [enc]="SELECT id, fieldcrypt.decrypt(secret) FROM t_enc;"
    [aes]="SELECT id, convert_from(decrypt_iv(secret, $key, $iv, 'aes-cbc'), 'UTF8') FROM t_aes;"
    [pgp]="SELECT id, pgp_sym_decrypt(secret, 'pass') FROM t_pgp;")
  for ((r = 1; r <= REPEAT; r++)); do
    for v in text enc; do
      sample scan "$v" "CHECKPOINT;" "SELECT count(secret) FROM t_$v;"
      sample select "$v" "CHECKPOINT;" "SELECT * FROM t_$v;"
      sample copyout "$v" "CHECKPOINT;" "COPY t_$v TO '/dev/null';"
    done
    for v in text enc aes pgp; do
      sample decrypt "$v" "CHECKPOINT;" "${readq[$v]}"
    done
  done
  local gcm1
  gcm1=$(gcm_line "INSERT of 1,000 encrypted_text secrets" \
           "INSERT INTO t_enc SELECT i, md5(i::text) FROM generate_series(1, 1000) i;")
  gcm1+=$'\n'$(gcm_line "decrypt() of 1,000 of them" "SELECT fieldcrypt.decrypt(secret) FROM t_enc LIMIT 1000;")
  fc_cluster_stop bench

  local pgpnote="(* ${PGP_ROWS} rows, times scaled x$(calc "$ROWS / $PGP_ROWS" 1))"
  say ""
  say "== 1a. INSERT INTO t SELECT i, <secret> FROM generate_series(1, $n) i   [$n rows]"
  header text
  row insert text "text (baseline)" text
  row insert enc "fieldcrypt.encrypted_text" text
  row insert aes "bytea, pgcrypto encrypt_iv aes-cbc" text
  row insert pgp "bytea, pgcrypto pgp_sym_encrypt *" text "$pgp_scale" "$pgpnote"
  say ""
  say "== 1b. COPY t FROM '<file of $n plaintext rows>'"
  header text
  row copyin text "text (baseline)" text
  row copyin enc "fieldcrypt.encrypted_text" text
  say ""
  say "== 1c. full reads of $n rows (table sizes: text ${size[text]}, encrypted_text ${size[enc]})"
  say "  SELECT count(secret) FROM t        scan only, no value leaves the server"
  header text
  row scan text "text (baseline)" text
  row scan enc "fieldcrypt.encrypted_text" text
  say "  SELECT * FROM t  -> psql client    encrypted values arrive as NULL (write-only)"
  header text
  row select text "text (baseline)" text
  row select enc "fieldcrypt.encrypted_text" text
  say "  COPY t TO '/dev/null'              the dump path: encrypted values as fcenc:v1: envelopes"
  header text
  row copyout text "text (baseline)" text
  row copyout enc "fieldcrypt.encrypted_text" text
  say ""
  say "== 1d. decrypting reads: SELECT id, <plaintext> FROM t -> psql client   [$n rows]"
  header text
  row decrypt text "text: secret (baseline)" text
  row decrypt enc "fieldcrypt.decrypt(secret)" text
  row decrypt aes "convert_from(decrypt_iv(..))" text
  row decrypt pgp "pgp_sym_decrypt(secret, 'pass') *" text "$pgp_scale" "$pgpnote"
  say ""
  say "$gcm1"
  say ""
  say "== 1. targets"
  local ti te tp
  ti=$(best "${S[insert/text]}") te=$(best "${S[insert/enc]}")
  tp=$(calc "$(best "${S[insert/pgp]}") * $pgp_scale")
  target "INSERT encrypted_text / text" "$(calc "$te / $ti" 2)" "x <= 1.20" "<=1.20x"
  target "INSERT pgp_sym_encrypt / encrypted_text (speed-up)" "$(calc "$tp / $te" 1)" "x >= 5" ">=5x"
  target "COPY FROM encrypted_text / text" \
    "$(calc "$(best "${S[copyin/enc]}") / $(best "${S[copyin/text]}")" 2)" - -
  unset -f recreate
}

# ---------------------------------------------------------------------------------------
# pgbench select-only against the cluster NAME; prints TPS.
pgbench_tps() {   # NAME MODE SECONDS
  local out tps
  out=$(PGPORT=${FC_PORTS[$1]} "$PGBIN/pgbench" -n -S -M "$2" -c 2 -j 2 -T "$3" 2>&1) ||
    { log "pgbench failed on $1:"; printf '%s\n' "$out" >&2; return 1; }
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
  [[ -n $tps ]] || { log "no TPS in pgbench output:"; printf '%s\n' "$out" >&2; return 1; }
  calc "$tps" 0
}

# A PL/pgSQL loop of LOOP_QUERIES dynamic primary-key SELECTs on pgbench_accounts in one
# backend on cluster NAME: each is parsed, planned and executed (every fieldcrypt hook on
# the query path runs), with no client round trip. Prints queries per second.
loop_qps() {   # NAME
  local t
  t=$(PGPORT=${FC_PORTS[$1]} timed "" "DO \$\$ DECLARE b int; BEGIN
    FOR i IN 1..$LOOP_QUERIES LOOP
      EXECUTE 'SELECT abalance FROM pgbench_accounts WHERE aid = ' || (i::bigint * 7919 % ($PGB_SCALE * 100000) + 1) INTO b;
    END LOOP; END \$\$;")
  calc "$LOOP_QUERIES / $t" 0
}

# profile NAME MODE OUTFILE: sample every process of cluster NAME (postmaster and the
# backends it forks) with perf while one workload runs; print "OWN TOTAL": samples spent in
# fieldcrypt's code (and in what it calls) versus all samples. A sample is fieldcrypt's when
# the innermost fieldcrypt.so frame of its call chain lies below any standard_* frame: work
# that a hook passes on to PostgreSQL (standard_ExecutorRun, ...) is PostgreSQL's own.
profile() {
  local pm; pm=$(head -n 1 "${FC_CLUSTERS[$1]}/data/postmaster.pid")
  if [[ $2 == loop ]]; then
    perf record -q -e cpu-clock -F 1000 -g -p "$pm" -o "$3" -- bash -c "$(declare -f loop_qps timed calc fc_psql log); $(declare -p FC_PORTS PGBIN LOOP_QUERIES PGB_SCALE); loop_qps $1" >/dev/null 2>&1
  else
    perf record -q -e cpu-clock -F 1000 -g -p "$pm" -o "$3" -- \
      env PGPORT="${FC_PORTS[$1]}" "$PGBIN/pgbench" -n -S -M "$2" -c 2 -j 2 -T "$PGB_SECONDS" >/dev/null 2>&1
  fi
  perf script -i "$3" -F ip,sym,dso 2>/dev/null | awk '
    function flush() { if (n) { total++; if (fc && (!std || fc < std)) own++ } n = fc = std = 0 }
    /^$/ { flush(); next }
    { n++; if (!fc && / \(.*fieldcrypt\.so/) fc = n; if (!std && $2 ~ /^standard_/) std = n }
    END { flush(); print own + 0, total + 0 }'
}

# preload NAME on|off: restart cluster NAME with or without fieldcrypt preloaded, then warm
# its buffer cache. The last shared_preload_libraries line of postgresql.conf wins.
preload() {
  local lib=; [[ $2 == on ]] && lib=fieldcrypt
  echo "shared_preload_libraries = '$lib'" >>"${FC_CLUSTERS[$1]}/data/postgresql.conf"
  fc_cluster_restart "$1"
  [[ $(PGPORT=${FC_PORTS[$1]} fc_psql -At -c 'SHOW shared_preload_libraries') == "$lib" ]] ||
    { log "cluster $1 did not come back with shared_preload_libraries = '$lib'"; return 1; }
  pgbench_tps "$1" prepared 2 >/dev/null
}

section2() {
  local mode r c t phase order w wo
  local -A role=() ratios=()
  # Two identical clusters, both with the extension created (encryption active) and the same
  # pgbench data. Half the rounds run with x loading fieldcrypt and y not, then the roles
  # swap, so that a difference between the two clusters themselves cancels out.
  log "section 2: starting two clusters"
  for c in x y; do
    fc_cluster_start "$c" "${CONF[@]}"
    fc_psql -c 'CREATE EXTENSION fieldcrypt'
    [[ $(fc_psql -At -c 'SELECT fieldcrypt.is_data_encryption_active()') == t ]] ||
      { log "encryption did not become active in cluster $c"; return 1; }
    log "pgbench -i -s $PGB_SCALE on cluster $c"
    "$PGBIN/pgbench" -i -q -s "$PGB_SCALE" >/dev/null 2>&1
    fc_psql -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
  done

  local half=$(((PGB_ROUNDS + 1) / 2))
  for phase in 1 2; do
    if ((phase == 1)); then
      role=([with]=x [without]=y); preload y off
    else
      role=([with]=y [without]=x); preload x off; preload y on
    fi
    pgbench_tps "${role[with]}" prepared 2 >/dev/null
    for mode in prepared simple loop; do
      for ((r = (phase - 1) * half + 1; r <= (phase == 1 ? half : PGB_ROUNDS); r++)); do
        ((r % 2)) && order="with without" || order="without with"
        for c in $order; do
          if [[ $mode == loop ]]; then t=$(loop_qps "${role[$c]}")
          else t=$(pgbench_tps "${role[$c]}" "$mode" "$PGB_SECONDS"); fi
          S[pgb-$mode/$c]="${S[pgb-$mode/$c]:+${S[pgb-$mode/$c]} }$t"
          [[ $c == with ]] && w=$t || wo=$t
          log "$mode round $r $c fieldcrypt (cluster ${role[$c]}): $t per s"
        done
        ratios[$mode]="${ratios[$mode]:+${ratios[$mode]} }$(calc "$wo / $w" 3)"
      done
    done
  done
  # Noise-free complement to the timings: fieldcrypt's share of the server's CPU samples.
  local -A prof=()
  local pdir p
  if perf stat -e cpu-clock true >/dev/null 2>&1; then
    fc_tmpdir pdir
    for mode in prepared simple loop; do
      p=$(profile "${role[with]}" "$mode" "$pdir/$mode.data") || p=
      [[ $p =~ ^[0-9]+\ [1-9][0-9]*$ ]] && prof[$mode]=$p
      log "perf $mode: ${prof[$mode]:-failed} (fieldcrypt samples, all samples)"
    done
  else
    log "perf does not work here: no CPU profile"
  fi
  fc_cluster_stop x
  fc_cluster_stop y

  say ""
  local -A what=([prepared]="pgbench -S -M prepared, TPS" [simple]="pgbench -S -M simple, TPS"
    [loop]="server-side loop, queries/s")
  say "== 2. a query that touches no encrypted column (SELECT abalance FROM pgbench_accounts WHERE aid = ?)"
  say "  two identical clusters (pgbench scale $PGB_SCALE, extension created and encryption active in both),"
  say "  with and without fieldcrypt in shared_preload_libraries, alternating within each of $PGB_ROUNDS rounds;"
  say "  the clusters swap roles (restart) after round $half, so a difference between them cancels out."
  say "  pgbench: -c 2 -j 2 -T $PGB_SECONDS over TLS. loop: one DO block running $LOOP_QUERIES dynamic SELECTs"
  say "  (parse, plan, execute each; no client round trips). slowdown = rate without / rate with,"
  say "  from the best rate of each side (load from others only lowers rates); median of per-round ratios too"
  sayf '  %-30s %10s %10s %9s %13s\n' measurement "best with" "without" slowdown "median round"
  for mode in prepared simple loop; do
    w=$(best_tps "${S[pgb-$mode/with]}") wo=$(best_tps "${S[pgb-$mode/without]}")
    sayf '  %-30s %10s %10s %8sx %12sx\n' "${what[$mode]}" "$w" "$wo" "$(calc "$wo / $w" 3)" "$(median "${ratios[$mode]}")"
  done
  for mode in prepared simple loop; do
    say "  ${what[$mode]} with:    ${S[pgb-$mode/with]}"
    say "  ${what[$mode]} without: ${S[pgb-$mode/without]}"
    say "  ${what[$mode]} per-round without/with: ${ratios[$mode]}"
  done
  local own total
  if ((${#prof[@]})); then
    say "  CPU profile (perf, 1 kHz, every process of the cluster with fieldcrypt, one more run each):"
    say "  samples in fieldcrypt's code and what it calls, not counting the PostgreSQL work its hooks"
    say "  wrap; implied slowdown = 1 / (1 - share), an upper bound since client CPU is not counted"
    for mode in prepared simple loop; do
      [[ -n ${prof[$mode]:-} ]] || continue
      read -r own total <<<"${prof[$mode]}"
      sayf '  %-30s %6s%% of %6s samples   implied slowdown %sx\n' "${what[$mode]%,*}" \
        "$(calc "100 * $own / $total" 2)" "$total" "$(calc "1 / (1 - $own / $total)" 3)"
    done
  else
    say "  (no CPU profile: perf is not available)"
  fi
  say ""
  say "== 2. targets"
  for mode in prepared simple loop; do
    w=$(best_tps "${S[pgb-$mode/with]}") wo=$(best_tps "${S[pgb-$mode/without]}")
    target "${what[$mode]%,*}: without / with fieldcrypt" "$(calc "$wo / $w" 3)" "x <= 1.02" "<=1.02x"
  done
  for mode in prepared simple loop; do
    [[ -n ${prof[$mode]:-} ]] || continue
    read -r own total <<<"${prof[$mode]}"
    target "${what[$mode]%,*}: CPU profile, implied slowdown" "$(calc "1 / (1 - $own / $total)" 3)" "x <= 1.02" "<=1.02x"
  done
}

source test/bench/tam.sh
source test/bench/reencrypt.sh   # section4
source test/bench/stats.sh       # section6
source test/bench/keyed.sh       # section7
source test/bench/citus.sh       # section8
for s in $SECTIONS; do "section$s"; done

say ""
say "== summary ($(( $(date +%s) - START )) s, load average at end: $(cut -d' ' -f1-3 /proc/loadavg))"
for l in "${summary[@]}"; do say "  $l"; done
[[ " $SECTIONS " != *" 2 "* ]] ||
  say "  (timing ratios of section 2 move by a few % between runs on a shared machine; the CPU-profile lines do not)"
mkdir -p results
cp "$PARTIAL" "$OUTFILE" && chmod 644 "$OUTFILE"
echo "bench: results written to $OUTFILE"
