--
-- coltypes: fieldcrypt.encrypted_text and fieldcrypt.encrypted_bytea.
-- Input encrypts, output prints an envelope (never plaintext), envelopes are
-- accepted back without the key, assignment casts encrypt, nothing casts out,
-- no operators, fieldcrypt.decrypt for superusers and fieldcrypt_reader only.
--
-- Envelopes are random: only their shape is printed.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_coltypes;
DROP DATABASE IF EXISTS fc_coltypes_nokey;
DROP ROLE IF EXISTS fc_app;
DROP ROLE IF EXISTS fc_router;
RESET client_min_messages;
CREATE DATABASE fc_coltypes TEMPLATE template0;
CREATE DATABASE fc_coltypes_nokey TEMPLATE template0;
\c fc_coltypes
CREATE EXTENSION fieldcrypt;
CREATE ROLE fc_app LOGIN;
CREATE ROLE fc_router LOGIN IN ROLE fieldcrypt_reader;

CREATE TABLE mailbox (
    id       integer PRIMARY KEY,
    name     text,
    password fieldcrypt.encrypted_text,
    token    fieldcrypt.encrypted_bytea
);
GRANT SELECT, INSERT, UPDATE, DELETE ON mailbox TO fc_app, fc_router;

-- storage is extended, no typmod, alignment int4
SELECT typname, typlen, typstorage, typalign, typcategory, typmodin
  FROM pg_type WHERE typname IN ('encrypted_text', 'encrypted_bytea') ORDER BY 1;

-- untyped literals, typed text/varchar/bytea values and INSERT ... SELECT of text
INSERT INTO mailbox VALUES (1, 'literal', 'Pa55word-One', '\xdeadbeef');
INSERT INTO mailbox VALUES (2, 'text', 'Pa55word-Two'::text, 'raw'::bytea);
INSERT INTO mailbox VALUES (3, 'varchar', 'Pa55word-3'::varchar(20), NULL);
INSERT INTO mailbox (id, name, password) SELECT 4, 'select', 'Pa55' || 'word-Four';
INSERT INTO mailbox VALUES (5, 'empty', '', '\x');
INSERT INTO mailbox VALUES (6, 'unicode', 'pässwörd ✓', '\x00ff00');
INSERT INTO mailbox VALUES (7, 'null', NULL, NULL);
PREPARE ins(integer, text, bytea) AS INSERT INTO mailbox VALUES ($1, 'prepared', $2, $3);
EXECUTE ins(8, 'Pa55word-Eight', '\x0102');

-- every retrieve returns NULL; IS NULL still tells stored values from NULLs
SELECT id, name, password, token, password IS NULL AS pw_null FROM mailbox ORDER BY id;

-- the privileged decrypt returns what was written
SELECT id, fieldcrypt.decrypt(password), fieldcrypt.decrypt(token)
  FROM mailbox ORDER BY id;

-- two encryptions of one plaintext differ (unique nonce per value)
CREATE TEMP TABLE twice AS
    SELECT 1 AS k, 'same'::text::fieldcrypt.encrypted_text AS v
    UNION ALL SELECT 2, 'same'::text::fieldcrypt.encrypted_text;
SELECT count(DISTINCT encode(fieldcrypt.encrypted_text_send(v), 'hex')) AS distinct_envelopes,
       count(*) FILTER (WHERE fieldcrypt.decrypt(v) = 'same') AS decrypt_same
  FROM twice;

-- the output function prints the envelope, never the plaintext
CREATE TEMP TABLE env AS
    SELECT id, fieldcrypt.encrypted_text_out(password)::text AS t,
           fieldcrypt.encrypted_bytea_out(token)::text AS b
      FROM mailbox;
SELECT id, t LIKE 'fcenc:v1:%' AS text_form, b LIKE 'fcenc:v1:%' AS bytea_form,
       position('Pa55word' IN coalesce(t, '')) = 0 AS no_plaintext
  FROM env ORDER BY id;

-- an envelope in text form is accepted back unchanged, without re-encrypting
INSERT INTO mailbox (id, name, password, token)
    SELECT 100 + id, 'copy', fieldcrypt.encrypted_text_in(t::cstring),
           fieldcrypt.encrypted_bytea_in(b::cstring)
      FROM env WHERE id IN (1, 2);
SELECT a.id, fieldcrypt.decrypt(a.password) = fieldcrypt.decrypt(c.password) AS same_pw,
       fieldcrypt.encrypted_text_out(a.password)::text = fieldcrypt.encrypted_text_out(c.password)::text AS same_envelope,
       fieldcrypt.decrypt(c.token)
  FROM mailbox a JOIN mailbox c ON c.id = a.id + 100 ORDER BY a.id;

-- binary send/receive: the envelope goes out with a NUL-led prefix (no text
-- plaintext can start with NUL) and comes back as ciphertext
SELECT substr(fieldcrypt.encrypted_text_send(password), 1, 7) FROM mailbox WHERE id = 1;
COPY mailbox TO '/tmp/fc_coltypes.bin' (FORMAT binary);
CREATE TABLE mailbox_bin (LIKE mailbox);
COPY mailbox_bin FROM '/tmp/fc_coltypes.bin' (FORMAT binary);
SELECT count(*) AS rows,
       count(*) FILTER (WHERE fieldcrypt.decrypt(b.password) IS NOT DISTINCT FROM fieldcrypt.decrypt(m.password)
                          AND fieldcrypt.decrypt(b.token) IS NOT DISTINCT FROM fieldcrypt.decrypt(m.token)) AS same
  FROM mailbox_bin b JOIN mailbox m USING (id);

-- envelope syntax that is not a well-formed envelope is refused, never
-- encrypted as a plaintext
INSERT INTO mailbox (id, password) VALUES (20, 'fcenc:v1:not base64!');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO mailbox (id, password) VALUES (21, 'fcenc:v1:AAAA');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO mailbox (id, token) VALUES (22, 'fcenc:v1:AAAA');
\echo :LAST_ERROR_SQLSTATE
-- a text envelope cannot go into a bytea column
INSERT INTO mailbox (id, token) SELECT 23, t FROM env WHERE id = 1;
INSERT INTO mailbox (id, token) SELECT 23, fieldcrypt.encrypted_bytea_in(t::cstring) FROM env WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
-- the same text, cast to text first, is a plaintext and is encrypted
INSERT INTO mailbox (id, password) VALUES (24, 'fcenc:v1:AAAA'::text);
SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 24;

-- a tampered envelope is detected on decryption (XX001), never garbage
CREATE TEMP TABLE tampered AS
    SELECT overlay(t PLACING (CASE substr(t, 30, 1) WHEN 'A' THEN 'B' ELSE 'A' END) FROM 30 FOR 1) AS t
      FROM env WHERE id = 1;
SELECT fieldcrypt.decrypt(fieldcrypt.encrypted_text_in(t::cstring)) FROM tampered;
\echo :LAST_ERROR_SQLSTATE
-- a tag cut short: decodes, but is too short to be an envelope
SELECT fieldcrypt.decrypt(fieldcrypt.encrypted_text_in(('fcenc:v1:' || encode(substr(decode(substr(t, 10), 'base64'), 1, 30), 'base64'))::cstring))
  FROM env WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
-- a whole envelope minus one byte of its tag: well-formed, not authentic
SELECT fieldcrypt.decrypt(fieldcrypt.encrypted_text_in(('fcenc:v1:' || encode(substr(d, 1, length(d) - 1), 'base64'))::cstring))
  FROM (SELECT decode(substr(t, 10), 'base64') AS d FROM env WHERE id = 1) s;
\echo :LAST_ERROR_SQLSTATE

-- nothing casts out, no operators: no oracle
SELECT password::text FROM mailbox WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT password::varchar FROM mailbox WHERE id = 1;
SELECT token::text FROM mailbox WHERE id = 1;
SELECT password::bytea FROM mailbox WHERE id = 1;
SELECT count(*) FROM mailbox WHERE password = 'Pa55word-One';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mailbox WHERE password = 'Pa55word-One'::text;
SELECT count(*) FROM mailbox WHERE password LIKE 'Pa55%';
SELECT id FROM mailbox ORDER BY password;
\echo :LAST_ERROR_SQLSTATE
SELECT password FROM mailbox GROUP BY password;
\echo :LAST_ERROR_SQLSTATE
SELECT DISTINCT password FROM mailbox;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mailbox WHERE password IS NULL;
SELECT count(*) FROM mailbox WHERE password IS NOT NULL;
SELECT count(*) FROM pg_operator
 WHERE oprleft IN ('fieldcrypt.encrypted_text'::regtype, 'fieldcrypt.encrypted_bytea'::regtype)
    OR oprright IN ('fieldcrypt.encrypted_text'::regtype, 'fieldcrypt.encrypted_bytea'::regtype);
SELECT castsource::regtype, casttarget::regtype, castcontext FROM pg_cast
 WHERE castsource IN ('fieldcrypt.encrypted_text'::regtype, 'fieldcrypt.encrypted_bytea'::regtype)
    OR casttarget IN ('fieldcrypt.encrypted_text'::regtype, 'fieldcrypt.encrypted_bytea'::regtype)
 ORDER BY 1::text, 2::text;
SELECT count(*) FROM pg_opclass
 WHERE opcintype IN ('fieldcrypt.encrypted_text'::regtype, 'fieldcrypt.encrypted_bytea'::regtype);

-- UPDATE and DELETE work as usual
UPDATE mailbox SET password = 'New-Pa55word' WHERE id = 1;
SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 1;
DELETE FROM mailbox WHERE id = 24;
SELECT count(*) FROM mailbox;

-- decrypt: superusers and fieldcrypt_reader members; everyone else 42501
SET ROLE fc_app;
INSERT INTO mailbox (id, password) VALUES (30, 'App-Pa55word');
SELECT password FROM mailbox WHERE id = 30;
SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 30;
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.decrypt(token) FROM mailbox WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE fc_router;
SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 30;
SELECT fieldcrypt.decrypt(token) FROM mailbox WHERE id = 1;
RESET ROLE;

-- a key change: values under the older generation stay readable, new
-- values use the new generation
SELECT fieldcrypt.set_data_encryption_key('Second-Key-2026!');
INSERT INTO mailbox (id, password) VALUES (40, 'After-Change-1');
SELECT id, fieldcrypt.decrypt(password) FROM mailbox WHERE id IN (1, 2, 40) ORDER BY id;
SELECT id, get_byte(substr(fieldcrypt.encrypted_text_send(password), 8), 5) AS generation
  FROM mailbox WHERE id IN (2, 40) ORDER BY id;

-- no key loaded: plaintext is refused, never stored unencrypted
\c fc_coltypes_nokey
SET fieldcrypt.auto_activate = off;
CREATE EXTENSION fieldcrypt;
-- (USING heap: encrypted_heap needs active encryption, see tam_keys; this
-- also runs with default_table_access_method = encrypted_heap)
CREATE TABLE t (id integer, secret fieldcrypt.encrypted_text) USING heap;
INSERT INTO t VALUES (1, 'Plain-Pa55word');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO t VALUES (2, 'Plain-Pa55word'::text);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM t;
-- envelopes need no key: a restore can load them before the key is restored
\c fc_coltypes
CREATE TEMP TABLE one AS SELECT fieldcrypt.encrypted_text_out(password)::text AS t FROM mailbox WHERE id = 1;
\copy one TO '/tmp/fc_coltypes_env.txt'
\c fc_coltypes_nokey
\copy t (secret) FROM '/tmp/fc_coltypes_env.txt'
SELECT count(*) FROM t WHERE secret IS NOT NULL;
SELECT fieldcrypt.decrypt(secret) FROM t;
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION fieldcrypt CASCADE;

\c :regress_db
DROP DATABASE fc_coltypes;
DROP DATABASE fc_coltypes_nokey;
DROP ROLE fc_app;
DROP ROLE fc_router;
