--
-- tam_features: SQL features around encrypted_heap tables behave as on heap:
-- ANALYZE (and fieldcrypt.analyze_values), triggers, row-level security,
-- foreign keys, partitions, inheritance, materialized views, CREATE TABLE AS /
-- SELECT INTO, temporary and unlogged tables; and the publication fence
-- (0A000).
--
-- Runs in a database of its own, over TLS as a superuser.  Control tables say
-- USING heap explicitly: this file also runs in the pass where
-- default_table_access_method = encrypted_heap.
-- After each refused statement, \echo :LAST_ERROR_SQLSTATE shows its SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tam_features;
DROP DATABASE IF EXISTS fc_tam_features_pub;
DROP ROLE IF EXISTS regress_fc_tam_alice;
DROP ROLE IF EXISTS regress_fc_tam_bob;
RESET client_min_messages;
CREATE DATABASE fc_tam_features TEMPLATE template0;
CREATE ROLE regress_fc_tam_alice LOGIN;
CREATE ROLE regress_fc_tam_bob LOGIN;
\c fc_tam_features
CREATE EXTENSION fieldcrypt;

CREATE FUNCTION tam_digest(rel regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE format('SELECT count(*) || '':'' || md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) FROM %s x', rel)
       INTO r;
    RETURN r;
END $$;

--
-- ANALYZE.  fieldcrypt.analyze_values (boolean, default off, superuser):
-- off, ANALYZE of an encrypted_heap table writes no statistics rows to
-- pg_statistic (they would hold plaintext values; they are kept encrypted
-- instead, see tam_stats) but sets reltuples and relpages; on, statistics
-- are heap's, in pg_statistic.  Extended statistics are refused on
-- encrypted_heap tables while it is off (tam_stats): st_e_ext is made with it on.
--
SELECT name, setting, vartype, context FROM pg_settings WHERE name = 'fieldcrypt.analyze_values';
CREATE TABLE st_h (id int, grp int, label text, amount numeric) USING heap;
CREATE TABLE st_e (id int, grp int, label text, amount numeric) USING encrypted_heap;
INSERT INTO st_h SELECT g, g % 10, 'label-' || (g % 37), g * 1.5 FROM generate_series(1, 5000) g;
INSERT INTO st_e SELECT * FROM st_h;
SET fieldcrypt.analyze_values = on;
CREATE STATISTICS st_e_ext (ndistinct, dependencies, mcv) ON grp, label FROM st_e;
RESET fieldcrypt.analyze_values;
ANALYZE st_h;
ANALYZE st_e;
SELECT (SELECT count(*) FROM pg_statistic WHERE starelid = 'st_e'::regclass) AS e_stat_rows,
       (SELECT count(*) FROM pg_statistic WHERE starelid = 'st_h'::regclass) AS h_stat_rows,
       (SELECT count(*) FROM pg_statistic_ext s JOIN pg_statistic_ext_data d ON d.stxoid = s.oid
         WHERE s.stxrelid = 'st_e'::regclass) AS e_ext_rows;
SELECT relname, reltuples, relpages > 0 AS has_pages FROM pg_class
 WHERE relname IN ('st_e', 'st_h') ORDER BY relname;
-- VACUUM (ANALYZE) and a column list do not bypass it
VACUUM (ANALYZE) st_e;
ANALYZE st_e (label);
SELECT count(*) AS e_stat_rows FROM pg_statistic WHERE starelid = 'st_e'::regclass;
-- an ordinary role may not turn it on (42501)
SET ROLE regress_fc_tam_alice;
SET fieldcrypt.analyze_values = on;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- on: the same statistics as heap
SET fieldcrypt.analyze_values = on;
ANALYZE st_e;
SELECT count(*) AS e_stat_rows FROM pg_statistic WHERE starelid = 'st_e'::regclass;
SELECT count(*) AS stats_differ FROM (
    SELECT attname, null_frac, avg_width, n_distinct, most_common_vals::text,
           most_common_freqs::text, histogram_bounds::text, correlation
      FROM pg_stats WHERE tablename = 'st_e'
    EXCEPT
    SELECT attname, null_frac, avg_width, n_distinct, most_common_vals::text,
           most_common_freqs::text, histogram_bounds::text, correlation
      FROM pg_stats WHERE tablename = 'st_h') d;
SELECT count(*) AS e_ext_rows FROM pg_statistic_ext s JOIN pg_statistic_ext_data d ON d.stxoid = s.oid
 WHERE s.stxrelid = 'st_e'::regclass;
-- and back off: nothing for a new table
RESET fieldcrypt.analyze_values;
CREATE TABLE st_e2 (LIKE st_e) USING encrypted_heap;
INSERT INTO st_e2 SELECT * FROM st_e;
ANALYZE st_e2;
SELECT count(*) AS e2_stat_rows FROM pg_statistic WHERE starelid = 'st_e2'::regclass;
SELECT reltuples FROM pg_class WHERE relname = 'st_e2';

--
-- Triggers: BEFORE row triggers that change or skip rows, AFTER row triggers
-- that see OLD and NEW, statement triggers with transition tables.
--
CREATE TABLE trig_log (n serial, tbl text, op text, old_row text, new_row text) USING heap;
CREATE FUNCTION trig_before() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.note = 'KEEP' THEN RETURN NULL; END IF;
        RETURN OLD;
    END IF;
    NEW.note := upper(NEW.note);
    IF NEW.note = 'SKIP' THEN RETURN NULL; END IF;
    RETURN NEW;
END $$;
CREATE FUNCTION trig_after() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO trig_log (tbl, op, old_row, new_row)
         VALUES (TG_TABLE_NAME, TG_OP,
                 CASE WHEN TG_OP <> 'INSERT' THEN format('%s/%s/%s', OLD.id, OLD.note, length(OLD.big)) END,
                 CASE WHEN TG_OP <> 'DELETE' THEN format('%s/%s/%s', NEW.id, NEW.note, length(NEW.big)) END);
    RETURN NULL;
END $$;
CREATE FUNCTION trig_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE o bigint; nw bigint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT count(*) INTO o FROM old_rows;
        SELECT count(*) INTO nw FROM new_rows;
        INSERT INTO trig_log (tbl, op, old_row, new_row)
             VALUES (TG_TABLE_NAME, 'STMT UPDATE',
                     (SELECT string_agg(note, ',' ORDER BY id) FROM old_rows) || ' #' || o,
                     (SELECT string_agg(note, ',' ORDER BY id) FROM new_rows) || ' #' || nw);
    END IF;
    RETURN NULL;
END $$;
CREATE TABLE trig_h (id int PRIMARY KEY, note text, big text) USING heap;
CREATE TABLE trig_e (id int PRIMARY KEY, note text, big text) USING encrypted_heap;
CREATE TRIGGER b BEFORE INSERT OR UPDATE OR DELETE ON trig_h FOR EACH ROW EXECUTE FUNCTION trig_before();
CREATE TRIGGER b BEFORE INSERT OR UPDATE OR DELETE ON trig_e FOR EACH ROW EXECUTE FUNCTION trig_before();
CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON trig_h FOR EACH ROW EXECUTE FUNCTION trig_after();
CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON trig_e FOR EACH ROW EXECUTE FUNCTION trig_after();
CREATE TRIGGER s AFTER UPDATE ON trig_h REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trig_stmt();
CREATE TRIGGER s AFTER UPDATE ON trig_e REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trig_stmt();
CREATE FUNCTION trig_workload(rel text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO %I VALUES (1, ''one'', NULL), (2, ''skip'', NULL), (3, ''keep'', NULL), (4, ''four'', repeat(''B'', 10000))', rel);
    EXECUTE format('UPDATE %I SET note = note || ''-u'' WHERE id <= 4', rel);
    EXECUTE format('UPDATE %I SET note = ''keep'' WHERE id = 3', rel);
    EXECUTE format('DELETE FROM %I', rel);
    EXECUTE format('INSERT INTO %I VALUES (5, ''after'', NULL) ON CONFLICT (id) DO UPDATE SET note = ''conflict''', rel);
    EXECUTE format('INSERT INTO %I VALUES (5, ''after'', NULL) ON CONFLICT (id) DO UPDATE SET note = ''conflict''', rel);
END $$;
SELECT trig_workload('trig_h');
SELECT trig_workload('trig_e');
SELECT id, note, length(big) FROM trig_e ORDER BY id;
SELECT tam_digest('trig_e') = tam_digest('trig_h') AS same_rows;
-- the log of each table, with the table name taken out, is the same
SELECT op, old_row, new_row FROM trig_log WHERE tbl = 'trig_e' ORDER BY n;
SELECT (SELECT string_agg(op || '|' || coalesce(old_row, '-') || '|' || coalesce(new_row, '-'), ';' ORDER BY n)
          FROM trig_log WHERE tbl = 'trig_e')
     = (SELECT string_agg(op || '|' || coalesce(old_row, '-') || '|' || coalesce(new_row, '-'), ';' ORDER BY n)
          FROM trig_log WHERE tbl = 'trig_h') AS same_log;

--
-- Row-level security.
--
CREATE TABLE doc (id int PRIMARY KEY, owner name, body text) USING encrypted_heap;
INSERT INTO doc VALUES (1, 'regress_fc_tam_alice', 'alice 1'), (2, 'regress_fc_tam_bob', 'bob 2'),
                       (3, 'regress_fc_tam_alice', 'alice 3');
ALTER TABLE doc ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON doc USING (owner = current_user) WITH CHECK (owner = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON doc TO regress_fc_tam_alice, regress_fc_tam_bob;
SET ROLE regress_fc_tam_alice;
SELECT * FROM doc ORDER BY id;
UPDATE doc SET body = body || ' edited' WHERE id IN (1, 2);
DELETE FROM doc WHERE id = 2;
INSERT INTO doc VALUES (4, 'regress_fc_tam_bob', 'forged');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO doc VALUES (5, 'regress_fc_tam_alice', 'alice 5');
RESET ROLE;
SET ROLE regress_fc_tam_bob;
SELECT * FROM doc ORDER BY id;
RESET ROLE;
SELECT * FROM doc ORDER BY id;

--
-- Foreign keys: encrypted parent and heap child, heap parent and encrypted
-- child, both encrypted; cascades and violations (23503).
--
CREATE TABLE p_e (id int PRIMARY KEY, name text) USING encrypted_heap;
CREATE TABLE p_h (id int PRIMARY KEY, name text) USING heap;
CREATE TABLE c_h (id int PRIMARY KEY, pid int REFERENCES p_e ON DELETE CASCADE ON UPDATE CASCADE) USING heap;
CREATE TABLE c_e (id int PRIMARY KEY, pid int REFERENCES p_h ON DELETE SET NULL) USING encrypted_heap;
CREATE TABLE c_ee (id int PRIMARY KEY, pid int REFERENCES p_e ON DELETE RESTRICT) USING encrypted_heap;
INSERT INTO p_e SELECT g, 'p' || g FROM generate_series(1, 10) g;
INSERT INTO p_h SELECT g, 'p' || g FROM generate_series(1, 10) g;
INSERT INTO c_h SELECT g, g % 10 + 1 FROM generate_series(1, 50) g;
INSERT INTO c_e SELECT g, g % 10 + 1 FROM generate_series(1, 50) g;
INSERT INTO c_ee VALUES (1, 10);
INSERT INTO c_h VALUES (100, 11);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO c_e VALUES (100, 11);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO c_ee VALUES (100, 11);
\echo :LAST_ERROR_SQLSTATE
UPDATE p_e SET id = 101 WHERE id = 1;
DELETE FROM p_e WHERE id = 2;
DELETE FROM p_h WHERE id = 3;
DELETE FROM p_e WHERE id = 10;
\echo :LAST_ERROR_SQLSTATE
UPDATE p_e SET name = 'renamed' WHERE id = 10;
SELECT pid, count(*) FROM c_h GROUP BY pid ORDER BY pid;
SELECT count(*) FILTER (WHERE pid IS NULL) AS set_null, count(*) AS rows FROM c_e;
-- a foreign key added to a filled table is validated by scanning it
ALTER TABLE c_ee DROP CONSTRAINT c_ee_pid_fkey;
INSERT INTO c_ee VALUES (2, 77);
ALTER TABLE c_ee ADD FOREIGN KEY (pid) REFERENCES p_e;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM c_ee WHERE id = 2;
ALTER TABLE c_ee ADD FOREIGN KEY (pid) REFERENCES p_e;

--
-- Partitions: the access method is per leaf; a partitioned table has none
-- (PostgreSQL's own error, 0A000, as with heap).
--
CREATE TABLE part (k int, v text) PARTITION BY RANGE (k) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE part (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (100) USING encrypted_heap;
CREATE TABLE part_2 PARTITION OF part FOR VALUES FROM (100) TO (200) USING heap;
CREATE TABLE part_d PARTITION OF part DEFAULT USING encrypted_heap;
CREATE TABLE part_ctl (k int, v text) USING heap;
INSERT INTO part SELECT g, 'v' || g FROM generate_series(0, 299, 3) g;
INSERT INTO part_ctl SELECT g, 'v' || g FROM generate_series(0, 299, 3) g;
SELECT c.relname, a.amname, fieldcrypt.is_encrypted(c.oid) AS encrypted
  FROM pg_class c LEFT JOIN pg_am a ON a.oid = c.relam
 WHERE c.relname LIKE 'part%' AND c.relname <> 'part_ctl' ORDER BY 1;
SELECT tableoid::regclass, count(*) FROM part GROUP BY 1 ORDER BY 1;
-- updates that move rows between an encrypted and a heap partition
UPDATE part SET k = k + 100 WHERE k < 30;
UPDATE part_ctl SET k = k + 100 WHERE k < 30;
UPDATE part SET k = k - 150 WHERE k BETWEEN 150 AND 199;
UPDATE part_ctl SET k = k - 150 WHERE k BETWEEN 150 AND 199;
SELECT tableoid::regclass, count(*) FROM part GROUP BY 1 ORDER BY 1;
SELECT md5(string_agg(k || v, ',' ORDER BY k, v)) = (SELECT md5(string_agg(k || v, ',' ORDER BY k, v)) FROM part_ctl) AS same
  FROM part;
-- ATTACH and DETACH keep the leaf's access method
CREATE TABLE part_3 (k int, v text) USING encrypted_heap;
INSERT INTO part_3 VALUES (1000, 'attached');
ALTER TABLE part DETACH PARTITION part_d;
ALTER TABLE part ATTACH PARTITION part_3 FOR VALUES FROM (1000) TO (2000);
SELECT k, v, tableoid::regclass FROM part WHERE k >= 1000;
SELECT count(*) AS detached_rows, fieldcrypt.is_encrypted('part_d') FROM part_d;
-- partition pruning and a partitioned index
CREATE INDEX ON part (k);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT v FROM part WHERE k = 42;
SELECT v FROM part WHERE k = 42;
RESET enable_seqscan;

--
-- Inheritance: a heap parent with an encrypted child and the other way round;
-- queries, updates and deletes through the parent reach the children.
--
CREATE TABLE inh_p (id int, v text) USING heap;
CREATE TABLE inh_c (extra text) INHERITS (inh_p) USING encrypted_heap;
CREATE TABLE inh_pe (id int, v text) USING encrypted_heap;
CREATE TABLE inh_ch (extra text) INHERITS (inh_pe) USING heap;
INSERT INTO inh_p VALUES (1, 'parent');
INSERT INTO inh_c VALUES (2, 'child', 'x'), (3, 'child', 'y');
INSERT INTO inh_pe VALUES (1, 'parent');
INSERT INTO inh_ch VALUES (2, 'child', 'x'), (3, 'child', 'y');
UPDATE inh_p SET v = v || '+' WHERE id >= 2;
UPDATE inh_pe SET v = v || '+' WHERE id >= 2;
DELETE FROM inh_p WHERE id = 3;
DELETE FROM inh_pe WHERE id = 3;
SELECT tableoid::regclass, * FROM inh_p ORDER BY id;
SELECT tableoid::regclass, * FROM inh_pe ORDER BY id;
SELECT * FROM inh_c;

--
-- Materialized views USING encrypted_heap, REFRESH and REFRESH CONCURRENTLY.
--
CREATE MATERIALIZED VIEW mv_e USING encrypted_heap AS
    SELECT grp, count(*) AS n, string_agg(label, ',' ORDER BY id) AS labels FROM st_h GROUP BY grp;
CREATE MATERIALIZED VIEW mv_h USING heap AS
    SELECT grp, count(*) AS n, string_agg(label, ',' ORDER BY id) AS labels FROM st_h GROUP BY grp;
SELECT fieldcrypt.is_encrypted('mv_e') AS mv_e, fieldcrypt.is_encrypted('mv_h') AS mv_h;
SELECT tam_digest('mv_e') = tam_digest('mv_h') AS same;
UPDATE st_h SET grp = 99 WHERE id % 100 = 0;
REFRESH MATERIALIZED VIEW mv_e;
REFRESH MATERIALIZED VIEW mv_h;
SELECT tam_digest('mv_e') = tam_digest('mv_h') AS same_after_refresh, fieldcrypt.is_encrypted('mv_e');
CREATE UNIQUE INDEX ON mv_e (grp);
DELETE FROM st_h WHERE grp = 99;
REFRESH MATERIALIZED VIEW CONCURRENTLY mv_e;
REFRESH MATERIALIZED VIEW mv_h;
SELECT tam_digest('mv_e') = tam_digest('mv_h') AS same_after_concurrent_refresh;
CREATE MATERIALIZED VIEW mv_empty USING encrypted_heap AS SELECT 1 AS x WITH NO DATA;
SELECT * FROM mv_empty;
\echo :LAST_ERROR_SQLSTATE
REFRESH MATERIALIZED VIEW mv_empty;
SELECT * FROM mv_empty;

--
-- CREATE TABLE AS, SELECT INTO, default_table_access_method.
--
CREATE TABLE ctas_e USING encrypted_heap AS SELECT * FROM st_h;
SELECT fieldcrypt.is_encrypted('ctas_e'), tam_digest('ctas_e') = tam_digest('st_h') AS same;
CREATE TABLE ctas_nodata USING encrypted_heap AS SELECT * FROM st_h WITH NO DATA;
SELECT fieldcrypt.is_encrypted('ctas_nodata'), count(*) FROM ctas_nodata;
SET default_table_access_method = encrypted_heap;
SELECT * INTO into_e FROM st_h;
CREATE TABLE dflt_e (id int);
CREATE TABLE ctas_dflt AS SELECT * FROM st_h WHERE id < 10;
RESET default_table_access_method;
SELECT relname, fieldcrypt.is_encrypted(oid) FROM pg_class
 WHERE relname IN ('into_e', 'dflt_e', 'ctas_dflt') ORDER BY 1;
SELECT tam_digest('into_e') = tam_digest('st_h') AS same;

--
-- Temporary and unlogged tables.
--
CREATE TEMP TABLE tmp_e (id int PRIMARY KEY, v text) USING encrypted_heap;
INSERT INTO tmp_e SELECT g, repeat('t', g) FROM generate_series(1, 3000) g;
UPDATE tmp_e SET v = v || '!' WHERE id % 2 = 0;
DELETE FROM tmp_e WHERE id % 3 = 0;
SELECT fieldcrypt.is_encrypted('tmp_e'), count(*), sum(length(v)) FROM tmp_e;
SELECT count(*), sum(length(v)) FROM tmp_e WHERE id BETWEEN 100 AND 200;
CREATE UNLOGGED TABLE unl_e (id int PRIMARY KEY, v text) USING encrypted_heap;
INSERT INTO unl_e SELECT g, 'u' || g FROM generate_series(1, 1000) g;
SELECT fieldcrypt.is_encrypted('unl_e'), count(*), md5(string_agg(v, ',' ORDER BY id)) = md5(string_agg('u' || id, ',' ORDER BY id)) AS ok
  FROM unl_e;

--
-- Other relations: is_encrypted is false for them.
--
CREATE VIEW v_e AS SELECT * FROM st_e;
SELECT fieldcrypt.is_encrypted('v_e') AS view, fieldcrypt.is_encrypted('part') AS partitioned,
       fieldcrypt.is_encrypted('pg_class') AS catalog, fieldcrypt.is_encrypted('st_h') AS heap;
SELECT fieldcrypt.is_encrypted(NULL) AS null_arg;

--
-- The publication fence: an encrypted_heap table can never be part of a
-- publication (0A000), whatever the route.
--
SET client_min_messages = error;   -- no "wal_level is insufficient" warnings
CREATE SCHEMA pub_plain;
CREATE SCHEMA pub_mixed;
CREATE TABLE pub_plain.h1 (id int PRIMARY KEY) USING heap;
CREATE TABLE pub_mixed.h2 (id int PRIMARY KEY) USING heap;
CREATE TABLE pub_mixed.e2 (id int PRIMARY KEY) USING encrypted_heap;
CREATE PUBLICATION pub_e FOR TABLE st_e;
\echo :LAST_ERROR_SQLSTATE
CREATE PUBLICATION pub_e FOR TABLE st_h, st_e;
\echo :LAST_ERROR_SQLSTATE
-- (terse: which table the detail names first is not defined)
\set VERBOSITY terse
CREATE PUBLICATION pub_all FOR ALL TABLES;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
CREATE PUBLICATION pub_mixed FOR TABLES IN SCHEMA pub_mixed;
\echo :LAST_ERROR_SQLSTATE
CREATE PUBLICATION pub_h FOR TABLE st_h;
ALTER PUBLICATION pub_h ADD TABLE st_e;
\echo :LAST_ERROR_SQLSTATE
ALTER PUBLICATION pub_h SET TABLE st_h, st_e;
\echo :LAST_ERROR_SQLSTATE
ALTER PUBLICATION pub_h ADD TABLES IN SCHEMA pub_mixed;
\echo :LAST_ERROR_SQLSTATE
-- a partitioned table with an encrypted leaf
CREATE PUBLICATION pub_part FOR TABLE part;
\echo :LAST_ERROR_SQLSTATE
CREATE PUBLICATION pub_schema FOR TABLES IN SCHEMA pub_plain;
-- a published schema: no new encrypted table in it, none moved into it
CREATE TABLE pub_plain.e3 (id int) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
SET default_table_access_method = encrypted_heap;
CREATE TABLE pub_plain.e4 (id int);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE pub_plain.e5 AS SELECT 1 AS id;
\echo :LAST_ERROR_SQLSTATE
RESET default_table_access_method;
ALTER TABLE pub_mixed.e2 SET SCHEMA pub_plain;
\echo :LAST_ERROR_SQLSTATE
-- a published table cannot become encrypted
ALTER TABLE st_h SET ACCESS METHOD encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE pub_plain.h1 SET ACCESS METHOD encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
-- a partition of a published partitioned table
CREATE TABLE ppart (k int) PARTITION BY RANGE (k);
CREATE TABLE ppart_1 PARTITION OF ppart FOR VALUES FROM (0) TO (10) USING heap;
CREATE PUBLICATION pub_ppart FOR TABLE ppart;
CREATE TABLE ppart_2 PARTITION OF ppart FOR VALUES FROM (10) TO (20) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE ppart_3 (k int) USING encrypted_heap;
ALTER TABLE ppart ATTACH PARTITION ppart_3 FOR VALUES FROM (20) TO (30);
\echo :LAST_ERROR_SQLSTATE
-- none of the refused statements left anything behind
SELECT pubname FROM pg_publication ORDER BY 1;
SELECT pubname, schemaname, tablename FROM pg_publication_tables ORDER BY 1, 2, 3;
SELECT relname FROM pg_class WHERE relname IN ('e3', 'e4', 'e5', 'ppart_2') ORDER BY 1;
SELECT relnamespace::regnamespace, relname, fieldcrypt.is_encrypted(oid) FROM pg_class
 WHERE relname IN ('e2', 'h1', 'st_h', 'ppart_3') ORDER BY 2;
-- a materialized view is never published: allowed in a published schema
CREATE MATERIALIZED VIEW pub_plain.mv USING encrypted_heap AS SELECT 1 AS x;
SELECT fieldcrypt.is_encrypted('pub_plain.mv');
-- a FOR ALL TABLES publication in a database without encrypted tables: then
-- no encrypted table can be created there
RESET client_min_messages;
\c :regress_db
CREATE DATABASE fc_tam_features_pub TEMPLATE template0;
\c fc_tam_features_pub
CREATE EXTENSION fieldcrypt;
SET client_min_messages = error;
CREATE TABLE h (id int) USING heap;
CREATE PUBLICATION pub_all FOR ALL TABLES;
CREATE TABLE e (id int) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE e2 USING encrypted_heap AS SELECT 1 AS id;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE h SET ACCESS METHOD encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
SELECT relname, fieldcrypt.is_encrypted(oid) FROM pg_class WHERE relname IN ('h', 'e', 'e2') ORDER BY 1;
DROP PUBLICATION pub_all;
CREATE TABLE e2 USING encrypted_heap AS SELECT 1 AS id;
SELECT fieldcrypt.is_encrypted('e2');
RESET client_min_messages;

-- System columns of the row just written (INSERT/UPDATE ... RETURNING): as on heap
CREATE TABLE sysc (id int PRIMARY KEY, v text) USING encrypted_heap;
CREATE TABLE sysh (id int PRIMARY KEY, v text) USING heap;
BEGIN;
INSERT INTO sysc VALUES (1, 'a') RETURNING xmin = txid_current()::text::xid AS xmin_ok, ctid, cmin;
INSERT INTO sysh VALUES (1, 'a') RETURNING xmin = txid_current()::text::xid AS xmin_ok, ctid, cmin;
UPDATE sysc SET v = 'b' RETURNING xmin = txid_current()::text::xid AS xmin_ok, ctid, cmin;
UPDATE sysh SET v = 'b' RETURNING xmin = txid_current()::text::xid AS xmin_ok, ctid, cmin;
INSERT INTO sysc VALUES (1, 'c') ON CONFLICT (id) DO UPDATE SET v = 'c' RETURNING xmin = txid_current()::text::xid AS xmin_ok, ctid;
INSERT INTO sysh VALUES (1, 'c') ON CONFLICT (id) DO UPDATE SET v = 'c' RETURNING xmin = txid_current()::text::xid AS xmin_ok, ctid;
COMMIT;

\c :regress_db
DROP DATABASE fc_tam_features;
DROP DATABASE fc_tam_features_pub;
DROP ROLE regress_fc_tam_alice;
DROP ROLE regress_fc_tam_bob;
