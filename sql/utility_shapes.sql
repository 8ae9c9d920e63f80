--
-- utility_shapes: the utility statements fieldcrypt inspects (CREATE
-- STATISTICS, CREATE INDEX, CREATE TABLE, ALTER TABLE, REINDEX, CREATE /
-- ALTER DOMAIN, COPY) accept every parse-tree shape PostgreSQL accepts.  A
-- statement that is not about an encrypted column gets PostgreSQL's own
-- error, exactly as without fieldcrypt (the expected output below was
-- checked against a server without it): no crash, no garbage message, no
-- fieldcrypt refusal before PostgreSQL's error, no lost error position.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_shapes;
DROP ROLE IF EXISTS shapes_user;
RESET client_min_messages;
CREATE DATABASE fc_shapes TEMPLATE template0;
\c fc_shapes

-- 1. The extension is not created in this database (it is only preloaded).
SET default_table_access_method = heap;
CREATE TABLE foo (a int);
CREATE TABLE bar (a int);
-- CREATE STATISTICS: the grammar takes any FROM list, PostgreSQL refuses
-- all but a single relation name
CREATE STATISTICS tst ON a FROM foo NATURAL JOIN bar;
CREATE STATISTICS tst ON a FROM foo JOIN bar USING (a);
CREATE STATISTICS tst ON a FROM foo, bar;
CREATE STATISTICS tst ON a FROM (VALUES (1)) AS v;
CREATE STATISTICS tst ON a FROM (SELECT a FROM foo) AS s;
CREATE STATISTICS tst ON a FROM foo TABLESAMPLE system (10);
CREATE STATISTICS tst ON a FROM XMLTABLE('/x' PASSING '<x/>' COLUMNS a int);
CREATE STATISTICS tst ON a FROM generate_series(1, 2) AS g(a);
CREATE STATISTICS tst ON a FROM ROWS FROM (generate_series(1, 2)) AS g(a);
CREATE STATISTICS tst ON a FROM LATERAL (SELECT 1 AS a) AS l;
CREATE STATISTICS tst ON a FROM otherdb.public.foo;
CREATE STATISTICS tst ON a FROM no_such_table;
CREATE STATISTICS tst ON a FROM no_such_schema.foo;
-- names PostgreSQL refuses: too many dotted names, another database
CREATE TABLE t1 (a a.b.c.d);
CREATE TABLE t1 (a otherdb.public.int4);
CREATE TABLE pg_catalog.t1 (a a.b.c.d);
CREATE TABLE foo (a a.b.c.d);
CREATE INDEX ON otherdb.public.foo (a);
CREATE INDEX ON foo ((a + (SELECT 1 FROM foo f TABLESAMPLE system (1), XMLTABLE('/x' PASSING '<x/>' COLUMNS b int))));
ALTER TABLE otherdb.public.foo ADD COLUMN b int;
ALTER TABLE foo ADD COLUMN b a.b.c.d;
ALTER TABLE foo ALTER COLUMN a TYPE a.b.c.d;
REINDEX TABLE otherdb.public.foo;
REINDEX INDEX otherdb.public.foo_idx;
CREATE DOMAIN dd AS a.b.c.d;
ALTER DOMAIN a.b.c.d SET DEFAULT 1;
ALTER DOMAIN otherdb.public.dd SET DEFAULT 1;
-- invalid type modifiers: PostgreSQL's error with its cursor (create_type)
CREATE TEMP TABLE mytab (foo numeric(42,13,7));
CREATE TABLE t1 (a varchar(0));
ALTER TABLE foo ADD COLUMN b numeric(1,2,3);
-- a schema the user may not use, COPY from a file it may not read
CREATE ROLE shapes_user;
CREATE SCHEMA hidden;
CREATE TABLE hidden.t (a int);
CREATE TYPE hidden.ty AS (a int);
GRANT CREATE ON SCHEMA public TO shapes_user;
SET ROLE shapes_user;
COPY otherdb.public.foo FROM '/nonexistent';
COPY hidden.t FROM '/nonexistent';
CREATE TABLE pg_catalog.t2 (a hidden.ty);
CREATE TABLE t2 (a hidden.ty);
CREATE INDEX ON hidden.t (a);
CREATE STATISTICS hs ON a, a FROM hidden.t;
ALTER TABLE hidden.t ADD COLUMN b int;
REINDEX TABLE hidden.t;
RESET ROLE;
DROP SCHEMA hidden CASCADE;

-- 2. The same shapes around encrypted columns: PostgreSQL's error wherever
-- PostgreSQL refuses the statement anyway.
CREATE EXTENSION fieldcrypt;
CREATE TABLE profile (id int, name text, pw fieldcrypt.encrypted_text);
CREATE TYPE enc_pair AS (label text, s fieldcrypt.encrypted_text);
CREATE STATISTICS tst ON id, pw FROM profile NATURAL JOIN foo;
CREATE STATISTICS tst ON id, pw FROM profile, foo;
CREATE STATISTICS tst ON id, pw FROM (SELECT id, pw FROM profile) AS s;
CREATE STATISTICS tst ON id, pw FROM profile TABLESAMPLE system (10);
CREATE STATISTICS tst ON id, pw FROM otherdb.public.profile;
CREATE TABLE t3 (pw otherdb.fieldcrypt.encrypted_text DEFAULT 'x');
CREATE TABLE t3 (pw a.fieldcrypt.encrypted_text.d DEFAULT 'x');
ALTER DOMAIN otherdb.public.enc_pair SET DEFAULT NULL;
CREATE SCHEMA hidden;
CREATE TABLE hidden.enc_t (id int, pw fieldcrypt.encrypted_text);
CREATE TYPE hidden.enc_ty AS (s fieldcrypt.encrypted_text);
SET ROLE shapes_user;
CREATE TABLE t4 (a hidden.enc_ty UNIQUE);
CREATE INDEX ON hidden.enc_t (pw);
CREATE STATISTICS hs ON id, pw FROM hidden.enc_t;
ALTER TABLE hidden.enc_t ALTER COLUMN pw SET DEFAULT 'x';
COPY hidden.enc_t FROM '/nonexistent';
RESET ROLE;
-- ... and still fieldcrypt's refusal wherever the statement is about one
-- (a name of this database, a temporary table, an array type)
CREATE STATISTICS tst ON id, pw FROM profile;
CREATE STATISTICS tst ON id, pw FROM fc_shapes.public.profile;
CREATE INDEX ON fc_shapes.public.profile (pw);
CREATE TABLE t3 (pw fc_shapes.fieldcrypt.encrypted_text DEFAULT 'x');
CREATE TABLE t3 (pw fieldcrypt.encrypted_text[] UNIQUE);
CREATE TABLE t3 (p enc_pair, CHECK (p IS NOT NULL));
CREATE TEMP TABLE tmp (id int, pw fieldcrypt.encrypted_text);
CREATE INDEX ON tmp (pw);
CREATE INDEX ON pg_temp.tmp (pw);
CREATE STATISTICS hs ON id, pw FROM hidden.enc_t;
-- statements that are not about one pass
CREATE STATISTICS ok_stats ON id, name FROM profile;
CREATE INDEX ON fc_shapes.public.profile (name);
SELECT count(*) AS statistics FROM pg_statistic_ext;
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'profile'::regclass;

\c :regress_db
DROP DATABASE fc_shapes;
DROP ROLE shapes_user;
