--
-- writeonly: a retrieve of an encrypted column returns NULL on every path
-- to the client, while the server itself still moves ciphertext (INSERT ...
-- SELECT, CREATE TABLE AS, SPI, functions, COPY table TO, COPY (query) TO).
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_writeonly;
DROP DATABASE IF EXISTS fc_writeonly_noext;
RESET client_min_messages;
CREATE DATABASE fc_writeonly TEMPLATE template0;
\c fc_writeonly
CREATE EXTENSION fieldcrypt;

CREATE DOMAIN secret_text AS fieldcrypt.encrypted_text;
CREATE TABLE queue (
    id       integer PRIMARY KEY,
    name     text,
    email_pw fieldcrypt.encrypted_text,
    api_key  fieldcrypt.encrypted_bytea,
    pin      secret_text,
    pins     fieldcrypt.encrypted_text[]
);
INSERT INTO queue VALUES
    (1, 'support', 'Queue-Pa55-1', '\x01', 'Pin-1111', ARRAY['A-1111'::fieldcrypt.encrypted_text]),
    (2, 'sales', 'Queue-Pa55-2', NULL, 'Pin-2222', NULL);

-- plain SELECT and SELECT *
SELECT id, email_pw FROM queue ORDER BY id;
SELECT * FROM queue ORDER BY id;
-- whole-row values keep their other fields
SELECT q FROM queue q ORDER BY id;
SELECT ROW(id, name, email_pw) FROM queue ORDER BY id;
SELECT (q).email_pw, (q).name FROM (SELECT q FROM queue q) s ORDER BY 2;
-- views, subqueries, CTEs, UNION, LATERAL
CREATE VIEW queue_v AS SELECT id, name, email_pw FROM queue;
SELECT * FROM queue_v ORDER BY id;
SELECT * FROM (SELECT email_pw, id FROM queue) s ORDER BY id;
WITH c AS (SELECT id, email_pw FROM queue) SELECT * FROM c ORDER BY id;
SELECT email_pw FROM queue WHERE id = 1 UNION ALL SELECT email_pw FROM queue WHERE id = 2;
SELECT x.email_pw FROM generate_series(1, 2) g, LATERAL (SELECT email_pw FROM queue WHERE id = g) x;
-- RETURNING
INSERT INTO queue (id, name, email_pw) VALUES (3, 'ops', 'Queue-Pa55-3') RETURNING *;
UPDATE queue SET email_pw = 'Queue-Pa55-3b' WHERE id = 3 RETURNING id, email_pw;
DELETE FROM queue WHERE id = 3 RETURNING email_pw;
WITH moved AS (UPDATE queue SET name = name WHERE id = 1 RETURNING email_pw) SELECT * FROM moved;
-- cursors and FETCH (also WITH HOLD, materialized at commit)
BEGIN;
DECLARE c CURSOR FOR SELECT id, email_pw FROM queue ORDER BY id;
FETCH 1 FROM c;
FETCH ALL FROM c;
CLOSE c;
DECLARE h CURSOR WITH HOLD FOR SELECT id, email_pw FROM queue ORDER BY id;
COMMIT;
FETCH ALL FROM h;
CLOSE h;
-- prepared statements
PREPARE q(integer) AS SELECT email_pw, pin FROM queue WHERE id = $1;
EXECUTE q(1);
-- COPY (query) TO writes envelopes, as COPY table TO does
CREATE TEMP TABLE qlines (line text);
COPY (SELECT id, email_pw, api_key FROM queue ORDER BY id) TO '/tmp/fc_writeonly_q.txt';
COPY qlines FROM '/tmp/fc_writeonly_q.txt' WITH (FORMAT csv, DELIMITER E'\x01', QUOTE E'\x02');
SELECT line ~ E'^1\tfcenc:v1:[^\t]+\tfcenc:v1:' AS row1_envelopes,
       line ~ E'^2\tfcenc:v1:[^\t]+\t\\\\N$' AS row2_envelope_and_null
  FROM qlines ORDER BY line;
-- SQL functions returning the column, set-returning too: the client gets
-- NULL, while inside the server the function's result is the ciphertext
CREATE FUNCTION pw_of(integer) RETURNS fieldcrypt.encrypted_text
    LANGUAGE sql AS 'SELECT email_pw FROM queue WHERE id = $1';
SELECT pw_of(1), pw_of(1) IS NULL AS is_null;
CREATE FUNCTION all_queues() RETURNS SETOF queue LANGUAGE sql AS 'SELECT * FROM queue ORDER BY id';
SELECT * FROM all_queues();
-- SPI and PL/pgSQL: SELECT ... INTO gets the ciphertext, which stays in the
-- server (docs/security.md); casts out of it are refused as anywhere
DO $$
DECLARE
    v fieldcrypt.encrypted_text;
    r record;
BEGIN
    SELECT email_pw INTO v FROM queue WHERE id = 1;
    RAISE NOTICE 'select into: % %', v IS NULL, fieldcrypt.decrypt(v) = 'Queue-Pa55-1';
    FOR r IN SELECT * FROM queue ORDER BY id LOOP
        RAISE NOTICE 'loop: % %', r.id, r.email_pw IS NULL;
    END LOOP;
    EXECUTE 'SELECT email_pw FROM queue WHERE id = 2' INTO v;
    RAISE NOTICE 'execute into: %', v IS NULL;
    BEGIN
        RAISE NOTICE 'cast: %', v::text;
    EXCEPTION WHEN cannot_coerce THEN
        RAISE NOTICE 'cast refused: %', SQLERRM;
    END;
END
$$;
-- the stored values are untouched by all of the above
SELECT id, fieldcrypt.decrypt(email_pw), fieldcrypt.decrypt(pin) FROM queue ORDER BY id;

-- the server moves ciphertext where it copies rows itself
CREATE TABLE queue_copy AS SELECT * FROM queue;
SELECT * INTO queue_into FROM queue;
CREATE TABLE queue_ins (LIKE queue);
INSERT INTO queue_ins SELECT * FROM queue;
CREATE MATERIALIZED VIEW queue_mv AS SELECT id, email_pw FROM queue;
REFRESH MATERIALIZED VIEW queue_mv;
SELECT 'ctas' AS via, id, fieldcrypt.decrypt(email_pw) FROM queue_copy
UNION ALL SELECT 'insert-select', id, fieldcrypt.decrypt(email_pw) FROM queue_ins
UNION ALL SELECT 'matview', id, fieldcrypt.decrypt(email_pw) FROM queue_mv
UNION ALL SELECT 'select-into', id, fieldcrypt.decrypt(email_pw) FROM queue_into
ORDER BY 1, 2;
-- but reading the copies returns NULL as well
SELECT id, email_pw FROM queue_mv ORDER BY id;
-- COPY table TO writes envelopes (this is how pg_dump works)
CREATE TEMP TABLE copied (line text);
COPY queue (email_pw) TO '/tmp/fc_writeonly.txt';
COPY copied FROM '/tmp/fc_writeonly.txt';
SELECT count(*) AS envelopes FROM copied WHERE line LIKE 'fcenc:v1:%';

-- queries that touch no encrypted type are not wrapped
SELECT id, name FROM queue ORDER BY id;

-- a row type that gains an encrypted column after it was first read
CREATE TABLE later (id integer);
INSERT INTO later VALUES (1);
SELECT l FROM later l;
ALTER TABLE later ADD COLUMN pw fieldcrypt.encrypted_text;
UPDATE later SET pw = 'Later-Pa55word';
SELECT l FROM later l;

-- databases without the extension are left alone (arrays of records too)
\c :regress_db
CREATE DATABASE fc_writeonly_noext TEMPLATE template0;
\c fc_writeonly_noext
SELECT ARRAY[ROW(1, 'x')] AS records, ROW(2, 'y') AS rec;
\c :regress_db
DROP DATABASE fc_writeonly;
DROP DATABASE fc_writeonly_noext;
