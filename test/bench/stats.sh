# Section 6 of `make bench` (sourced by test/bench/run.sh): planning time with the
# statistics of encrypted_heap tables (kept encrypted, handed to the planner by
# get_relation_stats_hook from a backend cache) against heap's from pg_statistic.
# Twenty tables of each kind (FC_BENCH_STATS_ROWS rows each, default 10,000; analyzed), and
# a 20-way join over each set; a PL/pgSQL loop in one session runs EXPLAIN of the query
# FC_BENCH_STATS_PLANS times (default 50) per round, heap and encrypted_heap alternating
# for FC_BENCH_STATS_ROUNDS rounds (default 7). Reported: the best time per plan of each
# side, and the median of the per-round ratios. Target: <= 1.05x.
STATS_ROWS=${FC_BENCH_STATS_ROWS:-10000}
STATS_PLANS=${FC_BENCH_STATS_PLANS:-50}
STATS_ROUNDS=${FC_BENCH_STATS_ROUNDS:-7}

section6() {
  local v i q r th te ratios="" heap_all="" enc_all=""
  log "section 6: planning a 20-way join, encrypted_heap statistics vs heap's"
  fc_cluster_start stats "fieldcrypt.tde_plain_indexes = allow"   # btree join keys, as heap has
  fc_psql -c 'CREATE DATABASE plans'
  export PGDATABASE=plans
  fc_psql -c 'CREATE EXTENSION fieldcrypt'
  for v in h e; do
    for i in $(seq 1 20); do
      fc_psql -c "CREATE TABLE ${v}$i (a int, b int, c text) USING $([[ $v == h ]] && echo heap || echo encrypted_heap);
                  INSERT INTO ${v}$i SELECT g, g % 100, 'v' || (g % 37) FROM generate_series(1, $STATS_ROWS) g;
                  CREATE INDEX ON ${v}$i (a); ANALYZE ${v}$i"
    done
  done
  fc_psql -c "CREATE FUNCTION plan_ms(q text, n int) RETURNS float8 LANGUAGE plpgsql AS \$\$
    DECLARE t0 timestamptz; l text;
    BEGIN
      FOR l IN EXECUTE 'EXPLAIN ' || q LOOP END LOOP;   -- warm the caches
      t0 := clock_timestamp();
      FOR i IN 1..n LOOP FOR l IN EXECUTE 'EXPLAIN ' || q LOOP END LOOP; END LOOP;
      RETURN round((extract(epoch FROM clock_timestamp() - t0) * 1000 / n)::numeric, 3);
    END \$\$"
  join_of() {
    local s="SELECT count(*) FROM ${1}1" k
    for k in $(seq 2 20); do s="$s JOIN ${1}$k ON ${1}$k.a = ${1}$((k - 1)).a AND ${1}$k.b = ${1}$((k - 1)).b"; done
    echo "$s WHERE ${1}1.c = 'v3' AND ${1}20.b < 10"
  }
  for r in $(seq 1 "$STATS_ROUNDS"); do
    th=$(fc_psql -Atc "SELECT plan_ms(\$q\$$(join_of h)\$q\$, $STATS_PLANS)")
    te=$(fc_psql -Atc "SELECT plan_ms(\$q\$$(join_of e)\$q\$, $STATS_PLANS)")
    heap_all="$heap_all $th" enc_all="$enc_all $te" ratios="$ratios $(calc "$te / $th" 4)"
    log "round $r: heap $th ms, encrypted_heap $te ms"
  done
  # the encrypted plan used the statistics: same plan as heap's, names aside
  local ph pe
  ph=$(fc_psql -Atc "EXPLAIN (COSTS OFF) $(join_of h)" | sed 's/\bh\([0-9]\)/T\1/g')
  pe=$(fc_psql -Atc "EXPLAIN (COSTS OFF) $(join_of e)" | sed 's/\be\([0-9]\)/T\1/g')
  unset PGDATABASE
  fc_cluster_stop stats
  say ""
  say "== 6. planning a 20-way join: statistics of encrypted_heap tables (encrypted, hook) vs heap's (pg_statistic)"
  sayf "  %-44s %10s ms\n" "heap tables, best time per plan" "$(best "$heap_all")"
  sayf "  %-44s %10s ms\n" "encrypted_heap tables, best time per plan" "$(best "$enc_all")"
  local ratio; ratio=$(calc "$(best "$enc_all") / $(best "$heap_all")")
  sayf "  %-44s %10sx   (median of rounds %sx; target <= 1.05x: %s)\n" "ratio encrypted_heap / heap" \
    "$ratio" "$(median "$ratios")" "$(verdict "$ratio <= 1.05")"
  sayf "  %-44s %10s\n" "same plan for both" "$([[ $ph == "$pe" ]] && echo yes || echo NO)"
  say "  samples (ms per plan): heap$heap_all; encrypted_heap$enc_all"
}
