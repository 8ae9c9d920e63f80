--
-- tam_keys: the table encryption (TDE) key of a database.  It is generated on
-- first use; fieldcrypt.rotate_tde_key() starts a new generation (superuser or
-- fieldcrypt_admin, over TLS); fieldcrypt.tde_key_status shows, per
-- generation, the encrypted_heap tables that still hold rows under it;
-- fieldcrypt.reencrypt_table() and VACUUM FULL move a table to the current
-- generation (CLUSTER too).  Rows written under every generation stay
-- readable, also in a copy made with CREATE DATABASE ... TEMPLATE once its key
-- is restored.  At most 16 generations (54000); drop_unused_tde_keys() frees
-- the unused ones.  Without active data encryption, encrypted_heap cannot be
-- used (55000).
--
-- Runs in databases of its own, over TLS as a superuser unless said otherwise.
-- Control tables say USING heap explicitly: this file also runs in the pass
-- where default_table_access_method = encrypted_heap.
-- After each refused statement, \echo :LAST_ERROR_SQLSTATE shows its SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tam_keys;
DROP DATABASE IF EXISTS fc_tam_keys_copy;
DROP DATABASE IF EXISTS fc_tam_keys_inactive;
DROP ROLE IF EXISTS regress_fc_tam_plain;
DROP ROLE IF EXISTS regress_fc_tam_admin;
RESET client_min_messages;
CREATE DATABASE fc_tam_keys TEMPLATE template0;
CREATE ROLE regress_fc_tam_plain LOGIN;
CREATE ROLE regress_fc_tam_admin LOGIN;
\c fc_tam_keys
CREATE EXTENSION fieldcrypt;
GRANT fieldcrypt_admin TO regress_fc_tam_admin;

CREATE FUNCTION tam_digest(rel regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE format('SELECT count(*) || '':'' || md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) FROM %s x', rel)
       INTO r;
    RETURN r;
END $$;
-- the status with the table lists sorted (without fieldcrypt.tde_statistic, the
-- encrypted planner statistics: it has rows once autovacuum analyzed a table)
CREATE VIEW st AS
    SELECT generation, is_current,
           ARRAY(SELECT t::text FROM unnest(tables) t
                  WHERE t <> 'fieldcrypt.tde_statistic'::regclass ORDER BY 1) AS tables
      FROM fieldcrypt.tde_key_status;

-- the view's shape, and the functions' signatures
SELECT attname, atttypid::regtype FROM pg_attribute
 WHERE attrelid = 'fieldcrypt.tde_key_status'::regclass AND attnum > 0 ORDER BY attnum;
SELECT p.oid::regprocedure, p.prorettype::regtype FROM pg_proc p
 WHERE p.pronamespace = 'fieldcrypt'::regnamespace
   AND p.proname IN ('rotate_tde_key', 'reencrypt_table', 'is_encrypted') ORDER BY 1::text;

--
-- First use: encrypted rows are written under generation 1.
--
CREATE TABLE t1 (id int PRIMARY KEY, v text, big text) USING encrypted_heap;
CREATE TABLE t2 (id int PRIMARY KEY, v text) USING encrypted_heap;
CREATE TABLE t_empty (id int) USING encrypted_heap;
CREATE TABLE h1 (id int PRIMARY KEY, v text, big text) USING heap;
CREATE TABLE h2 (id int PRIMARY KEY, v text) USING heap;
INSERT INTO h1 SELECT g, 'gen1-' || g, CASE WHEN g % 100 = 0 THEN repeat(md5(g::text), 500) END
  FROM generate_series(1, 1000) g;
INSERT INTO h2 SELECT g, 'gen1-' || g FROM generate_series(1, 500) g;
INSERT INTO t1 SELECT * FROM h1;
INSERT INTO t2 SELECT * FROM h2;
SELECT * FROM st ORDER BY generation;
SELECT count(*) AS rows, bool_and(created_at <= now() AND created_at > now() - interval '1 hour') AS created_recently
  FROM fieldcrypt.tde_key_status;

--
-- rotate_tde_key: a new current generation; older rows stay readable.
--
SELECT fieldcrypt.rotate_tde_key() AS new_generation;
SELECT * FROM st ORDER BY generation;
SELECT tam_digest('t1') = tam_digest('h1') AS t1_readable, tam_digest('t2') = tam_digest('h2') AS t2_readable;
-- new rows use the new generation: t1 now holds rows of both
INSERT INTO t1 VALUES (2001, 'gen2-2001', repeat('gen2', 3000));
INSERT INTO h1 VALUES (2001, 'gen2-2001', repeat('gen2', 3000));
-- updating every row of t2 (and vacuuming the old versions) moves it
UPDATE t2 SET v = v || '+';
UPDATE h2 SET v = v || '+';
VACUUM t2;
SELECT * FROM st ORDER BY generation;
SELECT tam_digest('t1') = tam_digest('h1') AS t1_readable, tam_digest('t2') = tam_digest('h2') AS t2_readable;
-- a new session reads both generations too
\c fc_tam_keys
SELECT tam_digest('t1') = tam_digest('h1') AS t1_readable_new_session;
SELECT md5(big) = md5(repeat(md5('100'), 500)) AS gen1_toast, md5(v) = md5('gen1-100') AS gen1_inline
  FROM t1 WHERE id = 100;

--
-- reencrypt_table rewrites a table under the current generation.
--
SELECT fieldcrypt.reencrypt_table('t1');
SELECT * FROM st ORDER BY generation;
SELECT tam_digest('t1') = tam_digest('h1') AS t1_after_reencrypt;
-- indexes still point at the right rows
SET enable_seqscan = off;
SELECT v, md5(big) = md5(repeat(md5('700'), 500)) AS big_ok FROM t1 WHERE id = 700;
RESET enable_seqscan;
-- an empty table, a heap table
SELECT fieldcrypt.reencrypt_table('t_empty');
SELECT fieldcrypt.reencrypt_table('h1');
\echo :LAST_ERROR_SQLSTATE
-- in a transaction that rolls back, nothing moves
SELECT fieldcrypt.rotate_tde_key() AS new_generation;
BEGIN;
SELECT fieldcrypt.reencrypt_table('t2');
ROLLBACK;
SELECT * FROM st ORDER BY generation;
SELECT tam_digest('t2') = tam_digest('h2') AS t2_after_rollback;

--
-- VACUUM FULL and CLUSTER also move a table to the current generation.
--
VACUUM FULL t2;
SELECT * FROM st ORDER BY generation;
SELECT tam_digest('t2') = tam_digest('h2') AS t2_after_vacuum_full;
SELECT fieldcrypt.rotate_tde_key() AS new_generation;
CLUSTER t1 USING t1_pkey;
SELECT * FROM st ORDER BY generation;
SELECT tam_digest('t1') = tam_digest('h1') AS t1_after_cluster;

--
-- Who may rotate: superusers and members of fieldcrypt_admin (42501), over
-- TLS only (28000).  The status view is for them too: it reads every
-- encrypted_heap table (42501 for others).
--
SELECT max(generation) AS gen_before FROM fieldcrypt.tde_key_status \gset
SET ROLE regress_fc_tam_plain;
SELECT fieldcrypt.rotate_tde_key();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM fieldcrypt.tde_key_status;
\echo :LAST_ERROR_SQLSTATE
-- reencrypt_table: the table's owner only
SELECT fieldcrypt.reencrypt_table('t1');
\echo :LAST_ERROR_SQLSTATE
-- drop_unused_tde_keys: superusers and fieldcrypt_admin only
SELECT fieldcrypt.drop_unused_tde_keys();
\echo :LAST_ERROR_SQLSTATE
-- the worker's helper is not for PUBLIC
SELECT fieldcrypt._tde_tuple_generation('t1', '(0,1)');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- _tde_tuple_generation refuses heap tables (42809), like reencrypt_table above
SELECT fieldcrypt._tde_tuple_generation('h1', '(0,1)');
\echo :LAST_ERROR_SQLSTATE
-- _tde_tuple_generation: NULL where no row version is
SELECT fieldcrypt._tde_tuple_generation('t1', '(4000000,1)') IS NULL AS no_block,
       fieldcrypt._tde_tuple_generation('t1', '(0,60000)') IS NULL AS no_item;
SET ROLE regress_fc_tam_admin;
SELECT fieldcrypt.rotate_tde_key() = :gen_before + 1 AS admin_rotated;
SELECT count(*) > 0 AS admin_reads_status FROM fieldcrypt.tde_key_status;
RESET ROLE;
\c -reuse-previous=on "sslmode=disable"
SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();
SELECT fieldcrypt.rotate_tde_key();
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.drop_unused_tde_keys();
\echo :LAST_ERROR_SQLSTATE
-- the privilege check comes first for a role without it
SET ROLE regress_fc_tam_plain;
SELECT fieldcrypt.rotate_tde_key();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- reading and writing encrypted tables needs no TLS
INSERT INTO t2 VALUES (9001, 'written without tls');
INSERT INTO h2 VALUES (9001, 'written without tls');
SELECT tam_digest('t2') = tam_digest('h2') AS t2_without_tls;
SELECT setting AS socket_dir FROM pg_settings WHERE name = 'unix_socket_directories' \gset
\set socket_conn 'host=' :socket_dir
\c -reuse-previous=on :socket_conn
SELECT inet_client_addr() IS NULL AS unix_socket;
SELECT fieldcrypt.rotate_tde_key();
\echo :LAST_ERROR_SQLSTATE
\c -reuse-previous=on "host=127.0.0.1 sslmode=require"
SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();
SELECT max(generation) = :gen_before + 1 AS one_more_generation, count(*) FILTER (WHERE is_current) AS current
  FROM fieldcrypt.tde_key_status;

--
-- A change of the data encryption key leaves encrypted tables readable.
--
SELECT fieldcrypt.set_data_encryption_key('Tam-Keys-Dek-2026!');
SELECT tam_digest('t1') = tam_digest('h1') AS t1_after_dek_change,
       tam_digest('t2') = tam_digest('h2') AS t2_after_dek_change;
INSERT INTO t1 VALUES (3001, 'after dek change', NULL);
INSERT INTO h1 VALUES (3001, 'after dek change', NULL);
SELECT v FROM t1 WHERE id = 3001;

-- rotate_tde_key is not transactional: a rollback keeps the new generation
-- (rows may already have been written under it by other sessions)
SELECT max(generation) AS gen_before FROM fieldcrypt.tde_key_status \gset
BEGIN;
SELECT fieldcrypt.rotate_tde_key() = :gen_before + 1 AS rotated;
ROLLBACK;
SELECT max(generation) = :gen_before + 1 AS kept, count(*) FILTER (WHERE is_current) AS current,
       (SELECT is_current FROM fieldcrypt.tde_key_status WHERE generation = :gen_before + 1) AS new_is_current
  FROM fieldcrypt.tde_key_status;
INSERT INTO t2 VALUES (9003, 'after the rolled back rotation');
INSERT INTO h2 VALUES (9003, 'after the rolled back rotation');
SELECT tam_digest('t2') = tam_digest('h2') AS t2_readable;

--
-- A copy of the database (CREATE DATABASE ... TEMPLATE) has no key until the
-- administrator restores it; then its tables read again.
--
\c :regress_db
CREATE DATABASE fc_tam_keys_copy TEMPLATE fc_tam_keys;
\c fc_tam_keys_copy
SELECT active, key_loaded FROM fieldcrypt.key_status;
SELECT fieldcrypt.set_data_encryption_key('Tam-Keys-Dek-2026!');
SELECT tam_digest('t1') = tam_digest('h1') AS t1_in_copy, tam_digest('t2') = tam_digest('h2') AS t2_in_copy;
INSERT INTO t2 VALUES (9002, 'written in the copy');
SELECT v FROM t2 WHERE id = 9002;

--
-- Encryption not active (fieldcrypt.auto_activate = off): encrypted_heap
-- cannot be used (55000) until the administrator activates it.
--
\c :regress_db
CREATE DATABASE fc_tam_keys_inactive TEMPLATE template0;
\c fc_tam_keys_inactive
SET fieldcrypt.auto_activate = off;
CREATE EXTENSION fieldcrypt;
RESET fieldcrypt.auto_activate;
SELECT fieldcrypt.is_data_encryption_active();
CREATE TABLE x (id int) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
SET default_table_access_method = encrypted_heap;
CREATE TABLE y (id int);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE y AS SELECT 1 AS id;
\echo :LAST_ERROR_SQLSTATE
RESET default_table_access_method;
CREATE TABLE z (id int) USING heap;
INSERT INTO z VALUES (1);
ALTER TABLE z SET ACCESS METHOD encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
CREATE MATERIALIZED VIEW mv USING encrypted_heap AS SELECT 1 AS id;
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.rotate_tde_key();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS status_rows FROM fieldcrypt.tde_key_status;
SELECT relname FROM pg_class WHERE relname IN ('x', 'y', 'mv') ORDER BY 1;
SELECT fieldcrypt.is_encrypted('z');
-- once activated, it can
SELECT fieldcrypt.set_data_encryption_key('Tam-Keys-Activate-1!');
CREATE TABLE x (id int) USING encrypted_heap;
INSERT INTO x VALUES (1), (2);
ALTER TABLE z SET ACCESS METHOD encrypted_heap;
SELECT (SELECT sum(id) FROM x) AS x_sum, (SELECT sum(id) FROM z) AS z_sum,
       fieldcrypt.is_encrypted('x') AS x_enc, fieldcrypt.is_encrypted('z') AS z_enc;
SELECT generation, is_current, ARRAY(SELECT t::text FROM unnest(tables) t ORDER BY 1) AS tables
  FROM fieldcrypt.tde_key_status ORDER BY generation;

--
-- At most 16 generations per database (54000); drop_unused_tde_keys destroys
-- the ones no row uses, never one that still has rows, and then rotation works
-- again.
--
SELECT count(fieldcrypt.rotate_tde_key()) AS rotations FROM generate_series(1, 15);
SELECT fieldcrypt.rotate_tde_key();
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.drop_unused_tde_keys() AS dropped;
SELECT generation, is_current, ARRAY(SELECT t::text FROM unnest(tables) t ORDER BY 1) AS tables
  FROM fieldcrypt.tde_key_status ORDER BY generation;
SELECT (SELECT sum(id) FROM x) AS x_sum, (SELECT sum(id) FROM z) AS z_sum;
SELECT fieldcrypt.reencrypt_table('x');
SELECT fieldcrypt.reencrypt_table('z');
SELECT fieldcrypt.drop_unused_tde_keys() AS dropped;
SELECT generation, is_current, ARRAY(SELECT t::text FROM unnest(tables) t ORDER BY 1) AS tables
  FROM fieldcrypt.tde_key_status ORDER BY generation;
SELECT fieldcrypt.rotate_tde_key() AS new_generation;
SELECT (SELECT sum(id) FROM x) AS x_sum, (SELECT sum(id) FROM z) AS z_sum;

\c :regress_db
DROP DATABASE fc_tam_keys;
DROP DATABASE fc_tam_keys_copy;
DROP DATABASE fc_tam_keys_inactive;
DROP ROLE regress_fc_tam_plain;
DROP ROLE regress_fc_tam_admin;
