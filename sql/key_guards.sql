--
-- key_guards: the guards on the key metadata and on the extension hold where
-- an ordinary trigger or a lookup by name would not: under
-- session_replication_role = replica (the triggers are ENABLE ALWAYS), and
-- after the extension's schema or its metadata table was renamed (the drop
-- guard finds the table through pg_extension.extconfig).
--
-- Runs in a database of its own, over TLS as a superuser.
-- After each refused statement, \echo :LAST_ERROR_SQLSTATE shows its SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_key_guards;
DROP DATABASE IF EXISTS fc_key_guards_copy;
RESET client_min_messages;
CREATE DATABASE fc_key_guards TEMPLATE template0;
\c fc_key_guards
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.set_data_encryption_key('Guards-Key-0001');
SELECT generation, key_source, generations_kept FROM fieldcrypt.key_status;
SELECT md5(string_agg(g::text, ',' ORDER BY generation)) AS meta_before
  FROM fieldcrypt.key_generations g \gset

--
-- session_replication_role = replica: ordinary triggers do not fire, the
-- metadata guards do (55000).
--
CREATE TABLE replica_control (id int);
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
  AS $$ BEGIN RAISE EXCEPTION 'ordinary trigger fired'; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON replica_control
  FOR EACH ROW EXECUTE FUNCTION refuse();
INSERT INTO replica_control VALUES (1);
\echo :LAST_ERROR_SQLSTATE
SET session_replication_role = replica;
SHOW session_replication_role;
-- the ordinary trigger is skipped now: replica mode is in effect
INSERT INTO replica_control VALUES (2);
SELECT id FROM replica_control;
DELETE FROM fieldcrypt.key_generations;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM fieldcrypt.key_generations WHERE generation = 1;
\echo :LAST_ERROR_SQLSTATE
UPDATE fieldcrypt.key_generations SET iterations = iterations + 1;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE fieldcrypt.key_generations;
\echo :LAST_ERROR_SQLSTATE
-- an insert from outside is an import, refused over an administrator's key
INSERT INTO fieldcrypt.key_generations
  SELECT generation + 100, salt, iterations, kcv, key_source, set_at
    FROM fieldcrypt.key_generations WHERE generation = 1;
\echo :LAST_ERROR_SQLSTATE
RESET session_replication_role;
SELECT md5(string_agg(g::text, ',' ORDER BY generation)) = :'meta_before' AS meta_unchanged
  FROM fieldcrypt.key_generations g;
SELECT generation, key_source, generations_kept FROM fieldcrypt.key_status;
SELECT fieldcrypt.retrieve_data_encryption_key();

--
-- The extension's schema renamed: it still cannot be dropped (55000).
--
ALTER SCHEMA fieldcrypt RENAME TO fc_renamed;
DROP EXTENSION fieldcrypt;
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION fieldcrypt CASCADE;
\echo :LAST_ERROR_SQLSTATE
DROP SCHEMA fc_renamed CASCADE;
\echo :LAST_ERROR_SQLSTATE
-- the metadata guard goes with the table
DELETE FROM fc_renamed.key_generations;
\echo :LAST_ERROR_SQLSTATE
SELECT extname, extnamespace::regnamespace FROM pg_extension WHERE extname = 'fieldcrypt';
SELECT fc_renamed.is_data_encryption_active();
SELECT fc_renamed.retrieve_data_encryption_key();
ALTER SCHEMA fc_renamed RENAME TO fieldcrypt;

--
-- The metadata table renamed: the same (55000).
--
ALTER TABLE fieldcrypt.key_generations RENAME TO kg_renamed;
DROP EXTENSION fieldcrypt;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE fieldcrypt.kg_renamed RENAME TO key_generations;

-- everything as before
SELECT extname, extnamespace::regnamespace FROM pg_extension WHERE extname = 'fieldcrypt';
SELECT md5(string_agg(g::text, ',' ORDER BY generation)) = :'meta_before' AS meta_unchanged
  FROM fieldcrypt.key_generations g;
SELECT active, key_loaded, generation, key_source, generations_kept FROM fieldcrypt.key_status;
SELECT fieldcrypt.retrieve_data_encryption_key();

-- while renamed, the key API keeps working (it finds the table through
-- pg_extension.extconfig)
ALTER SCHEMA fieldcrypt RENAME TO fc_renamed;
SELECT generation, generations_kept FROM fc_renamed.key_status;
SELECT fc_renamed.set_data_encryption_key('Guards-Renamed-Key-3!');
SELECT generation, generations_kept FROM fc_renamed.key_status;
ALTER SCHEMA fc_renamed RENAME TO fieldcrypt;

--
-- A copy waiting for its key (active, key not loaded): renaming the schema
-- does not open the way to DROP EXTENSION either, nor does a decoy table.
--
\c :regress_db
CREATE DATABASE fc_key_guards_copy TEMPLATE fc_key_guards;
\c fc_key_guards_copy
SELECT active, key_loaded FROM fieldcrypt.key_status;
ALTER SCHEMA fieldcrypt RENAME TO fc_renamed;
DROP EXTENSION fieldcrypt;
\echo :LAST_ERROR_SQLSTATE
CREATE SCHEMA fieldcrypt;
CREATE TABLE fieldcrypt.key_generations (LIKE fc_renamed.key_generations);
DROP EXTENSION fieldcrypt;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_extension WHERE extname = 'fieldcrypt';

\c :regress_db
DROP DATABASE fc_key_guards;
DROP DATABASE fc_key_guards_copy;
