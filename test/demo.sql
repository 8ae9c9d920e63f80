-- =====================================================================
--  fieldcrypt in two minutes
--  Dynamics 365-style data encryption for PostgreSQL 15.
--  This cluster was just made for the demo: TLS on, fieldcrypt preloaded.
-- =====================================================================
\pset footer off
\set VERBOSITY default
\set SHOW_CONTEXT never

-- 1. Activation. Like a new Dynamics organization, a database gets a
--    system-generated key the moment the extension is created.
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.is_data_encryption_active();             -- IsDataEncryptionActive
SELECT active, key_loaded, generation, key_source, rotation_recommended
  FROM fieldcrypt.key_status;
--    rotation_recommended is true: Dynamics advises changing the
--    system-generated key right away, and about once a year after.

-- 2. The attributes Dynamics encrypts by default, as a small schema.
CREATE TABLE emailserverprofile (
    id                serial PRIMARY KEY,
    name              text NOT NULL,
    incomingpassword  fieldcrypt.encrypted_text,
    outgoingpassword  fieldcrypt.encrypted_text
);
CREATE TABLE mailbox      (id serial PRIMARY KEY, emailaddress text, password fieldcrypt.encrypted_text);
CREATE TABLE queue        (id serial PRIMARY KEY, name text, emailpassword fieldcrypt.encrypted_text);
CREATE TABLE usersettings (id serial PRIMARY KEY, username text, emailpassword fieldcrypt.encrypted_text);

-- 3. Writes are ordinary INSERT/UPDATE: the input function encrypts
--    (AES-256-GCM) with the key held in shared memory.
INSERT INTO emailserverprofile (name, incomingpassword, outgoingpassword)
     VALUES ('Exchange Online', 'Imap-Secret-2026', 'Smtp-Secret-2026');
INSERT INTO mailbox (emailaddress, password) VALUES ('sales@contoso.example', 'Mailbox-Pa55!');
INSERT INTO queue (name, emailpassword) VALUES ('Support', 'Queue-Pa55!');
INSERT INTO usersettings (username, emailpassword) VALUES ('alice', 'Alice-Pa55!');
UPDATE mailbox SET password = 'Mailbox-Pa55-v2!' WHERE id = 1;

-- 4. Reads return NULL to the client, on every path: SELECT *, views, RETURNING, cursors...
SELECT * FROM emailserverprofile;
SELECT emailaddress, password, password IS NULL AS "is null?" FROM mailbox;
INSERT INTO queue (name, emailpassword) VALUES ('Billing', 'Billing-Pa55!') RETURNING *;
--    ...while the disk only ever holds ciphertext (what pg_dump carries):
COPY mailbox TO STDOUT;

-- 5. Nothing turns the column into an oracle: no operators, no casts out.
SELECT count(*) FROM mailbox WHERE password = 'Mailbox-Pa55-v2!';
SELECT password::text FROM mailbox;

-- 6. Encrypted columns cannot be indexed, audited or customized.
CREATE INDEX ON mailbox (password);
ALTER TABLE queue ALTER COLUMN emailpassword SET DEFAULT 'changeme';

-- 7. Only a privileged role decrypts (the Email Router case).
CREATE ROLE app LOGIN;
CREATE ROLE email_router LOGIN IN ROLE fieldcrypt_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app, email_router;
SET ROLE app;
SELECT fieldcrypt.decrypt(password) FROM mailbox;          -- refused: 42501
RESET ROLE;
SET ROLE email_router;
SELECT name, fieldcrypt.decrypt(incomingpassword) AS incoming,
       fieldcrypt.decrypt(outgoingpassword) AS outgoing FROM emailserverprofile;
RESET ROLE;

-- 8. Key change rules (SetDataEncryptionKey). Admins only...
SET ROLE app;
SELECT fieldcrypt.set_data_encryption_key('Contoso-Key-2026!');
RESET ROLE;
--    ...strong keys only...
SELECT fieldcrypt.set_data_encryption_key('password');
--    ...and never over an unencrypted connection:
\connect "host=127.0.0.1 sslmode=disable dbname=postgres"
SELECT fieldcrypt.set_data_encryption_key('Contoso-Key-2026!');
\connect "host=127.0.0.1 sslmode=require dbname=postgres"
SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid();
SELECT fieldcrypt.set_data_encryption_key('Contoso-Key-2026!');
SELECT generation, key_source, rotation_recommended, generations_kept FROM fieldcrypt.key_status;
SELECT fieldcrypt.retrieve_data_encryption_key();          -- RetrieveDataEncryptionKey
--    Values written under the older generation stay readable:
SELECT fieldcrypt.decrypt(password) FROM mailbox;
--    A background worker re-encrypts every existing value under the new key, then
--    destroys the old generation (fieldcrypt.rotation_progress shows it while it runs).
--    It waits for transactions older than its last pass, so wait outside the server:
\! sleep 2
SELECT count(*) AS reencryptions_running FROM fieldcrypt.rotation_progress;
SELECT generation, generations_kept FROM fieldcrypt.key_status;
SELECT fieldcrypt.decrypt(password) FROM mailbox;

-- 9. Encryption cannot be turned off once active.
SET client_min_messages = warning;
DROP EXTENSION fieldcrypt CASCADE;
RESET client_min_messages;

-- 10. The key never reaches the server log, even with every statement logged:
SET log_min_duration_statement = 0;
SELECT fieldcrypt.set_data_encryption_key('Contoso-Key-2027!');
RESET log_min_duration_statement;
\! grep -q 'Contoso-Key-2027' "$FC_LOG" && echo "FOUND in the server log" || echo "not in the server log"
\! grep -o 'statement: SELECT fieldcrypt.set_data_encryption_key(.*' "$FC_LOG" | tail -1

-- 11. Transparent data encryption: whole tables encrypted at rest
--     (the encrypted_heap table access method), every SQL feature intact.
CREATE TABLE ledger (id bigint PRIMARY KEY, account text, amount numeric, memo text)
    USING encrypted_heap;
CREATE TABLE ledger_plain (LIKE ledger) USING heap;
INSERT INTO ledger SELECT g, 'ACME-' || g, g * 1.5, 'confidential memo ' || g
    FROM generate_series(1, 10000) g;
INSERT INTO ledger_plain SELECT * FROM ledger;
UPDATE ledger SET amount = amount + 1 WHERE id = 42 RETURNING *;
SELECT count(*), sum(amount) FROM ledger WHERE account LIKE 'ACME-4%';
CHECKPOINT;
--     On disk, the heap table shows its memos; the encrypted one does not:
SELECT current_setting('data_directory') || '/' || pg_relation_filepath('ledger') AS enc_file,
       current_setting('data_directory') || '/' || pg_relation_filepath('ledger_plain') AS plain_file \gset
\setenv ENC_FILE :enc_file
\setenv PLAIN_FILE :plain_file
\! echo "heap file: $(grep -c 'confidential memo' "$PLAIN_FILE") match(es); encrypted_heap file: $(grep -c 'confidential memo' "$ENC_FILE") match(es)"
--     Indexes: the primary key's B-tree keeps its keys in plaintext (the WARNING above
--     said so). A hash index with a keyed operator class stores only keyed codes:
CREATE INDEX ledger_account ON ledger USING hash (account fieldcrypt.text_keyed_ops);
SELECT index_name, exposes FROM fieldcrypt.tde_exposure WHERE table_name = 'ledger'::regclass;
EXPLAIN (COSTS OFF) SELECT amount FROM ledger WHERE account = 'ACME-42';
--     ANALYZE keeps the statistics of encrypted tables encrypted (not in pg_statistic):
ANALYZE ledger;
SELECT count(*) AS ledger_rows_in_pg_statistic FROM pg_statistic WHERE starelid = 'ledger'::regclass;
--     TDE key rotation: new writes use the new generation at once; the background
--     worker re-encrypts the existing rows online (throttled), VACUUMs, and then
--     destroys the old key (offline alternative: fieldcrypt.reencrypt_table).
SELECT generation, is_current, tables FROM fieldcrypt.tde_key_status;
SELECT fieldcrypt.rotate_tde_key();
\! sleep 4
SELECT generation, is_current, tables FROM fieldcrypt.tde_key_status;
SELECT count(*), sum(amount) FROM ledger WHERE account LIKE 'ACME-4%';
--     Logical decoding would ship ciphertext: encrypted tables cannot be published.
CREATE PUBLICATION everything FOR TABLE ledger;
