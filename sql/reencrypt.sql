--
-- reencrypt: the SQL surface of re-encryption after a key change (src/reencrypt.c).
-- This cluster runs with fieldcrypt.reencrypt = off, so a key change leaves its
-- re-encryption postponed and everything below is deterministic; the worker itself is
-- tested by test/t/070_reencrypt.pl .. 072_reencrypt_standby.pl.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_reencrypt;
DROP ROLE IF EXISTS fc_reenc_plain;
RESET client_min_messages;
CREATE DATABASE fc_reencrypt TEMPLATE template0;
CREATE ROLE fc_reenc_plain LOGIN;
\c fc_reencrypt
CREATE EXTENSION fieldcrypt;

-- settings
SELECT name, context, boot_val FROM pg_settings
 WHERE name ~ '^fieldcrypt\.(test_)?reencrypt' ORDER BY name;
SHOW fieldcrypt.reencrypt;

-- the view and its columns; no row before a key change
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'fieldcrypt.rotation_progress'::regclass AND attnum > 0 ORDER BY attnum;
SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = current_database();

CREATE TABLE t (id int, pw fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea);
INSERT INTO t VALUES (1, 'reenc-regress-1', '\xdeadbeef'), (2, NULL, NULL);

-- postponed: the view shows it, generations are kept, another key change is allowed
SELECT fieldcrypt.set_data_encryption_key('Regress-Reencrypt-K1!');
SELECT database = current_database() AS this_db, from_generation, to_generation, phase,
       tables_done, tables_total, rows_done, rows_total,
       rows_per_second IS NULL AS no_rate, estimated_end IS NULL AS no_eta, pid IS NULL AS no_worker
  FROM fieldcrypt.rotation_progress;
SELECT generation, generations_kept FROM fieldcrypt.key_status;
SELECT fieldcrypt.set_data_encryption_key('Regress-Reencrypt-K2!');
SELECT from_generation, to_generation, phase FROM fieldcrypt.rotation_progress;
SELECT generation, generations_kept FROM fieldcrypt.key_status;
SELECT id, fieldcrypt.decrypt(pw), fieldcrypt.decrypt(b) FROM t ORDER BY id;

-- the worker's helpers, as a superuser: _stale is true for values of generation 1,
-- _reencrypt moves them to generation 3 and leaves current values and NULLs alone
SELECT id, fieldcrypt._stale(pw) AS pw_stale, fieldcrypt._stale(b) AS b_stale FROM t ORDER BY id;
UPDATE t SET pw = fieldcrypt._reencrypt(pw), b = fieldcrypt._reencrypt(b);
SELECT id, fieldcrypt._stale(pw) AS pw_stale, fieldcrypt._stale(b) AS b_stale,
       fieldcrypt.decrypt(pw), fieldcrypt.decrypt(b) FROM t ORDER BY id;
CREATE TABLE env AS SELECT pw FROM t WHERE id = 1;
UPDATE t SET pw = fieldcrypt._reencrypt(pw) WHERE id = 1;
SELECT e::text = (SELECT ROW(t.pw)::text FROM t WHERE id = 1) AS current_value_unchanged FROM env e;
-- a value of a generation the database does not have is left as it is
INSERT INTO t VALUES (3, 'fcenc:v1:AXQAAABjAAAAAAAAAAAAAAAAAAAAAGFiYwAAAAAAAAAAAAAAAAAAAAA=', NULL);
SELECT fieldcrypt._stale(pw) FROM t WHERE id = 3;
CREATE TABLE env3 AS SELECT pw FROM t WHERE id = 3;
UPDATE t SET pw = fieldcrypt._reencrypt(pw) WHERE id = 3;
SELECT e::text = (SELECT ROW(t.pw)::text FROM t WHERE id = 3) AS unknown_generation_unchanged FROM env3 e;
SELECT fieldcrypt.decrypt(pw) FROM t WHERE id = 3;
\echo :LAST_ERROR_SQLSTATE

-- so is a value of a generation it has that cannot be authenticated
INSERT INTO t VALUES (4, 'fcenc:v1:AXQAAAABAAAAAAAAAAAAAAAAAAAAAGFiYwAAAAAAAAAAAAAAAAAAAAA=', NULL);
SELECT fieldcrypt._stale(pw) FROM t WHERE id = 4;
CREATE TABLE env4 AS SELECT pw FROM t WHERE id = 4;
UPDATE t SET pw = fieldcrypt._reencrypt(pw) WHERE id = 4;
SELECT e::text = (SELECT ROW(t.pw)::text FROM t WHERE id = 4) AS forged_value_unchanged FROM env4 e;
SELECT fieldcrypt.decrypt(pw) FROM t WHERE id = 4;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM t WHERE id IN (3, 4);

-- not for PUBLIC
GRANT SELECT ON t TO fc_reenc_plain;
SET ROLE fc_reenc_plain;
SELECT fieldcrypt._reencrypt(pw) FROM t WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt._reencrypt(b) FROM t WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt._stale(pw) FROM t WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt._stale(b) FROM t WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM fieldcrypt.reencryption;
\echo :LAST_ERROR_SQLSTATE
SELECT to_generation, phase FROM fieldcrypt.rotation_progress;
RESET ROLE;

\c :regress_db
DROP DATABASE fc_reencrypt;
DROP ROLE fc_reenc_plain;
