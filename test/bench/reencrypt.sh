# Section 4 of `make bench` (sourced by test/bench/run.sh, which provides the helpers):
# re-encryption after a key change (src/rotation/).
#
#   a. Throughput: FC_BENCH_REENC_ROWS (default FC_BENCH_ROWS) encrypted_text values of 32
#      bytes. Baseline: a plain `UPDATE t SET secret = secret` of the same freshly loaded,
#      vacuumed table. Re-encryption: from the commit of set_data_encryption_key to the
#      worker's "finished" log line (worker start, counting, both passes, destruction of
#      the old generation), with fieldcrypt.reencrypt_rows_per_second = 0 (no throttle).
#      Best of FC_BENCH_REENC_REPEAT (default 3). Target: time ratio <= 2 (at least half
#      the speed of the plain rewrite).
#   b. Foreground impact with the default throttle: pgbench (TPC-B-like, 2 clients, scale
#      FC_BENCH_PGBENCH_SCALE) in the same database while the worker re-encrypts the table,
#      against pgbench while the re-encryption is postponed (fieldcrypt.reencrypt = off),
#      alternating FC_BENCH_REENC_ROUNDS times (default 6; the order flips every round) for
#      FC_BENCH_REENC_SECONDS each (default 5). Target: median TPS ratio >= 0.8.

REENC_ROWS=${FC_BENCH_REENC_ROWS:-$ROWS}
REENC_REPEAT=${FC_BENCH_REENC_REPEAT:-3}
REENC_SECONDS=${FC_BENCH_REENC_SECONDS:-5}
REENC_ROUNDS=${FC_BENCH_REENC_ROUNDS:-6}

# Seconds from the commit of a key change ($1, SQL) to the log line of the worker that says
# the re-encryption finished (timestamps of the server). Completion is polled every 0.2 s
# without TLS, so that polling takes little CPU from the worker.
reenc_rotate_time() {
  local t0 line t1
  t0=$(fc_psql -At -c "$1" -c 'SELECT extract(epoch FROM clock_timestamp())' | tail -n 1) || return 1
  until [[ $(PGSSLMODE=disable fc_psql -At -c "SELECT count(*) FROM fieldcrypt.rotation_progress
      WHERE database = current_database()") == 0 ]]; do
    sleep 0.2
  done
  line=$(grep 'fieldcrypt: re-encryption of database .* finished' "$FC_LOG" | tail -n 1)
  t1=$(date -d "$(cut -d' ' -f1-3 <<<"$line")" +%s.%N) || return 1
  calc "$t1 - $t0"
}

reenc_load() {   # SQL that recreates and loads t_re, untimed
  echo "SET client_min_messages = warning; DROP TABLE IF EXISTS t_re;
    CREATE TABLE t_re (id int, secret fieldcrypt.encrypted_text);
    INSERT INTO t_re SELECT i, md5(i::text) FROM generate_series(1, $REENC_ROWS) i;
    VACUUM ANALYZE t_re; CHECKPOINT;"
}

reenc_set() {   # postgresql.conf setting via ALTER SYSTEM, reloaded
  fc_psql -q -c "ALTER SYSTEM SET $1" -c 'SELECT pg_reload_conf()' >/dev/null
}

section4() {
  local n r k=0 t ratios=() on off running rate
  n=$(commas "$REENC_ROWS")
  log "section 4: starting a cluster for re-encryption"
  fc_cluster_start reenc "${CONF[@]}" "fieldcrypt.reencrypt_rows_per_second = 0"
  fc_psql -c 'CREATE EXTENSION fieldcrypt'

  for ((r = 1; r <= REENC_REPEAT; r++)); do
    t=$(timed "$(reenc_load)" "UPDATE t_re SET secret = secret;") || return 1
    S[reenc/update]+=" $t"
    k=$((k + 1))
    fc_psql <<<"$(reenc_load)" >/dev/null || return 1
    t=$(reenc_rotate_time "SELECT fieldcrypt.set_data_encryption_key('Bench-Rotation-$k-Key!')") || return 1
    S[reenc/rotate]+=" $t"
    log "4a round $r: update $(best "${S[reenc/update]}") s, re-encryption $t s"
  done
  # sanity, untimed: every value decrypts and only one generation is left
  [[ $(fc_psql -At -c "SELECT count(*) = $REENC_ROWS FROM t_re WHERE fieldcrypt.decrypt(secret) = md5(id::text)") == t &&
     $(fc_psql -At -c 'SELECT generations_kept FROM fieldcrypt.key_status') == 1 ]] ||
    { log "sanity check failed after re-encryption"; return 1; }

  # b: default throttle, pgbench alongside
  local dflt
  dflt=$(fc_psql -At -c "SELECT boot_val FROM pg_settings WHERE name = 'fieldcrypt.reencrypt_rows_per_second'")
  reenc_set "fieldcrypt.reencrypt_rows_per_second = $dflt"
  "$PGBIN/pgbench" -i -q -s "$PGB_SCALE" >/dev/null 2>&1 || { log "pgbench -i failed"; return 1; }
  fc_psql <<<"$(reenc_load)" >/dev/null || return 1
  reenc_set "fieldcrypt.reencrypt = off"
  k=$((k + 1))
  fc_psql -c "SELECT fieldcrypt.set_data_encryption_key('Bench-Rotation-$k-Key!')" >/dev/null
  # odd rounds measure without then with, even rounds the other way round
  for ((r = 1; r <= REENC_ROUNDS; r++)); do
    if ((r % 2)); then
      reenc_set "fieldcrypt.reencrypt = off"; sleep 1
      off=$(pgbench_tpcb "$REENC_SECONDS") || return 1
    fi
    reenc_set "fieldcrypt.reencrypt = on"; sleep 1
    on=$(pgbench_tpcb "$REENC_SECONDS") || return 1
    running='' rate=''
    IFS='|' read -r running rate < <(fc_psql -At -c "SELECT phase, round(rows_per_second)
      FROM fieldcrypt.rotation_progress WHERE database = current_database()") || true
    [[ $running == re-encrypting ]] ||
      log "4b round $r: the re-encryption was not running at the end of the round ($running)"
    if ((r % 2 == 0)); then
      reenc_set "fieldcrypt.reencrypt = off"; sleep 1
      off=$(pgbench_tpcb "$REENC_SECONDS") || return 1
    fi
    S[reenc/off]+=" $off" S[reenc/on]+=" $on"
    ratios+=("$(calc "$on / $off" 3)")
    log "4b round $r: TPS without $off, during re-encryption $on"
  done
  reenc_set "fieldcrypt.reencrypt = on"
  fc_cluster_stop reenc

  local tu tr
  tu=$(best "${S[reenc/update]}") tr=$(best "${S[reenc/rotate]}")
  say ""
  say "== 4a. re-encryption of $n encrypted_text values after a key change (no throttle)"
  say "  UPDATE t SET secret = secret (baseline): best $tu s   samples:${S[reenc/update]}"
  say "  key change commit -> worker finished:   best $tr s   samples:${S[reenc/rotate]}"
  say "  re-encryption rate: $(commas "$(calc "$REENC_ROWS / $tr" 0)") values/s"
  say ""
  say "== 4b. pgbench TPC-B (2 clients, scale $PGB_SCALE) during re-encryption, default throttle"
  say "  ($(calc "$REENC_SECONDS" 0) s rounds; throttle $dflt rows/s, worker rate in the last round: ${rate:-?} rows/s)"
  say "  TPS without re-encryption:  best $(best_tps "${S[reenc/off]}")   samples:${S[reenc/off]}"
  say "  TPS during re-encryption:   best $(best_tps "${S[reenc/on]}")   samples:${S[reenc/on]}"
  say ""
  say "== 4. targets"
  target "re-encryption time / plain UPDATE time" "$(calc "$tr / $tu" 2)" "x <= 2.0" "<=2.0x"
  target "TPS during / without re-encryption (median of rounds)" "$(median "${ratios[*]}")" "x >= 0.8" ">=0.8x"
}

# pgbench TPC-B-like against the current cluster; prints TPS.
pgbench_tpcb() {   # SECONDS
  local out tps
  out=$("$PGBIN/pgbench" -n -c 2 -j 2 -T "$1" 2>&1) ||
    { log "pgbench failed:"; printf '%s\n' "$out" >&2; return 1; }
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
  [[ -n $tps ]] || { log "no TPS in pgbench output:"; printf '%s\n' "$out" >&2; return 1; }
  calc "$tps" 0
}
