# Section 6 of `make bench` (sourced by test/bench/run.sh; runs where Citus is installed):
# fieldcrypt on a Citus cluster of one coordinator and two workers (three clusters on this
# machine, shared_preload_libraries = 'citus,fieldcrypt', TLS between nodes), one key for
# the cluster (imported on the workers). Three distributed tables (id int, v), 32 shards,
# FC_BENCH_CITUS_ROWS rows (default 200,000) of md5(i::text):
#   text  v text, heap (the baseline)      enc  v fieldcrypt.encrypted_text, heap
#   tam   v text, encrypted_heap shards
#   a. INSERT ... SELECT from generate_series through the coordinator (Citus evaluates the
#      rows there, encrypting for enc, and copies them to the shards)
#   b. multi-shard SELECT id, v to the client (enc: envelopes cross from the workers, NULL
#      reaches the client; tam: the workers decrypt their rows)
#   c. multi-shard SELECT of the plaintext: fieldcrypt.decrypt(v) for enc (pushed down,
#      evaluated on the workers), v for text and tam
# Steps interleaved across variants, best of REPEAT, ratios to text in the same run.
CITUS_ROWS=${FC_BENCH_CITUS_ROWS:-200000}

citus_installed() {
  [[ -f $("$PGBIN/pg_config" --pkglibdir)/citus.so ]]
}

section8() {
  local n v r node doc key='Bench-Citus-Key-1!'
  if ! citus_installed; then
    say ""
    say "== 8. Citus: not run (Citus is not installed; test/deps.sh builds it from ../shared/citus-*.tar.xz)"
    return 0
  fi
  n=$(commas "$CITUS_ROWS")
  log "section 8: Citus, $n rows"
  for node in coord w1 w2; do
    FC_PRELOAD='citus,fieldcrypt' fc_cluster_start "citus_$node" "${CONF[@]}" \
      "max_prepared_transactions = 50" "citus.node_conninfo = 'sslmode=require'"
    fc_psql -c 'CREATE DATABASE citus_bench'
    PGDATABASE=citus_bench fc_psql -c 'SET fieldcrypt.auto_activate = off' \
      -c 'CREATE EXTENSION citus' -c 'CREATE EXTENSION fieldcrypt'
  done
  fc_cluster_use citus_coord
  export PGDATABASE=citus_bench
  fc_psql -c "SELECT fieldcrypt.set_data_encryption_key('$key')"
  doc=$(fc_psql -Atc 'SELECT fieldcrypt.export_key_generations()')
  for node in w1 w2; do
    fc_cluster_use "citus_$node"
    PGDATABASE=citus_bench fc_psql -Atc "SELECT fieldcrypt.import_key_generations(\$d\$$doc\$d\$, '$key')" >/dev/null
  done
  fc_cluster_use citus_coord
  export PGDATABASE=citus_bench
  fc_psql -Atc "SELECT citus_set_coordinator_host('127.0.0.1', $FC_PORT)" >/dev/null
  for node in w1 w2; do
    fc_psql -Atc "SELECT citus_add_node('127.0.0.1', ${FC_PORTS[citus_$node]})" >/dev/null
  done
  fc_psql -c 'CREATE TABLE t_text (id int, v text)' \
    -c 'CREATE TABLE t_enc (id int, v fieldcrypt.encrypted_text)' \
    -c 'CREATE TABLE t_tam (id int, v text) USING encrypted_heap' \
    -c "SELECT create_distributed_table(t, 'id', shard_count => 32) FROM unnest(ARRAY['t_text', 't_enc', 't_tam']) t" >/dev/null

  local -A plain=([text]=v [enc]='fieldcrypt.decrypt(v)' [tam]=v)
  for ((r = 1; r <= REPEAT; r++)); do
    for v in text enc tam; do
      sample c_insert "$v" "TRUNCATE t_$v; CHECKPOINT;" \
        "INSERT INTO t_$v SELECT i, md5(i::text) FROM generate_series(1, $CITUS_ROWS) i"
    done
    for v in text enc tam; do
      sample c_select "$v" "" "SELECT id, v FROM t_$v"
      sample c_plain "$v" "" "SELECT id, ${plain[$v]} FROM t_$v"
    done
  done
  [[ $(fc_psql -Atc "SELECT count(*) FILTER (WHERE fieldcrypt.decrypt(e.v) = t.v) FROM t_enc e JOIN t_text t USING (id)") == "$CITUS_ROWS" ]] ||
    log "section 8: encrypted values do not all decrypt to the baseline"

  say ""
  say "== 8. Citus: coordinator + 2 workers on this machine, distributed tables of 32 shards, $n rows (seconds)"
  header text
  row c_insert text "INSERT ... SELECT, text" text
  row c_insert enc "INSERT ... SELECT, encrypted_text" text
  row c_insert tam "INSERT ... SELECT, encrypted_heap" text
  row c_select text "multi-shard SELECT id, v, text" text
  row c_select enc "  ..., encrypted_text (NULL)" text
  row c_select tam "  ..., encrypted_heap" text
  row c_plain text "multi-shard plaintext, text" text
  row c_plain enc "  ..., decrypt(encrypted_text)" text
  row c_plain tam "  ..., encrypted_heap" text
  for v in enc tam; do
    target "Citus $v: INSERT ... SELECT $n rows (time vs text)" \
      "$(calc "$(best "${S[c_insert/$v]}") / $(best "${S[c_insert/text]}")" 2)" - -
    target "Citus $v: multi-shard SELECT (time vs text)" \
      "$(calc "$(best "${S[c_select/$v]}") / $(best "${S[c_select/text]}")" 2)" - -
    target "Citus $v: multi-shard SELECT of the plaintext (time vs text)" \
      "$(calc "$(best "${S[c_plain/$v]}") / $(best "${S[c_plain/text]}")" 2)" - -
  done
  unset PGDATABASE
  for node in w2 w1 coord; do fc_cluster_stop "citus_$node"; done
}
