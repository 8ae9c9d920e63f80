-- The check after a statement (fc_restrict_after, src/columns/restrict.c) sees the table as
-- the statement left it. A CREATE INDEX passes the check before the statement when the
-- column it names is not encrypted, or not there, at that time; an event trigger on
-- ddl_command_start runs after that check and before the index is built, and can add or
-- replace the column. Only the check after the statement then stands between the index and
-- the encrypted column: it must refuse the index and roll the whole statement back (the
-- trigger's column included). The same holds for CHECK constraints and extended statistics.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS fieldcrypt;
RESET client_min_messages;
CREATE SCHEMA ra;
SET search_path = ra, public;
-- heap in both pg_regress passes: on encrypted_heap, CREATE STATISTICS is refused for the
-- table as a whole before any column is looked at (tam_stats tests that)
CREATE TABLE acct (id int PRIMARY KEY, note text) USING heap;
INSERT INTO acct VALUES (1, 'n1');

-- the trigger: before CREATE INDEX, give acct an encrypted column "secret"
CREATE FUNCTION ra.add_secret() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute
                  WHERE attrelid = 'ra.acct'::regclass AND attname = 'secret' AND NOT attisdropped) THEN
    ALTER TABLE ra.acct ADD COLUMN secret fieldcrypt.encrypted_text;
  END IF;
END $$;
CREATE EVENT TRIGGER ra_add_secret ON ddl_command_start WHEN TAG IN ('CREATE INDEX')
  EXECUTE FUNCTION ra.add_secret();

-- each index form names "secret", which does not exist yet when the statement starts
CREATE INDEX acct_secret_null ON acct ((secret IS NULL));
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX acct_note_where ON acct (note) WHERE secret IS NOT NULL;
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX acct_row ON acct ((acct IS NULL));
\echo :LAST_ERROR_SQLSTATE
CREATE UNIQUE INDEX acct_incl ON acct (id) INCLUDE (secret);
\echo :LAST_ERROR_SQLSTATE
-- each statement was rolled back whole: no index, no column
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'ra.acct'::regclass;
SELECT count(*) AS secret_columns FROM pg_attribute
 WHERE attrelid = 'ra.acct'::regclass AND attname = 'secret' AND NOT attisdropped;

-- an index that does not cover the new encrypted column is allowed, and keeps it
CREATE INDEX acct_note ON acct (note);
SELECT indexrelid::regclass AS index FROM pg_index WHERE indrelid = 'ra.acct'::regclass ORDER BY 1::text;
SELECT attname FROM pg_attribute WHERE attrelid = 'ra.acct'::regclass AND attnum > 0 ORDER BY attnum;

-- the same with a column that exists but is replaced: "note" becomes encrypted
DROP INDEX acct_note;
ALTER TABLE acct DROP COLUMN secret;
CREATE OR REPLACE FUNCTION ra.add_secret() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  ALTER TABLE ra.acct DROP COLUMN note;
  ALTER TABLE ra.acct ADD COLUMN note fieldcrypt.encrypted_text;
END $$;
CREATE INDEX acct_note2 ON acct ((note IS NULL));
\echo :LAST_ERROR_SQLSTATE
SELECT format_type(atttypid, atttypmod) AS note_type FROM pg_attribute
 WHERE attrelid = 'ra.acct'::regclass AND attname = 'note' AND NOT attisdropped;
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'ra.acct'::regclass;

-- the same for a CHECK constraint (ALTER TABLE) and extended statistics: the trigger adds
-- the encrypted column "secret" they name
DROP EVENT TRIGGER ra_add_secret;
-- (its own ALTER TABLE fires it again: a setting keeps it from recursing)
CREATE OR REPLACE FUNCTION ra.add_secret() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('ra.adding', true) = 'on' THEN
    RETURN;
  END IF;
  PERFORM set_config('ra.adding', 'on', true);
  ALTER TABLE ra.acct ADD COLUMN secret fieldcrypt.encrypted_text;
  PERFORM set_config('ra.adding', 'off', true);
END $$;
CREATE EVENT TRIGGER ra_add_secret ON ddl_command_start WHEN TAG IN ('ALTER TABLE', 'CREATE STATISTICS')
  EXECUTE FUNCTION ra.add_secret();
ALTER TABLE acct ADD CONSTRAINT acct_ck CHECK (secret IS NOT NULL OR id > 0);
\echo :LAST_ERROR_SQLSTATE
CREATE STATISTICS acct_st ON id, (secret IS NULL) FROM acct;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS check_constraints FROM pg_constraint WHERE conrelid = 'ra.acct'::regclass AND contype = 'c';
SELECT count(*) AS statistics FROM pg_statistic_ext WHERE stxrelid = 'ra.acct'::regclass;
SELECT count(*) AS secret_columns FROM pg_attribute
 WHERE attrelid = 'ra.acct'::regclass AND attname = 'secret' AND NOT attisdropped;

DROP EVENT TRIGGER ra_add_secret;
RESET search_path;
DROP SCHEMA ra CASCADE;
