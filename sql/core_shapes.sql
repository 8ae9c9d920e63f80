--
-- core_shapes: in a database with fieldcrypt, values that cannot hold an
-- encrypted value come back exactly as PostgreSQL gives them: anonymous
-- records and arrays of them (ROW(...), array_agg of rows, records nested
-- in records) are decided by their actual row type, value by value, on
-- every path (client, PL/pgSQL, SQL functions, cursors).  Records that do
-- carry an encrypted value keep their other fields, the encrypted one NULL
-- for the client (inside the server, in PL/pgSQL, it is the envelope).
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_core_shapes;
RESET client_min_messages;
CREATE DATABASE fc_core_shapes TEMPLATE template0;
\c fc_core_shapes
CREATE EXTENSION fieldcrypt;

-- the statements of issue 10, with PostgreSQL's output
SELECT array[row(1,2), row(3,4)];
SELECT array_agg(x) FROM (VALUES (ROW(1,2)),(ROW(3,4))) v(x);
SELECT row(array[row(1,2)]);
SELECT row(row(1, 'a'), array[row(2, 'b'), NULL], NULL::record);
SELECT array[[row(1,2)], [row(3,4)]];
SELECT x, array_agg(y) FROM (VALUES (1, row(1, 'x')), (1, row(2, 'y'))) v(x, y) GROUP BY x;
WITH RECURSIVE r(n, path) AS (
    SELECT 1, array[row(1, 'a')]
    UNION ALL
    SELECT n + 1, path || row(n + 1, 'b') FROM r WHERE n < 3)
SELECT * FROM r;

-- the same values through PL/pgSQL, SQL functions and a cursor
DO $$
DECLARE
    r record;
BEGIN
    SELECT array[row(1,2), row(3,4)] AS a, row(array[row(1,2)]) AS b INTO r;
    RAISE NOTICE 'a = %, b = %', r.a, r.b;
END
$$;
CREATE FUNCTION shapes_sql() RETURNS TABLE (a record[], b record) LANGUAGE sql
    AS $$ SELECT array_agg(x), row(array_agg(x)) FROM (VALUES (ROW(1,2)),(ROW(3,4))) v(x) $$;
SELECT * FROM shapes_sql();
CREATE FUNCTION shapes_plpgsql() RETURNS text LANGUAGE plpgsql
    AS $$ DECLARE r record; BEGIN SELECT array_agg(x) AS a INTO r FROM (VALUES (ROW(5,6))) v(x); RETURN r.a::text; END $$;
SELECT shapes_plpgsql();
-- PL/pgSQL's own error details reach the client as they are
CREATE TABLE shapes_foo (f1 int);
SET plpgsql.print_strict_params TO true;
CREATE FUNCTION shapes_strict() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    x record;
    p1 int := 2;
    p3 text := 'foo';
BEGIN
    SELECT * FROM shapes_foo WHERE f1 = p1 AND f1::text = p3 INTO STRICT x;
END
$$;
SELECT shapes_strict();
RESET plpgsql.print_strict_params;
BEGIN;
DECLARE c CURSOR FOR SELECT array[row(7, 'c')];
FETCH c;
COMMIT;

-- records that carry an encrypted value: only that field is NULL
CREATE TABLE shapes (id int, pw fieldcrypt.encrypted_text, note text);
INSERT INTO shapes VALUES (1, 'Shapes-Secret-1', 'n1');
SELECT row(1, pw) AS r1, array[row(id, pw, note)] AS r2, row(array[row(pw, 'k')]) AS r3,
       row(s.*) AS r4, array[s] AS r5, row(row(s.*), 2) AS r6
  FROM shapes s;
DO $$
DECLARE
    r record;
BEGIN
    SELECT row(1, pw) AS a, array[row(id, pw)] AS b INTO r FROM shapes;
    -- inside the server the record keeps its envelope (a copy moves it whole)
    RAISE NOTICE 'a = %, b = %',
        regexp_replace(r.a::text, 'fcenc:v1:[A-Za-z0-9+/=]+', '<envelope>', 'g'),
        regexp_replace(r.b::text, 'fcenc:v1:[A-Za-z0-9+/=]+', '<envelope>', 'g');
END
$$;

\c :regress_db
DROP DATABASE fc_core_shapes;
