-- edges_hints: comparing, sorting or grouping an encrypted column fails with
-- PostgreSQL's error (message, SQLSTATE, position) and a hint that says what
-- can be done; errors about other types keep PostgreSQL's hint.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS fieldcrypt;
RESET client_min_messages;
CREATE TABLE hint_t (id int, secret fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea);
INSERT INTO hint_t VALUES (1, 'hint-secret', '\x00');
SELECT id FROM hint_t WHERE secret = 'x';
SELECT id FROM hint_t WHERE blob = '\x00'::bytea;
SELECT id FROM hint_t ORDER BY secret;
SELECT DISTINCT secret FROM hint_t;
SELECT secret, count(*) FROM hint_t GROUP BY secret;
SELECT secret FROM hint_t UNION SELECT secret FROM hint_t;
SELECT id FROM hint_t WHERE secret LIKE 'h%';
-- the SQLSTATE is PostgreSQL's
DO $$ BEGIN PERFORM id FROM hint_t WHERE secret = 'x';
EXCEPTION WHEN undefined_function THEN RAISE NOTICE 'SQLSTATE %', SQLSTATE; END $$;
-- other types: PostgreSQL's own hints, untouched
CREATE TYPE not_encrypted_text AS (a int);
CREATE TABLE other_t (v not_encrypted_text, p point);
SELECT 1 FROM other_t WHERE v = 1;
SELECT 1 FROM other_t ORDER BY p;
SELECT 1 WHERE point '(1,1)' = point '(1,1)';
DROP TABLE hint_t, other_t;
DROP TYPE not_encrypted_text;
