\echo Use "ALTER EXTENSION fieldcrypt UPDATE TO '1.1'" to load this file. \quit

-- fieldcrypt 1.0 -> 1.1. Every section below has its twin at the end of
-- fieldcrypt--1.1.sql, so that a database made with 1.0 and updated ends up
-- with the same objects as one made with 1.1 (test/t/090_upgrade.pl checks).

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
-- planner_statistics says where the table's planner statistics are kept.
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
            ELSE 'none' END AS planner_statistics
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
