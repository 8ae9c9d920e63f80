\echo Use "CREATE EXTENSION fieldcrypt" to load this file. \quit

-- Roles are cluster-wide: create them once, keep them when the extension goes.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'fieldcrypt_admin') THEN
        CREATE ROLE fieldcrypt_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'fieldcrypt_reader') THEN
        CREATE ROLE fieldcrypt_reader NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE fieldcrypt_admin IS 'may set and retrieve data encryption keys (over TLS)';
COMMENT ON ROLE fieldcrypt_reader IS 'may decrypt encrypted column values with fieldcrypt.decrypt';

-- Key metadata that travels with the database in pg_dump: never a key.
CREATE TABLE fieldcrypt.key_generations (
    generation  integer     PRIMARY KEY CHECK (generation > 0),
    salt        bytea       NOT NULL,
    iterations  integer     NOT NULL CHECK (iterations >= 600000),
    kcv         bytea       NOT NULL,
    key_source  text        NOT NULL CHECK (key_source IN ('generated', 'administrator')),
    set_at      timestamptz NOT NULL
);
COMMENT ON TABLE fieldcrypt.key_generations IS
    'salt, iteration count and key check value of each data encryption key generation';
REVOKE ALL ON fieldcrypt.key_generations FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('fieldcrypt.key_generations', '');

CREATE FUNCTION fieldcrypt._key_generations_guard() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'fieldcrypt_key_generations_guard';
COMMENT ON FUNCTION fieldcrypt._key_generations_guard() IS
    'internal: imports key metadata from a dump, refuses changes to it';
CREATE TRIGGER key_generations_guard
    BEFORE INSERT OR UPDATE OR DELETE ON fieldcrypt.key_generations
    FOR EACH ROW EXECUTE FUNCTION fieldcrypt._key_generations_guard();
CREATE TRIGGER key_generations_no_truncate
    BEFORE TRUNCATE ON fieldcrypt.key_generations
    FOR EACH STATEMENT EXECUTE FUNCTION fieldcrypt._key_generations_guard();
-- also under session_replication_role = replica
ALTER TABLE fieldcrypt.key_generations ENABLE ALWAYS TRIGGER key_generations_guard;
ALTER TABLE fieldcrypt.key_generations ENABLE ALWAYS TRIGGER key_generations_no_truncate;

-- IsDataEncryptionActiveRequest
CREATE FUNCTION fieldcrypt.is_data_encryption_active() RETURNS boolean
    LANGUAGE C STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'fieldcrypt_is_data_encryption_active';
COMMENT ON FUNCTION fieldcrypt.is_data_encryption_active() IS
    'true when data encryption is active in this database (IsDataEncryptionActive)';

-- SetDataEncryptionKeyRequest
CREATE FUNCTION fieldcrypt.set_data_encryption_key(key text) RETURNS void
    LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_set_data_encryption_key';
COMMENT ON FUNCTION fieldcrypt.set_data_encryption_key(text) IS
    'activate, change or restore the data encryption key of this database (SetDataEncryptionKey); admins, TLS only';

-- RetrieveDataEncryptionKeyRequest
CREATE FUNCTION fieldcrypt.retrieve_data_encryption_key() RETURNS text
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_retrieve_data_encryption_key';
COMMENT ON FUNCTION fieldcrypt.retrieve_data_encryption_key() IS
    'the current data encryption key of this database (RetrieveDataEncryptionKey); admins, TLS only';

CREATE FUNCTION fieldcrypt._key_status(
    OUT active boolean, OUT key_loaded boolean, OUT generation integer,
    OUT key_source text, OUT set_at timestamptz, OUT key_age interval,
    OUT rotation_recommended boolean, OUT generations_kept integer,
    OUT keyring text)
    RETURNS record LANGUAGE C VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'fieldcrypt_key_status';
COMMENT ON FUNCTION fieldcrypt._key_status() IS 'internal: backs the view fieldcrypt.key_status';

CREATE VIEW fieldcrypt.key_status AS SELECT * FROM fieldcrypt._key_status();
COMMENT ON VIEW fieldcrypt.key_status IS
    'data encryption key state of this database; rotation_recommended follows Dynamics 365 advice';

CREATE FUNCTION fieldcrypt._activate_on_create() RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_activate_on_create';
COMMENT ON FUNCTION fieldcrypt._activate_on_create() IS
    'internal: activation with a system-generated key at CREATE EXTENSION';

REVOKE ALL ON FUNCTION fieldcrypt._key_generations_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt._activate_on_create() FROM PUBLIC;
-- set/retrieve stay executable by PUBLIC: they check fieldcrypt_admin
-- membership themselves, with an error that says what is missing.
GRANT USAGE ON SCHEMA fieldcrypt TO PUBLIC;
GRANT SELECT ON fieldcrypt.key_status TO PUBLIC;

-- Encrypted column types ----------------------------------------------------
-- Write-only: the input function encrypts, every query result carries NULL
-- in their place, only fieldcrypt.decrypt (fieldcrypt_reader) reads them.

CREATE TYPE fieldcrypt.encrypted_text;
CREATE FUNCTION fieldcrypt.encrypted_text_in(cstring) RETURNS fieldcrypt.encrypted_text
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_text_in';
CREATE FUNCTION fieldcrypt.encrypted_text_out(fieldcrypt.encrypted_text) RETURNS cstring
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_out';
CREATE FUNCTION fieldcrypt.encrypted_text_recv(internal) RETURNS fieldcrypt.encrypted_text
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_text_recv';
CREATE FUNCTION fieldcrypt.encrypted_text_send(fieldcrypt.encrypted_text) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_send';
CREATE TYPE fieldcrypt.encrypted_text (
    INPUT = fieldcrypt.encrypted_text_in, OUTPUT = fieldcrypt.encrypted_text_out,
    RECEIVE = fieldcrypt.encrypted_text_recv, SEND = fieldcrypt.encrypted_text_send,
    INTERNALLENGTH = VARIABLE, ALIGNMENT = int4, STORAGE = extended);
COMMENT ON TYPE fieldcrypt.encrypted_text IS
    'write-only text, stored encrypted with AES-256-GCM under the database key';

CREATE TYPE fieldcrypt.encrypted_bytea;
CREATE FUNCTION fieldcrypt.encrypted_bytea_in(cstring) RETURNS fieldcrypt.encrypted_bytea
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_bytea_in';
CREATE FUNCTION fieldcrypt.encrypted_bytea_out(fieldcrypt.encrypted_bytea) RETURNS cstring
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_out';
CREATE FUNCTION fieldcrypt.encrypted_bytea_recv(internal) RETURNS fieldcrypt.encrypted_bytea
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_bytea_recv';
CREATE FUNCTION fieldcrypt.encrypted_bytea_send(fieldcrypt.encrypted_bytea) RETURNS bytea
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypted_send';
CREATE TYPE fieldcrypt.encrypted_bytea (
    INPUT = fieldcrypt.encrypted_bytea_in, OUTPUT = fieldcrypt.encrypted_bytea_out,
    RECEIVE = fieldcrypt.encrypted_bytea_recv, SEND = fieldcrypt.encrypted_bytea_send,
    INTERNALLENGTH = VARIABLE, ALIGNMENT = int4, STORAGE = extended);
COMMENT ON TYPE fieldcrypt.encrypted_bytea IS
    'write-only bytea, stored encrypted with AES-256-GCM under the database key';

COMMENT ON FUNCTION fieldcrypt.encrypted_text_in(cstring) IS 'encrypts a plaintext, or accepts an envelope in text form';
COMMENT ON FUNCTION fieldcrypt.encrypted_text_out(fieldcrypt.encrypted_text) IS 'envelope in text form (never plaintext)';
COMMENT ON FUNCTION fieldcrypt.encrypted_text_recv(internal) IS 'encrypts a binary plaintext, or accepts a binary envelope';
COMMENT ON FUNCTION fieldcrypt.encrypted_text_send(fieldcrypt.encrypted_text) IS 'envelope in binary form (never plaintext)';
COMMENT ON FUNCTION fieldcrypt.encrypted_bytea_in(cstring) IS 'encrypts a bytea literal, or accepts an envelope in text form';
COMMENT ON FUNCTION fieldcrypt.encrypted_bytea_out(fieldcrypt.encrypted_bytea) IS 'envelope in text form (never plaintext)';
COMMENT ON FUNCTION fieldcrypt.encrypted_bytea_recv(internal) IS 'encrypts binary bytes, or accepts a binary envelope';
COMMENT ON FUNCTION fieldcrypt.encrypted_bytea_send(fieldcrypt.encrypted_bytea) IS 'envelope in binary form (never plaintext)';

-- Assignment casts into the types (encrypting); nothing casts out of them.
CREATE FUNCTION fieldcrypt.encrypted_text(text) RETURNS fieldcrypt.encrypted_text
    LANGUAGE C VOLATILE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypt_text';
CREATE FUNCTION fieldcrypt.encrypted_text(varchar) RETURNS fieldcrypt.encrypted_text
    LANGUAGE C VOLATILE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypt_text';
CREATE FUNCTION fieldcrypt.encrypted_bytea(bytea) RETURNS fieldcrypt.encrypted_bytea
    LANGUAGE C VOLATILE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_encrypt_bytea';
COMMENT ON FUNCTION fieldcrypt.encrypted_text(text) IS 'encrypts a text value (assignment cast)';
COMMENT ON FUNCTION fieldcrypt.encrypted_text(varchar) IS 'encrypts a varchar value (assignment cast)';
COMMENT ON FUNCTION fieldcrypt.encrypted_bytea(bytea) IS 'encrypts a bytea value (assignment cast)';
CREATE CAST (text AS fieldcrypt.encrypted_text)
    WITH FUNCTION fieldcrypt.encrypted_text(text) AS ASSIGNMENT;
CREATE CAST (varchar AS fieldcrypt.encrypted_text)
    WITH FUNCTION fieldcrypt.encrypted_text(varchar) AS ASSIGNMENT;
CREATE CAST (bytea AS fieldcrypt.encrypted_bytea)
    WITH FUNCTION fieldcrypt.encrypted_bytea(bytea) AS ASSIGNMENT;

-- PostgreSQL would otherwise cast any type to text through its output
-- function (the envelope): these explicit casts exist only to refuse.
CREATE FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_text) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_refuse_cast';
CREATE FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_bytea) RETURNS text
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_refuse_cast';
COMMENT ON FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_text) IS 'internal: refuses casts out of encrypted_text';
COMMENT ON FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_bytea) IS 'internal: refuses casts out of encrypted_bytea';
CREATE CAST (fieldcrypt.encrypted_text AS text) WITH FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_text);
CREATE CAST (fieldcrypt.encrypted_text AS varchar) WITH FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_text);
CREATE CAST (fieldcrypt.encrypted_text AS bpchar) WITH FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_text);
CREATE CAST (fieldcrypt.encrypted_bytea AS text) WITH FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_bytea);
CREATE CAST (fieldcrypt.encrypted_bytea AS varchar) WITH FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_bytea);
CREATE CAST (fieldcrypt.encrypted_bytea AS bpchar) WITH FUNCTION fieldcrypt._refuse_cast(fieldcrypt.encrypted_bytea);

-- The one way to read plaintext (the Email Router case).
CREATE FUNCTION fieldcrypt.decrypt(fieldcrypt.encrypted_text) RETURNS text
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_decrypt_text';
CREATE FUNCTION fieldcrypt.decrypt(fieldcrypt.encrypted_bytea) RETURNS bytea
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_decrypt_bytea';
COMMENT ON FUNCTION fieldcrypt.decrypt(fieldcrypt.encrypted_text) IS
    'plaintext of an encrypted value; superusers and fieldcrypt_reader members only';
COMMENT ON FUNCTION fieldcrypt.decrypt(fieldcrypt.encrypted_bytea) IS
    'plaintext of an encrypted value; superusers and fieldcrypt_reader members only';

SELECT fieldcrypt._activate_on_create();

-- Re-encryption after a key change (src/reencrypt.c) ------------------------
-- A background worker rewrites every value of every encrypted column under
-- the new generation, then destroys the old generations.

-- Where the worker is, written in the transaction of each batch so that it
-- resumes there after a crash.  Not dumped: it describes this cluster only.
CREATE TABLE fieldcrypt.reencryption (
    to_generation    integer     PRIMARY KEY,
    from_generation  integer     NOT NULL,
    pass             integer     NOT NULL,
    pass_clean       boolean     NOT NULL,
    pass_reencrypted bigint      NOT NULL,
    relid            oid         NOT NULL,
    next_block       bigint      NOT NULL,
    tables_done      integer     NOT NULL,
    tables_total     integer     NOT NULL,
    rows_done        bigint      NOT NULL,
    rows_total       bigint      NOT NULL,
    started_at       timestamptz NOT NULL,
    state            text        NOT NULL CHECK (state IN ('running', 'blocked', 'done'))
);
COMMENT ON TABLE fieldcrypt.reencryption IS
    'internal: progress of the re-encryption worker of this database, for resuming after a restart';
REVOKE ALL ON fieldcrypt.reencryption FROM PUBLIC;

CREATE FUNCTION fieldcrypt._reencrypt(fieldcrypt.encrypted_text) RETURNS fieldcrypt.encrypted_text
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fieldcrypt_reencrypt_text';
CREATE FUNCTION fieldcrypt._reencrypt(fieldcrypt.encrypted_bytea) RETURNS fieldcrypt.encrypted_bytea
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fieldcrypt_reencrypt_bytea';
CREATE FUNCTION fieldcrypt._stale(fieldcrypt.encrypted_text) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_reencrypt_stale';
CREATE FUNCTION fieldcrypt._stale(fieldcrypt.encrypted_bytea) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_reencrypt_stale';
COMMENT ON FUNCTION fieldcrypt._reencrypt(fieldcrypt.encrypted_text) IS
    'internal: the value under the current key generation (re-encryption worker)';
COMMENT ON FUNCTION fieldcrypt._reencrypt(fieldcrypt.encrypted_bytea) IS
    'internal: the value under the current key generation (re-encryption worker)';
COMMENT ON FUNCTION fieldcrypt._stale(fieldcrypt.encrypted_text) IS
    'internal: true if the value is under an older generation this database still holds';
COMMENT ON FUNCTION fieldcrypt._stale(fieldcrypt.encrypted_bytea) IS
    'internal: true if the value is under an older generation this database still holds';
REVOKE ALL ON FUNCTION fieldcrypt._reencrypt(fieldcrypt.encrypted_text) FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt._reencrypt(fieldcrypt.encrypted_bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt._stale(fieldcrypt.encrypted_text) FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt._stale(fieldcrypt.encrypted_bytea) FROM PUBLIC;

CREATE FUNCTION fieldcrypt._rotation_progress(
    OUT database name, OUT from_generation integer, OUT to_generation integer,
    OUT phase text, OUT tables_done integer, OUT tables_total integer,
    OUT rows_done bigint, OUT rows_total bigint, OUT rows_per_second double precision,
    OUT started_at timestamptz, OUT estimated_end timestamptz, OUT pid integer,
    OUT datid oid)
    RETURNS SETOF record LANGUAGE C VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'fieldcrypt_rotation_progress';
COMMENT ON FUNCTION fieldcrypt._rotation_progress() IS
    'internal: backs the view fieldcrypt.rotation_progress';
CREATE VIEW fieldcrypt.rotation_progress AS SELECT * FROM fieldcrypt._rotation_progress();
COMMENT ON VIEW fieldcrypt.rotation_progress IS
    'one row per database whose values are being re-encrypted after a key change';
GRANT SELECT ON fieldcrypt.rotation_progress TO PUBLIC;
