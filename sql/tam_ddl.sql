--
-- tam_ddl: DDL on encrypted_heap tables behaves as on heap: CREATE INDEX (also
-- CONCURRENTLY; unique, partial, expression, BRIN, GIN, hash, GiST), REINDEX,
-- HOT updates (decided on plaintexts, as heap decides them), VACUUM (also
-- parallel), VACUUM FULL, CLUSTER, TRUNCATE, COPY FREEZE, ALTER TABLE with and
-- without a rewrite, SET UNLOGGED / LOGGED / TABLESPACE, SET ACCESS METHOD in
-- both directions.  Index contents are checked with amcheck (heapallindexed:
-- every live row is in the index) and by comparing index scans with heap.
--
-- Runs in a database of its own, over TLS as a superuser.  Control tables say
-- USING heap explicitly: this file also runs in the pass where
-- default_table_access_method = encrypted_heap.
-- After each refused statement, \echo :LAST_ERROR_SQLSTATE shows its SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tam_ddl;
DROP TABLESPACE IF EXISTS regress_fc_tam_ts;
RESET client_min_messages;
CREATE DATABASE fc_tam_ddl TEMPLATE template0;
\c fc_tam_ddl
CREATE EXTENSION fieldcrypt;
CREATE EXTENSION amcheck;

CREATE FUNCTION tam_digest(rel regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE format('SELECT count(*) || '':'' || md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) FROM %s x', rel)
       INTO r;
    RETURN r;
END $$;
-- q_same(query with %s for the table): the query gives the same result on h and e
CREATE FUNCTION q_same(q text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE a text; b text;
BEGIN
    EXECUTE format('SELECT md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) || count(*) FROM (' || q || ') x', 'e') INTO a;
    EXECUTE format('SELECT md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) || count(*) FROM (' || q || ') x', 'h') INTO b;
    RETURN a = b;
END $$;
-- every btree index of a table is complete and consistent
CREATE FUNCTION check_btrees(rel regclass) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(bt_index_check(i.indexrelid, true))
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
     WHERE i.indrelid = rel AND a.amname = 'btree' AND i.indisvalid
$$;

CREATE TABLE h (id int, k int, name text, tags text[], doc jsonb, ts timestamptz, big text) USING heap;
CREATE TABLE e (id int, k int, name text, tags text[], doc jsonb, ts timestamptz, big text) USING encrypted_heap;
INSERT INTO h SELECT g, g % 97, 'name-' || g,
       ARRAY['t' || (g % 5), 't' || (g % 7)],
       jsonb_build_object('g', g, 'even', g % 2 = 0, 'color', (ARRAY['red', 'green', 'blue'])[g % 3 + 1]),
       timestamptz '2026-01-01 00:00+00' + g * interval '1 hour',
       CASE WHEN g % 500 = 0 THEN repeat(md5(g::text), 200) END
  FROM generate_series(1, 6000) g;
INSERT INTO e SELECT * FROM h;

--
-- CREATE INDEX, every kind; plans use them; results equal heap's.
--
CREATE UNIQUE INDEX e_id ON e (id);
CREATE UNIQUE INDEX h_id ON h (id);
CREATE INDEX e_k_partial ON e (k) WHERE k < 10;
CREATE INDEX h_k_partial ON h (k) WHERE k < 10;
CREATE INDEX e_lower ON e (lower(name));
CREATE INDEX h_lower ON h (lower(name));
CREATE INDEX e_big ON e (md5(big)) WHERE big IS NOT NULL;
CREATE INDEX h_big ON h (md5(big)) WHERE big IS NOT NULL;
CREATE INDEX e_brin ON e USING brin (ts) WITH (pages_per_range = 2);
CREATE INDEX h_brin ON h USING brin (ts) WITH (pages_per_range = 2);
CREATE INDEX e_tags ON e USING gin (tags);
CREATE INDEX h_tags ON h USING gin (tags);
CREATE INDEX e_doc ON e USING gin (doc jsonb_path_ops);
CREATE INDEX h_doc ON h USING gin (doc jsonb_path_ops);
CREATE INDEX e_hash ON e USING hash (name);
CREATE INDEX h_hash ON h USING hash (name);
CREATE INDEX e_gist ON e USING gist (int4range(id, id + 10));
CREATE INDEX h_gist ON h USING gist (int4range(id, id + 10));
SELECT check_btrees('e') AS btrees_checked;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE k = 3;
SELECT q_same('SELECT * FROM %s WHERE k = 3') AS partial;
EXPLAIN (COSTS OFF) SELECT id FROM e WHERE lower(name) = 'name-77';
SELECT id FROM e WHERE lower(name) = 'name-77';
EXPLAIN (COSTS OFF) SELECT id FROM e WHERE md5(big) = md5(repeat(md5('1000'), 200)) AND big IS NOT NULL;
SELECT id FROM e WHERE md5(big) = md5(repeat(md5('1000'), 200)) AND big IS NOT NULL;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE ts BETWEEN '2026-02-01' AND '2026-02-02';
SELECT q_same($$SELECT * FROM %s WHERE ts BETWEEN '2026-02-01' AND '2026-02-02'$$) AS brin;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE tags @> ARRAY['t3', 't6'];
SELECT q_same($$SELECT * FROM %s WHERE tags @> ARRAY['t3', 't6']$$) AS gin_array;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE doc @> '{"color": "blue", "even": true}';
SELECT q_same($$SELECT * FROM %s WHERE doc @> '{"color": "blue", "even": true}'$$) AS gin_jsonb;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE name = 'name-4242';
SELECT q_same($$SELECT * FROM %s WHERE name = 'name-4242'$$) AS hash;
EXPLAIN (COSTS OFF) SELECT id FROM e WHERE int4range(id, id + 10) @> 4242 ORDER BY id;
SELECT id FROM e WHERE int4range(id, id + 10) @> 4242 ORDER BY id;
RESET enable_seqscan;
-- a unique index over duplicates fails as on heap (23505)
INSERT INTO e (id) VALUES (1);
\echo :LAST_ERROR_SQLSTATE
-- (terse: which duplicate is met first depends on the physical row order)
\set VERBOSITY terse
CREATE UNIQUE INDEX e_k_unique ON e (k);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- indexes see rows inserted, updated and deleted after they were built
UPDATE e SET k = k + 1, name = name || '*' WHERE id % 10 = 0;
UPDATE h SET k = k + 1, name = name || '*' WHERE id % 10 = 0;
DELETE FROM e WHERE id % 13 = 0;
DELETE FROM h WHERE id % 13 = 0;
INSERT INTO e SELECT g, g % 97, 'late-' || g FROM generate_series(6001, 6500) g;
INSERT INTO h SELECT g, g % 97, 'late-' || g FROM generate_series(6001, 6500) g;
SET enable_seqscan = off;
SELECT q_same('SELECT id, k, name FROM %s WHERE k < 10') AS partial_after_dml,
       q_same($$SELECT id FROM %s WHERE lower(name) LIKE 'late-60%%'$$) AS expr_after_dml,
       q_same($$SELECT id FROM %s WHERE name = 'name-10*'$$) AS hash_after_dml;
RESET enable_seqscan;
SELECT check_btrees('e') AS btrees_checked;

-- a parallel index build (the workers scan the table through the access method)
SET min_parallel_table_scan_size = 0;
SET max_parallel_maintenance_workers = 2;
SET maintenance_work_mem = '256MB';
SET client_min_messages = debug1;
CREATE INDEX e_par ON e (k, name);
RESET client_min_messages;
RESET min_parallel_table_scan_size; RESET max_parallel_maintenance_workers; RESET maintenance_work_mem;
SELECT check_btrees('e') AS btrees_checked;
SET enable_seqscan = off; SET enable_bitmapscan = off;
SELECT q_same('SELECT id FROM %s WHERE k = 7 AND name > ''name-5''') AS parallel_built_index;
RESET enable_seqscan; RESET enable_bitmapscan;
DROP INDEX e_par;

--
-- CREATE INDEX CONCURRENTLY (also unique, partial, expression), REINDEX.
--
CREATE INDEX CONCURRENTLY e_name_cic ON e (name);
CREATE UNIQUE INDEX CONCURRENTLY e_id_cic ON e (id) WHERE id > 3000;
CREATE INDEX CONCURRENTLY e_expr_cic ON e ((k * 2 + 1));
CREATE INDEX CONCURRENTLY e_gin_cic ON e USING gin (tags);
SELECT indexrelid::regclass, indisvalid, indisready FROM pg_index
 WHERE indrelid = 'e'::regclass AND indexrelid::regclass::text LIKE '%cic' ORDER BY 1;
SELECT check_btrees('e') AS btrees_checked;
-- a failing CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index (23505)
\set VERBOSITY terse
CREATE UNIQUE INDEX CONCURRENTLY e_k_cic ON e (k);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT indexrelid::regclass, indisvalid FROM pg_index WHERE indexrelid = 'e_k_cic'::regclass;
DROP INDEX e_k_cic;
REINDEX INDEX e_lower;
REINDEX TABLE e;
REINDEX INDEX CONCURRENTLY e_name_cic;
REINDEX TABLE CONCURRENTLY e;
SELECT count(*) FILTER (WHERE NOT indisvalid) AS invalid, count(*) AS indexes FROM pg_index WHERE indrelid = 'e'::regclass;
SELECT check_btrees('e') AS btrees_checked;
SET enable_seqscan = off;
SELECT q_same($$SELECT id FROM %s WHERE name = 'name-77'$$) AS after_reindex;
RESET enable_seqscan;

--
-- HOT updates: an UPDATE that changes no indexed column's plaintext is HOT,
-- as on heap (fieldcrypt compares plaintexts; the stored bytes always differ);
-- one that changes an indexed column, or a column an expression or partial
-- index reads, is not.  Counted within a transaction for each table.  Autovacuum
-- is off on both: its pin on a page would stop the pruning that makes room for HOT.
--
CREATE TABLE hot_h (id int PRIMARY KEY, k int, v text, w text, p int) USING heap WITH (fillfactor = 50, autovacuum_enabled = off);
CREATE TABLE hot_e (id int PRIMARY KEY, k int, v text, w text, p int) USING encrypted_heap WITH (fillfactor = 50, autovacuum_enabled = off);
CREATE INDEX ON hot_h (k); CREATE INDEX ON hot_h (lower(w)); CREATE INDEX ON hot_h (id) WHERE p > 0;
CREATE INDEX ON hot_e (k); CREATE INDEX ON hot_e (lower(w)); CREATE INDEX ON hot_e (id) WHERE p > 0;
INSERT INTO hot_h SELECT g, g % 10, 'v' || g, 'W' || g, g % 2 FROM generate_series(1, 200) g;
INSERT INTO hot_e SELECT * FROM hot_h;
-- hot_counts(UPDATE with %s for the table): "rows updated, of which HOT" on
-- each table (differences of this backend's counters around the statement)
CREATE FUNCTION hot_counts(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text := '';
    rel text;
    hot0 bigint; upd0 bigint;
BEGIN
    FOREACH rel IN ARRAY ARRAY['hot_h', 'hot_e'] LOOP
        hot0 := pg_stat_get_xact_tuples_hot_updated(rel::regclass);
        upd0 := pg_stat_get_xact_tuples_updated(rel::regclass);
        EXECUTE format(stmt, rel);
        r := r || format('%s: %s of %s HOT; ', rel,
                         pg_stat_get_xact_tuples_hot_updated(rel::regclass) - hot0,
                         pg_stat_get_xact_tuples_updated(rel::regclass) - upd0);
    END LOOP;
    RETURN r;
END $$;
BEGIN;
SELECT hot_counts('UPDATE %s SET v = v || ''+'' WHERE id <= 20') AS unindexed_column;
ROLLBACK;
BEGIN;
SELECT hot_counts('UPDATE %s SET k = k, w = w WHERE id <= 20') AS indexed_columns_unchanged;
ROLLBACK;
BEGIN;
SELECT hot_counts('UPDATE %s SET k = k + 1 WHERE id <= 20') AS indexed_column_changed;
ROLLBACK;
BEGIN;
SELECT hot_counts('UPDATE %s SET w = w || ''x'' WHERE id <= 20') AS expression_input_changed;
ROLLBACK;
BEGIN;
SELECT hot_counts('UPDATE %s SET p = p + 2 WHERE id <= 20') AS predicate_column_changed;
ROLLBACK;
-- an indexed expression over a value stored out of line: rewriting the same
-- value is HOT (equal plaintext), changing it is not
ALTER TABLE hot_h ADD COLUMN big text;
ALTER TABLE hot_e ADD COLUMN big text;
UPDATE hot_h SET big = (SELECT string_agg(md5(id || ':' || g), '') FROM generate_series(1, 300) g) WHERE id % 10 = 1;
UPDATE hot_e SET big = (SELECT string_agg(md5(id || ':' || g), '') FROM generate_series(1, 300) g) WHERE id % 10 = 1;
CREATE INDEX ON hot_h (md5(big));
CREATE INDEX ON hot_e (md5(big));
SELECT pg_column_compression(big) IS NULL AND pg_column_size(big) = 9600 AS out_of_line_uncompressed
  FROM hot_e WHERE id = 1;
BEGIN;
SELECT hot_counts('UPDATE %s SET big = big, v = v || ''b'' WHERE big IS NOT NULL') AS same_big_value;
ROLLBACK;
BEGIN;
SELECT hot_counts('UPDATE %s SET big = big || ''!'' WHERE big IS NOT NULL') AS big_value_changed;
ROLLBACK;
-- a BEFORE UPDATE trigger that changes an indexed column (not HOT), or puts
-- back the one the UPDATE changed (HOT): what counts is the row stored
CREATE FUNCTION hot_trig() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.v LIKE '%trig-k' THEN NEW.k := OLD.k + 100; END IF;
    IF NEW.v LIKE '%trig-keep' THEN NEW.k := OLD.k; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hot_trig BEFORE UPDATE ON hot_h FOR EACH ROW EXECUTE FUNCTION hot_trig();
CREATE TRIGGER hot_trig BEFORE UPDATE ON hot_e FOR EACH ROW EXECUTE FUNCTION hot_trig();
BEGIN;
SELECT hot_counts('UPDATE %s SET v = v || ''trig-k'' WHERE id <= 20') AS trigger_changes_k;
ROLLBACK;
BEGIN;
SELECT hot_counts('UPDATE %s SET v = v || ''trig-keep'', k = k + 1 WHERE id <= 20') AS trigger_keeps_k;
ROLLBACK;
DROP TRIGGER hot_trig ON hot_h;
DROP TRIGGER hot_trig ON hot_e;
-- the same updates for real, several times (HOT chains), then every index
-- finds exactly the right rows
UPDATE hot_e SET v = v || '+' WHERE id <= 50;
UPDATE hot_h SET v = v || '+' WHERE id <= 50;
UPDATE hot_e SET v = v || '+', k = k + 1 WHERE id % 3 = 0;
UPDATE hot_h SET v = v || '+', k = k + 1 WHERE id % 3 = 0;
UPDATE hot_e SET v = v || '+' WHERE id <= 50;
UPDATE hot_h SET v = v || '+' WHERE id <= 50;
UPDATE hot_e SET w = upper(w) || 'y' WHERE id % 7 = 0;
UPDATE hot_h SET w = upper(w) || 'y' WHERE id % 7 = 0;
UPDATE hot_e SET p = 0 WHERE id % 5 = 0;
UPDATE hot_h SET p = 0 WHERE id % 5 = 0;
SELECT tam_digest('hot_e') = tam_digest('hot_h') AS same_after_hot;
SELECT check_btrees('hot_e') AS btrees_checked;
SET enable_seqscan = off;
SELECT md5(string_agg(id::text, ',' ORDER BY id)) = (SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM hot_h WHERE k = 4) AS by_k,
       (SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM hot_e WHERE lower(w) LIKE 'w1%')
     = (SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM hot_h WHERE lower(w) LIKE 'w1%') AS by_expr,
       (SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM hot_e WHERE p > 0 AND id < 100)
     = (SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM hot_h WHERE p > 0 AND id < 100) AS by_partial
  FROM hot_e WHERE k = 4;
RESET enable_seqscan;
-- pruning and vacuum of the HOT chains, then an index built concurrently
-- over the chains, on a column that HOT updates changed
VACUUM hot_e;
VACUUM hot_h;
CREATE INDEX CONCURRENTLY hot_e_v ON hot_e (v);
CREATE INDEX CONCURRENTLY hot_h_v ON hot_h (v);
UPDATE hot_e SET v = v || '!' WHERE id <= 10;
UPDATE hot_h SET v = v || '!' WHERE id <= 10;
SELECT tam_digest('hot_e') = tam_digest('hot_h') AS same_after_vacuum, check_btrees('hot_e') AS btrees_checked;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT id, v FROM hot_e WHERE v IN ('v3+++!', 'v3+++', 'v30+++', 'v60++') ORDER BY id;
SELECT id, v FROM hot_h WHERE v IN ('v3+++!', 'v3+++', 'v30+++', 'v60++') ORDER BY id;
RESET enable_seqscan;
RESET enable_bitmapscan;

--
-- VACUUM, VACUUM FULL, CLUSTER.
--
DELETE FROM e WHERE id % 4 = 0;
DELETE FROM h WHERE id % 4 = 0;
SELECT pg_relation_size('e') AS size_before \gset
VACUUM e;
VACUUM h;
SELECT tam_digest('e') = tam_digest('h') AS same_after_vacuum;
-- freed space is reused by new rows
INSERT INTO e SELECT g, 1, 'refill-' || g FROM generate_series(7001, 7800) g;
INSERT INTO h SELECT g, 1, 'refill-' || g FROM generate_series(7001, 7800) g;
SELECT pg_relation_size('e') = :size_before AS reused_space;
VACUUM (FREEZE, VERBOSE false, INDEX_CLEANUP on, TRUNCATE on) e;
VACUUM (FREEZE) h;
SELECT tam_digest('e') = tam_digest('h') AS same_after_freeze;
SELECT check_btrees('e') AS btrees_checked;
-- VACUUM FULL shrinks the table, keeps every row and every index usable
DELETE FROM e WHERE id > 1000;
DELETE FROM h WHERE id > 1000;
SELECT pg_relation_size('e') AS size_before \gset
VACUUM FULL e;
VACUUM FULL h;
SELECT pg_relation_size('e') < :size_before AS shrank, tam_digest('e') = tam_digest('h') AS same_after_vacuum_full;
SELECT check_btrees('e') AS btrees_checked;
SET enable_seqscan = off;
SELECT q_same($$SELECT * FROM %s WHERE tags @> ARRAY['t1']$$) AS gin_after_full,
       q_same('SELECT id, big FROM %s WHERE md5(big) IS NOT NULL AND big IS NOT NULL') AS toast_after_full;
RESET enable_seqscan;
-- CLUSTER: with an index scan, and with a sort (forced)
CLUSTER e USING e_lower;
CLUSTER h USING h_lower;
SELECT tam_digest('e') = tam_digest('h') AS same_after_cluster;
-- physical order now follows the index
SELECT bool_and(rn = idx_rn) AS clustered FROM (
    SELECT row_number() OVER (ORDER BY ctid) AS rn, row_number() OVER (ORDER BY lower(name)) AS idx_rn FROM e) s;
SET enable_indexscan = off;
SET maintenance_work_mem = '1MB';
CLUSTER e USING e_id;
RESET enable_indexscan;
RESET maintenance_work_mem;
SELECT tam_digest('e') = tam_digest('h') AS same_after_sort_cluster;
SELECT bool_and(rn = idx_rn) AS clustered FROM (
    SELECT row_number() OVER (ORDER BY ctid) AS rn, row_number() OVER (ORDER BY id) AS idx_rn FROM e) s;
SELECT check_btrees('e') AS btrees_checked;

-- VACUUM with parallel index vacuuming, and without the TOAST table
DELETE FROM e WHERE id % 7 = 0;
DELETE FROM h WHERE id % 7 = 0;
VACUUM (PARALLEL 2, INDEX_CLEANUP on) e;
VACUUM (PROCESS_TOAST false) e;
VACUUM h;
SELECT tam_digest('e') = tam_digest('h') AS same_after_parallel_vacuum, check_btrees('e') AS btrees_checked;

--
-- TRUNCATE, also rolled back, and with RESTART IDENTITY.
--
CREATE TABLE tr (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text) USING encrypted_heap;
INSERT INTO tr (v) SELECT 'v' || g FROM generate_series(1, 100) g;
BEGIN;
TRUNCATE tr;
SELECT count(*) FROM tr;
ROLLBACK;
SELECT count(*), max(id) FROM tr;
TRUNCATE tr RESTART IDENTITY;
INSERT INTO tr (v) VALUES ('after truncate');
SELECT * FROM tr;
-- COPY FREEZE into a table created in the same transaction: the rows are
-- frozen and all-visible at once, as on heap
BEGIN;
CREATE TABLE fr_e (id int, v text) USING encrypted_heap;
CREATE TABLE fr_h (id int, v text) USING heap;
COPY fr_e FROM PROGRAM 'seq 1 3000 | sed "s/$/\tfrozen/"' (FREEZE);
COPY fr_h FROM PROGRAM 'seq 1 3000 | sed "s/$/\tfrozen/"' (FREEZE);
COMMIT;
SELECT count(*), count(*) FILTER (WHERE v = 'frozen') AS frozen_v, sum(id) FROM fr_e;
SELECT tam_digest('fr_e') = tam_digest('fr_h') AS same_frozen;
CREATE EXTENSION pg_visibility;
SELECT all_visible, all_frozen, count(*) > 0 AS pages FROM pg_visibility_map('fr_e') GROUP BY 1, 2;
SELECT all_visible, all_frozen, count(*) > 0 AS pages FROM pg_visibility_map('fr_h') GROUP BY 1, 2;
-- created and truncated in one transaction (the new relfilenode path)
BEGIN;
CREATE TABLE tr2 (id int, v text) USING encrypted_heap;
INSERT INTO tr2 VALUES (1, 'x');
TRUNCATE tr2;
INSERT INTO tr2 VALUES (2, 'y');
COMMIT;
SELECT * FROM tr2;

--
-- ALTER TABLE.
--
CREATE TABLE a_h (id int PRIMARY KEY, v text, n numeric) USING heap;
CREATE TABLE a_e (id int PRIMARY KEY, v text, n numeric) USING encrypted_heap;
INSERT INTO a_h SELECT g, 'v' || g, g / 3.0 FROM generate_series(1, 2000) g;
INSERT INTO a_e SELECT * FROM a_h;
-- without a rewrite: ADD COLUMN (NULL, constant default), DROP COLUMN, SET NOT NULL
SELECT relfilenode AS fn FROM pg_class WHERE relname = 'a_e' \gset
ALTER TABLE a_e ADD COLUMN c1 int, ADD COLUMN c2 text DEFAULT 'dflt', ADD COLUMN c3 int[] DEFAULT '{1,2}';
ALTER TABLE a_h ADD COLUMN c1 int, ADD COLUMN c2 text DEFAULT 'dflt', ADD COLUMN c3 int[] DEFAULT '{1,2}';
ALTER TABLE a_e DROP COLUMN n;
ALTER TABLE a_h DROP COLUMN n;
ALTER TABLE a_e ALTER COLUMN v SET NOT NULL;
ALTER TABLE a_h ALTER COLUMN v SET NOT NULL;
SELECT relfilenode = :fn AS not_rewritten FROM pg_class WHERE relname = 'a_e';
SELECT tam_digest('a_e') = tam_digest('a_h') AS same_after_add_drop;
SELECT * FROM a_e WHERE id IN (1, 2000) ORDER BY id;
-- old rows (fewer stored columns) and new rows side by side, then updated
INSERT INTO a_e (id, v, c1) VALUES (3000, 'new', 7);
INSERT INTO a_h (id, v, c1) VALUES (3000, 'new', 7);
UPDATE a_e SET c1 = id WHERE id % 2 = 0;
UPDATE a_h SET c1 = id WHERE id % 2 = 0;
SELECT tam_digest('a_e') = tam_digest('a_h') AS same_after_update;
-- with a rewrite: a volatile default, a type change, SET ACCESS METHOD to itself
ALTER TABLE a_e ADD COLUMN c4 int DEFAULT (random() * 0)::int;
ALTER TABLE a_h ADD COLUMN c4 int DEFAULT (random() * 0)::int;
SELECT relfilenode <> :fn AS rewritten FROM pg_class WHERE relname = 'a_e';
SELECT relfilenode AS fn FROM pg_class WHERE relname = 'a_e' \gset
ALTER TABLE a_e ALTER COLUMN c1 TYPE bigint USING c1 * 10;
ALTER TABLE a_h ALTER COLUMN c1 TYPE bigint USING c1 * 10;
ALTER TABLE a_e ALTER COLUMN v TYPE varchar(20);
ALTER TABLE a_h ALTER COLUMN v TYPE varchar(20);
SELECT relfilenode <> :fn AS rewritten, fieldcrypt.is_encrypted(oid) FROM pg_class WHERE relname = 'a_e';
SELECT tam_digest('a_e') = tam_digest('a_h') AS same_after_rewrites;
SELECT check_btrees('a_e') AS btrees_checked;
-- a rewrite that fails leaves the table as it was (22001: value too long)
ALTER TABLE a_e ALTER COLUMN v TYPE varchar(2);
\echo :LAST_ERROR_SQLSTATE
SELECT tam_digest('a_e') = tam_digest('a_h') AS same_after_failed_rewrite;
-- a constraint added to a filled table is validated by scanning it (23514)
ALTER TABLE a_e ADD CONSTRAINT c1_small CHECK (c1 < 1000);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE a_e ADD CONSTRAINT c1_ok CHECK (c1 < 1000000);

--
-- SET UNLOGGED and SET LOGGED rewrite the table (new persistence)
ALTER TABLE a_e SET UNLOGGED;
SELECT relpersistence, fieldcrypt.is_encrypted(oid) FROM pg_class WHERE relname = 'a_e';
SELECT tam_digest('a_e') = tam_digest('a_h') AS same_unlogged;
ALTER TABLE a_e SET LOGGED;
SELECT relpersistence, fieldcrypt.is_encrypted(oid) FROM pg_class WHERE relname = 'a_e';
SELECT tam_digest('a_e') = tam_digest('a_h') AS same_logged, check_btrees('a_e') AS btrees_checked;

--
-- SET ACCESS METHOD: heap -> encrypted_heap -> heap, with TOAST values,
-- indexes, dropped columns; default_table_access_method.
--
CREATE TABLE m (id int PRIMARY KEY, v text, big text, gone int) USING heap;
INSERT INTO m SELECT g, 'v' || g, CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 300) END, g
  FROM generate_series(1, 1000) g;
ALTER TABLE m DROP COLUMN gone;
CREATE TABLE m_ctl (LIKE m INCLUDING ALL) USING heap;
INSERT INTO m_ctl SELECT * FROM m;
ALTER TABLE m SET ACCESS METHOD encrypted_heap;
SELECT a.amname, fieldcrypt.is_encrypted('m') FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.relname = 'm';
SELECT tam_digest('m') = tam_digest('m_ctl') AS same_after_to_encrypted;
SELECT check_btrees('m') AS btrees_checked;
UPDATE m SET v = v || '+' WHERE id % 3 = 0;
UPDATE m_ctl SET v = v || '+' WHERE id % 3 = 0;
ALTER TABLE m SET ACCESS METHOD heap;
SELECT a.amname, fieldcrypt.is_encrypted('m') FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.relname = 'm';
SELECT tam_digest('m') = tam_digest('m_ctl') AS same_after_back_to_heap;
SELECT check_btrees('m') AS btrees_checked;
ALTER TABLE m SET ACCESS METHOD encrypted_heap;
SELECT tam_digest('m') = tam_digest('m_ctl') AS same_after_second_round;
-- in a transaction that rolls back, nothing changes
BEGIN;
ALTER TABLE m SET ACCESS METHOD heap;
ROLLBACK;
SELECT fieldcrypt.is_encrypted('m'), tam_digest('m') = tam_digest('m_ctl') AS same;
-- SET TABLESPACE copies the blocks as they are (an in-place tablespace)
SET allow_in_place_tablespaces = on;
CREATE TABLESPACE regress_fc_tam_ts LOCATION '';
RESET allow_in_place_tablespaces;
ALTER TABLE m SET TABLESPACE regress_fc_tam_ts;
SELECT fieldcrypt.is_encrypted('m'), tam_digest('m') = tam_digest('m_ctl') AS same_in_tablespace;
ALTER TABLE m SET TABLESPACE pg_default;
SELECT tam_digest('m') = tam_digest('m_ctl') AS same_back;
DROP TABLESPACE regress_fc_tam_ts;
-- default_table_access_method: set, shown, used
SET default_table_access_method = encrypted_heap;
SHOW default_table_access_method;
CREATE TABLE d1 (id int);
CREATE TABLE d2 (id int) USING heap;
RESET default_table_access_method;
SELECT relname, fieldcrypt.is_encrypted(oid) FROM pg_class WHERE relname IN ('d1', 'd2') ORDER BY 1;

\c :regress_db
DROP DATABASE fc_tam_ddl;
