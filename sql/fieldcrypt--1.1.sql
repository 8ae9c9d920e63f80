\echo Use "CREATE EXTENSION fieldcrypt" to load this file. \quit

-- The schema fieldcrypt must be the extension's own. CREATE EXTENSION reuses a schema of
-- that name that already exists, whoever owns it: its owner could then rename fieldcrypt's
-- objects and put its own in their place, which the server would read and write (plaintext
-- statistics) and run as a superuser. Refuse a schema owned by a role that is not a
-- superuser, holding anything such a role owns, or where such a role may create objects.
DO $schema$
DECLARE
    who name;
BEGIN
    SELECT r.rolname INTO who
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'fieldcrypt' AND NOT r.rolsuper;
    IF FOUND THEN
        RAISE EXCEPTION 'schema "fieldcrypt" is owned by role "%", which is not a superuser', who
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'fieldcrypt creates its schema itself: drop or rename that schema, or make a superuser its owner, and try again.';
    END IF;
    SELECT r.rolname INTO who
      FROM (SELECT relowner AS owner FROM pg_catalog.pg_class
             WHERE relnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT proowner FROM pg_catalog.pg_proc
             WHERE pronamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT typowner FROM pg_catalog.pg_type
             WHERE typnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT oprowner FROM pg_catalog.pg_operator
             WHERE oprnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT opcowner FROM pg_catalog.pg_opclass
             WHERE opcnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT opfowner FROM pg_catalog.pg_opfamily
             WHERE opfnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT collowner FROM pg_catalog.pg_collation
             WHERE collnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT conowner FROM pg_catalog.pg_conversion
             WHERE connamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT cfgowner FROM pg_catalog.pg_ts_config
             WHERE cfgnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT dictowner FROM pg_catalog.pg_ts_dict
             WHERE dictnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT stxowner FROM pg_catalog.pg_statistic_ext
             WHERE stxnamespace = 'fieldcrypt'::pg_catalog.regnamespace
            UNION ALL SELECT extowner FROM pg_catalog.pg_extension
             WHERE extnamespace = 'fieldcrypt'::pg_catalog.regnamespace) o
      JOIN pg_catalog.pg_roles r ON r.oid = o.owner
     WHERE NOT r.rolsuper
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'schema "fieldcrypt" holds objects owned by role "%", which is not a superuser', who
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only fieldcrypt''s own objects belong in its schema: move or drop the others, and try again.';
    END IF;
    -- nor may such a role create objects there later
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE r.rolname END INTO who
      FROM pg_catalog.pg_namespace n
      CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
     WHERE n.nspname = 'fieldcrypt' AND a.privilege_type = 'CREATE'
       AND (a.grantee = 0 OR NOT r.rolsuper)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role "%" may create objects in schema "fieldcrypt", and is not a superuser', who
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Revoke CREATE on schema fieldcrypt from every role that is not a superuser, and try again.';
    END IF;
END
$schema$;

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
) USING heap;	-- readable without the key, whatever default_table_access_method says
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

-- Transparent data encryption: the encrypted_heap table access method.
CREATE FUNCTION fieldcrypt.encrypted_heap_handler(internal) RETURNS table_am_handler
    LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'fieldcrypt_tam_handler';
COMMENT ON FUNCTION fieldcrypt.encrypted_heap_handler(internal) IS
    'handler of the encrypted_heap table access method';
CREATE ACCESS METHOD encrypted_heap TYPE TABLE HANDLER fieldcrypt.encrypted_heap_handler;
COMMENT ON ACCESS METHOD encrypted_heap IS
    'heap storage with every row and out-of-line value encrypted (AES-256-GCM) under the database''s TDE key';

CREATE FUNCTION fieldcrypt.is_encrypted(pg_catalog.regclass) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_is_encrypted';
COMMENT ON FUNCTION fieldcrypt.is_encrypted(pg_catalog.regclass) IS
    'whether the table uses the encrypted_heap access method';

-- rotate checks fieldcrypt_admin and TLS itself, like set_data_encryption_key
CREATE FUNCTION fieldcrypt.rotate_tde_key() RETURNS integer
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fieldcrypt_rotate_tde_key';
COMMENT ON FUNCTION fieldcrypt.rotate_tde_key() IS
    'new TDE key generation for new writes to encrypted_heap tables; returns its number';

CREATE FUNCTION fieldcrypt.reencrypt_table(pg_catalog.regclass) RETURNS void
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fieldcrypt_reencrypt_table';
COMMENT ON FUNCTION fieldcrypt.reencrypt_table(pg_catalog.regclass) IS
    'rewrites an encrypted_heap table under the current TDE key (as VACUUM FULL; table owner only)';

CREATE FUNCTION fieldcrypt._tde_key_status(OUT generation integer, OUT is_current boolean,
                                           OUT created_at timestamptz, OUT tables pg_catalog.regclass[])
    RETURNS SETOF record
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fieldcrypt_tde_key_status';
COMMENT ON FUNCTION fieldcrypt._tde_key_status() IS 'internal: rows of fieldcrypt.tde_key_status';
CREATE VIEW fieldcrypt.tde_key_status AS SELECT * FROM fieldcrypt._tde_key_status();
COMMENT ON VIEW fieldcrypt.tde_key_status IS
    'TDE key generations of this database and the encrypted_heap tables still holding rows under each (reads every such table)';
REVOKE ALL ON FUNCTION fieldcrypt._tde_key_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt._tde_key_status() TO fieldcrypt_admin;
REVOKE ALL ON fieldcrypt.tde_key_status FROM PUBLIC;
GRANT SELECT ON fieldcrypt.tde_key_status TO fieldcrypt_admin;

CREATE FUNCTION fieldcrypt.drop_unused_tde_keys() RETURNS integer
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fieldcrypt_drop_unused_tde_keys';
COMMENT ON FUNCTION fieldcrypt.drop_unused_tde_keys() IS
    'destroys TDE key generations no row version uses any more; returns how many (fieldcrypt_admin, TLS)';
CREATE FUNCTION fieldcrypt._tde_tuple_generation(pg_catalog.regclass, pg_catalog.tid) RETURNS integer
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fieldcrypt_tde_tuple_generation';
COMMENT ON FUNCTION fieldcrypt._tde_tuple_generation(pg_catalog.regclass, pg_catalog.tid) IS
    'internal: TDE key generation of a row version, for re-encryption';
REVOKE ALL ON FUNCTION fieldcrypt._tde_tuple_generation(pg_catalog.regclass, pg_catalog.tid) FROM PUBLIC;


-- Self-managed tenant keys --------------------------------------------------
-- The tenant key seals the keyring (the keys of every database). By default
-- it is the managed cluster key of fieldcrypt.key_provider; an administrator
-- may bring a PKCS#12 key pair or an RSA key in an HSM, generate a new managed
-- key or go back to the default. Every change re-seals the keyring only.
-- Superusers and fieldcrypt_admin members, over TLS, outside transaction blocks.

CREATE FUNCTION fieldcrypt.upload_tenant_key(pfx bytea, password text) RETURNS text
    LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_upload_tenant_key';
COMMENT ON FUNCTION fieldcrypt.upload_tenant_key(bytea, text) IS
    'seal the keyring under an uploaded RSA key pair (PKCS#12 file and its password); returns the key fingerprint; admins, TLS only';

CREATE FUNCTION fieldcrypt.use_hsm_tenant_key(module_path text, token_label text, key_label text) RETURNS text
    LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_use_hsm_tenant_key';
COMMENT ON FUNCTION fieldcrypt.use_hsm_tenant_key(text, text, text) IS
    'seal the keyring under an RSA key that stays in an HSM (PKCS#11; PIN from fieldcrypt.hsm_pin_command); returns the key fingerprint; admins, TLS only';

CREATE FUNCTION fieldcrypt.generate_tenant_key() RETURNS text
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_generate_tenant_key';
COMMENT ON FUNCTION fieldcrypt.generate_tenant_key() IS
    'seal the keyring under a new random managed key; returns its key id; admins, TLS only';

CREATE FUNCTION fieldcrypt.revert_tenant_key() RETURNS text
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_revert_tenant_key';
COMMENT ON FUNCTION fieldcrypt.revert_tenant_key() IS
    'seal the keyring under the managed cluster key again (the default); returns its key id; admins, TLS only';

CREATE FUNCTION fieldcrypt._tenant_key_status(
    OUT mode text, OUT key_id text, OUT algorithm text, OUT key_bits integer,
    OUT created_at timestamptz, OUT installed_at timestamptz,
    OUT keyring_resealed_at timestamptz, OUT hsm_token text, OUT hsm_key_label text,
    OUT keyring text, OUT detail text)
    RETURNS record LANGUAGE C VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'fieldcrypt_tenant_key_status';
COMMENT ON FUNCTION fieldcrypt._tenant_key_status() IS 'internal: backs the view fieldcrypt.tenant_key_status';

CREATE VIEW fieldcrypt.tenant_key_status AS SELECT * FROM fieldcrypt._tenant_key_status();
COMMENT ON VIEW fieldcrypt.tenant_key_status IS
    'which key seals the keyring: mode (managed, command, pfx, hsm), key id or SHA-256 fingerprint, algorithm, times';

REVOKE ALL ON FUNCTION fieldcrypt.upload_tenant_key(bytea, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt.use_hsm_tenant_key(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt.generate_tenant_key() FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt.revert_tenant_key() FROM PUBLIC;
REVOKE ALL ON FUNCTION fieldcrypt._tenant_key_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.upload_tenant_key(bytea, text) TO fieldcrypt_admin;
GRANT EXECUTE ON FUNCTION fieldcrypt.use_hsm_tenant_key(text, text, text) TO fieldcrypt_admin;
GRANT EXECUTE ON FUNCTION fieldcrypt.generate_tenant_key() TO fieldcrypt_admin;
GRANT EXECUTE ON FUNCTION fieldcrypt.revert_tenant_key() TO fieldcrypt_admin;
GRANT EXECUTE ON FUNCTION fieldcrypt._tenant_key_status() TO fieldcrypt_admin;
REVOKE ALL ON fieldcrypt.tenant_key_status FROM PUBLIC;
GRANT SELECT ON fieldcrypt.tenant_key_status TO fieldcrypt_admin;

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
) USING heap;	-- readable whatever default_table_access_method says
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

-- Last: activation (CREATE EXTENSION with fieldcrypt.auto_activate) once every object exists.
SELECT fieldcrypt._activate_on_create();

-- ---------------------------------------------------------------------------
-- Changes of version 1.1 (each section has its twin in fieldcrypt--1.0--1.1.sql)
-- ---------------------------------------------------------------------------

-- ISSUE10-ROTATION: rotation_progress says why a run did not finish
CREATE FUNCTION fieldcrypt._rotation_problem(datid oid) RETURNS text
    LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'fieldcrypt_rotation_problem';
COMMENT ON FUNCTION fieldcrypt._rotation_problem(oid) IS
    'internal: backs the column problem of the view fieldcrypt.rotation_progress';
CREATE OR REPLACE VIEW fieldcrypt.rotation_progress AS
    SELECT p.*, fieldcrypt._rotation_problem(p.datid) AS problem
      FROM fieldcrypt._rotation_progress() p;

-- ISSUE10-KEYPLACE: key_status says where the cluster key is
-- Two columns appended at the end of fieldcrypt.key_status (existing queries keep
-- working; CREATE OR REPLACE VIEW keeps views built on it): the key file the
-- server took the cluster key from, and whether it lies inside the data directory,
-- where every backup carries it. NULL for callers who may not read
-- fieldcrypt.key_file and are not fieldcrypt_admin members.
CREATE FUNCTION fieldcrypt._cluster_key_location(
    OUT cluster_key text, OUT cluster_key_in_data_directory boolean)
    RETURNS record LANGUAGE C STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_cluster_key_location';
COMMENT ON FUNCTION fieldcrypt._cluster_key_location() IS
    'internal: backs the cluster key columns of the view fieldcrypt.key_status';
CREATE OR REPLACE VIEW fieldcrypt.key_status AS
    SELECT s.active, s.key_loaded, s.generation, s.key_source, s.set_at, s.key_age,
           s.rotation_recommended, s.generations_kept, s.keyring,
           l.cluster_key, l.cluster_key_in_data_directory
      FROM fieldcrypt._key_status() s, fieldcrypt._cluster_key_location() l;
COMMENT ON VIEW fieldcrypt.key_status IS
    'data encryption key state of this database; rotation_recommended follows Dynamics 365 advice; '
    'cluster_key and cluster_key_in_data_directory say where the cluster key is (visible to '
    'fieldcrypt_admin members and those who may read fieldcrypt.key_file)';
-- END ISSUE10-KEYPLACE

-- ISSUE11-KEYS: key generations that follow the data to other nodes
-- export_key_generations() on the origin gives the metadata of every generation it
-- holds (number, iterations, salt, key check value; never a key);
-- import_key_generations(document, passphrase) on a logical subscriber, a shard or a
-- copy re-derives them under the same numbers, so values made on the origin open there.
-- Imported generations are recorded in key_generations with key_source 'imported'.
ALTER TABLE fieldcrypt.key_generations DROP CONSTRAINT key_generations_key_source_check;
ALTER TABLE fieldcrypt.key_generations ADD CONSTRAINT key_generations_key_source_check
    CHECK (key_source IN ('generated', 'administrator', 'imported'));
CREATE FUNCTION fieldcrypt.export_key_generations() RETURNS text
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_export_key_generations';
COMMENT ON FUNCTION fieldcrypt.export_key_generations() IS
    'metadata of every data encryption key generation this database holds (salts, iteration '
    'counts, key check values; no key), for import_key_generations on another node; admins, TLS only';
CREATE FUNCTION fieldcrypt.import_key_generations(document text, passphrase text)
    RETURNS integer[]
    LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_import_key_generations';
COMMENT ON FUNCTION fieldcrypt.import_key_generations(text, text) IS
    'install the key generations of another database''s export that the passphrase opens, '
    'under the same numbers; returns the generations added; admins, TLS only';
-- import_key_generations stays executable by PUBLIC, like set_data_encryption_key: it
-- checks the role itself after registering the passphrase for redaction, so that a refused
-- call cannot leave the passphrase in the STATEMENT line of the server log.
REVOKE ALL ON FUNCTION fieldcrypt.export_key_generations() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.export_key_generations() TO fieldcrypt_admin;
-- END ISSUE11-KEYS

-- ISSUE13-GCM: which AES-256-GCM implementation runs, and a known-answer self test
-- Short messages go to GNU Nettle, the others to OpenSSL (fieldcrypt.crypto_library).
CREATE FUNCTION fieldcrypt.gcm_usage(OUT library text, OUT enabled boolean,
                                     OUT seals bigint, OUT opens bigint, OUT bytes bigint)
    RETURNS SETOF record
    LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'fieldcrypt_gcm_usage';
COMMENT ON FUNCTION fieldcrypt.gcm_usage() IS
    'per AES-256-GCM implementation (openssl, nettle): whether this server uses it '
    '(fieldcrypt.crypto_library, FIPS mode) and how many messages and bytes this backend '
    'sealed and opened with it since it started';
CREATE FUNCTION fieldcrypt.gcm_self_test(OUT library text, OUT vector text, OUT passed boolean)
    RETURNS SETOF record
    LANGUAGE C VOLATILE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_gcm_self_test';
COMMENT ON FUNCTION fieldcrypt.gcm_self_test() IS
    'known-answer test of each AES-256-GCM implementation against the NIST GCM vectors '
    '(AES-256 test cases 13 to 16): seal, open, and refusal of a modified tag';
-- END ISSUE13-GCM

-- ISSUE15-CITUS: fieldcrypt on a Citus cluster
-- The one check of the cluster_ functions: Citus installed here (55000 otherwise, the hint
-- naming the caller and its single-node counterpart).
CREATE FUNCTION fieldcrypt._require_citus(caller text, single_node text) RETURNS void
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'the citus extension is not installed in this database',
            HINT = caller || ' runs on a Citus coordinator; use ' || single_node || ' on a single node.';
    END IF;
END
$fn$;
COMMENT ON FUNCTION fieldcrypt._require_citus(text, text) IS
    'internal: 55000 unless the citus extension is installed in this database (the cluster_ functions)';

-- cluster_key_status() on a Citus coordinator: every node of the cluster (from Citus's
-- metadata) with the key generations its database holds, and whether they are the
-- coordinator's (same numbers, salts, iteration counts and key check values: values
-- written anywhere open everywhere). It reads each node's export_key_generations()
-- through Citus (run_command_on_all_nodes, TLS between nodes), so it needs what that
-- function needs on every node: fieldcrypt_admin (or a superuser) and TLS.
CREATE FUNCTION fieldcrypt.cluster_key_status(
    OUT nodename text, OUT nodeport integer, OUT is_coordinator boolean,
    OUT generations integer[], OUT current_generation integer,
    OUT matches_coordinator boolean, OUT error text)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    mine text;
BEGIN
    PERFORM fieldcrypt._require_citus('fieldcrypt.cluster_key_status()', 'fieldcrypt.key_status');
    mine := fieldcrypt.export_key_generations();
    RETURN QUERY EXECUTE $q$
        SELECT n.nodename::text, n.nodeport, n.groupid = 0,
               CASE WHEN r.success THEN ARRAY(
                   SELECT (pg_catalog.regexp_match(l, '^generation (\d+) '))[1]::integer
                   FROM pg_catalog.regexp_split_to_table(r.result, E'\n') l
                   WHERE l LIKE 'generation %') END,
               CASE WHEN r.success THEN (pg_catalog.regexp_match(r.result, 'generation (\d+) [^\n]*$'))[1]::integer END,
               r.success AND r.result = $1,
               CASE WHEN r.success THEN NULL ELSE r.result END
        FROM pg_catalog.run_command_on_all_nodes('SELECT fieldcrypt.export_key_generations()') r
        JOIN pg_catalog.pg_dist_node n USING (nodeid)
        ORDER BY n.groupid, n.nodeport$q$ USING mine;
END
$fn$;
COMMENT ON FUNCTION fieldcrypt.cluster_key_status() IS
    'on a Citus coordinator: the key generations of every node and whether they are the '
    'coordinator''s; fieldcrypt_admin, TLS';
REVOKE ALL ON FUNCTION fieldcrypt.cluster_key_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.cluster_key_status() TO fieldcrypt_admin;
-- END ISSUE15-CITUS

-- ISSUE13-CACHE: size and hit rate of the decrypted-row cache of encrypted_heap
-- Cluster-wide counters (no row, table or database named): readable by pg_monitor and
-- fieldcrypt_admin, not PUBLIC, since hit rates tell one database about another's reads.
CREATE FUNCTION fieldcrypt.tde_cache_stats(OUT size_bytes bigint, OUT entries integer,
                                           OUT entries_used integer, OUT hits bigint,
                                           OUT misses bigint, OUT evictions bigint,
                                           OUT hit_ratio double precision)
    RETURNS record
    LANGUAGE C VOLATILE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'fieldcrypt_tde_cache_stats';
COMMENT ON FUNCTION fieldcrypt.tde_cache_stats() IS
    'size (fieldcrypt.tde_cache_size), entries (one per heap page), hits, misses and evictions '
    'of the shared cache of decrypted encrypted_heap rows, for the whole cluster';
REVOKE ALL ON FUNCTION fieldcrypt.tde_cache_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.tde_cache_stats() TO pg_monitor, fieldcrypt_admin;
-- END ISSUE13-CACHE

-- ISSUE12-STATS: planner statistics of encrypted_heap tables, kept encrypted
-- ANALYZE of an encrypted_heap table computes the statistics heap's would, and keeps
-- them here (encrypted_heap, one pg_statistic-shaped row as bytea per column) instead
-- of in pg_statistic; the planner reads them through get_relation_stats_hook and
-- get_index_stats_hook. It is a materialized view (never populated by REFRESH, written
-- by fieldcrypt's C code only) because a table would be part of every FOR ALL TABLES
-- publication, which encrypted_heap tables cannot be. No role has any privilege on it.
-- Superusers inspect it through fieldcrypt.pg_stats (the columns of pg_stats; its
-- anyarray columns as text, as a view cannot have anyarray).
CREATE MATERIALIZED VIEW fieldcrypt.tde_statistic USING encrypted_heap AS
    SELECT 0::oid AS starelid, 0::smallint AS staattnum, false AS stainherit, 0::oid AS statype,
           ''::bytea AS stadata
     WHERE false
    WITH NO DATA;
CREATE INDEX tde_statistic_key ON fieldcrypt.tde_statistic (starelid, staattnum, stainherit);
REVOKE ALL ON fieldcrypt.tde_statistic FROM PUBLIC;
COMMENT ON MATERIALIZED VIEW fieldcrypt.tde_statistic IS
    'planner statistics of encrypted_heap tables (pg_statistic rows, encrypted); read by the planner, never by SQL roles';
CREATE FUNCTION fieldcrypt._tde_statistic() RETURNS SETOF pg_catalog.pg_statistic
    LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'fieldcrypt_tde_statistic';
COMMENT ON FUNCTION fieldcrypt._tde_statistic() IS
    'internal: backs the view fieldcrypt.pg_stats; superusers only';
REVOKE ALL ON FUNCTION fieldcrypt._tde_statistic() FROM PUBLIC;
CREATE VIEW fieldcrypt.pg_stats AS
    SELECT n.nspname AS schemaname, c.relname AS tablename, a.attname,
           s.stainherit AS inherited, s.stanullfrac AS null_frac, s.stawidth AS avg_width,
           s.stadistinct AS n_distinct,
           CASE 1 WHEN s.stakind1 THEN s.stavalues1::text WHEN s.stakind2 THEN s.stavalues2::text
                  WHEN s.stakind3 THEN s.stavalues3::text WHEN s.stakind4 THEN s.stavalues4::text
                  WHEN s.stakind5 THEN s.stavalues5::text END AS most_common_vals,
           CASE 1 WHEN s.stakind1 THEN s.stanumbers1 WHEN s.stakind2 THEN s.stanumbers2
                  WHEN s.stakind3 THEN s.stanumbers3 WHEN s.stakind4 THEN s.stanumbers4
                  WHEN s.stakind5 THEN s.stanumbers5 END AS most_common_freqs,
           CASE 2 WHEN s.stakind1 THEN s.stavalues1::text WHEN s.stakind2 THEN s.stavalues2::text
                  WHEN s.stakind3 THEN s.stavalues3::text WHEN s.stakind4 THEN s.stavalues4::text
                  WHEN s.stakind5 THEN s.stavalues5::text END AS histogram_bounds,
           CASE 3 WHEN s.stakind1 THEN s.stanumbers1[1] WHEN s.stakind2 THEN s.stanumbers2[1]
                  WHEN s.stakind3 THEN s.stanumbers3[1] WHEN s.stakind4 THEN s.stanumbers4[1]
                  WHEN s.stakind5 THEN s.stanumbers5[1] END AS correlation,
           CASE 4 WHEN s.stakind1 THEN s.stavalues1::text WHEN s.stakind2 THEN s.stavalues2::text
                  WHEN s.stakind3 THEN s.stavalues3::text WHEN s.stakind4 THEN s.stavalues4::text
                  WHEN s.stakind5 THEN s.stavalues5::text END AS most_common_elems,
           CASE 4 WHEN s.stakind1 THEN s.stanumbers1 WHEN s.stakind2 THEN s.stanumbers2
                  WHEN s.stakind3 THEN s.stanumbers3 WHEN s.stakind4 THEN s.stanumbers4
                  WHEN s.stakind5 THEN s.stanumbers5 END AS most_common_elem_freqs,
           CASE 5 WHEN s.stakind1 THEN s.stanumbers1 WHEN s.stakind2 THEN s.stanumbers2
                  WHEN s.stakind3 THEN s.stanumbers3 WHEN s.stakind4 THEN s.stanumbers4
                  WHEN s.stakind5 THEN s.stanumbers5 END AS elem_count_histogram
      FROM fieldcrypt._tde_statistic() s
      JOIN pg_catalog.pg_class c ON c.oid = s.starelid
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = s.staattnum
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE NOT a.attisdropped;
COMMENT ON VIEW fieldcrypt.pg_stats IS
    'pg_stats for encrypted_heap tables: their statistics, kept encrypted in fieldcrypt.tde_statistic; superusers only';
REVOKE ALL ON fieldcrypt.pg_stats FROM PUBLIC;
-- END ISSUE12-STATS

-- ISSUE12-KEYED: hash operator classes keyed by the database's TDE key
-- A hash index stores only the 32-bit hash code of each key.  With these operator classes
-- the code is HMAC-SHA-256 under a key derived from the database's TDE key (truncated to
-- 32 bits), so index pages and their WAL hold nothing a dictionary reverses.  The index
-- records the TDE key generation in its operator class option "generation", filled in when
-- the index is created (pg_dump dumps it).  Called outside an index (a hash join may pick
-- any hash family holding "="), the functions return the type's own hash.
CREATE FUNCTION fieldcrypt.keyed_hash_options(internal) RETURNS void
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_keyed_hash_options';
COMMENT ON FUNCTION fieldcrypt.keyed_hash_options(internal) IS
    'options of the keyed hash operator classes: generation, the TDE key generation of the index';
CREATE FUNCTION fieldcrypt.keyed_hash(text) RETURNS integer
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_keyed_hash_text';
COMMENT ON FUNCTION fieldcrypt.keyed_hash(text) IS
    'hash support of fieldcrypt.text_keyed_ops: keyed in an index, hashtext otherwise';
CREATE FUNCTION fieldcrypt.keyed_hash(bpchar) RETURNS integer
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_keyed_hash_bpchar';
COMMENT ON FUNCTION fieldcrypt.keyed_hash(bpchar) IS
    'hash support of fieldcrypt.bpchar_keyed_ops (trailing spaces ignored): keyed in an index, hashbpchar otherwise';
CREATE FUNCTION fieldcrypt.keyed_hash(bytea) RETURNS integer
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_keyed_hash_bytea';
COMMENT ON FUNCTION fieldcrypt.keyed_hash(bytea) IS
    'hash support of fieldcrypt.bytea_keyed_ops: keyed in an index, hashvarlena otherwise';
CREATE FUNCTION fieldcrypt.keyed_hash(integer) RETURNS integer
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_keyed_hash_int4';
COMMENT ON FUNCTION fieldcrypt.keyed_hash(integer) IS
    'hash support of fieldcrypt.int4_keyed_ops: keyed in an index, hashint4 otherwise';
CREATE FUNCTION fieldcrypt.keyed_hash(bigint) RETURNS integer
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_keyed_hash_int8';
COMMENT ON FUNCTION fieldcrypt.keyed_hash(bigint) IS
    'hash support of fieldcrypt.int8_keyed_ops: keyed in an index, hashint8 otherwise';
CREATE FUNCTION fieldcrypt.keyed_hash(uuid) RETURNS integer
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_keyed_hash_uuid';
COMMENT ON FUNCTION fieldcrypt.keyed_hash(uuid) IS
    'hash support of fieldcrypt.uuid_keyed_ops: keyed in an index, uuid_hash otherwise';
-- One family per type, with no cross-type operator: PostgreSQL hashes the other type of a
-- cross-type comparison without the index's options, which would not match.
CREATE OPERATOR CLASS fieldcrypt.text_keyed_ops FOR TYPE text USING hash AS
    OPERATOR 1 pg_catalog.= (text, text),
    FUNCTION 1 fieldcrypt.keyed_hash(text),
    FUNCTION 3 fieldcrypt.keyed_hash_options(internal);
CREATE OPERATOR CLASS fieldcrypt.bpchar_keyed_ops FOR TYPE bpchar USING hash AS
    OPERATOR 1 pg_catalog.= (bpchar, bpchar),
    FUNCTION 1 fieldcrypt.keyed_hash(bpchar),
    FUNCTION 3 fieldcrypt.keyed_hash_options(internal);
CREATE OPERATOR CLASS fieldcrypt.bytea_keyed_ops FOR TYPE bytea USING hash AS
    OPERATOR 1 pg_catalog.= (bytea, bytea),
    FUNCTION 1 fieldcrypt.keyed_hash(bytea),
    FUNCTION 3 fieldcrypt.keyed_hash_options(internal);
CREATE OPERATOR CLASS fieldcrypt.int4_keyed_ops FOR TYPE integer USING hash AS
    OPERATOR 1 pg_catalog.= (integer, integer),
    FUNCTION 1 fieldcrypt.keyed_hash(integer),
    FUNCTION 3 fieldcrypt.keyed_hash_options(internal);
CREATE OPERATOR CLASS fieldcrypt.int8_keyed_ops FOR TYPE bigint USING hash AS
    OPERATOR 1 pg_catalog.= (bigint, bigint),
    FUNCTION 1 fieldcrypt.keyed_hash(bigint),
    FUNCTION 3 fieldcrypt.keyed_hash_options(internal);
CREATE OPERATOR CLASS fieldcrypt.uuid_keyed_ops FOR TYPE uuid USING hash AS
    OPERATOR 1 pg_catalog.= (uuid, uuid),
    FUNCTION 1 fieldcrypt.keyed_hash(uuid),
    FUNCTION 3 fieldcrypt.keyed_hash_options(internal);
COMMENT ON OPERATOR CLASS fieldcrypt.text_keyed_ops USING hash IS
    'hash index on text (and varchar) storing keyed hash codes, no values';
COMMENT ON OPERATOR CLASS fieldcrypt.bpchar_keyed_ops USING hash IS
    'hash index on character(n) storing keyed hash codes, no values';
COMMENT ON OPERATOR CLASS fieldcrypt.bytea_keyed_ops USING hash IS
    'hash index on bytea storing keyed hash codes, no values';
COMMENT ON OPERATOR CLASS fieldcrypt.int4_keyed_ops USING hash IS
    'hash index on integer storing keyed hash codes, no values';
COMMENT ON OPERATOR CLASS fieldcrypt.int8_keyed_ops USING hash IS
    'hash index on bigint storing keyed hash codes, no values';
COMMENT ON OPERATOR CLASS fieldcrypt.uuid_keyed_ops USING hash IS
    'hash index on uuid storing keyed hash codes, no values';
-- END ISSUE12-KEYED

-- ISSUE12-EXPOSURE: what each encrypted_heap table exposes at rest beside its rows
-- One row per index of every encrypted_heap table (one row with no index for a table
-- without any).  Readable by everyone: it shows only what pg_class, pg_index and
-- pg_indexes already show to everyone, and whether statistics exist (not their values).
-- planner_statistics says where the table's planner statistics are kept: pg_statistic
-- (plaintext) when fieldcrypt.analyze_values is on, else encrypted in
-- fieldcrypt.tde_statistic.
CREATE VIEW fieldcrypt.tde_exposure AS
SELECT c.oid::pg_catalog.regclass AS table_name,
       ic.oid::pg_catalog.regclass AS index_name,
       am.amname AS access_method,
       k.operator_classes,
       CASE WHEN i.indexrelid IS NULL THEN 'no index'
            WHEN k.keyed THEN 'hash codes under a keyed hash (no values)'
            ELSE 'plaintext values of ' || k.columns END AS exposes,
       COALESCE(NOT k.keyed, false) AS stores_plaintext,
       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_statistic s WHERE s.starelid = c.oid)
            THEN 'pg_statistic (plaintext sample values)'
            WHEN pg_catalog.current_setting('fieldcrypt.analyze_values')::boolean
            THEN 'pg_statistic after the next ANALYZE (plaintext sample values)'
            ELSE 'fieldcrypt.tde_statistic (encrypted)' END AS planner_statistics
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_am tam ON tam.oid = c.relam AND tam.amname = 'encrypted_heap'
  LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid
  LEFT JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  LEFT JOIN pg_catalog.pg_am am ON am.oid = ic.relam
  LEFT JOIN LATERAL (
       SELECT pg_catalog.array_agg(pg_catalog.quote_ident(opcn.nspname) || '.' ||
                                   pg_catalog.quote_ident(opc.opcname) ORDER BY a.n)
                FILTER (WHERE opc.oid IS NOT NULL) AS operator_classes,
              pg_catalog.bool_and(EXISTS (SELECT 1 FROM pg_catalog.pg_amproc ap
                                           WHERE ap.amprocfamily = opc.opcfamily
                                             AND ap.amprocnum = 3
                                             AND ap.amproc = 'fieldcrypt.keyed_hash_options(internal)'::pg_catalog.regprocedure))
                AS keyed,
              pg_catalog.string_agg(pg_catalog.pg_get_indexdef(i.indexrelid, a.n, true), ', ' ORDER BY a.n)
                AS columns
         FROM pg_catalog.generate_series(1, i.indnatts) AS a(n)
         LEFT JOIN pg_catalog.pg_opclass opc
                ON a.n <= i.indnkeyatts AND opc.oid = i.indclass[a.n - 1]
         LEFT JOIN pg_catalog.pg_namespace opcn ON opcn.oid = opc.opcnamespace) k ON true
 WHERE c.relkind IN ('r', 'm');
COMMENT ON VIEW fieldcrypt.tde_exposure IS
    'every index of every encrypted_heap table and what it keeps at rest: plaintext values of '
    'which columns or expressions, or only keyed hash codes; and where planner statistics are kept';
GRANT SELECT ON fieldcrypt.tde_exposure TO PUBLIC;
-- END ISSUE12-EXPOSURE

-- ISSUE15-VIEWS: re-encryption and keys of every node of a Citus cluster
-- On a Citus cluster old generations are destroyed only once every node has re-encrypted
-- its shards (src/rotation/clusterwide.c): a worker node waits, the coordinator's
-- re-encryption worker asks every node through _cluster_reencryption_node and releases
-- them. finish_cluster_reencryption() runs that round on demand. The two cluster_ views
-- read every node's own view through Citus (run_command_on_all_nodes, TLS between nodes)
-- as the calling role, so they need what the single-node view needs on every node.
CREATE FUNCTION fieldcrypt._cluster_reencryption_node(stage text, generation integer, release boolean)
    RETURNS text
    LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_cluster_reencryption_node';
COMMENT ON FUNCTION fieldcrypt._cluster_reencryption_node(text, integer, boolean) IS
    'internal: where this node''s re-encryption is, for the Citus coordinator (done, waiting, '
    'released or not done: why); release lets a waiting node destroy its old generations; fieldcrypt_admin, TLS';
REVOKE ALL ON FUNCTION fieldcrypt._cluster_reencryption_node(text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt._cluster_reencryption_node(text, integer, boolean) TO fieldcrypt_admin;
CREATE FUNCTION fieldcrypt.finish_cluster_reencryption(
    OUT nodename text, OUT nodeport integer, OUT stage text, OUT state text)
    RETURNS SETOF record
    LANGUAGE C VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'fieldcrypt_finish_cluster_reencryption';
COMMENT ON FUNCTION fieldcrypt.finish_cluster_reencryption() IS
    'on a Citus coordinator: asks every other node where its re-encryption is and, when none is '
    'behind, lets the waiting ones destroy their old generations; one row per node and stage; fieldcrypt_admin, TLS';
REVOKE ALL ON FUNCTION fieldcrypt.finish_cluster_reencryption() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.finish_cluster_reencryption() TO fieldcrypt_admin;
CREATE FUNCTION fieldcrypt.cluster_rotation_progress(
    OUT nodename text, OUT nodeport integer, OUT is_coordinator boolean,
    OUT database name, OUT from_generation integer, OUT to_generation integer,
    OUT phase text, OUT tables_done integer, OUT tables_total integer,
    OUT rows_done bigint, OUT rows_total bigint, OUT rows_per_second double precision,
    OUT started_at timestamptz, OUT estimated_end timestamptz, OUT pid integer,
    OUT problem text, OUT error text)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    PERFORM fieldcrypt._require_citus('fieldcrypt.cluster_rotation_progress()', 'fieldcrypt.rotation_progress');
    RETURN QUERY
        SELECT COALESCE(n.nodename::text, pg_catalog.current_setting('citus.local_hostname')),
               COALESCE(n.nodeport, pg_catalog.current_setting('port')::integer),
               COALESCE(n.groupid = 0, true),
               p.database, p.from_generation, p.to_generation, p.phase, p.tables_done,
               p.tables_total, p.rows_done, p.rows_total, p.rows_per_second, p.started_at,
               p.estimated_end, p.pid, p.problem,
               CASE WHEN r.success THEN NULL ELSE r.result END
          FROM pg_catalog.run_command_on_all_nodes(
                 'SELECT COALESCE(pg_catalog.json_agg(p), ''[]'') FROM fieldcrypt.rotation_progress p') r
          LEFT JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
          LEFT JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json END)
               AS p(database name, from_generation integer, to_generation integer, phase text,
                    tables_done integer, tables_total integer, rows_done bigint, rows_total bigint,
                    rows_per_second double precision, started_at timestamptz,
                    estimated_end timestamptz, pid integer, problem text) ON true
         ORDER BY 3 DESC, 2, 4;
END
$fn$;
COMMENT ON FUNCTION fieldcrypt.cluster_rotation_progress() IS
    'on a Citus coordinator: fieldcrypt.rotation_progress of every node (one row with NULL '
    'columns for a node with nothing to re-encrypt, error for a node that did not answer)';
CREATE FUNCTION fieldcrypt.cluster_tde_key_status(
    OUT nodename text, OUT nodeport integer, OUT is_coordinator boolean,
    OUT generation integer, OUT is_current boolean, OUT created_at timestamptz,
    OUT tables text[], OUT error text)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    PERFORM fieldcrypt._require_citus('fieldcrypt.cluster_tde_key_status()', 'fieldcrypt.tde_key_status');
    RETURN QUERY
        SELECT COALESCE(n.nodename::text, pg_catalog.current_setting('citus.local_hostname')),
               COALESCE(n.nodeport, pg_catalog.current_setting('port')::integer),
               COALESCE(n.groupid = 0, true),
               t.generation, t.is_current, t.created_at, t.tables,
               CASE WHEN r.success THEN NULL ELSE r.result END
          FROM pg_catalog.run_command_on_all_nodes(
                 'SELECT COALESCE(pg_catalog.json_agg(t), ''[]'') FROM fieldcrypt.tde_key_status t') r
          LEFT JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
          LEFT JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json END)
               AS t(generation integer, is_current boolean, created_at timestamptz, tables text[]) ON true
         ORDER BY 3 DESC, 2, 4;
END
$fn$;
COMMENT ON FUNCTION fieldcrypt.cluster_tde_key_status() IS
    'on a Citus coordinator: fieldcrypt.tde_key_status of every node (tables by name); fieldcrypt_admin';
REVOKE ALL ON FUNCTION fieldcrypt.cluster_tde_key_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.cluster_tde_key_status() TO fieldcrypt_admin;
-- END ISSUE15-VIEWS

-- ISSUE15-2PC: key changes on a Citus coordinator, prepared on every worker
-- The gids a coordinator prepared a key change under on its workers, written only by
-- fieldcrypt itself in the key change's transaction (src/keys/cluster_2pc.c): a committed
-- row is the decision that the worker's prepared transaction commits.
CREATE TABLE fieldcrypt.cluster_transactions (
    gid text PRIMARY KEY,
    nodeid integer NOT NULL,
    nodename text NOT NULL,
    nodeport integer NOT NULL,
    prepared_at timestamptz NOT NULL DEFAULT pg_catalog.now()
) USING heap;	-- readable whatever default_table_access_method says
COMMENT ON TABLE fieldcrypt.cluster_transactions IS
    'on a Citus coordinator: the prepared transactions of committed key changes on workers, '
    'until they are committed there';
REVOKE ALL ON fieldcrypt.cluster_transactions FROM PUBLIC;
GRANT SELECT ON fieldcrypt.cluster_transactions TO fieldcrypt_admin;

CREATE FUNCTION fieldcrypt.recover_cluster_key_changes() RETURNS integer
    AS 'MODULE_PATHNAME', 'fieldcrypt_recover_cluster_key_changes'
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION fieldcrypt.recover_cluster_key_changes() IS
    'on a Citus coordinator: commit on workers the key changes the coordinator committed, '
    'roll back the others left prepared; how many were finished; fieldcrypt_admin';
REVOKE ALL ON FUNCTION fieldcrypt.recover_cluster_key_changes() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.recover_cluster_key_changes() TO fieldcrypt_admin;
CREATE FUNCTION fieldcrypt.cluster_sync_keys(nodename text DEFAULT NULL, nodeport integer DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'fieldcrypt_cluster_sync_keys'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION fieldcrypt.cluster_sync_keys(text, integer) IS
    'on a Citus coordinator: give every worker, or the node nodename:nodeport about to be added, '
    'the current key generation, all or none; fieldcrypt_admin, TLS';
REVOKE ALL ON FUNCTION fieldcrypt.cluster_sync_keys(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.cluster_sync_keys(text, integer) TO fieldcrypt_admin;
-- END ISSUE15-2PC

-- ISSUE15-TENANT: tenant-key changes and rotate_tde_key on a Citus coordinator reach every node
-- On a Citus coordinator upload_tenant_key, use_hsm_tenant_key, generate_tenant_key,
-- revert_tenant_key and rotate_tde_key first run their check-only twins on every worker
-- (every check of the function, nothing written: a refusal changes no node), then the
-- function on every worker, then on the coordinator (src/keys/cluster_tenant.c).
CREATE FUNCTION fieldcrypt._tenant_key_check(mode text, pfx bytea, password text,
    module text, token text, label text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'fieldcrypt_tenant_key_check'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION fieldcrypt._tenant_key_check(text, bytea, text, text, text, text) IS
    'internal: every check of a tenant-key change (mode pfx, hsm, generate or revert), nothing '
    'changed; a Citus coordinator runs it on every worker first; fieldcrypt_admin, TLS';
REVOKE ALL ON FUNCTION fieldcrypt._tenant_key_check(text, bytea, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt._tenant_key_check(text, bytea, text, text, text, text) TO fieldcrypt_admin;
CREATE FUNCTION fieldcrypt._rotate_tde_key_check() RETURNS void
    AS 'MODULE_PATHNAME', 'fieldcrypt_rotate_tde_key_check'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION fieldcrypt._rotate_tde_key_check() IS
    'internal: every check of rotate_tde_key, nothing changed; a Citus coordinator runs it on '
    'every worker first; fieldcrypt_admin, TLS';
REVOKE ALL ON FUNCTION fieldcrypt._rotate_tde_key_check() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt._rotate_tde_key_check() TO fieldcrypt_admin;

-- cluster_tenant_key_status(): fieldcrypt.tenant_key_status of every node, one row each
-- (error for a node that did not answer).
CREATE FUNCTION fieldcrypt.cluster_tenant_key_status(
    OUT nodename text, OUT nodeport integer, OUT is_coordinator boolean,
    OUT mode text, OUT key_id text, OUT algorithm text, OUT key_bits integer,
    OUT installed_at timestamptz, OUT hsm_token text, OUT hsm_key_label text,
    OUT keyring text, OUT error text)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
    AS $fn$
BEGIN
    PERFORM fieldcrypt._require_citus('fieldcrypt.cluster_tenant_key_status()', 'fieldcrypt.tenant_key_status');
    RETURN QUERY
        SELECT COALESCE(n.nodename::text, pg_catalog.current_setting('citus.local_hostname')),
               COALESCE(n.nodeport, pg_catalog.current_setting('port')::integer),
               COALESCE(n.groupid = 0, true),
               t.mode, t.key_id, t.algorithm, t.key_bits, t.installed_at, t.hsm_token,
               t.hsm_key_label, t.keyring,
               CASE WHEN r.success THEN NULL ELSE r.result END
          FROM pg_catalog.run_command_on_all_nodes(
                 'SELECT pg_catalog.row_to_json(t) FROM fieldcrypt.tenant_key_status t') r
          LEFT JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
          LEFT JOIN LATERAL pg_catalog.json_to_record(CASE WHEN r.success THEN r.result::json END)
               AS t(mode text, key_id text, algorithm text, key_bits integer,
                    installed_at timestamptz, hsm_token text, hsm_key_label text,
                    keyring text) ON true
         ORDER BY 3 DESC, 2;
END
$fn$;
COMMENT ON FUNCTION fieldcrypt.cluster_tenant_key_status() IS
    'on a Citus coordinator: fieldcrypt.tenant_key_status of every node; fieldcrypt_admin';
REVOKE ALL ON FUNCTION fieldcrypt.cluster_tenant_key_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fieldcrypt.cluster_tenant_key_status() TO fieldcrypt_admin;
-- END ISSUE15-TENANT
