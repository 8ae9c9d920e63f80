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
