--
-- key_rules: everything set_data_encryption_key and retrieve_data_encryption_key
-- refuse, with the SQLSTATE of each refusal, and the protection of the key
-- metadata and of the extension once encryption is active.
--
-- Runs in a database of its own, over TLS as a superuser unless said otherwise.
-- After each refused statement, \echo :LAST_ERROR_SQLSTATE shows its SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_key_rules;
DROP DATABASE IF EXISTS fc_key_owned;
DROP ROLE IF EXISTS regress_fc_plain;
DROP ROLE IF EXISTS regress_fc_super;
RESET client_min_messages;
CREATE DATABASE fc_key_rules TEMPLATE template0;
CREATE ROLE regress_fc_plain LOGIN;
\c fc_key_rules
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0001');

--
-- Privileges: superusers and members of fieldcrypt_admin only (42501).
--
SET ROLE regress_fc_plain;
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0002');
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
-- the privilege check comes before any check of the key itself
SELECT fieldcrypt.set_data_encryption_key(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.set_data_encryption_key('weak');
\echo :LAST_ERROR_SQLSTATE
-- anyone may ask whether encryption is active
SELECT fieldcrypt.is_data_encryption_active();
RESET ROLE;
SELECT fieldcrypt.retrieve_data_encryption_key();

--
-- Connections without TLS are refused (28000): TCP with sslmode=disable ...
--
\c -reuse-previous=on "sslmode=disable"
SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0002');
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
-- the TLS check comes before any check of the key itself
SELECT fieldcrypt.set_data_encryption_key(NULL);
\echo :LAST_ERROR_SQLSTATE
-- ... and a non-admin without TLS hears about the privilege first
SET ROLE regress_fc_plain;
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- no TLS needed to ask whether encryption is active
SELECT fieldcrypt.is_data_encryption_active();
-- ... and Unix-domain socket connections
SELECT setting AS socket_dir FROM pg_settings WHERE name = 'unix_socket_directories' \gset
\set socket_conn 'host=' :socket_dir
\c -reuse-previous=on :socket_conn
SELECT inet_client_addr() IS NULL AS unix_socket;
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0002');
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
\c -reuse-previous=on "host=127.0.0.1 sslmode=require"
SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();
-- none of the refused calls changed the key
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, generations_kept FROM fieldcrypt.key_status;

--
-- The key itself: not null (22004), not empty, strong enough, at most 256
-- bytes, different from the current one (22023).
--
SELECT fieldcrypt.set_data_encryption_key(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.set_data_encryption_key('');
\echo :LAST_ERROR_SQLSTATE
-- four classes but only 8 characters
SELECT fieldcrypt.set_data_encryption_key('short1A!');
\echo :LAST_ERROR_SQLSTATE
-- one class
SELECT fieldcrypt.set_data_encryption_key('alllowercaseletters');
\echo :LAST_ERROR_SQLSTATE
-- two classes
SELECT fieldcrypt.set_data_encryption_key('lowercase123456');
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.set_data_encryption_key('UPPERCASE-----');
\echo :LAST_ERROR_SQLSTATE
-- three classes, 9 characters
SELECT fieldcrypt.set_data_encryption_key('Abcdefgh1');
\echo :LAST_ERROR_SQLSTATE
-- characters count, not bytes: 7 characters in 11 bytes
SELECT fieldcrypt.set_data_encryption_key(U&'Ab1\00E9\00E9\00E9\00E9');
\echo :LAST_ERROR_SQLSTATE
-- 260 bytes
SELECT fieldcrypt.set_data_encryption_key(repeat('Aa1!', 65));
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.retrieve_data_encryption_key();
-- three classes and 10 characters is enough
SELECT fieldcrypt.set_data_encryption_key('Abcdefghi1');
SELECT fieldcrypt.retrieve_data_encryption_key();
-- so are lowercase, digits and symbols (non-ASCII characters count as symbols)
SELECT fieldcrypt.set_data_encryption_key(U&'abcdefgh1\00E9');
SELECT fieldcrypt.retrieve_data_encryption_key() = U&'abcdefgh1\00E9' AS stored;
-- exactly 256 bytes is allowed
SELECT fieldcrypt.set_data_encryption_key(repeat('Aa1!', 64));
SELECT fieldcrypt.retrieve_data_encryption_key() = repeat('Aa1!', 64) AS stored;
SELECT fieldcrypt.set_data_encryption_key('Abcdefghi1');
SELECT fieldcrypt.set_data_encryption_key('Abcdefghi1');
\echo :LAST_ERROR_SQLSTATE
SELECT generation, generations_kept FROM fieldcrypt.key_status;

--
-- One key change per transaction (55000).
--
BEGIN;
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0005');
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0006');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT fieldcrypt.retrieve_data_encryption_key();
-- also when the first change was made in a released savepoint
BEGIN;
SAVEPOINT s;
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0005');
RELEASE SAVEPOINT s;
SAVEPOINT t;
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0006');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT t;
COMMIT;
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, generations_kept FROM fieldcrypt.key_status;

--
-- At most 16 generations are kept (54000).
--
\o /dev/null
SELECT format('SELECT fieldcrypt.set_data_encryption_key(%L)', 'Limit-Key-' || i)
  FROM generate_series(1, 16 - (SELECT generations_kept FROM fieldcrypt.key_status)) AS i
\gexec
\o
SELECT generation, generations_kept FROM fieldcrypt.key_status;
SELECT fieldcrypt.set_data_encryption_key('Rules-Key-0017');
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.retrieve_data_encryption_key();

--
-- The key metadata cannot be modified (55000), nor imported over a key that
-- was set by an administrator.
--
SELECT md5(string_agg(g::text, ',' ORDER BY generation)) AS meta_before
  FROM fieldcrypt.key_generations g \gset
UPDATE fieldcrypt.key_generations SET iterations = iterations + 1;
\echo :LAST_ERROR_SQLSTATE
UPDATE fieldcrypt.key_generations SET key_source = 'generated' WHERE generation = 1;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM fieldcrypt.key_generations WHERE generation = 2;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM fieldcrypt.key_generations;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE fieldcrypt.key_generations;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO fieldcrypt.key_generations
  SELECT generation + 100, salt, iterations, kcv, key_source, set_at
    FROM fieldcrypt.key_generations WHERE generation = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT md5(string_agg(g::text, ',' ORDER BY generation)) = :'meta_before' AS meta_unchanged
  FROM fieldcrypt.key_generations g;

--
-- Once active, encryption cannot be turned off (55000).
--
DROP EXTENSION fieldcrypt;
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION fieldcrypt CASCADE;
\echo :LAST_ERROR_SQLSTATE
DROP SCHEMA fieldcrypt CASCADE;
\echo :LAST_ERROR_SQLSTATE
-- PostgreSQL itself refuses to drop an extension member
DROP TABLE fieldcrypt.key_generations;
\echo :LAST_ERROR_SQLSTATE
SELECT extname FROM pg_extension WHERE extname = 'fieldcrypt';
SELECT fieldcrypt.is_data_encryption_active();
SELECT fieldcrypt.retrieve_data_encryption_key();

-- DROP OWNED BY the superuser who created the extension is refused as well
\c :regress_db
CREATE DATABASE fc_key_owned TEMPLATE template0;
CREATE ROLE regress_fc_super SUPERUSER;
\c fc_key_owned
SET ROLE regress_fc_super;
CREATE EXTENSION fieldcrypt;
RESET ROLE;
DROP OWNED BY regress_fc_super;
\echo :LAST_ERROR_SQLSTATE
SELECT extname FROM pg_extension WHERE extname = 'fieldcrypt';
SELECT fieldcrypt.is_data_encryption_active();

\c :regress_db
DROP DATABASE fc_key_owned;
DROP ROLE regress_fc_super;
DROP DATABASE fc_key_rules;
DROP ROLE regress_fc_plain;
