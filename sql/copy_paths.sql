--
-- copy_paths: every server-side path that copies rows moves the ciphertext
-- like INSERT ... SELECT does (the value arrives whole, never NULL): SQL and
-- PL/pgSQL set-returning functions (RETURNS SETOF, RETURNS TABLE, RETURN
-- QUERY, RETURN NEXT), functions returning one row, SELECT INTO, RETURNING
-- INTO, cursors fetched inside PL/pgSQL, a procedure's loop across COMMIT,
-- and COPY (query) TO, which writes envelopes as COPY table TO does.  What
-- reaches the client is still NULL.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_copy_paths;
RESET client_min_messages;
CREATE DATABASE fc_copy_paths TEMPLATE template0;
\c fc_copy_paths
CREATE EXTENSION fieldcrypt;

CREATE TABLE t1 (id integer, name text, pw fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea);
INSERT INTO t1 SELECT g, 'n' || g, 'Copy-Secret-' || g, convert_to('blob-' || g, 'UTF8')
  FROM generate_series(1, 500) g;
CREATE TABLE dst (via text, id integer, name text, pw fieldcrypt.encrypted_text,
                  blob fieldcrypt.encrypted_bytea);
-- one line per path: rows copied, rows whose values decrypt to the original
CREATE VIEW check_copy AS
  SELECT d.via, count(*) AS copied,
         count(*) FILTER (WHERE fieldcrypt.decrypt(d.pw) = fieldcrypt.decrypt(s.pw)
                          AND fieldcrypt.decrypt(d.blob) = fieldcrypt.decrypt(s.blob)) AS intact,
         count(*) FILTER (WHERE d.pw IS NULL OR d.blob IS NULL) AS nulls
    FROM dst d JOIN t1 s USING (id) GROUP BY d.via ORDER BY d.via;

-- set-returning functions (VOLATILE: not inlined, they run as functions)
CREATE FUNCTION t1_rows_sql() RETURNS SETOF t1 LANGUAGE sql AS 'SELECT * FROM t1';
CREATE FUNCTION t1_rows_plpgsql() RETURNS SETOF t1 LANGUAGE plpgsql
    AS $$ BEGIN RETURN QUERY SELECT * FROM t1; END $$;
CREATE FUNCTION t1_rows_next() RETURNS SETOF t1 LANGUAGE plpgsql
    AS $$ DECLARE r t1; BEGIN FOR r IN SELECT * FROM t1 LOOP RETURN NEXT r; END LOOP; END $$;
CREATE FUNCTION t1_rows_execute() RETURNS SETOF t1 LANGUAGE plpgsql
    AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT * FROM t1'; END $$;
CREATE FUNCTION t1_table_sql()
    RETURNS TABLE (id integer, name text, pw fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea)
    LANGUAGE sql AS 'SELECT id, name, pw, blob FROM t1';
CREATE FUNCTION t1_table_plpgsql()
    RETURNS TABLE (id integer, name text, pw fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea)
    LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY SELECT t.id, t.name, t.pw, t.blob FROM t1 t; END $$;
-- one row
CREATE FUNCTION t1_one_sql(integer) RETURNS t1 LANGUAGE sql AS 'SELECT * FROM t1 WHERE id = $1';
CREATE FUNCTION t1_one_plpgsql(k integer) RETURNS t1 LANGUAGE plpgsql
    AS $$ DECLARE r t1; BEGIN SELECT * INTO r FROM t1 WHERE id = k; RETURN r; END $$;
CREATE FUNCTION t1_pw_sql(integer) RETURNS fieldcrypt.encrypted_text LANGUAGE sql
    AS 'SELECT pw FROM t1 WHERE id = $1';

INSERT INTO dst SELECT 'srf sql', * FROM t1_rows_sql();
INSERT INTO dst SELECT 'srf plpgsql return query', * FROM t1_rows_plpgsql();
INSERT INTO dst SELECT 'srf plpgsql return next', * FROM t1_rows_next();
INSERT INTO dst SELECT 'srf plpgsql return query execute', * FROM t1_rows_execute();
INSERT INTO dst SELECT 'returns table sql', * FROM t1_table_sql();
INSERT INTO dst SELECT 'returns table plpgsql', * FROM t1_table_plpgsql();
INSERT INTO dst SELECT 'one row sql', (t1_one_sql(g)).* FROM generate_series(1, 500) g;
INSERT INTO dst SELECT 'one row plpgsql', (t1_one_plpgsql(g)).* FROM generate_series(1, 500) g;
INSERT INTO dst SELECT 'scalar sql', g, NULL, t1_pw_sql(g), (t1_one_sql(g)).blob FROM generate_series(1, 500) g;
CREATE TABLE t3 AS SELECT * FROM t1_rows_plpgsql();
INSERT INTO dst SELECT 'create table as srf', * FROM t3;

-- PL/pgSQL: a cursor fetched and inserted row by row, SELECT INTO, RETURNING INTO
DO $$
DECLARE
    c CURSOR FOR SELECT * FROM t1 ORDER BY id;
    r t1;
BEGIN
    OPEN c;
    LOOP
        FETCH c INTO r;
        EXIT WHEN NOT FOUND;
        INSERT INTO dst VALUES ('cursor fetch', r.id, r.name, r.pw, r.blob);
    END LOOP;
    CLOSE c;
END
$$;
DO $$
DECLARE
    v fieldcrypt.encrypted_text;
    b fieldcrypt.encrypted_bytea;
BEGIN
    FOR k IN 1..500 LOOP
        SELECT pw, blob INTO v, b FROM t1 WHERE id = k;
        INSERT INTO dst VALUES ('select into', k, NULL, v, b);
    END LOOP;
END
$$;
CREATE FUNCTION via_returning() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v fieldcrypt.encrypted_text;
    b fieldcrypt.encrypted_bytea;
BEGIN
    FOR k IN 1..500 LOOP
        UPDATE t1 SET name = name WHERE id = k RETURNING pw, blob INTO v, b;
        INSERT INTO dst VALUES ('returning into', k, NULL, v, b);
    END LOOP;
END
$$;
SELECT via_returning();
-- a procedure's FOR loop, its cursor held across COMMIT
CREATE PROCEDURE via_commit() LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM t1 ORDER BY id LOOP
        INSERT INTO dst VALUES ('procedure loop with commit', r.id, r.name, r.pw, r.blob);
        IF r.id % 100 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END
$$;
CALL via_commit();

-- COPY (query) TO writes envelopes, like COPY table TO; COPY FROM stores them back
COPY (SELECT 'copy query', id, name, pw, blob FROM t1 WHERE id > 0) TO '/tmp/fc_copy_paths.txt';
COPY dst FROM '/tmp/fc_copy_paths.txt';
CREATE TEMP TABLE lines (line text);
COPY lines FROM '/tmp/fc_copy_paths.txt' WITH (FORMAT csv, DELIMITER E'\x01', QUOTE E'\x02');
SELECT count(*) AS lines, count(*) FILTER (WHERE line ~ E'\tfcenc:v1:[^\t]+\tfcenc:v1:') AS with_envelopes
  FROM lines;
COPY (SELECT id, pw, blob FROM t1 WHERE id > 0) TO '/tmp/fc_copy_paths.bin' (FORMAT binary);
CREATE TABLE bin (id integer, pw fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea);
COPY bin FROM '/tmp/fc_copy_paths.bin' (FORMAT binary);
INSERT INTO dst SELECT 'copy query binary', id, NULL, pw, blob FROM bin;

SELECT * FROM check_copy;

-- the client still gets NULL from every one of these functions and cursors
SELECT id, name, pw, blob FROM t1_rows_sql() WHERE id <= 2 ORDER BY id;
SELECT id, pw FROM t1_rows_plpgsql() WHERE id <= 2 ORDER BY id;
SELECT * FROM t1_table_plpgsql() WHERE id = 1;
SELECT t1_one_sql(1), t1_one_plpgsql(2), t1_pw_sql(3);
SELECT count(*) FILTER (WHERE pw IS NOT NULL) AS carried_inside FROM t1_rows_plpgsql();
BEGIN;
DECLARE cc CURSOR FOR SELECT id, pw FROM t1_rows_next() ORDER BY id;
FETCH 2 FROM cc;
DECLARE hc CURSOR WITH HOLD FOR SELECT * FROM t1_rows_plpgsql() ORDER BY id LIMIT 2;
COMMIT;
FETCH ALL FROM hc;
CLOSE hc;
INSERT INTO dst SELECT 'returning', * FROM t1 WHERE id = 1 RETURNING via, pw, blob;

\c :regress_db
DROP DATABASE fc_copy_paths;
