--
-- key_api: activation at CREATE EXTENSION, fieldcrypt.is_data_encryption_active,
-- set_data_encryption_key (activation, key change), retrieve_data_encryption_key,
-- the key_status view, and how key changes follow transactions.
--
-- Runs over TLS as a superuser, in databases of its own (the harness database
-- is left alone). Generated keys are random: only their shape is printed.
-- After each refused statement, \echo :LAST_ERROR_SQLSTATE shows its SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_key_api;
DROP DATABASE IF EXISTS fc_key_manual;
RESET client_min_messages;
CREATE DATABASE fc_key_api TEMPLATE template0;
\c fc_key_api
SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();

--
-- fieldcrypt.auto_activate = off: CREATE EXTENSION leaves encryption
-- inactive, and DROP EXTENSION is allowed.
--
SET fieldcrypt.auto_activate = off;
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.is_data_encryption_active();
SELECT active, key_loaded, generation, key_source, set_at, key_age,
       rotation_recommended, generations_kept, keyring
  FROM fieldcrypt.key_status;
SELECT count(*) FROM fieldcrypt.key_generations;
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION fieldcrypt;
SELECT count(*) FROM pg_extension WHERE extname = 'fieldcrypt';
RESET fieldcrypt.auto_activate;

--
-- By default CREATE EXTENSION activates encryption with a system-generated key.
--
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.is_data_encryption_active();
SELECT active, key_loaded, generation, key_source, rotation_recommended,
       generations_kept, keyring,
       set_at = (SELECT set_at FROM fieldcrypt.key_generations) AS set_at_matches,
       key_age >= interval '0' AND key_age < interval '1 hour' AS key_age_sane
  FROM fieldcrypt.key_status;
-- metadata only: salt, iteration count and key check value, never a key
SELECT generation, length(salt) AS salt_len, iterations, length(kcv) AS kcv_len, key_source
  FROM fieldcrypt.key_generations;
-- "Fc1." guarantees the four character classes, then 24 random base64url characters
SELECT fieldcrypt.retrieve_data_encryption_key() ~ '^Fc1\.[A-Za-z0-9_-]{24}$' AS generated_shape;
SELECT fieldcrypt.retrieve_data_encryption_key() AS generated_key \gset
-- two calls return the same key
SELECT fieldcrypt.retrieve_data_encryption_key() = :'generated_key' AS same_key;

--
-- Key change: a new generation becomes current, the older ones are kept.
--
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-A1');
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT active, key_loaded, generation, key_source, rotation_recommended,
       generations_kept, keyring
  FROM fieldcrypt.key_status;
SELECT generation, key_source, iterations FROM fieldcrypt.key_generations ORDER BY generation;
-- every generation has its own salt and key check value
SELECT count(DISTINCT salt) AS salts, count(DISTINCT kcv) AS kcvs FROM fieldcrypt.key_generations;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-B2');
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, key_source, rotation_recommended, generations_kept FROM fieldcrypt.key_status;
-- the key_status row describes the newest generation
SELECT s.set_at = g.set_at AS set_at_is_newest
  FROM fieldcrypt.key_status s JOIN fieldcrypt.key_generations g USING (generation);
-- fieldcrypt.kdf_iterations applies to new generations
SET fieldcrypt.kdf_iterations = 600001;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-B3');
RESET fieldcrypt.kdf_iterations;
SELECT generation, iterations FROM fieldcrypt.key_generations ORDER BY generation;
SET fieldcrypt.kdf_iterations = 599999;
\echo :LAST_ERROR_SQLSTATE

--
-- A key change is transactional.
--
-- ROLLBACK: the old key stays; inside the transaction, retrieve returns the pending key.
BEGIN;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-C3');
SELECT fieldcrypt.retrieve_data_encryption_key();
-- the new metadata row is visible to the transaction; shared memory changes at commit
SELECT generation, generations_kept FROM fieldcrypt.key_status;
ROLLBACK;
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, key_source, generations_kept FROM fieldcrypt.key_status;
SELECT count(*) FROM fieldcrypt.key_generations;

-- ROLLBACK TO SAVEPOINT takes the change with it; the transaction may then change the key.
BEGIN;
SAVEPOINT before_change;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-C3');
ROLLBACK TO SAVEPOINT before_change;
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation FROM fieldcrypt.key_status;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-D4');
COMMIT;
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, generations_kept FROM fieldcrypt.key_status;

-- RELEASE SAVEPOINT keeps the change for the outer transaction.
BEGIN;
SAVEPOINT s1;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-E5');
RELEASE SAVEPOINT s1;
COMMIT;
SELECT fieldcrypt.retrieve_data_encryption_key();

-- Rolling back a savepoint taken after the change does not undo it.
BEGIN;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-F6');
SAVEPOINT after_change;
SELECT 1/0;
ROLLBACK TO SAVEPOINT after_change;
SELECT fieldcrypt.retrieve_data_encryption_key();
COMMIT;
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, generations_kept FROM fieldcrypt.key_status;

-- A transaction that fails after the change (here at COMMIT, on a deferred
-- constraint) leaves the old key.
CREATE TEMP TABLE deferred_check (id int UNIQUE DEFERRABLE INITIALLY DEFERRED);
BEGIN;
INSERT INTO deferred_check VALUES (1), (1);
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-G7');
COMMIT;
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, generations_kept FROM fieldcrypt.key_status;

-- PREPARE TRANSACTION after a key change seals it until COMMIT PREPARED (test/t/204).
-- The pg_regress cluster has max_prepared_transactions = 0: PREPARE fails as it does
-- without fieldcrypt (55000) and takes the key change with it.
BEGIN;
SELECT fieldcrypt.set_data_encryption_key('Regress-Key-G7');
PREPARE TRANSACTION 'fc_key_api_prepared';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'fc_key_api_prepared';
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, generations_kept FROM fieldcrypt.key_status;

--
-- Activation by the administrator in a database where encryption is not active.
-- Measure the keyring first: DROP DATABASE must remove that database's keys.
--
SELECT size AS ring_size_before FROM pg_stat_file('pg_fieldcrypt/keyring') \gset
\c :regress_db
CREATE DATABASE fc_key_manual TEMPLATE template0;
\c fc_key_manual
SET fieldcrypt.auto_activate = off;
CREATE EXTENSION fieldcrypt;
RESET fieldcrypt.auto_activate;
SELECT fieldcrypt.is_data_encryption_active();
SELECT fieldcrypt.set_data_encryption_key('Regress-Manual-1');
SELECT fieldcrypt.is_data_encryption_active();
SELECT active, key_loaded, generation, key_source, rotation_recommended,
       generations_kept, keyring
  FROM fieldcrypt.key_status;
SELECT generation, key_source FROM fieldcrypt.key_generations;
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT size > :ring_size_before AS ring_grew FROM pg_stat_file('pg_fieldcrypt/keyring');
-- once active, encryption cannot be turned off
DROP EXTENSION fieldcrypt;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_extension WHERE extname = 'fieldcrypt';
SELECT fieldcrypt.retrieve_data_encryption_key();
\c :regress_db
DROP DATABASE fc_key_manual;
SELECT size = :ring_size_before AS ring_back_to_before FROM pg_stat_file('pg_fieldcrypt/keyring');

-- the other database kept its key through all of this
\c fc_key_api
SELECT fieldcrypt.retrieve_data_encryption_key();
\c :regress_db
DROP DATABASE fc_key_api;
