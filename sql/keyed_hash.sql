--
-- keyed_hash: hash indexes with the keyed operator classes fieldcrypt.<type>_keyed_ops
-- (text, also for varchar; bpchar; bytea; int4; int8; uuid).  They give the same answers
-- as a heap twin with plain B-tree indexes (equality, = ANY, prepared $1, joins; after
-- UPDATE, DELETE, VACUUM, REINDEX [CONCURRENTLY], VACUUM FULL, rotate_tde_key), the planner
-- uses them with no change to the query, EXCLUDE ... WITH = enforces uniqueness, every
-- path that creates an index records the TDE key generation it is keyed with (and a
-- rebuild moves it to the current one), key destruction waits for them, and each error
-- case is asserted (SQLSTATE with \echo :LAST_ERROR_SQLSTATE).
--
-- Runs in a database of its own, over TLS as a superuser.  Every table says USING:
-- this file also runs with default_table_access_method = encrypted_heap.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_keyed;
RESET client_min_messages;
CREATE DATABASE fc_keyed TEMPLATE template0;
\c fc_keyed
CREATE EXTENSION fieldcrypt;
-- the plaintext-index guard is tested in tde_guard; here the twins' B-trees are on heap
SET fieldcrypt.tde_plain_indexes = refuse;

CREATE TABLE cust (id int, email text, phone varchar(20), code char(8), raw bytea,
                   big bigint, u uuid) USING encrypted_heap WITH (autovacuum_enabled = off);
CREATE TABLE cust_ctl (id int, email text, phone varchar(20), code char(8), raw bytea,
                       big bigint, u uuid) USING heap WITH (autovacuum_enabled = off);
INSERT INTO cust
SELECT g, 'user' || g || '@contoso.example', '+1-555-' || lpad(g::text, 4, '0'),
       'c' || (g % 50), decode(lpad(to_hex(g), 6, '0'), 'hex'), g::bigint * 1000000007,
       md5(g::text)::uuid
  FROM generate_series(1, 2000) g;
INSERT INTO cust (id) VALUES (0);
INSERT INTO cust_ctl SELECT * FROM cust;

CREATE INDEX cust_email ON cust USING hash (email fieldcrypt.text_keyed_ops);
CREATE INDEX cust_phone ON cust USING hash (phone fieldcrypt.text_keyed_ops);
CREATE INDEX cust_code ON cust USING hash (code fieldcrypt.bpchar_keyed_ops);
CREATE INDEX cust_raw ON cust USING hash (raw fieldcrypt.bytea_keyed_ops);
CREATE INDEX cust_id ON cust USING hash (id fieldcrypt.int4_keyed_ops);
CREATE INDEX cust_big ON cust USING hash (big fieldcrypt.int8_keyed_ops);
CREATE INDEX CONCURRENTLY cust_u ON cust USING hash (u fieldcrypt.uuid_keyed_ops);
CREATE INDEX ON cust_ctl (email);
CREATE INDEX ON cust_ctl (phone);
CREATE INDEX ON cust_ctl (code);
CREATE INDEX ON cust_ctl (raw);
CREATE INDEX ON cust_ctl (id);
CREATE INDEX ON cust_ctl (big);
CREATE INDEX ON cust_ctl (u);

-- the generation each keyed index column is keyed with (its opclass option)
CREATE VIEW keyed AS
SELECT c.relname AS index, a.attoptions
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_opclass o ON o.oid = i.indclass[0]
  JOIN pg_namespace n ON n.oid = o.opcnamespace AND n.nspname = 'fieldcrypt'
  JOIN pg_attribute a ON a.attrelid = i.indexrelid AND a.attnum = 1
 WHERE o.opcname LIKE '%keyed_ops';
SELECT * FROM keyed ORDER BY 1;
SELECT pg_get_indexdef('cust_email'::regclass);

-- q runs with {T} = cust and {T} = cust_ctl: same rows?
CREATE FUNCTION same(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE a text; b text;
BEGIN
    EXECUTE format('SELECT count(*) || '':'' || md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) FROM (%s) x',
                   replace(q, '{T}', 'cust')) INTO a;
    EXECUTE format('SELECT count(*) || '':'' || md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) FROM (%s) x',
                   replace(q, '{T}', 'cust_ctl')) INTO b;
    RETURN CASE WHEN a = b THEN 'same, ' || split_part(a, ':', 1) || ' rows' ELSE 'DIFFERENT: ' || a || ' / ' || b END;
END $$;
-- the index scans of q on cust (plan without seq scans; autovacuum is off on cust, so an
-- autoanalyze cannot turn a bitmap scan into an index scan halfway)
CREATE FUNCTION scans(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE l text;
BEGIN
    FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || replace(q, '{T}', 'cust') LOOP
        IF l ~ 'Scan' THEN RETURN NEXT trim(l); END IF;
    END LOOP;
END $$;

SET enable_seqscan = off;
SELECT scans('SELECT * FROM {T} WHERE email = ''user42@contoso.example''');
SELECT scans('SELECT * FROM {T} WHERE phone = ''+1-555-0042''');
SELECT scans('SELECT * FROM {T} WHERE code = ''c7''');
SELECT scans('SELECT * FROM {T} WHERE raw = ''\x00002a''');
SELECT scans('SELECT * FROM {T} WHERE id = 42');
SELECT scans('SELECT * FROM {T} WHERE big = 42000000294::bigint');
SELECT scans('SELECT * FROM {T} WHERE u = md5(''42'')::uuid');
SELECT scans('SELECT * FROM {T} WHERE email = ANY (ARRAY[''user1@contoso.example'', ''user2@contoso.example''])');
SET enable_bitmapscan = off;
SELECT scans('SELECT * FROM {T} WHERE email = ''user42@contoso.example''');
RESET enable_bitmapscan;

CREATE FUNCTION check_all() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT 'email: ' || same('SELECT * FROM {T} WHERE email = ''user42@contoso.example''')
    UNION ALL SELECT 'email miss: ' || same('SELECT * FROM {T} WHERE email = ''nobody@contoso.example''')
    UNION ALL SELECT 'varchar: ' || same('SELECT * FROM {T} WHERE phone = ''+1-555-0042''')
    UNION ALL SELECT 'bpchar: ' || same('SELECT * FROM {T} WHERE code = ''c7''')
    UNION ALL SELECT 'bpchar trailing spaces: ' || same('SELECT * FROM {T} WHERE code = ''c7     ''::char(8)')
    UNION ALL SELECT 'bytea: ' || same('SELECT * FROM {T} WHERE raw = ''\x00002a''')
    UNION ALL SELECT 'int4: ' || same('SELECT * FROM {T} WHERE id = 42')
    UNION ALL SELECT 'int8: ' || same('SELECT * FROM {T} WHERE big = 42000000294::bigint')
    UNION ALL SELECT 'uuid: ' || same('SELECT * FROM {T} WHERE u = md5(''42'')::uuid')
    UNION ALL SELECT '= ANY: ' || same('SELECT * FROM {T} WHERE email = ANY (ARRAY[''user1@contoso.example'', ''user2000@contoso.example'', ''x''])')
    UNION ALL SELECT 'int4 = ANY: ' || same('SELECT * FROM {T} WHERE id = ANY (ARRAY[3, 5, 7, 4001])')
    UNION ALL SELECT 'IN list: ' || same('SELECT * FROM {T} WHERE code IN (''c1'', ''c2'')')
    UNION ALL SELECT 'join: ' || same('SELECT p.n, t.id FROM (VALUES (''user5@contoso.example''), (''user6@contoso.example''), (''no'')) p(n) JOIN {T} t ON t.email = p.n')
    UNION ALL SELECT 'semi join: ' || same('SELECT t.id FROM {T} t WHERE t.id IN (SELECT g * 7 FROM generate_series(1, 50) g)')
$$;
SELECT check_all();
-- the joins use the keyed index
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SELECT scans('SELECT p.n, t.id FROM (VALUES (''user5@contoso.example''), (''user6@contoso.example'')) p(n) JOIN {T} t ON t.email = p.n');
RESET enable_hashjoin;
RESET enable_mergejoin;
-- an ordinary parameterised query: no change needed
PREPARE by_email(text) AS SELECT id FROM cust WHERE email = $1;
EXECUTE by_email('user77@contoso.example');
SELECT scans('EXECUTE by_email(''user77@contoso.example'')');
-- int8 column compared with an int4 constant: the cross-type operator is not in the keyed
-- family (PostgreSQL would hash the int4 side without the index's key), so no index, but
-- the answer is right; bigint constants and $1 of the column's type use the index
SELECT scans('SELECT * FROM {T} WHERE big = 42000000294');
SELECT 'int8 = int4 constant: ' || same('SELECT * FROM {T} WHERE big = 1000000007');

-- after UPDATE, DELETE, VACUUM, REINDEX, VACUUM FULL
UPDATE cust SET email = 'moved' || id || '@contoso.example' WHERE id % 10 = 3;
UPDATE cust_ctl SET email = 'moved' || id || '@contoso.example' WHERE id % 10 = 3;
DELETE FROM cust WHERE id % 10 = 4;
DELETE FROM cust_ctl WHERE id % 10 = 4;
SELECT 'after update: ' || same('SELECT * FROM {T} WHERE email IN (''moved13@contoso.example'', ''user13@contoso.example'', ''user14@contoso.example'', ''user15@contoso.example'')');
VACUUM cust;
VACUUM cust_ctl;
SELECT check_all();
REINDEX TABLE cust;
SELECT * FROM keyed ORDER BY 1;
SELECT check_all();
VACUUM FULL cust;
SELECT check_all();
RESET enable_seqscan;

-- uniqueness through EXCLUDE, in CREATE TABLE and in ALTER TABLE
CREATE TABLE acct (email text, EXCLUDE USING hash (email fieldcrypt.text_keyed_ops WITH =))
    USING encrypted_heap;
INSERT INTO acct VALUES ('a@contoso.example'), ('b@contoso.example');
INSERT INTO acct VALUES ('a@contoso.example');
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET email = 'a@contoso.example' WHERE email = 'b@contoso.example';
\echo :LAST_ERROR_SQLSTATE
INSERT INTO acct VALUES ('c@contoso.example'), (NULL), (NULL);
SELECT count(*) FROM acct;
CREATE TABLE acct2 (id int, email text) USING encrypted_heap;
INSERT INTO acct2 VALUES (1, 'x'), (2, 'x');
ALTER TABLE acct2 ADD CONSTRAINT acct2_email_excl EXCLUDE USING hash (email fieldcrypt.text_keyed_ops WITH =);
\echo :LAST_ERROR_SQLSTATE
DELETE FROM acct2 WHERE id = 2;
ALTER TABLE acct2 ADD CONSTRAINT acct2_email_excl EXCLUDE USING hash (email fieldcrypt.text_keyed_ops WITH =);
INSERT INTO acct2 VALUES (3, 'x');
\echo :LAST_ERROR_SQLSTATE

-- every path that creates an index records the generation
CREATE TABLE part (id int, email text) PARTITION BY RANGE (id);
CREATE TABLE part1 PARTITION OF part FOR VALUES FROM (0) TO (100) USING encrypted_heap;
CREATE INDEX part_email ON part USING hash (email fieldcrypt.text_keyed_ops);
CREATE TABLE part2 PARTITION OF part FOR VALUES FROM (100) TO (200) USING encrypted_heap;
CREATE TABLE part3 (id int, email text) USING encrypted_heap;
ALTER TABLE part ATTACH PARTITION part3 FOR VALUES FROM (200) TO (300);
INSERT INTO part SELECT g, 'p' || g FROM generate_series(0, 299) g;
CREATE TABLE cust_like (LIKE cust INCLUDING INDEXES) USING encrypted_heap;
CREATE TABLE alt (id int, email varchar(40)) USING encrypted_heap;
CREATE INDEX alt_email ON alt USING hash (email fieldcrypt.text_keyed_ops);
ALTER TABLE alt ALTER COLUMN email TYPE text;
CREATE TABLE on_heap (email text) USING heap;
CREATE INDEX on_heap_email ON on_heap USING hash (email fieldcrypt.text_keyed_ops);
SELECT * FROM keyed WHERE index NOT LIKE 'cust\_%' ORDER BY 1;
SELECT pg_get_indexdef('part_email'::regclass) AS partitioned_index_has_no_generation;
SELECT count(*) AS like_copies_keyed_gen1 FROM keyed
 WHERE index LIKE 'cust\_like%' AND attoptions = '{generation=1}';
SET enable_seqscan = off;
SELECT id FROM part WHERE email = 'p250';
RESET enable_seqscan;

-- a key change: indexes keep reading with their generation until rebuilt; a plain REINDEX
-- keeps it, REINDEX CONCURRENTLY moves the index to the current generation; generations a
-- keyed index uses are not destroyed
-- statistics that ANALYZE stored under the old generation do not keep it alive: after
-- one's own tables are re-encrypted, drop_unused_tde_keys rewrites fieldcrypt.tde_statistic
CREATE TABLE stats_src (a int) USING encrypted_heap;
INSERT INTO stats_src SELECT i % 7 FROM generate_series(1, 300) i;
ANALYZE stats_src;
SELECT fieldcrypt.rotate_tde_key();
INSERT INTO cust VALUES (5000, 'new@contoso.example');
INSERT INTO cust_ctl VALUES (5000, 'new@contoso.example');
SET enable_seqscan = off;
SELECT check_all();
SELECT 'new row: ' || same('SELECT * FROM {T} WHERE email = ''new@contoso.example''');
REINDEX INDEX cust_email;
SELECT * FROM keyed WHERE index = 'cust_email';
REINDEX INDEX CONCURRENTLY cust_email;
SELECT * FROM keyed WHERE index = 'cust_email';
SELECT check_all();
SELECT fieldcrypt.reencrypt_table('cust');
SELECT fieldcrypt.reencrypt_table('acct');
SELECT fieldcrypt.reencrypt_table('acct2');
SELECT fieldcrypt.reencrypt_table('part1');
SELECT fieldcrypt.reencrypt_table('part2');
SELECT fieldcrypt.reencrypt_table('part3');
SELECT fieldcrypt.reencrypt_table('cust_like');
SELECT fieldcrypt.reencrypt_table('alt');
SELECT fieldcrypt.reencrypt_table('stats_src');
-- as a member of fieldcrypt_admin who is not a superuser (and does not own tde_statistic)
CREATE ROLE kh_admin;
GRANT fieldcrypt_admin TO kh_admin;
SET ROLE kh_admin;
SELECT fieldcrypt.drop_unused_tde_keys() AS dropped_while_keyed_indexes_use_it;
RESET ROLE;
SELECT generation FROM fieldcrypt.tde_key_status ORDER BY 1;
REINDEX TABLE CONCURRENTLY cust;
REINDEX TABLE CONCURRENTLY part1;
REINDEX TABLE CONCURRENTLY part2;
REINDEX TABLE CONCURRENTLY part3;
REINDEX TABLE CONCURRENTLY cust_like;
REINDEX TABLE CONCURRENTLY alt;
REINDEX TABLE CONCURRENTLY on_heap;
-- exclusion constraints cannot be rebuilt concurrently (PostgreSQL's rule)
REINDEX INDEX CONCURRENTLY acct_email_excl;
\echo :LAST_ERROR_SQLSTATE
DROP TABLE acct, acct2;
SELECT DISTINCT attoptions FROM keyed;
SET ROLE kh_admin;
SELECT fieldcrypt.drop_unused_tde_keys() AS dropped;
RESET ROLE;
SELECT generation FROM fieldcrypt.tde_key_status ORDER BY 1;
SELECT count(*) AS stats_src_statistics_kept FROM fieldcrypt.pg_stats WHERE tablename = 'stats_src';
SELECT check_all();
-- a new partition's index takes the current generation (the partitioned index has none)
CREATE TABLE part4 PARTITION OF part FOR VALUES FROM (300) TO (400) USING encrypted_heap;
INSERT INTO part VALUES (350, 'p350');
SELECT * FROM keyed WHERE index LIKE 'part4%';
SELECT id FROM part WHERE email IN ('p50', 'p150', 'p250', 'p350') ORDER BY 1;
RESET enable_seqscan;

-- a generation this database does not hold (a dump of another database, or destroyed):
-- an index built from the rows takes the current one, and says so
CREATE INDEX cust_email_g1 ON cust USING hash (email fieldcrypt.text_keyed_ops (generation = 1));
SELECT * FROM keyed WHERE index = 'cust_email_g1';
DROP INDEX cust_email_g1;
-- errors
-- an existing index whose generation is not loaded (here its catalog row is edited, as a
-- copy of the database without its keys would have it) fails instead of answering
CREATE INDEX cust_email_lost ON cust USING hash (email fieldcrypt.text_keyed_ops);
DROP INDEX cust_email;
UPDATE pg_attribute SET attoptions = '{generation=9}' WHERE attrelid = 'cust_email_lost'::regclass;
SET enable_seqscan = off;
SELECT id FROM cust WHERE email = 'user42@contoso.example';
\echo :LAST_ERROR_SQLSTATE
INSERT INTO cust (id, email) VALUES (6000, 'another@contoso.example');
\echo :LAST_ERROR_SQLSTATE
-- the way out: a rebuild keys it with the current generation
REINDEX INDEX CONCURRENTLY cust_email_lost;
SELECT * FROM keyed WHERE index = 'cust_email_lost';
SELECT id FROM cust WHERE email = 'user42@contoso.example';
SELECT scans('SELECT * FROM {T} WHERE email = ''user42@contoso.example''');
RESET enable_seqscan;
CREATE INDEX ON cust USING hash (email fieldcrypt.text_keyed_ops (generation = 70000));
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX ON cust USING hash (email fieldcrypt.text_keyed_ops (colour = 1));
\echo :LAST_ERROR_SQLSTATE
-- nondeterministic collations compare different bytes as equal: refused
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE nd (t text COLLATE ci) USING encrypted_heap;
CREATE INDEX ON nd USING hash (t fieldcrypt.text_keyed_ops);
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX ON nd USING hash ((t COLLATE "C") fieldcrypt.text_keyed_ops);
-- the wrong type for the operator class
CREATE INDEX ON cust USING hash (id fieldcrypt.int8_keyed_ops);
\echo :LAST_ERROR_SQLSTATE
-- outside an index, the functions are the types' own hashes (what hash joins may use)
SELECT fieldcrypt.keyed_hash('abc'::text) = hashtext('abc') AS text_plain,
       fieldcrypt.keyed_hash('ab '::bpchar) = hashbpchar('ab') AS bpchar_plain,
       fieldcrypt.keyed_hash('\x616263'::bytea) = hashtext('abc') AS bytea_plain,
       fieldcrypt.keyed_hash(7) = hashint4(7) AS int4_plain,
       fieldcrypt.keyed_hash(7::bigint) = hashint8(7) AS int8_plain,
       fieldcrypt.keyed_hash(md5('1')::uuid) = uuid_hash(md5('1')::uuid) AS uuid_plain;
-- a hash join and a hash aggregate on the same columns give heap's answers
SET enable_nestloop = off;
SET enable_mergejoin = off;
SELECT 'hash join: ' || same('SELECT a.id, b.id FROM {T} a JOIN {T} b ON a.email = b.email');
SELECT 'hash aggregate: ' || same('SELECT code, count(*) FROM {T} GROUP BY code');
RESET enable_nestloop;
RESET enable_mergejoin;

\c :regress_db
DROP DATABASE fc_keyed;
DROP ROLE kh_admin;
