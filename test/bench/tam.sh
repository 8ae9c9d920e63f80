# Section 3 of `make bench` (sourced by test/bench/run.sh): encrypted_heap against heap,
# both databases in one cluster (same shared buffers, same WAL), steps interleaved.
#   a. COPY FROM a file of FC_BENCH_TAM_SCALE x 100,000 pgbench_accounts rows (default 5,000,000)
#   b. full sequential scan: SELECT sum(abalance), SELECT count(*) and COPY TO /dev/null,
#      second and later runs (rows served by the decrypted-row cache, fieldcrypt.tde_cache_size
#      = FC_BENCH_TAM_CACHE, default 2GB), in two states of the table:
#      - in shared buffers (pg_prewarm of both tables first): the issue's "in memory";
#      - larger than a quarter of shared_buffers and not prewarmed: PostgreSQL then reads it
#        through a 256 kB ring of buffers (BAS_BULKREAD), so heap's pages come from the OS
#        cache on every scan, while encrypted_heap's rows come from its cache;
#      and the first scan after a restart (cold cache; pages from the OS cache); the cache's
#      hit rate under the scans.
#      Each statement is timed twice over: in a new session per run (as every other section
#      does: a new backend first touches each 4 kB page of shared memory it reads, buffers
#      and cache alike), and FC_BENCH_TAM_SESSION_RUNS (default 5) times in one session (what
#      a connection pool sees); heap and encrypted_heap in the same run.
#   The whole section runs twice: with huge_pages = off, as on a machine nobody tuned, then
#   with FC_BENCH_HUGEPAGES (default 2400) 2 MB huge pages reserved (vm.nr_hugepages, restored
#   at the end) and huge_pages = on, PostgreSQL's documented setting for large shared memory:
#   it applies to shared buffers and the cache alike. FC_BENCH_HUGEPAGES=0 skips that pass;
#   it is skipped, and said so, when the machine cannot reserve them (not root, too little
#   free memory).
#   c. index lookups: pgbench -S (select-only, prepared), FC_BENCH_TAM_SECONDS each
#   d. TPC-B: pgbench -c 2 -j 2 -T FC_BENCH_TPCB_SECONDS (default 20), best of FC_BENCH_TPCB_ROUNDS
#      (default 3) rounds alternating the databases, each after a CHECKPOINT, pgbench_* tables on
#      encrypted_heap vs heap
#   e. on-disk size of pgbench_accounts right after pgbench -i
# The cache's hit rate under pgbench (c, d) is reported with its size and entries in use.
TAM_SCALE=${FC_BENCH_TAM_SCALE:-50}
TAM_CACHE=${FC_BENCH_TAM_CACHE:-2GB}

# cache_stats: "hits misses" of fieldcrypt.tde_cache_stats() (cluster-wide)
cache_stats() { PGDATABASE=tam_enc fc_psql -Atc "SELECT hits || ' ' || misses FROM fieldcrypt.tde_cache_stats()"; }
# cache_rate BEFORE AFTER: hit rate between two cache_stats outputs
cache_rate() {
  local h0 m0 h1 m1; read -r h0 m0 <<<"$1"; read -r h1 m1 <<<"$2"
  awk -v h=$((h1 - h0)) -v m=$((m1 - m0)) 'BEGIN { if (h + m == 0) print "n/a (nothing decrypted)"; else printf "%.1f%% of %d row reads\n", 100 * h / (h + m), h + m }'
}
TAM_SECONDS=${FC_BENCH_TAM_SECONDS:-10}
TAM_SESSION_RUNS=${FC_BENCH_TAM_SESSION_RUNS:-5}
TAM_HUGEPAGES=${FC_BENCH_HUGEPAGES:-2400}

# session_sample STEP VARIANT SETUP_SQL TIMED_SQL: run TIMED_SQL TAM_SESSION_RUNS times in one
# session (after SETUP_SQL), each under \timing; add the seconds of each run to S[STEP/VARIANT].
session_sample() {
  local out ms i script=$3$'\n\\pset format unaligned\n\\pset tuples_only on\n\\o /dev/null\n\\timing on\n'
  for ((i = 0; i < TAM_SESSION_RUNS; i++)); do script+="$4;"$'\n'; done
  out=$(fc_psql <<<"$script") || { log "failed: $4"; return 1; }
  ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*$/\1/p' <<<"$out")
  (($(wc -l <<<"$ms") == TAM_SESSION_RUNS)) || { log "no timings for: $4"; printf '%s\n' "$out" >&2; return 1; }
  for i in $ms; do S[$1/$2]="${S[$1/$2]:+${S[$1/$2]} }$(calc "$i / 1000")"; done
  log "$1 $2: ${S[$1/$2]}"
}
TPCB_SECONDS=${FC_BENCH_TPCB_SECONDS:-20}
TPCB_ROUNDS=${FC_BENCH_TPCB_ROUNDS:-3}

tam_pgbench() {   # DB ARGS...: TPS of one pgbench run
  local db=$1 out; shift
  out=$(PGDATABASE=$db "$PGBIN/pgbench" -n "$@" 2>&1) || { log "pgbench failed: $out"; return 1; }
  sed -n 's/^tps = \([0-9.]*\) .*$/\1/p' <<<"$out" | head -n 1
}

# tam_ratio STEP: best encrypted_heap time of STEP over best heap time
tam_ratio() { calc "$(best "${S[$1/enc]}") / $(best "${S[$1/heap]}")" 2; }

# The timed scans of b.: statement, its name in target lines, and its target ratio.
TAM_SCANS=(sum count copy)
declare -A TAM_SCAN_SQL=([sum]='SELECT sum(abalance) FROM pgbench_accounts'
  [count]='SELECT count(*) FROM pgbench_accounts' [copy]="COPY pgbench_accounts TO '/dev/null'")
declare -A TAM_SCAN_WHAT=([sum]='sum(abalance)' [count]='count(*)' [copy]='COPY TO /dev/null')
declare -A TAM_SCAN_MAX=([sum]=1.5 [count]=1.2 [copy]=1.5)
declare -A TAM_STATE_WHAT=([buf]='in shared buffers' [ring]='through the ring')

# tam_scan_rows STATE: the table lines of the scans of b. in STATE (buf, ring)
tam_scan_rows() {
  row "tam_$1_sum" heap "seq scan sum(abalance), heap" heap
  row "tam_$1_sum" enc "seq scan sum(abalance), encrypted" heap
  row "tam_$1_count" heap "seq scan count(*), heap" heap
  row "tam_$1_count" enc "seq scan count(*), encrypted" heap
  row "tam_$1_copy" heap "COPY TO /dev/null, heap" heap
  row "tam_$1_copy" enc "COPY TO /dev/null, encrypted" heap
  row "tam_$1_sum_s" heap "sum(abalance), one session, heap" heap
  row "tam_$1_sum_s" enc "sum(abalance), one session, encr." heap
  row "tam_$1_count_s" heap "count(*), one session, heap" heap
  row "tam_$1_count_s" enc "count(*), one session, encrypted" heap
  row "tam_$1_copy_s" heap "COPY TO, one session, heap" heap
  row "tam_$1_copy_s" enc "COPY TO, one session, encrypted" heap
}

# Section 3: without huge pages, then with them when the machine can reserve them.
section3() {
  section3_pass ""
  ((TAM_HUGEPAGES > 0)) || return 0
  local avail_kb
  avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
  if [[ $(id -u) != 0 || ! -w /proc/sys/vm/nr_hugepages ]]; then
    say "  (section 3 with huge pages: not run: vm.nr_hugepages needs root)"
  elif ((avail_kb < TAM_HUGEPAGES * 2048 + 4 * 1024 * 1024)); then
    say "  (section 3 with huge pages: not run: $TAM_HUGEPAGES huge pages need more free memory than $((avail_kb / 1024)) MB)"
  else
    section3_pass "$TAM_HUGEPAGES"
  fi
}

# section3_pass HUGEPAGES: the section once; HUGEPAGES empty: huge_pages = off.
section3_pass() {
  local dir rows v r k hp=$1 tag=
  rows=$(commas $((TAM_SCALE * 100000)))
  log "section 3: encrypted_heap vs heap, pgbench scale $TAM_SCALE${hp:+, huge pages}"
  for k in "${!S[@]}"; do [[ $k != tam_* ]] || unset "S[$k]"; done
  local huge=("huge_pages = off") hp_saved=
  if [[ -n $hp ]]; then
    hp_saved=$(cat /proc/sys/vm/nr_hugepages)
    # given back on every exit path (run.sh's EXIT trap), not only at the end
    trap 'echo '"$hp_saved"' >/proc/sys/vm/nr_hugepages; rm -f "$PARTIAL"; fc_cleanup' EXIT
    echo "$hp" >/proc/sys/vm/nr_hugepages || { log "cannot set vm.nr_hugepages"; return 1; }
    huge=("huge_pages = on")
    tag=", huge pages"
  fi
  fc_cluster_start tam "shared_buffers = '2GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" \
    "fieldcrypt.tde_cache_size = '$TAM_CACHE'" "${huge[@]}" "${CRYPTO_CONF[@]}"
  fc_tmpdir dir
  for v in heap enc; do
    fc_psql -c "CREATE DATABASE tam_$v"
    PGDATABASE=tam_$v fc_psql -c 'CREATE EXTENSION fieldcrypt'
  done
  PGDATABASE=tam_enc fc_psql -c 'ALTER DATABASE tam_enc SET default_table_access_method = encrypted_heap'
  for v in heap enc; do
    log "pgbench -i -s $TAM_SCALE on tam_$v"
    PGDATABASE=tam_$v "$PGBIN/pgbench" -i -q -s "$TAM_SCALE" >/dev/null 2>&1
  done
  PGDATABASE=tam_heap fc_psql -c "COPY pgbench_accounts TO '$dir/accounts.copy'"
  chmod 644 "$dir/accounts.copy"

  say ""
  say "== 3. encrypted_heap vs heap (pgbench_accounts, $rows rows; one cluster, shared_buffers 2GB, ${huge[*]}${hp:+ (vm.nr_hugepages = $hp)})"
  local -A size
  for v in heap enc; do
    size[$v]=$(PGDATABASE=tam_$v fc_psql -Atc "SELECT pg_relation_size('pgbench_accounts')")
  done
  say "  on-disk size of pgbench_accounts after pgbench -i: heap ${size[heap]} B, encrypted_heap ${size[enc]} B"

  # a. COPY into a fresh table (created in an earlier transaction: WAL-logged like any load)
  for ((r = 1; r <= REPEAT; r++)); do
    for v in heap enc; do
      PGDATABASE=tam_$v fc_psql -c 'DROP TABLE IF EXISTS acc' -c 'CREATE TABLE acc (LIKE pgbench_accounts)' -c 'CHECKPOINT'
      PGDATABASE=tam_$v sample tam_copy "$v" "" "COPY acc FROM '$dir/accounts.copy'"
    done
  done
  head -n 1000 "$dir/accounts.copy" >"$dir/accounts1000.copy"
  chmod 644 "$dir/accounts1000.copy"
  local gcm3
  gcm3=$(PGDATABASE=tam_enc gcm_line "COPY FROM of 1,000 encrypted_heap rows" "CREATE TABLE acc1k (LIKE pgbench_accounts); COPY acc1k FROM '$dir/accounts1000.copy';")
  gcm3+=$'\n'$(PGDATABASE=tam_enc gcm_line "seq scan sum(abalance) of them" \
    "SELECT sum(abalance) FROM acc1k;")
  # b. sequential scans; no index-only scan
  local noidx="SET max_parallel_workers_per_gather = 0; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off;"
  # first scan after a restart: shared buffers and the cache empty, pages in the OS cache
  for ((r = 1; r <= REPEAT; r++)); do
    for v in heap enc; do
      PGDATABASE=tam_$v fc_psql -c 'SELECT count(*) FROM pgbench_accounts' >/dev/null  # OS cache
      fc_cluster_restart tam
      PGDATABASE=tam_$v sample tam_cold "$v" "$noidx" 'SELECT sum(abalance) FROM pgbench_accounts'
    done
  done
  local c0 c1 st s
  c0=$(cache_stats)
  # the table through the ring (not prewarmed; larger than a quarter of shared_buffers), then
  # in shared buffers: the same statements, in a new session per run and in one session
  for st in ring buf; do
    for v in heap enc; do
      if [[ $st == buf ]]; then
        PGDATABASE=tam_$v fc_psql -c 'CREATE EXTENSION IF NOT EXISTS pg_prewarm' \
          -c "SELECT pg_prewarm('pgbench_accounts')" >/dev/null
      fi
      PGDATABASE=tam_$v fc_psql -c 'SELECT count(*), sum(abalance) FROM pgbench_accounts' >/dev/null
    done
    for ((r = 1; r <= REPEAT; r++)); do
      for v in heap enc; do
        for s in "${TAM_SCANS[@]}"; do
          PGDATABASE=tam_$v sample "tam_${st}_$s" "$v" "$noidx" "${TAM_SCAN_SQL[$s]}"
        done
      done
    done
    for v in heap enc; do
      for s in "${TAM_SCANS[@]}"; do
        PGDATABASE=tam_$v session_sample "tam_${st}_${s}_s" "$v" "$noidx" "${TAM_SCAN_SQL[$s]}"
      done
    done
  done
  local inbuf
  inbuf=$(PGDATABASE=tam_enc fc_psql -Atc "CREATE EXTENSION IF NOT EXISTS pg_buffercache" \
    -c "SELECT round(100.0 * count(*) / (pg_relation_size('pgbench_accounts') / 8192), 1) FROM pg_buffercache WHERE relfilenode = pg_relation_filenode('pgbench_accounts') AND reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())" | tail -n 1)
  c1=$(cache_stats)
  say "  COPY FROM, sequential scans (seconds):"
  header heap
  row tam_copy heap "COPY FROM, heap" heap
  row tam_copy enc "COPY FROM, encrypted_heap" heap
  say "  -- table in shared buffers (pg_prewarm; ${inbuf}% of encrypted_heap's pages there at the end):"
  tam_scan_rows buf
  say "  -- table not prewarmed: read through a 256 kB ring (heap's pages from the OS cache):"
  tam_scan_rows ring
  say "$gcm3"
  row tam_cold heap "first scan after restart, heap" heap
  row tam_cold enc "first scan after restart, encrypted" heap
  say "  decrypted-row cache ($TAM_CACHE): hit rate over the in-memory scans: $(cache_rate "$c0" "$c1")"

  # c. index lookups, d. TPC-B: alternate the databases, keep the best TPS of each
  local -A tps
  c0=$(cache_stats)
  for ((r = 1; r <= 3; r++)); do
    for v in heap enc; do
      tps[sel_$v]="${tps[sel_$v]:+${tps[sel_$v]} }$(tam_pgbench tam_$v -S -M prepared -c 2 -j 2 -T "$TAM_SECONDS")"
      log "select-only $v: ${tps[sel_$v]##* }"
    done
  done
  c1=$(cache_stats)
  local sel_rate tpcb_rate
  sel_rate=$(cache_rate "$c0" "$c1")
  for v in heap enc; do PGDATABASE=tam_$v fc_psql -c 'VACUUM ANALYZE'; done
  c0=$(cache_stats)
  for ((r = 1; r <= TPCB_ROUNDS; r++)); do
    for v in heap enc; do
      PGDATABASE=tam_$v fc_psql -c 'CHECKPOINT'
      tps[tpcb_$v]="${tps[tpcb_$v]:+${tps[tpcb_$v]} }$(tam_pgbench tam_$v -c 2 -j 2 -T "$TPCB_SECONDS")"
      log "TPC-B $v: ${tps[tpcb_$v]##* }"
    done
  done
  c1=$(cache_stats)
  tpcb_rate=$(cache_rate "$c0" "$c1")
  say "  pgbench (TPS): select-only best of 3 x ${TAM_SECONDS}s: heap $(best_tps "${tps[sel_heap]}") encrypted $(best_tps "${tps[sel_enc]}") (samples ${tps[sel_heap]} / ${tps[sel_enc]}); TPC-B best of $TPCB_ROUNDS x ${TPCB_SECONDS}s: heap $(best_tps "${tps[tpcb_heap]}") encrypted $(best_tps "${tps[tpcb_enc]}") (samples ${tps[tpcb_heap]} / ${tps[tpcb_enc]})"
  say "  decrypted-row cache hit rate: pgbench -S $sel_rate; TPC-B $tpcb_rate; $(PGDATABASE=tam_enc fc_psql -Atc "SELECT pg_size_pretty(size_bytes) || ', ' || entries_used || ' of ' || entries || ' entries (pages) in use, ' || evictions || ' evictions' FROM fieldcrypt.tde_cache_stats()")"

  target "encrypted_heap COPY FROM, $rows rows (time vs heap$tag)" "$(tam_ratio tam_copy)" "x <= 1.3" "<=1.3x"
  for st in buf ring; do
    for k in "" _s; do      # new session each, one session
      for s in "${TAM_SCANS[@]}"; do
        target "${TAM_STATE_WHAT[$st]}: ${TAM_SCAN_WHAT[$s]}, $([[ -z $k ]] && echo new || echo one) session$tag" \
          "$(tam_ratio "tam_${st}_$s$k")" "x <= ${TAM_SCAN_MAX[$s]}" "<=${TAM_SCAN_MAX[$s]}x"
      done
    done
  done
  target "encrypted_heap first scan after restart, cold cache$tag" "$(tam_ratio tam_cold)" - -
  target "encrypted_heap index lookups, pgbench -S (TPS vs heap$tag)" \
    "$(calc "$(best_tps "${tps[sel_enc]}") / $(best_tps "${tps[sel_heap]}")" 2)" "x >= 0.95" ">=0.95x"
  target "encrypted_heap pgbench TPC-B (TPS vs heap$tag)" \
    "$(calc "$(best_tps "${tps[tpcb_enc]}") / $(best_tps "${tps[tpcb_heap]}")" 2)" "x >= 0.95" ">=0.95x"
  target "encrypted_heap size of pgbench_accounts (vs heap$tag)" \
    "$(calc "${size[enc]} / ${size[heap]}" 3)" "x <= 1.25" "<=1.25x"
  fc_cluster_stop tam
  if [[ -n $hp_saved ]]; then
    echo "$hp_saved" >/proc/sys/vm/nr_hugepages
    trap 'rm -f "$PARTIAL"; fc_cleanup' EXIT
  fi
  return 0
}

# Section 5: online re-encryption of an encrypted_heap table after rotate_tde_key (the
# worker of src/rotation/, unthrottled) against VACUUM FULL of the same table (which
# also rewrites every row under the current key), FC_BENCH_TDE_ROWS pgbench_accounts-like
# rows (default 6,400,000: about 1 GB on disk). Times: rotate_tde_key until the old
# generation is destroyed (log line), and VACUUM FULL measured by psql.
TDE_ROWS=${FC_BENCH_TDE_ROWS:-6400000}

section5() {
  local t0 t1 vf online size gen
  log "section 5: TDE re-encryption of $(commas "$TDE_ROWS") rows vs VACUUM FULL"
  fc_cluster_start tde "shared_buffers = '2GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" "${CRYPTO_CONF[@]}" \
    "fieldcrypt.reencrypt_rows_per_second = 0" "fieldcrypt.reencrypt_batch_pages = 256"
  fc_psql -c 'CREATE EXTENSION fieldcrypt' \
    -c 'CREATE TABLE big (aid int, bid int, abalance int, filler char(84)) USING encrypted_heap' \
    -c "INSERT INTO big SELECT g, g / 100000, 0, '' FROM generate_series(1, $TDE_ROWS) g" \
    -c 'VACUUM ANALYZE big' -c 'CHECKPOINT'
  size=$(fc_psql -Atc "SELECT pg_relation_size('big')")
  vf=$(timed "CHECKPOINT;" 'VACUUM FULL big')
  log "VACUUM FULL: $vf s"
  fc_psql -c 'CHECKPOINT'
  gen=$(fc_psql -Atc 'SELECT max(generation) FROM fieldcrypt.tde_key_status')
  t0=$(date +%s.%N)
  fc_psql -Atc 'SELECT fieldcrypt.rotate_tde_key()' >/dev/null
  until [[ $(fc_psql -Atc "SELECT count(*) FROM fieldcrypt.tde_key_status") == 1 ]]; do sleep 0.2; done
  t1=$(date +%s.%N)
  online=$(calc "$t1 - $t0")
  log "online re-encryption: $online s"
  say ""
  say "== 5. re-encryption of an encrypted_heap table ($(commas "$TDE_ROWS") rows, $((size / 1048576)) MB)"
  say "  VACUUM FULL (offline rewrite under the current key):       $vf s"
  say "  rotate_tde_key until the old generation is destroyed (online, unthrottled: resealed in place, VACUUM): $online s"
  say "  AES-256-GCM: the worker reseals rows of $(fc_psql -Atc "SELECT avg(pg_column_size(b.*))::int FROM (SELECT * FROM big LIMIT 1000) b") bytes on average (AAD + text up to $(sed -n 's/^#define FC_NETTLE_MAX_BYTES[[:space:]]*\([0-9]*\).*/\1/p' src/keys/crypto.h) bytes go to Nettle; fieldcrypt.crypto_library = $(fc_psql -Atc "SHOW fieldcrypt.crypto_library"))"
  target "encrypted_heap online re-encryption, $((size / 1048576)) MB (time vs VACUUM FULL)" \
    "$(calc "$online / $vf" 2)" "x <= 2.0" "<=2.0x"
  fc_cluster_stop tde
}
