--
-- tam_basic: the encrypted_heap table access method gives the same results as
-- heap for DML (INSERT, COPY, UPDATE, DELETE, MERGE, ON CONFLICT, row locks,
-- cursors), every kind of scan (sequential also backwards and in parallel,
-- index, index-only, bitmap, TID, TID range, TABLESAMPLE), large values and
-- wide rows.  Each table is built twice, once
-- USING heap (the control) and once USING encrypted_heap, and the two are
-- compared row by row (tam_digest: row count and md5 of all rows in order).
--
-- Runs in a database of its own, over TLS as a superuser.  Control tables say
-- USING heap explicitly: this file also runs in the pass where
-- default_table_access_method = encrypted_heap.
-- After each refused statement, \echo :LAST_ERROR_SQLSTATE shows its SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tam_basic;
RESET client_min_messages;
CREATE DATABASE fc_tam_basic TEMPLATE template0;
\c fc_tam_basic
CREATE EXTENSION fieldcrypt;

-- the access method exists, is a table AM, and belongs to the extension
SELECT amname, amtype FROM pg_am WHERE amname = 'encrypted_heap';
SELECT pg_describe_object(classid, objid, objsubid) AS member, deptype
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'fieldcrypt')
   AND classid = 'pg_am'::regclass;

-- tam_digest(rel): "rows:md5 of every row in text form, sorted"
CREATE FUNCTION tam_digest(rel regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE format('SELECT count(*) || '':'' || md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) FROM %s x', rel)
       INTO r;
    RETURN r;
END $$;

--
-- Many types, NULLs, short and long varlena values, alignment.
--
CREATE TABLE h (
    id      integer PRIMARY KEY,
    b       boolean,
    s       smallint,
    i8      bigint,
    f8      double precision,
    n       numeric,
    t       text,
    vc      varchar(40),
    c       char(3),
    ts      timestamptz,
    d       date,
    iv      interval,
    u       uuid,
    j       jsonb,
    arr     integer[],
    by      bytea
) USING heap;
CREATE TABLE e (LIKE h INCLUDING ALL) USING encrypted_heap;
SELECT c.relname, a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam
 WHERE c.relname IN ('h', 'e') ORDER BY 1;
SELECT fieldcrypt.is_encrypted('e') AS e_encrypted, fieldcrypt.is_encrypted('h') AS h_encrypted;

-- the same rows go into both tables, by every INSERT form
CREATE FUNCTION fill(rel regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- INSERT ... SELECT
    EXECUTE format($q$
        INSERT INTO %s
        SELECT g,
               CASE WHEN g %% 7 = 0 THEN NULL ELSE g %% 2 = 0 END,
               (g %% 30000)::smallint,
               g::bigint * 1000000007,
               g / 7.0,
               (g * 3.14159)::numeric(20,5),
               CASE WHEN g %% 11 = 0 THEN NULL ELSE repeat(chr(65 + g %% 26), g %% 50) END,
               'vc-' || g,
               chr(97 + g %% 26),
               timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute',
               date '2026-01-01' + g,
               g * interval '1 second',
               md5(g::text)::uuid,
               jsonb_build_object('k', g, 'tag', 'row' || g, 'list', jsonb_build_array(g, g + 1)),
               ARRAY[g, g * 2, g * 3],
               decode(md5(g::text), 'hex')
          FROM generate_series(1, 1000) g$q$, rel);
    -- single-row and multi-row VALUES
    EXECUTE format($q$INSERT INTO %s (id, t) VALUES (1001, 'single row')$q$, rel);
    EXECUTE format($q$INSERT INTO %s (id, t, i8) VALUES (1002, 'multi 1', -1), (1003, 'multi 2', NULL),
                          (1004, '', 0)$q$, rel);
    -- a row of NULLs only (but the key)
    EXECUTE format($q$INSERT INTO %s (id) VALUES (1005)$q$, rel);
END $$;
SELECT fill('h');
SELECT fill('e');
SELECT tam_digest('e') = tam_digest('h') AS same, tam_digest('e') ~ '^1005:' AS rows_1005;
-- the other direction too: set differences are empty
SELECT count(*) AS e_minus_h FROM (SELECT * FROM e EXCEPT SELECT * FROM h) x;
SELECT count(*) AS h_minus_e FROM (SELECT * FROM h EXCEPT SELECT * FROM e) x;
-- a few rows, as stored
SELECT id, b, s, i8, t, vc, c, ts, u, j, arr, by FROM e WHERE id IN (1, 7, 11, 1002, 1005) ORDER BY id;

-- RETURNING returns the new row
INSERT INTO e (id, t, arr) VALUES (2000, 'returning', '{1,2}') RETURNING id, t, arr, b IS NULL AS b_null;
DELETE FROM e WHERE id = 2000 RETURNING id, t;

--
-- COPY FROM and TO, text and binary.
--
COPY e (id, t, j) FROM STDIN;
3001	copied one	{"copy": 1}
3002	\N	{"copy": 2}
3003	tab\tinside	\N
\.
COPY h (id, t, j) FROM STDIN;
3001	copied one	{"copy": 1}
3002	\N	{"copy": 2}
3003	tab\tinside	\N
\.
COPY (SELECT id, t, j FROM e WHERE id > 3000 ORDER BY id) TO STDOUT;
COPY (SELECT id, t, j FROM e WHERE id > 3000 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER);
COPY e TO '/tmp/fc_tam_basic_e.bin' (FORMAT binary);
CREATE TABLE e_bin (LIKE e) USING encrypted_heap;
COPY e_bin FROM '/tmp/fc_tam_basic_e.bin' (FORMAT binary);
SELECT tam_digest('e_bin') = tam_digest('h') AS binary_round_trip;
-- a COPY large enough to fill several multi-insert batches (1000 rows each)
COPY (SELECT g, 'bulk ' || g FROM generate_series(10001, 14500) g) TO '/tmp/fc_tam_basic_bulk.txt';
COPY e (id, t) FROM '/tmp/fc_tam_basic_bulk.txt';
COPY h (id, t) FROM '/tmp/fc_tam_basic_bulk.txt';
SELECT tam_digest('e') = tam_digest('h') AS same_after_copy, count(*) AS rows FROM e;

--
-- UPDATE and DELETE, also of the key, several versions of one row, and
-- updates that move values in and out of TOAST.
--
UPDATE e SET t = t || '+', i8 = i8 + 1 WHERE id % 3 = 0;
UPDATE h SET t = t || '+', i8 = i8 + 1 WHERE id % 3 = 0;
UPDATE e SET id = id + 100000 WHERE id BETWEEN 500 AND 510;
UPDATE h SET id = id + 100000 WHERE id BETWEEN 500 AND 510;
DELETE FROM e WHERE id % 5 = 0;
DELETE FROM h WHERE id % 5 = 0;
UPDATE e SET n = n + 1 WHERE id = 1;
UPDATE e SET n = n + 1 WHERE id = 1;
UPDATE e SET n = n + 1 WHERE id = 1;
UPDATE h SET n = n + 3 WHERE id = 1;
UPDATE e SET t = repeat('big', 5000) WHERE id = 2;
UPDATE h SET t = repeat('big', 5000) WHERE id = 2;
UPDATE e SET t = 'small again' WHERE id = 4;
UPDATE h SET t = 'small again' WHERE id = 4;
SELECT tam_digest('e') = tam_digest('h') AS same_after_dml;
-- UPDATE ... RETURNING, and an UPDATE through a join
UPDATE e SET t = 'upd' WHERE id = 1 RETURNING id, t, n;
UPDATE h SET t = 'upd' WHERE id = 1;
UPDATE e SET vc = h.vc || '!' FROM h WHERE e.id = h.id AND e.id < 20;
UPDATE h SET vc = vc || '!' WHERE id < 20;
SELECT tam_digest('e') = tam_digest('h') AS same_after_returning;
-- MERGE (PostgreSQL 15)
MERGE INTO e USING (SELECT g AS id FROM generate_series(1, 30) g) s ON e.id = s.id
  WHEN MATCHED AND s.id % 2 = 0 THEN UPDATE SET t = 'merged'
  WHEN MATCHED THEN DELETE
  WHEN NOT MATCHED THEN INSERT (id, t) VALUES (s.id, 'merge insert');
MERGE INTO h USING (SELECT g AS id FROM generate_series(1, 30) g) s ON h.id = s.id
  WHEN MATCHED AND s.id % 2 = 0 THEN UPDATE SET t = 'merged'
  WHEN MATCHED THEN DELETE
  WHEN NOT MATCHED THEN INSERT (id, t) VALUES (s.id, 'merge insert');
SELECT tam_digest('e') = tam_digest('h') AS same_after_merge;
-- a rolled-back change and a rolled-back savepoint leave nothing
BEGIN;
UPDATE e SET t = 'rolled back' WHERE id < 100;
INSERT INTO e (id) SELECT g FROM generate_series(200000, 200100) g;
ROLLBACK;
BEGIN;
DELETE FROM e WHERE id < 500;
SAVEPOINT sp;
UPDATE e SET t = 'gone';
ROLLBACK TO SAVEPOINT sp;
ROLLBACK;
SELECT tam_digest('e') = tam_digest('h') AS same_after_rollbacks;

--
-- INSERT ... ON CONFLICT
--
INSERT INTO e (id, t) VALUES (2, 'conflict ignored'), (999999, 'new by do nothing')
  ON CONFLICT DO NOTHING;
INSERT INTO h (id, t) VALUES (2, 'conflict ignored'), (999999, 'new by do nothing')
  ON CONFLICT DO NOTHING;
INSERT INTO e (id, t) VALUES (3, 'excluded'), (999998, 'new by do update')
  ON CONFLICT (id) DO UPDATE SET t = e.t || '/' || excluded.t RETURNING id, t;
INSERT INTO h (id, t) VALUES (3, 'excluded'), (999998, 'new by do update')
  ON CONFLICT (id) DO UPDATE SET t = h.t || '/' || excluded.t;
-- DO UPDATE ... WHERE that does not match leaves the row
INSERT INTO e (id, t) VALUES (6, 'not applied') ON CONFLICT (id) DO UPDATE SET t = excluded.t WHERE e.t IS NULL;
INSERT INTO h (id, t) VALUES (6, 'not applied') ON CONFLICT (id) DO UPDATE SET t = excluded.t WHERE h.t IS NULL;
-- a large value in the conflicting row
INSERT INTO e (id, t) VALUES (999998, repeat('onconflict', 3000)) ON CONFLICT (id) DO UPDATE SET t = excluded.t;
INSERT INTO h (id, t) VALUES (999998, repeat('onconflict', 3000)) ON CONFLICT (id) DO UPDATE SET t = excluded.t;
-- the same key twice in one command: the usual error (21000)
INSERT INTO e (id) VALUES (5000000), (5000000) ON CONFLICT (id) DO UPDATE SET t = 'twice';
\echo :LAST_ERROR_SQLSTATE
-- a unique violation without ON CONFLICT (23505)
INSERT INTO e (id) VALUES (3);
\echo :LAST_ERROR_SQLSTATE
SELECT tam_digest('e') = tam_digest('h') AS same_after_on_conflict;

--
-- Row locks: FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE return the rows
-- (the concurrent behaviour is in test/isolation/specs/tam_concurrency.spec).
--
BEGIN;
SELECT id, t FROM e WHERE id IN (3, 6, 999999) ORDER BY id FOR UPDATE;
SELECT id, t FROM e WHERE id IN (3, 6) ORDER BY id FOR NO KEY UPDATE;
SELECT id, t FROM e WHERE id IN (3, 6) ORDER BY id FOR SHARE;
SELECT id, t FROM e WHERE id IN (3, 6) ORDER BY id FOR KEY SHARE;
SELECT count(*) FROM (SELECT id FROM e WHERE id < 100 FOR UPDATE SKIP LOCKED) s;
UPDATE e SET t = 'locked then updated' WHERE id = 3;
COMMIT;
UPDATE h SET t = 'locked then updated' WHERE id = 3;
SELECT tam_digest('e') = tam_digest('h') AS same_after_locks;

--
-- Scans.  Plans are shown so that each query really uses the scan it is
-- meant to test; each result is compared with heap's.
--
VACUUM ANALYZE e;
VACUUM ANALYZE h;
SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE id BETWEEN 100 AND 120;
SELECT md5(string_agg(x::text, ',' ORDER BY id)) = (SELECT md5(string_agg(y::text, ',' ORDER BY id)) FROM h y WHERE id BETWEEN 100 AND 120) AS index_scan_same
  FROM e x WHERE id BETWEEN 100 AND 120;
-- backward index scan
SELECT id, t FROM e WHERE id < 40 ORDER BY id DESC LIMIT 3;
RESET enable_indexonlyscan;
EXPLAIN (COSTS OFF) SELECT id FROM e WHERE id BETWEEN 100 AND 300;
SELECT sum(id), count(*) FROM e WHERE id BETWEEN 100 AND 300;
SELECT sum(id), count(*) FROM h WHERE id BETWEEN 100 AND 300;
RESET enable_bitmapscan; SET enable_indexscan = off; SET enable_indexonlyscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE id < 200 OR id > 14000;
SELECT md5(string_agg(x::text, ',' ORDER BY id)) = (SELECT md5(string_agg(y::text, ',' ORDER BY id)) FROM h y WHERE id < 200 OR id > 14000) AS bitmap_scan_same
  FROM e x WHERE id < 200 OR id > 14000;
-- a bitmap over the whole table
EXPLAIN (COSTS OFF) SELECT count(*), sum(length(t)) FROM e WHERE id > 0;
SELECT count(*), sum(length(t)) FROM e WHERE id > 0;
SELECT count(*), sum(length(t)) FROM h WHERE id > 0;
RESET enable_seqscan; RESET enable_indexscan; RESET enable_indexonlyscan; RESET enable_bitmapscan;
-- TID scan and TID range scan
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE ctid = '(0,1)';
SELECT count(*) AS tid_rows FROM e WHERE ctid = (SELECT ctid FROM e WHERE id = 1001);
SELECT (SELECT row(x.*)::text FROM e x WHERE ctid = (SELECT ctid FROM e WHERE id = 1001))
     = (SELECT row(y.*)::text FROM h y WHERE id = 1001) AS tid_row_same;
EXPLAIN (COSTS OFF) SELECT count(*) FROM e WHERE ctid >= '(1,0)' AND ctid < '(3,0)';
SELECT count(*) = (SELECT count(*) FROM e WHERE (ctid::text::point)[0] >= 1 AND (ctid::text::point)[0] < 3) AS tid_range_same,
       count(*) > 0 AS tid_range_nonempty
  FROM e WHERE ctid >= '(1,0)' AND ctid < '(3,0)';
-- WHERE CURRENT OF, and cursors moving both ways
BEGIN;
DECLARE cur SCROLL CURSOR FOR SELECT id, t FROM e WHERE id IN (41, 42, 43) ORDER BY id;
FETCH NEXT FROM cur;
FETCH LAST FROM cur;
FETCH PRIOR FROM cur;
CLOSE cur;
DECLARE upd CURSOR FOR SELECT id FROM e WHERE id = 42 FOR UPDATE;
FETCH upd;
UPDATE e SET t = 'current of' WHERE CURRENT OF upd;
COMMIT;
UPDATE h SET t = 'current of' WHERE id = 42;
SELECT tam_digest('e') = tam_digest('h') AS same_after_cursor;
-- a scrollable cursor over a sequential scan and over a TID range scan reads
-- the rows backwards (the scans run backwards) in exactly the reverse order
DO $$
DECLARE
    fwd text[] := '{}'; bwd text[] := '{}'; r record;
    c refcursor;
    qs text[] := ARRAY['SELECT e FROM e', 'SELECT e FROM e WHERE ctid >= ''(1,0)'' AND ctid < ''(4,0)''', 'SELECT e FROM e WHERE ctid < ''(3,0)'''];
    q text;
BEGIN
    FOREACH q IN ARRAY qs LOOP
        fwd := '{}'; bwd := '{}';
        OPEN c SCROLL FOR EXECUTE q;
        LOOP FETCH NEXT FROM c INTO r; EXIT WHEN NOT FOUND; fwd := fwd || r.e::text; END LOOP;
        LOOP FETCH PRIOR FROM c INTO r; EXIT WHEN NOT FOUND; bwd := bwd || r.e::text; END LOOP;
        CLOSE c;
        RAISE NOTICE 'some rows: %, backward = reversed forward: %', cardinality(fwd) > 0,
            fwd = ARRAY(SELECT bwd[k] FROM generate_series(cardinality(bwd), 1, -1) k);
    END LOOP;
END $$;
-- TABLESAMPLE: 100 % returns everything, 0 % nothing, a sample is a subset
SELECT count(*) = (SELECT count(*) FROM h) AS bernoulli_100 FROM e TABLESAMPLE BERNOULLI (100);
SELECT count(*) = (SELECT count(*) FROM h) AS system_100 FROM e TABLESAMPLE SYSTEM (100);
SELECT count(*) AS system_0 FROM e TABLESAMPLE SYSTEM (0);
SELECT count(*) > 0 AS some, count(*) < (SELECT count(*) FROM h) AS not_all,
       count(*) FILTER (WHERE (x.*)::text NOT IN (SELECT (y.*)::text FROM h y)) AS not_in_heap
  FROM e x TABLESAMPLE BERNOULLI (30) REPEATABLE (42);
-- a sampling method of its own (tsm_system_rows: block and tuple callbacks)
CREATE EXTENSION tsm_system_rows;
SELECT count(*) AS sampled,
       count(*) FILTER (WHERE (x.*)::text NOT IN (SELECT (y.*)::text FROM h y)) AS not_in_heap
  FROM e x TABLESAMPLE SYSTEM_ROWS (100);
-- parallel sequential scan: the workers decrypt
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT count(*), sum(length(t)), sum(i8), sum(n) FROM e WHERE t IS NOT NULL;
SELECT count(*), sum(length(t)), sum(i8), sum(n) FROM e WHERE t IS NOT NULL;
SELECT count(*), sum(length(t)), sum(i8), sum(n) FROM h WHERE t IS NOT NULL;
EXPLAIN (COSTS OFF) SELECT * FROM e WHERE vc LIKE 'vc-1%';
SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) = (SELECT md5(string_agg(y::text, ',' ORDER BY y::text)) FROM h y WHERE vc LIKE 'vc-1%') AS parallel_same
  FROM e x WHERE vc LIKE 'vc-1%';
-- parallel bitmap heap scan and parallel index scan
SET min_parallel_index_scan_size = 0;
SET enable_seqscan = off; SET enable_indexscan = off; SET enable_indexonlyscan = off;
EXPLAIN (COSTS OFF) SELECT count(*), sum(length(t)), sum(i8) FROM e WHERE id > 100;
SELECT count(*), sum(length(t)), sum(i8) FROM e WHERE id > 100;
SELECT count(*), sum(length(t)), sum(i8) FROM h WHERE id > 100;
SET enable_bitmapscan = off; SET enable_indexscan = on;
EXPLAIN (COSTS OFF) SELECT count(*), sum(length(t)), sum(i8) FROM e WHERE id > 100;
SELECT count(*), sum(length(t)), sum(i8) FROM e WHERE id > 100;
RESET enable_seqscan; RESET enable_indexscan; RESET enable_indexonlyscan; RESET enable_bitmapscan;
RESET min_parallel_index_scan_size;
RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather; RESET parallel_leader_participation;
-- system columns
SELECT count(*) FILTER (WHERE xmin::text::bigint > 0) = count(*) AS xmin_set,
       count(DISTINCT ctid) = count(*) AS ctids_distinct,
       count(*) FILTER (WHERE tableoid = 'e'::regclass) = count(*) AS tableoid_is_e
  FROM e;

--
-- Large values: up to a few MB, compressible and not, read whole and in slices.
--
CREATE TABLE big_h (id int PRIMARY KEY, t text, b bytea) USING heap;
CREATE TABLE big_e (id int PRIMARY KEY, t text, b bytea) USING encrypted_heap;
CREATE FUNCTION noise(n int, seed int) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(decode(md5(seed::text || ':' || g), 'hex'), ''::bytea ORDER BY g)
      FROM generate_series(1, (n + 15) / 16) g
$$;
INSERT INTO big_h VALUES
    (1, repeat('compressible ', 300000), NULL),
    (2, encode(noise(1500000, 2), 'hex'), noise(3000000, 3)),
    (3, repeat('x', 2000), noise(8100, 4)),
    (4, '', ''::bytea);
INSERT INTO big_e SELECT * FROM big_h;
SELECT id, length(t), octet_length(b), md5(t), md5(b) FROM big_e ORDER BY id;
SELECT tam_digest('big_e') = tam_digest('big_h') AS same_big;
-- slices of an uncompressed external value, across chunk and segment boundaries
SELECT substr(e.t, 1999, 10) = substr(h.t, 1999, 10) AS s1,
       substr(e.t, 65530, 20) = substr(h.t, 65530, 20) AS s2,
       substr(e.t, 2999990, 20) = substr(h.t, 2999990, 20) AS s3,
       substring(e.b FROM 131070 FOR 5) = substring(h.b FROM 131070 FOR 5) AS s4,
       length(substr(e.t, 3000001)) AS past_end
  FROM big_e e JOIN big_h h USING (id) WHERE id = 2;
SELECT pg_column_compression(t) AS t_compression, pg_column_size(t) < 300000 AS t_compressed
  FROM big_e WHERE id = 1;
-- updating another column keeps the large value; updating the value replaces it
UPDATE big_e SET b = 'ab'::bytea WHERE id = 2;
UPDATE big_h SET b = 'ab'::bytea WHERE id = 2;
UPDATE big_e SET t = t || 'tail' WHERE id = 1;
UPDATE big_h SET t = t || 'tail' WHERE id = 1;
DELETE FROM big_e WHERE id = 3;
DELETE FROM big_h WHERE id = 3;
SELECT tam_digest('big_e') = tam_digest('big_h') AS same_big_after_update;
-- INSERT ... SELECT from the table into itself re-saves its own values
INSERT INTO big_e SELECT id + 10, t, b FROM big_e;
INSERT INTO big_h SELECT id + 10, t, b FROM big_h;
DELETE FROM big_e WHERE id < 10;
DELETE FROM big_h WHERE id < 10;
SELECT tam_digest('big_e') = tam_digest('big_h') AS same_big_after_self_insert;
-- a value held by a WITH HOLD cursor, read after its row was deleted
BEGIN;
DECLARE hold CURSOR WITH HOLD FOR SELECT id, t FROM big_e WHERE id = 12;
COMMIT;
DELETE FROM big_e WHERE id = 12;
FETCH ALL FROM hold \gset held_
CLOSE hold;
SELECT :held_id AS held_id, md5(:'held_t') = (SELECT md5(t) FROM big_h WHERE id = 12) AS held_value;

--
-- Wide rows: 300 bigint columns (a 2.4 kB tuple with nothing to toast), rows
-- near the 2 kB TOAST threshold, and the storage modes.
--
DO $$
DECLARE cols text; vals text;
BEGIN
    SELECT string_agg(format('c%s bigint', g), ', ' ORDER BY g),
           string_agg(format('r * 1000 + %s', g), ', ' ORDER BY g)
      INTO cols, vals FROM generate_series(1, 300) g;
    EXECUTE format('CREATE TABLE wide_h (%s) USING heap', cols);
    EXECUTE format('CREATE TABLE wide_e (%s) USING encrypted_heap', cols);
    EXECUTE format('INSERT INTO wide_h SELECT %s FROM generate_series(1, 20) r', vals);
    EXECUTE format('INSERT INTO wide_e SELECT %s FROM generate_series(1, 20) r', vals);
END $$;
SELECT tam_digest('wide_e') = tam_digest('wide_h') AS same_wide, (SELECT count(*) FROM wide_e) AS rows;
SELECT c1, c150, c300 FROM wide_e WHERE c1 = 5001;
UPDATE wide_e SET c300 = -c300 WHERE c1 % 2 = 0;
UPDATE wide_h SET c300 = -c300 WHERE c1 % 2 = 0;
SELECT tam_digest('wide_e') = tam_digest('wide_h') AS same_wide_after_update;
-- one row per text length around the threshold (about 2 kB)
CREATE TABLE edge_h (id int, pad text, v text) USING heap;
CREATE TABLE edge_e (id int, pad text, v text) USING encrypted_heap;
INSERT INTO edge_h SELECT n, repeat('p', 10), encode(noise(n, n), 'hex') FROM generate_series(900, 1100, 3) n;
INSERT INTO edge_e SELECT * FROM edge_h;
SELECT tam_digest('edge_e') = tam_digest('edge_h') AS same_edge, count(*) FROM edge_e;
-- storage modes: PLAIN (kept inline up to a page), MAIN, EXTERNAL
CREATE TABLE st_h (id int, p text, m text, x text) USING heap;
CREATE TABLE st_e (id int, p text, m text, x text) USING encrypted_heap;
ALTER TABLE st_h ALTER COLUMN p SET STORAGE PLAIN, ALTER COLUMN m SET STORAGE MAIN, ALTER COLUMN x SET STORAGE EXTERNAL;
ALTER TABLE st_e ALTER COLUMN p SET STORAGE PLAIN, ALTER COLUMN m SET STORAGE MAIN, ALTER COLUMN x SET STORAGE EXTERNAL;
INSERT INTO st_h VALUES
    (1, repeat('p', 5000), repeat('m', 5000), repeat('x', 5000)),
    (2, encode(noise(3000, 7), 'hex'), encode(noise(3000, 8), 'hex'), encode(noise(3000, 9), 'hex')),
    (3, 'short', 'short', 'short');
INSERT INTO st_e SELECT * FROM st_h;
SELECT tam_digest('st_e') = tam_digest('st_h') AS same_storage;
-- the same storage decisions as heap
SELECT e.id, pg_column_compression(e.m) AS e_m, pg_column_compression(h.m) AS h_m,
       pg_column_compression(e.x) AS e_x, pg_column_compression(h.x) AS h_x,
       pg_column_size(e.p) = pg_column_size(h.p) AS p_same_size
  FROM st_e e JOIN st_h h USING (id) ORDER BY id;
-- a PLAIN value that cannot fit in a page: heap's error (54000); the sizes
-- in the message differ by the encryption overhead
DO $$
DECLARE rel text;
BEGIN
    FOREACH rel IN ARRAY ARRAY['st_e', 'st_h'] LOOP
        BEGIN
            EXECUTE format('INSERT INTO %I (id, p) VALUES (4, encode(noise(6000, 10), ''hex''))', rel);
            RAISE NOTICE '%: inserted', rel;
        EXCEPTION WHEN program_limit_exceeded THEN
            RAISE NOTICE '%: % (SQLSTATE %)', rel, regexp_replace(SQLERRM, ':.*', ''), SQLSTATE;
        END;
    END LOOP;
END $$;
SELECT count(*) FROM st_e;

\c :regress_db
DROP DATABASE fc_tam_basic;
