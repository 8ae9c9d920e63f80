-- pgTAP: the access rules as each kind of role meets them, on the connection this file runs
-- over. test/run-tests.sh runs it twice, over TCP with TLS (-S transport=tls) and over the
-- Unix socket (-S transport=socket); the first assertions check that the connection is the
-- one announced, so a run over the wrong transport fails instead of testing the wrong rule.
--   ordinary role: decrypt, the key functions and the TDE key functions refuse with 42501
--     (the role check comes before the TLS check);
--   fieldcrypt_reader: decrypt returns the plaintext over either transport;
--   fieldcrypt_admin: the key functions work over TLS, refuse with 28000 over the socket;
--   everyone, superuser included: an encrypted column cannot be indexed (0A000).
-- (Write-only reads are not tested here: values become NULL only on their way to the client,
-- and pgTAP compares results inside the server. pg_regress writeonly tests them.)
-- transports: tls socket

CREATE EXTENSION IF NOT EXISTS fieldcrypt;

BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(19);

-- The connection is the announced one ------------------------------------------
SELECT is(coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),
          :'transport' = 'tls', 'TLS is used exactly when the run says so (' || :'transport' || ')');
SELECT is(inet_client_addr() IS NULL, :'transport' = 'socket',
          'the Unix socket is used exactly when the run says so (' || :'transport' || ')');

CREATE ROLE pgtap_rules_plain;
CREATE ROLE pgtap_rules_reader IN ROLE fieldcrypt_reader;
CREATE ROLE pgtap_rules_admin IN ROLE fieldcrypt_admin;
CREATE TABLE pgtap_rules_t (id int, pw fieldcrypt.encrypted_text);
INSERT INTO pgtap_rules_t VALUES (1, 'PgTap-Rules-Secret-1');
GRANT SELECT ON pgtap_rules_t TO pgtap_rules_plain, pgtap_rules_reader, pgtap_rules_admin;

-- Superuser: decrypt, no index --------------------------------
SELECT is((SELECT fieldcrypt.decrypt(pw) FROM pgtap_rules_t), 'PgTap-Rules-Secret-1',
    'superuser: decrypt returns the plaintext');
SELECT throws_ok('CREATE INDEX ON pgtap_rules_t ((pw IS NULL))', '0A000',
    'encrypted column "pw" of table "pgtap_rules_t" cannot be indexed', 'superuser: no index on an encrypted column');

-- An ordinary role ---------------------------------------------------------------
SET LOCAL ROLE pgtap_rules_plain;
SELECT throws_ok('SELECT fieldcrypt.decrypt(pw) FROM pgtap_rules_t', '42501',
    'permission denied to decrypt encrypted values', 'ordinary role: decrypt refused');
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key('PgTap-Rules-Key-1')$$, '42501',
    'permission denied to set the data encryption key', 'ordinary role: set_data_encryption_key refused');
SELECT throws_ok('SELECT fieldcrypt.retrieve_data_encryption_key()', '42501',
    'permission denied to retrieve the data encryption key', 'ordinary role: retrieve refused');
SELECT throws_ok('SELECT fieldcrypt.rotate_tde_key()', '42501',
    'permission denied to rotate the TDE key', 'ordinary role: rotate_tde_key refused');
RESET ROLE;

-- fieldcrypt_reader ----------------------------------------------------------------
SET LOCAL ROLE pgtap_rules_reader;
SELECT is((SELECT fieldcrypt.decrypt(pw) FROM pgtap_rules_t), 'PgTap-Rules-Secret-1',
    'reader: decrypt returns the plaintext over ' || :'transport');
SELECT throws_ok('SELECT fieldcrypt.retrieve_data_encryption_key()', '42501',
    'permission denied to retrieve the data encryption key', 'reader: retrieve refused (not an admin)');
RESET ROLE;

-- fieldcrypt_admin: TLS only ---------------------------------------------------------
SET LOCAL ROLE pgtap_rules_admin;
SELECT throws_ok('SELECT fieldcrypt.decrypt(pw) FROM pgtap_rules_t', '42501',
    'permission denied to decrypt encrypted values', 'admin: decrypt refused (not a reader)');
SELECT CASE WHEN :'transport' = 'tls'
  THEN matches(fieldcrypt.retrieve_data_encryption_key(), '.', 'admin over TLS: retrieve returns the key')
  ELSE throws_ok('SELECT fieldcrypt.retrieve_data_encryption_key()', '28000',
    'fieldcrypt.retrieve_data_encryption_key requires an SSL connection', 'admin over the socket: retrieve refused')
  END;
SELECT CASE WHEN :'transport' = 'tls'
  THEN lives_ok($$SELECT fieldcrypt.set_data_encryption_key('PgTap-Rules-Key-1')$$,
    'admin over TLS: set_data_encryption_key works')
  ELSE throws_ok($$SELECT fieldcrypt.set_data_encryption_key('PgTap-Rules-Key-1')$$, '28000',
    'fieldcrypt.set_data_encryption_key requires an SSL connection', 'admin over the socket: set refused')
  END;
SELECT CASE WHEN :'transport' = 'tls'
  THEN is(fieldcrypt.retrieve_data_encryption_key(), 'PgTap-Rules-Key-1', 'admin over TLS: the key changed')
  ELSE throws_ok('SELECT fieldcrypt.export_key_generations()', '28000',
    'fieldcrypt.export_key_generations requires an SSL connection', 'admin over the socket: export refused')
  END;
SELECT CASE WHEN :'transport' = 'tls'
  THEN lives_ok('SELECT fieldcrypt.export_key_generations()', 'admin over TLS: export_key_generations works')
  ELSE throws_ok('SELECT fieldcrypt.rotate_tde_key()', '28000',
    'fieldcrypt.rotate_tde_key requires an SSL connection', 'admin over the socket: rotate_tde_key refused')
  END;
RESET ROLE;

-- Superuser: the same TLS rule ---------------------------------------------------------
SELECT CASE WHEN :'transport' = 'tls'
  THEN is(fieldcrypt.retrieve_data_encryption_key(), 'PgTap-Rules-Key-1', 'superuser over TLS: retrieve returns the new key')
  ELSE throws_ok('SELECT fieldcrypt.retrieve_data_encryption_key()', '28000',
    'fieldcrypt.retrieve_data_encryption_key requires an SSL connection', 'superuser over the socket: retrieve refused')
  END;
SELECT is((SELECT fieldcrypt.decrypt(pw) FROM pgtap_rules_t), 'PgTap-Rules-Secret-1',
    'superuser: the value still decrypts after the key change (if any)');
SELECT results_eq('SELECT count(*)::int FROM pg_index WHERE indrelid = ''pgtap_rules_t''::regclass', ARRAY[0],
    'no index was created on the table');
SELECT is((SELECT count(*)::int FROM pg_stat_activity WHERE pid = pg_backend_pid()), 1,
    'the session is still usable after every refusal');

SELECT * FROM finish();
ROLLBACK;
