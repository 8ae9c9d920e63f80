# Section 6 of `make bench` (sourced by test/bench/run.sh): equality lookups through a keyed
# hash index (fieldcrypt.text_keyed_ops: HMAC-SHA-256 of the value under the database's
# TDE-derived key) against a plain hash index (hashtext), same table twice in one database of
# one cluster (both encrypted_heap, FC_BENCH_KEYED_ROWS rows, default 1,000,000, e-mail-like
# text keys), so that only the index's hash function differs:
#   a. CREATE INDEX time of each (best of FC_BENCH_REPEAT); the difference divided by the
#      rows is the cost of one keyed hash over a plain one;
#   b. pgbench, a custom script of one equality lookup by a random key (prepared protocol,
#      -c 2 -j 2, FC_BENCH_KEYED_SECONDS each, default 10), the two tables alternating for
#      FC_BENCH_KEYED_ROUNDS rounds (default 5); best TPS of each, and the ratio.

KEYED_ROWS=${FC_BENCH_KEYED_ROWS:-1000000}
KEYED_SECONDS=${FC_BENCH_KEYED_SECONDS:-10}
KEYED_ROUNDS=${FC_BENCH_KEYED_ROUNDS:-5}

section7() {
  local dir v r t
  log "section 7: keyed hash index vs plain hash index, $KEYED_ROWS rows"
  fc_cluster_start keyed "${CONF[@]}"
  fc_tmpdir dir
  fc_psql -c 'CREATE DATABASE keyed'
  PGDATABASE=keyed fc_psql -c 'CREATE EXTENSION fieldcrypt' \
    -c 'ALTER DATABASE keyed SET fieldcrypt.tde_plain_indexes = allow'
  for v in plain keyed; do
    PGDATABASE=keyed fc_psql -c "CREATE TABLE k_$v (id int, email text) USING encrypted_heap" \
      -c "INSERT INTO k_$v SELECT g, 'user' || g || '@contoso.example' FROM generate_series(1, $KEYED_ROWS) g"
  done
  local -A opc=([plain]='' [keyed]='fieldcrypt.text_keyed_ops')
  for ((r = 1; r <= REPEAT; r++)); do
    for v in plain keyed; do
      PGDATABASE=keyed fc_psql -c "DROP INDEX IF EXISTS k_${v}_email" -c 'CHECKPOINT'
      PGDATABASE=keyed sample "kbuild" "$v" "SET maintenance_work_mem = '256MB';" \
        "CREATE INDEX k_${v}_email ON k_$v USING hash (email ${opc[$v]})"
    done
  done
  PGDATABASE=keyed fc_psql -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
  for v in plain keyed; do
    printf '%s\n' "\\set id random(1, $KEYED_ROWS)" \
      "SELECT id FROM k_$v WHERE email = 'user' || :id || '@contoso.example';" >"$dir/$v.sql"
    chmod 644 "$dir/$v.sql"
    # the plan is an index scan on the hash index
    PGDATABASE=keyed fc_psql -Atc "EXPLAIN (COSTS OFF) SELECT id FROM k_$v WHERE email = 'user1@contoso.example'" |
      grep -q "k_${v}_email" || { log "section 7: k_$v is not read through its hash index"; return 1; }
  done
  local -A tps
  for ((r = 1; r <= KEYED_ROUNDS; r++)); do
    for v in plain keyed; do
      t=$(tam_pgbench keyed -M prepared -c 2 -j 2 -T "$KEYED_SECONDS" -f "$dir/$v.sql")
      tps[$v]="${tps[$v]:+${tps[$v]} }$t"
      log "keyed lookups $v: $t"
    done
  done
  local bp bk
  bp=$(best "${S[kbuild/plain]}") bk=$(best "${S[kbuild/keyed]}")
  say ""
  say "== 7. equality lookups through a keyed hash index vs a plain hash index ($(commas "$KEYED_ROWS") rows, encrypted_heap, one cluster)"
  say "  CREATE INDEX (seconds, best of $REPEAT): plain hash $bp, keyed hash $bk; keyed hash cost over hashtext: $(calc "($bk - $bp) * 1000000000 / $KEYED_ROWS" 0) ns a value"
  say "  pgbench lookups by random key (TPS, best of $KEYED_ROUNDS x ${KEYED_SECONDS}s): plain $(best_tps "${tps[plain]}") keyed $(best_tps "${tps[keyed]}") (samples ${tps[plain]} / ${tps[keyed]})"
  target "keyed hash index equality lookups, pgbench (TPS vs plain hash)" \
    "$(calc "$(best_tps "${tps[keyed]}") / $(best_tps "${tps[plain]}")" 2)" "x >= 0.9" ">=0.9x"
  target "keyed hash index CREATE INDEX (time vs plain hash)" "$(calc "$bk / $bp" 2)" - -
  fc_cluster_stop keyed
}
