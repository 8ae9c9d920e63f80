-- The lazy slot and the decrypted-row cache of encrypted_heap (src/tde/tam_slot.c,
-- tam_cache.c).  Every read path gives heap's results, system columns included, whether a
-- row is decrypted now, found in the cache, or never decrypted; the output is the same with
-- the cache on or off (run-tests.sh runs the suite both ways).  tde_cache_stats() and who may
-- call it.
\set VERBOSITY terse
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tam_cache;
DROP ROLE IF EXISTS regress_fc_cache_plain;
DROP ROLE IF EXISTS regress_fc_cache_mon;
RESET client_min_messages;
CREATE DATABASE fc_tam_cache TEMPLATE template0;
\c fc_tam_cache
CREATE EXTENSION fieldcrypt;
\set VERBOSITY terse
CREATE TABLE lz (id int PRIMARY KEY, n int, v text) USING encrypted_heap;
CREATE TABLE lh (id int PRIMARY KEY, n int, v text) USING heap;
INSERT INTO lz SELECT g, g % 7, 'row ' || g FROM generate_series(1, 500) g;
INSERT INTO lh SELECT * FROM lz;
CREATE VIEW same AS
  SELECT (SELECT md5(string_agg(lz::text, ',' ORDER BY id)) FROM lz) =
         (SELECT md5(string_agg(lh::text, ',' ORDER BY id)) FROM lh) AS same_as_heap;

-- statistics: superusers, pg_monitor and fieldcrypt_admin; not PUBLIC
SELECT size_bytes >= 0 AS size, entries >= 0 AS entries, entries_used >= 0 AS used,
       hits >= 0 AS hits, misses >= 0 AS misses, evictions >= 0 AS evictions
  FROM fieldcrypt.tde_cache_stats();
CREATE ROLE regress_fc_cache_plain;
CREATE ROLE regress_fc_cache_mon IN ROLE pg_monitor;
SET ROLE regress_fc_cache_plain;
SELECT * FROM fieldcrypt.tde_cache_stats();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_fc_cache_mon;
SELECT entries >= 0 AS mon_reads FROM fieldcrypt.tde_cache_stats();
RESET ROLE;

-- a scan that reads no column decrypts nothing (no miss counted); a second read of the
-- columns is served from the cache when there is one (hits, no miss), and with no cache
-- nothing is counted
CREATE TEMP TABLE s0 AS SELECT * FROM fieldcrypt.tde_cache_stats();
SELECT count(*) FROM lz;
SELECT EXISTS (SELECT FROM lz WHERE ctid = '(1,1)') AS tid_exists;
SELECT count(*) FROM lh WHERE EXISTS (SELECT FROM lz);
SELECT s.misses = s0.misses AS nothing_decrypted FROM fieldcrypt.tde_cache_stats() s, s0;
SELECT sum(n), max(v) FROM lz;
CREATE TEMP TABLE s1 AS SELECT * FROM fieldcrypt.tde_cache_stats();
SELECT sum(n), max(v) FROM lz;
SELECT CASE WHEN s.entries = 0 THEN s.hits = 0 AND s.misses = 0
            ELSE s.hits - s1.hits >= 500 AND s.misses = s1.misses END AS second_read_cached
  FROM fieldcrypt.tde_cache_stats() s, s1;

-- system columns, from rows not decrypted, decrypted, and cached
SELECT id, ctid, xmin::text = (SELECT xmin::text FROM lz WHERE id = 1) AS same_xmin,
       xmax::text AS xmax, tableoid::regclass AS tab
  FROM lz WHERE id <= 3 ORDER BY id;
SELECT ctid, xmax::text AS xmax FROM lz WHERE ctid = '(0,2)';
-- locking, RETURNING, and the old row a trigger sees
CREATE FUNCTION lz_trig() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE '% old % new %', TG_OP, OLD.v, CASE WHEN TG_OP = 'UPDATE' THEN NEW.v END;
  RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER lz_trig BEFORE UPDATE OR DELETE ON lz FOR EACH ROW EXECUTE FUNCTION lz_trig();
-- heap's twin gets a trigger too: a BEFORE trigger locks the old row, which the new keeps
CREATE FUNCTION lh_trig() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END; END $$;
CREATE TRIGGER lh_trig BEFORE UPDATE OR DELETE ON lh FOR EACH ROW EXECUTE FUNCTION lh_trig();
BEGIN;
SELECT id, v, xmax::text = txid_current()::text AS locked FROM lz WHERE id = 5 FOR UPDATE;
SELECT id, v, xmax::text = txid_current()::text AS locked FROM lh WHERE id = 5 FOR UPDATE;
SELECT id, v, xmax::text = txid_current()::text AS locked FROM lz WHERE id = 5;
SELECT id, v, xmax::text = txid_current()::text AS locked FROM lh WHERE id = 5;
UPDATE lz SET v = v || '!' WHERE id IN (5, 6)
  RETURNING id, v, xmax::text = txid_current()::text AS own_xmax, xmin::text = txid_current()::text AS own_xmin;
UPDATE lh SET v = v || '!' WHERE id IN (5, 6)
  RETURNING id, v, xmax::text = txid_current()::text AS own_xmax, xmin::text = txid_current()::text AS own_xmin;
COMMIT;
DELETE FROM lz WHERE id % 50 = 0 RETURNING id, v;
DELETE FROM lh WHERE id % 50 = 0;
DROP TRIGGER lz_trig ON lz;
DROP TRIGGER lh_trig ON lh;
SELECT * FROM same;
-- every scan type
SELECT count(*), sum(n) FROM lz WHERE ctid >= '(1,0)' AND ctid < '(3,0)';
SELECT count(*), sum(n) FROM lz WHERE ctid >= '(1,0)' AND ctid < '(3,0)';
SET enable_seqscan = off;
SET enable_indexscan = off;
SELECT count(*), sum(n), max(v) FROM lz WHERE id BETWEEN 100 AND 200;
RESET enable_indexscan;
SET enable_bitmapscan = off;
SELECT id, n, v FROM lz WHERE id IN (7, 8, 9) ORDER BY id;
RESET enable_seqscan;
RESET enable_bitmapscan;
SELECT count(*), sum(n) FROM lz TABLESAMPLE SYSTEM (100);
SELECT count(*) FROM lz a JOIN lz b USING (n) WHERE a.id < 20 AND b.id < 20;
BEGIN;
DECLARE c SCROLL CURSOR FOR SELECT id, v FROM lz WHERE id <= 4;
FETCH ALL FROM c;
FETCH BACKWARD 2 FROM c;
COMMIT;
CREATE TABLE lzs (id int, v text) USING encrypted_heap;
INSERT INTO lzs VALUES (1, 'a'), (2, NULL), (3, 'c');
COPY lzs TO STDOUT;
COPY lzs TO STDOUT;
-- a value stored out of line, read from a cached row's TOAST pointer
INSERT INTO lz VALUES (1000, 0, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g));
INSERT INTO lh SELECT * FROM lz WHERE id = 1000;
SELECT md5(v), length(v) FROM lz WHERE id = 1000;
SELECT md5(v), length(v) FROM lz WHERE id = 1000;
-- rows cached before ADD COLUMN get the new column's default
ALTER TABLE lz ADD COLUMN w int DEFAULT 42;
ALTER TABLE lh ADD COLUMN w int DEFAULT 42;
SELECT count(*), sum(w) FROM lz;
SELECT * FROM same;
-- a rewrite reads the old rows under the old descriptor
ALTER TABLE lz ALTER COLUMN n TYPE bigint;
ALTER TABLE lh ALTER COLUMN n TYPE bigint;
SELECT * FROM same;
SELECT sum(n), count(w) FROM lz;
\c :regress_db
DROP DATABASE fc_tam_cache;
DROP ROLE regress_fc_cache_plain, regress_fc_cache_mon;
