-- pgTAP: the key-management API surface (objects, signatures, privileges) and its
-- behaviour in one transaction that is rolled back at the end. Runs over TLS as a
-- superuser in a fresh database (test/run-tests.sh creates it with pgtap only).

-- Activation with a generated key commits here, outside the test transaction.
CREATE EXTENSION IF NOT EXISTS fieldcrypt;

BEGIN;
SET LOCAL client_min_messages = warning;
SELECT plan(59);

-- Objects --------------------------------------------------------------------
SELECT has_schema('fieldcrypt');
SELECT has_role('fieldcrypt_admin');
SELECT has_role('fieldcrypt_reader');
SELECT has_table('fieldcrypt', 'key_generations', 'key metadata table exists');
SELECT columns_are('fieldcrypt', 'key_generations',
    ARRAY['generation', 'salt', 'iterations', 'kcv', 'key_source', 'set_at']);
SELECT col_is_pk('fieldcrypt', 'key_generations', 'generation', 'generation is the primary key');
SELECT has_trigger('fieldcrypt', 'key_generations', 'key_generations_guard', 'row trigger guards the metadata');
SELECT has_trigger('fieldcrypt', 'key_generations', 'key_generations_no_truncate', 'statement trigger refuses TRUNCATE');
SELECT ok((SELECT 'fieldcrypt.key_generations'::regclass = ANY (extconfig)
             FROM pg_extension WHERE extname = 'fieldcrypt'),
          'key_generations is a configuration table: pg_dump carries its rows');
SELECT has_view('fieldcrypt', 'key_status', 'key_status view exists');
SELECT columns_are('fieldcrypt', 'key_status',
    ARRAY['active', 'key_loaded', 'generation', 'key_source', 'set_at', 'key_age',
          'rotation_recommended', 'generations_kept', 'keyring',
          'cluster_key', 'cluster_key_in_data_directory']);

SELECT has_function('fieldcrypt', 'is_data_encryption_active', ARRAY[]::name[]);
SELECT function_returns('fieldcrypt', 'is_data_encryption_active', ARRAY[]::name[], 'boolean');
SELECT has_function('fieldcrypt', 'set_data_encryption_key', ARRAY['text']);
SELECT function_returns('fieldcrypt', 'set_data_encryption_key', ARRAY['text'], 'void');
SELECT isnt_strict('fieldcrypt', 'set_data_encryption_key', ARRAY['text'],
    'set_data_encryption_key is called on NULL input (to refuse it with 22004)');
SELECT volatility_is('fieldcrypt', 'set_data_encryption_key', ARRAY['text'], 'volatile');
SELECT has_function('fieldcrypt', 'retrieve_data_encryption_key', ARRAY[]::name[]);
SELECT function_returns('fieldcrypt', 'retrieve_data_encryption_key', ARRAY[]::name[], 'text');
SELECT volatility_is('fieldcrypt', 'retrieve_data_encryption_key', ARRAY[]::name[], 'volatile');

-- Privileges -----------------------------------------------------------------
SELECT schema_privs_are('fieldcrypt', 'public', ARRAY['USAGE']);
SELECT function_privs_are('fieldcrypt', 'is_data_encryption_active', ARRAY[]::name[],
    'public', ARRAY['EXECUTE']);
SELECT function_privs_are('fieldcrypt', 'set_data_encryption_key', ARRAY['text'],
    'public', ARRAY['EXECUTE'], 'PUBLIC may call set_data_encryption_key (it checks fieldcrypt_admin itself)');
SELECT function_privs_are('fieldcrypt', 'retrieve_data_encryption_key', ARRAY[]::name[],
    'public', ARRAY['EXECUTE'], 'PUBLIC may call retrieve_data_encryption_key (it checks fieldcrypt_admin itself)');
SELECT function_privs_are('fieldcrypt', '_activate_on_create', ARRAY[]::name[],
    'public', ARRAY[]::text[]);
SELECT function_privs_are('fieldcrypt', '_key_generations_guard', ARRAY[]::name[],
    'public', ARRAY[]::text[]);
SELECT table_privs_are('fieldcrypt', 'key_generations', 'public', ARRAY[]::text[]);
SELECT table_privs_are('fieldcrypt', 'key_status', 'public', ARRAY['SELECT']);

-- Activation at CREATE EXTENSION ---------------------------------------------
SELECT ok((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), 'the session uses TLS');
SELECT is(fieldcrypt.is_data_encryption_active(), true, 'encryption is active after CREATE EXTENSION');
SELECT results_eq(
    $$SELECT active, key_loaded, generation, key_source, rotation_recommended,
             generations_kept, keyring FROM fieldcrypt.key_status$$,
    $$VALUES (true, true, 1, 'generated'::text, true, 1, 'loaded'::text)$$,
    'key_status after activation with a generated key');
SELECT results_eq(
    $$SELECT generation, length(salt), iterations, length(kcv), key_source
        FROM fieldcrypt.key_generations$$,
    $$VALUES (1, 16, 600000, 16, 'generated'::text)$$,
    'one metadata row: 16-byte salt, 600000 iterations, 16-byte key check value');
SELECT matches(fieldcrypt.retrieve_data_encryption_key(), '^Fc1\.[A-Za-z0-9_-]{24}$',
    'the generated key is "Fc1." and 24 base64url characters');

-- Refusals -------------------------------------------------------------------
SELECT throws_ok('SELECT fieldcrypt.set_data_encryption_key(NULL)',
    '22004', 'data encryption key must not be null');
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key('')$$,
    '22023', 'data encryption key must not be empty');
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key('short1A!')$$,
    '22023', 'data encryption key is too weak', 'too short (8 characters)');
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key('alllowercaseletters')$$,
    '22023', 'data encryption key is too weak', 'one character class');
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key('lowercase123456')$$,
    '22023', 'data encryption key is too weak', 'two character classes');
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key(repeat('Aa1!', 65))$$,
    '22023', 'data encryption key is too long', '257 bytes or more');
SELECT throws_ok(format('SELECT fieldcrypt.set_data_encryption_key(%L)',
                        fieldcrypt.retrieve_data_encryption_key()),
    '22023', 'the new data encryption key must differ from the current one',
    'the current (generated) key cannot be set again');
SELECT throws_ok('UPDATE fieldcrypt.key_generations SET iterations = iterations',
    '55000', 'key metadata in fieldcrypt.key_generations cannot be modified', 'UPDATE refused');
SELECT throws_ok('DELETE FROM fieldcrypt.key_generations',
    '55000', 'key metadata in fieldcrypt.key_generations cannot be modified', 'DELETE refused');
SELECT throws_ok('TRUNCATE fieldcrypt.key_generations',
    '55000', 'key metadata in fieldcrypt.key_generations cannot be modified', 'TRUNCATE refused');
SELECT throws_ok('DROP EXTENSION fieldcrypt', '55000',
    'cannot drop extension fieldcrypt: data encryption is active in database "' || current_database() || '"',
    'DROP EXTENSION refused while encryption is active');
SELECT throws_ok('DROP SCHEMA fieldcrypt CASCADE', '55000',
    'cannot drop extension fieldcrypt: data encryption is active in database "' || current_database() || '"',
    'DROP SCHEMA ... CASCADE refused while encryption is active');
SELECT has_extension('fieldcrypt');

-- A role that is neither superuser nor member of fieldcrypt_admin
CREATE ROLE pgtap_fc_plain;
SET LOCAL ROLE pgtap_fc_plain;
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key('PgTap-Key-0001')$$,
    '42501', 'permission denied to set the data encryption key', 'plain role cannot set the key');
SELECT throws_ok('SELECT fieldcrypt.retrieve_data_encryption_key()',
    '42501', 'permission denied to retrieve the data encryption key', 'plain role cannot retrieve the key');
SELECT is(fieldcrypt.is_data_encryption_active(), true, 'plain role may ask whether encryption is active');
SELECT throws_ok('SELECT * FROM fieldcrypt.key_generations',
    '42501', 'permission denied for table key_generations', 'plain role cannot read the metadata table');
RESET ROLE;
SELECT is(has_function_privilege('pgtap_fc_plain', 'fieldcrypt._activate_on_create()', 'EXECUTE'),
    false, 'plain role cannot call _activate_on_create');

-- A key change -----------------------------------------------------------------
SELECT lives_ok($$SELECT fieldcrypt.set_data_encryption_key('PgTap-Key-0001')$$,
    'a strong key is accepted');
SELECT is(fieldcrypt.retrieve_data_encryption_key(), 'PgTap-Key-0001',
    'retrieve returns the new key inside the changing transaction');
SELECT results_eq(
    $$SELECT generation, key_source FROM fieldcrypt.key_generations ORDER BY generation$$,
    $$VALUES (1, 'generated'::text), (2, 'administrator'::text)$$,
    'the new generation''s metadata is written, the old one kept');
SELECT results_eq(
    $$SELECT generation, key_source, rotation_recommended, generations_kept FROM fieldcrypt.key_status$$,
    $$VALUES (2, 'administrator'::text, false, 1)$$,
    'key_status: metadata of generation 2 visible, shared memory still has one generation until commit');
SELECT throws_ok($$SELECT fieldcrypt.set_data_encryption_key('PgTap-Key-0002')$$,
    '55000', 'only one data encryption key change is allowed per transaction');
SELECT is(fieldcrypt.retrieve_data_encryption_key(), 'PgTap-Key-0001',
    'the refused second change left the first one pending');
SELECT throws_ok($$INSERT INTO fieldcrypt.key_generations
                     SELECT generation + 10, salt, iterations, kcv, key_source, set_at
                       FROM fieldcrypt.key_generations WHERE generation = 1$$,
    '55000', 'only one data encryption key change is allowed per transaction',
    'importing metadata in the transaction that changed the key is refused');
SELECT is((SELECT count(*)::int FROM fieldcrypt.key_generations), 2, 'metadata unchanged by the refusals');

SELECT * FROM finish();
ROLLBACK;
