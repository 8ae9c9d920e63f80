--
-- restrict: encrypted columns cannot be indexed, audited or customized; each
-- refusal names the table and the column (SQLSTATE 0A000).  Renaming and
-- dropping them stay allowed.  (pgaudit grants are tested in TAP, with
-- pgaudit preloaded.)
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_restrict;
RESET client_min_messages;
CREATE DATABASE fc_restrict TEMPLATE template0;
\c fc_restrict
CREATE EXTENSION fieldcrypt;
CREATE DOMAIN secret_text AS fieldcrypt.encrypted_text;
CREATE TABLE profile (id integer PRIMARY KEY, name text, incoming_pw fieldcrypt.encrypted_text);

-- indexing: CREATE INDEX on the column, in an expression, in a predicate, INCLUDE
CREATE INDEX ON profile (incoming_pw);
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX ON profile USING hash (incoming_pw);
CREATE INDEX ON profile ((incoming_pw IS NULL));
CREATE INDEX ON profile (id) WHERE incoming_pw IS NOT NULL;
CREATE UNIQUE INDEX ON profile (id) INCLUDE (incoming_pw);
CREATE INDEX CONCURRENTLY ON profile (incoming_pw);
-- UNIQUE, PRIMARY KEY, EXCLUDE in CREATE TABLE
CREATE TABLE t1 (id integer, pw fieldcrypt.encrypted_text PRIMARY KEY);
CREATE TABLE t2 (id integer, pw fieldcrypt.encrypted_text UNIQUE);
CREATE TABLE t3 (id integer, pw fieldcrypt.encrypted_text, UNIQUE (id, pw));
CREATE TABLE t4 (id integer, pw fieldcrypt.encrypted_text, EXCLUDE USING gist (pw WITH =));
CREATE TABLE t5 (id integer, pw secret_text UNIQUE);
-- ... and in ALTER TABLE
ALTER TABLE profile ADD CONSTRAINT u UNIQUE (incoming_pw);
ALTER TABLE profile ADD PRIMARY KEY (incoming_pw);
ALTER TABLE profile ADD EXCLUDE USING btree (incoming_pw WITH =);
ALTER TABLE profile ADD COLUMN outgoing_pw fieldcrypt.encrypted_text UNIQUE;
-- extended statistics
CREATE STATISTICS s1 ON id, incoming_pw FROM profile;
CREATE STATISTICS s2 ON (incoming_pw IS NULL) FROM profile;
-- a foreign key on it
CREATE TABLE t6 (id integer, pw fieldcrypt.encrypted_text REFERENCES profile (id));

-- customizing: type changes in either direction, defaults, generated
-- columns, CHECK constraints
ALTER TABLE profile ALTER COLUMN incoming_pw TYPE text;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE profile ALTER COLUMN name TYPE fieldcrypt.encrypted_text;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE profile ALTER COLUMN incoming_pw SET DEFAULT 'Default-Pa55';
ALTER TABLE profile ADD COLUMN outgoing_pw fieldcrypt.encrypted_text DEFAULT 'Default-Pa55';
CREATE TABLE t7 (id integer, pw fieldcrypt.encrypted_text DEFAULT 'Default-Pa55');
CREATE TABLE t8 (id integer, pw fieldcrypt.encrypted_text CHECK (pw IS NOT NULL));
CREATE TABLE t9 (id integer, pw fieldcrypt.encrypted_text, CHECK (pw IS NOT NULL OR id > 0));
ALTER TABLE profile ADD CONSTRAINT c CHECK (incoming_pw IS NOT NULL);
CREATE TABLE t10 (id integer, pw fieldcrypt.encrypted_text, g boolean GENERATED ALWAYS AS (pw IS NULL) STORED);
ALTER TABLE profile ADD COLUMN g boolean GENERATED ALWAYS AS (incoming_pw IS NULL) STORED;
-- whole-row references cover the encrypted column (checked after the
-- statement ran, on the resulting table)
ALTER TABLE profile ADD CONSTRAINT w CHECK (profile IS NOT NULL);
\echo :LAST_ERROR_SQLSTATE
-- ... also in CREATE INDEX CONCURRENTLY, refused before its first commit
CREATE INDEX CONCURRENTLY profile_wr ON profile (id) WHERE (profile IS NOT NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS leftover FROM pg_class WHERE relname = 'profile_wr';
CREATE INDEX CONCURRENTLY profile_wr2 ON profile (id) WHERE (ROW(profile.*) IS NOT NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS leftover FROM pg_class WHERE relname = 'profile_wr2';
-- a column that happens to share the table's name is just a column
CREATE TABLE tag (id integer, tag text, secret fieldcrypt.encrypted_text);
CREATE INDEX tag_lower ON tag ((lower(tag)));
REINDEX TABLE tag;
REINDEX SCHEMA public;
DROP TABLE tag;
-- domains over encrypted types cannot carry a default or a CHECK either
CREATE DOMAIN d_default AS fieldcrypt.encrypted_text DEFAULT 'Default-Pa55';
\echo :LAST_ERROR_SQLSTATE
CREATE DOMAIN d_check AS fieldcrypt.encrypted_text CHECK (VALUE IS NOT NULL);
\echo :LAST_ERROR_SQLSTATE
CREATE DOMAIN d_over AS secret_text;
ALTER DOMAIN d_over SET DEFAULT 'Domain-Default-Y';
\echo :LAST_ERROR_SQLSTATE
ALTER DOMAIN d_over ADD CHECK (VALUE IS NOT NULL);
\echo :LAST_ERROR_SQLSTATE
ALTER DOMAIN d_over DROP DEFAULT;
DROP DOMAIN d_over;
-- inherited columns are encrypted columns too
CREATE TABLE child (CHECK (incoming_pw IS NOT NULL)) INHERITS (profile);

-- nothing above left an object behind
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'profile'::regclass;
SELECT count(*) AS constraints FROM pg_constraint WHERE conrelid = 'profile'::regclass;
SELECT count(*) AS statistics FROM pg_statistic_ext;
SELECT count(*) AS tables FROM pg_class WHERE relname ~ '^t[0-9]+$' OR relname = 'child';
SELECT attname, atttypid::regtype FROM pg_attribute
 WHERE attrelid = 'profile'::regclass AND attnum > 0 ORDER BY attnum;

-- still allowed: other columns, DROP DEFAULT, rename, drop, adding a plain column
CREATE INDEX profile_name ON profile (name);
ALTER TABLE profile ALTER COLUMN incoming_pw DROP DEFAULT;
ALTER TABLE profile ADD COLUMN outgoing_pw fieldcrypt.encrypted_text;
ALTER TABLE profile RENAME COLUMN incoming_pw TO inbound_pw;
ALTER TABLE profile DROP COLUMN outgoing_pw;
CREATE TABLE plain_child () INHERITS (profile);
SELECT attname, atttypid::regtype FROM pg_attribute
 WHERE attrelid = 'profile'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;

\c :regress_db
DROP DATABASE fc_restrict;
