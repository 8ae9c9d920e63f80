--
-- tde_guard: fieldcrypt.tde_plain_indexes (allow | warn | refuse, default warn) at the
-- creation of every index that keeps plaintext values of an encrypted_heap table -- B-tree,
-- GiST, GIN, BRIN, SP-GiST, hash with a plain operator class; by CREATE INDEX, PRIMARY KEY
-- and UNIQUE constraints of CREATE and ALTER TABLE, partitions, CREATE TABLE LIKE --, never
-- for keyed hash indexes, heap tables or rebuilds (REINDEX CONCURRENTLY); who may change
-- it; the view fieldcrypt.tde_exposure and who may read it; the WARNING when
-- toast_tuple_target is set above what encrypted_heap honours; and the documented facts
-- behind the README's limitations (row trailer, attmissingval, defaults).
--
-- The test cluster sets tde_plain_indexes = allow (test/run-tests.sh), so that other topics
-- stay the same in the default_table_access_method = encrypted_heap pass: each case here
-- sets the value it tests.  Every table says USING.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tde_guard;
DROP ROLE IF EXISTS regress_fc_auditor;
RESET client_min_messages;
CREATE DATABASE fc_tde_guard TEMPLATE template0;
\c fc_tde_guard
CREATE EXTENSION fieldcrypt;
CREATE EXTENSION btree_gist;

-- the default is warn; only superusers change it
SELECT boot_val, context FROM pg_settings WHERE name = 'fieldcrypt.tde_plain_indexes';
CREATE ROLE regress_fc_auditor LOGIN;

SET fieldcrypt.tde_plain_indexes = warn;
CREATE TABLE g (id int PRIMARY KEY, email text UNIQUE, doc jsonb, pos point, rng int4range,
                at timestamptz) USING encrypted_heap;
CREATE INDEX g_email_btree ON g (email);
CREATE INDEX g_lower ON g (lower(email)) WHERE id > 0;
CREATE INDEX g_doc ON g USING gin (doc);
CREATE INDEX g_pos ON g USING gist (pos);
CREATE INDEX g_rng ON g USING spgist (rng);
CREATE INDEX g_at ON g USING brin (at);
CREATE INDEX g_plain_hash ON g USING hash (email);
CREATE INDEX g_keyed ON g USING hash (email fieldcrypt.text_keyed_ops);
CREATE INDEX CONCURRENTLY g_email_conc ON g (email);
ALTER TABLE g ADD CONSTRAINT g_excl EXCLUDE USING gist (id WITH =);
-- a rebuild adds no exposure: no warning
REINDEX INDEX CONCURRENTLY g_email_btree;
REINDEX TABLE g;
-- heap tables and their indexes: nothing, whatever the setting
CREATE TABLE h (id int PRIMARY KEY, email text) USING heap;
CREATE INDEX ON h (email);

-- refuse: the same statements fail, the keyed hash index is accepted
SET fieldcrypt.tde_plain_indexes = refuse;
CREATE TABLE r (id int PRIMARY KEY, email text) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE r (id int, email text) USING encrypted_heap;
ALTER TABLE r ADD UNIQUE (id);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE r ADD PRIMARY KEY (id);
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX ON r USING hash (email);
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX r_at ON r USING brin (id);
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX r_email ON r USING hash (email fieldcrypt.text_keyed_ops);
CREATE INDEX r_id ON r USING hash (id fieldcrypt.int4_keyed_ops);
ALTER TABLE r ADD CONSTRAINT r_email_excl EXCLUDE USING hash (email fieldcrypt.text_keyed_ops WITH =);
CREATE TABLE r_like (LIKE g INCLUDING INDEXES) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE r_like (LIKE r INCLUDING INDEXES) USING encrypted_heap;
-- partitions: each encrypted_heap partition's index is checked
CREATE TABLE p (id int, email text) PARTITION BY LIST (id);
CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1) USING encrypted_heap;
CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2) USING heap;
CREATE INDEX ON p (email);
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX ON p USING hash (email fieldcrypt.text_keyed_ops);
DROP TABLE p1;
CREATE INDEX p_email ON p (email);
CREATE TABLE p3 PARTITION OF p FOR VALUES IN (3) USING encrypted_heap;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE h2 (id int PRIMARY KEY) USING heap;
-- allow: nothing said
SET fieldcrypt.tde_plain_indexes = allow;
CREATE INDEX r_id_btree ON r (id);
CREATE TABLE p3 PARTITION OF p FOR VALUES IN (3) USING encrypted_heap;

-- a role that is not superuser cannot change the setting
SET ROLE regress_fc_auditor;
SET fieldcrypt.tde_plain_indexes = allow;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- the view: every index of every encrypted_heap table and what it exposes
CREATE TABLE bare (id int) USING encrypted_heap;
SELECT table_name, index_name, access_method, operator_classes, exposes, stores_plaintext,
       planner_statistics
  FROM fieldcrypt.tde_exposure ORDER BY table_name::text, index_name::text COLLATE "C";
-- planner statistics: encrypted while fieldcrypt.analyze_values is off; pg_statistic when on
INSERT INTO bare SELECT generate_series(1, 100);
ANALYZE bare;
SELECT planner_statistics FROM fieldcrypt.tde_exposure WHERE table_name = 'bare'::regclass;
SET fieldcrypt.analyze_values = on;
SELECT planner_statistics FROM fieldcrypt.tde_exposure WHERE table_name = 'bare'::regclass;
ANALYZE bare;
RESET fieldcrypt.analyze_values;
SELECT planner_statistics FROM fieldcrypt.tde_exposure WHERE table_name = 'bare'::regclass;
-- the next ANALYZE with it off removes the plaintext statistics
ANALYZE bare;
SELECT planner_statistics FROM fieldcrypt.tde_exposure WHERE table_name = 'bare'::regclass;
-- everyone may read it (it shows only what pg_indexes shows to everyone); nobody writes it
SET ROLE regress_fc_auditor;
SELECT count(*) > 0 AS auditor_reads, bool_or(stores_plaintext) AS some_plaintext
  FROM fieldcrypt.tde_exposure;
DELETE FROM fieldcrypt.tde_exposure;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT grantee, privilege_type FROM information_schema.role_table_grants
 WHERE table_schema = 'fieldcrypt' AND table_name = 'tde_exposure' AND grantee = 'PUBLIC';
SELECT has_table_privilege('regress_fc_auditor', 'fieldcrypt.tde_exposure', 'SELECT') AS can_select,
       has_table_privilege('regress_fc_auditor', 'fieldcrypt.tde_exposure', 'INSERT, UPDATE, DELETE, TRUNCATE') AS can_write;

-- toast_tuple_target above TOAST_TUPLE_THRESHOLD is capped on encrypted_heap: WARNING
CREATE TABLE tt (id int, body text) USING encrypted_heap WITH (toast_tuple_target = 4000);
ALTER TABLE tt SET (toast_tuple_target = 2500);
ALTER TABLE tt SET (toast_tuple_target = 2032);
ALTER TABLE tt SET (fillfactor = 90);
ALTER TABLE tt SET (toast_tuple_target = 128);
CREATE TABLE tt_heap (id int, body text) USING heap WITH (toast_tuple_target = 4000);
ALTER TABLE tt_heap SET (toast_tuple_target = 3000);
ALTER TABLE tt_heap SET (toast_tuple_target = 4000);
-- and the fact behind it: a 3000-byte row stays inline in heap, not in encrypted_heap
ALTER TABLE tt SET (toast_tuple_target = 4000);
ALTER TABLE tt ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE tt_heap ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO tt VALUES (1, repeat('x', 3000));
INSERT INTO tt_heap VALUES (1, repeat('x', 3000));
SELECT relname, pg_relation_size(reltoastrelid) > 0 AS moved_out_of_line
  FROM pg_class WHERE relname IN ('tt', 'tt_heap') ORDER BY 1;

-- the row trailer: a row that fits heap by less than 35 bytes and cannot move a value out
-- of line fails on encrypted_heap with 54000
CREATE TABLE wide (b bytea) USING encrypted_heap;
CREATE TABLE wide_heap (b bytea) USING heap;
ALTER TABLE wide ALTER COLUMN b SET STORAGE PLAIN;
ALTER TABLE wide_heap ALTER COLUMN b SET STORAGE PLAIN;
INSERT INTO wide_heap SELECT decode(repeat('ab', 8122), 'hex');
INSERT INTO wide SELECT decode(repeat('ab', 8122), 'hex');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO wide SELECT decode(repeat('ab', 8122 - 35), 'hex');
SELECT octet_length(b) FROM wide;

-- what the catalog keeps in plaintext: attmissingval of a column added with a constant
-- default, and the default itself
CREATE TABLE added (id int) USING encrypted_heap;
INSERT INTO added VALUES (1);
ALTER TABLE added ADD COLUMN note text DEFAULT 'kept in pg_attribute';
SELECT attmissingval FROM pg_attribute WHERE attrelid = 'added'::regclass AND attname = 'note';
SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'added'::regclass;

\c :regress_db
DROP DATABASE fc_tde_guard;
DROP ROLE regress_fc_auditor;
