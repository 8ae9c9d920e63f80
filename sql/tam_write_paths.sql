--
-- tam_write_paths: the write paths of encrypted_heap store what heap stores,
-- whatever the row's layout.  COPY FROM (the multi-insert path, which
-- encrypts each row from the plain tuple COPY materialized) and INSERT (one
-- row at a time, from the slot's values, or from the tuple a BEFORE trigger
-- returned) into tables of every shape the sealing code distinguishes:
-- fixed-width columns only and a single varlena (contents in one piece,
-- sealed where they lie), mixed columns with NULLs (gathered), a dropped
-- column, a column added later, no column at all, and values large enough
-- for the toaster (compressed or moved out of line).  Each table is loaded
-- twice, USING heap (the control) and USING encrypted_heap, and compared
-- with tam_digest (row count and md5 of all rows in order); every row read
-- back was authenticated, so a stored row sealed wrongly fails the read.
--
-- Runs in a database of its own.  Control tables say USING heap explicitly:
-- this file also runs in the pass where default_table_access_method =
-- encrypted_heap.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tam_write;
RESET client_min_messages;
CREATE DATABASE fc_tam_write TEMPLATE template0;
\c fc_tam_write
CREATE EXTENSION fieldcrypt;

CREATE FUNCTION tam_digest(rel regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE format('SELECT count(*) || '':'' || md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) FROM %s x', rel)
       INTO r;
    RETURN r;
END $$;

-- same(a, b): both tables hold the same rows (and at least one)
CREATE FUNCTION same(a regclass, b regclass) RETURNS boolean LANGUAGE sql AS $$
    SELECT tam_digest(a) = tam_digest(b) AND tam_digest(a) NOT LIKE '0:%'
$$;

-- fixed-width columns only: the contents are one piece
CREATE TABLE fx_h (a int, b bigint, c bool, d float8) USING heap;
CREATE TABLE fx_e (a int, b bigint, c bool, d float8) USING encrypted_heap;
COPY fx_h FROM STDIN;
1	10000000000	t	1.5
2	-3	f	-0.25
3	0	t	1e300
\.
COPY fx_e FROM STDIN;
1	10000000000	t	1.5
2	-3	f	-0.25
3	0	t	1e300
\.
INSERT INTO fx_h VALUES (4, 4, false, 4.0), (5, 5, true, 5.5);
INSERT INTO fx_e VALUES (4, 4, false, 4.0), (5, 5, true, 5.5);
SELECT same('fx_h', 'fx_e');
SELECT * FROM fx_e ORDER BY a;

-- a single varlena: one piece too, after its header
CREATE TABLE vl_h (t text) USING heap;
CREATE TABLE vl_e (t text) USING encrypted_heap;
COPY vl_h FROM STDIN;
one
a somewhat longer value, still stored inline
\N

\.
COPY vl_e FROM STDIN;
one
a somewhat longer value, still stored inline
\N

\.
SELECT same('vl_h', 'vl_e');
SELECT t, t IS NULL AS isnull FROM vl_e ORDER BY t NULLS LAST;

-- mixed columns with NULLs (null bitmap, several pieces around headers and
-- padding), as pgbench_accounts plus a nullable varlena in the middle
CREATE TABLE mx_h (aid int NOT NULL, note text, bid int, abalance int, filler char(84)) USING heap;
CREATE TABLE mx_e (aid int NOT NULL, note text, bid int, abalance int, filler char(84)) USING encrypted_heap;
INSERT INTO mx_h SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || i END,
       CASE WHEN i % 5 = 0 THEN NULL ELSE i / 10 END, i * 7, CASE WHEN i % 7 = 0 THEN NULL ELSE '' END
  FROM generate_series(1, 2500) i;
-- COPY FROM a file the server reads: the same rows, batches of 1,000 rows
COPY (SELECT * FROM mx_h ORDER BY aid) TO '/tmp/fc_tam_write_mx.copy';
COPY mx_e FROM '/tmp/fc_tam_write_mx.copy';
SELECT same('mx_h', 'mx_e');
SELECT count(*) AS rows, count(note) AS notes, count(bid) AS bids, count(filler) AS fillers FROM mx_e;
-- one row at a time (INSERT ... SELECT) gives the same stored contents
CREATE TABLE mx_e2 (aid int NOT NULL, note text, bid int, abalance int, filler char(84)) USING encrypted_heap;
INSERT INTO mx_e2 SELECT * FROM mx_h;
SELECT same('mx_h', 'mx_e2');

-- a dropped column (NULL in every new row) and a column added afterwards
CREATE TABLE dr_h (a int, gone text, b text) USING heap;
CREATE TABLE dr_e (a int, gone text, b text) USING encrypted_heap;
INSERT INTO dr_h VALUES (1, 'before the drop', 'x');
INSERT INTO dr_e VALUES (1, 'before the drop', 'x');
ALTER TABLE dr_h DROP COLUMN gone;
ALTER TABLE dr_e DROP COLUMN gone;
ALTER TABLE dr_h ADD COLUMN c int DEFAULT 42;
ALTER TABLE dr_e ADD COLUMN c int DEFAULT 42;
COPY dr_h (a, b) FROM STDIN;
2	copied after the drop
3	\N
\.
COPY dr_e (a, b) FROM STDIN;
2	copied after the drop
3	\N
\.
COPY dr_h FROM STDIN;
4	with c	7
\.
COPY dr_e FROM STDIN;
4	with c	7
\.
SELECT same('dr_h', 'dr_e');
SELECT * FROM dr_e ORDER BY a;

-- no column at all
CREATE TABLE nc_h () USING heap;
CREATE TABLE nc_e () USING encrypted_heap;
INSERT INTO nc_h DEFAULT VALUES;
INSERT INTO nc_e DEFAULT VALUES;
COPY nc_h FROM STDIN;

\.
COPY nc_e FROM STDIN;

\.
SELECT count(*) FROM nc_e;
SELECT same('nc_h', 'nc_e');

-- values for the toaster: compressible (compressed inline) and not
-- compressible (moved out of line), through COPY and INSERT
CREATE TABLE big_h (id int, doc text) USING heap;
CREATE TABLE big_e (id int, doc text) USING encrypted_heap;
COPY (SELECT 1, repeat('compressible ', 400)
      UNION ALL SELECT 2, string_agg(md5(g::text), '') FROM generate_series(1, 300) g
      UNION ALL SELECT 3, 'small') TO '/tmp/fc_tam_write_big.copy';
COPY big_h FROM '/tmp/fc_tam_write_big.copy';
COPY big_e FROM '/tmp/fc_tam_write_big.copy';
INSERT INTO big_h SELECT 4, string_agg(md5(g::text), '') FROM generate_series(1, 200) g;
INSERT INTO big_e SELECT 4, string_agg(md5(g::text), '') FROM generate_series(1, 200) g;
SELECT same('big_h', 'big_e');
SELECT id, length(doc) FROM big_e ORDER BY id;

-- a BEFORE trigger returns the row to store (a plain tuple in the slot)
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.b := upper(NEW.b) || '!';
    RETURN NEW;
END $$;
CREATE TABLE tg_h (a int, b text, c int) USING heap;
CREATE TABLE tg_e (a int, b text, c int) USING encrypted_heap;
CREATE TRIGGER shout BEFORE INSERT ON tg_h FOR EACH ROW EXECUTE FUNCTION shout();
CREATE TRIGGER shout BEFORE INSERT ON tg_e FOR EACH ROW EXECUTE FUNCTION shout();
INSERT INTO tg_h VALUES (1, 'inserted', NULL), (2, 'twice', 2);
INSERT INTO tg_e VALUES (1, 'inserted', NULL), (2, 'twice', 2);
COPY tg_h FROM STDIN;
3	copied	3
\.
COPY tg_e FROM STDIN;
3	copied	3
\.
SELECT same('tg_h', 'tg_e');
SELECT * FROM tg_e ORDER BY a;

-- COPY into a table of 40 partitions, the rows taking them in turn: COPY
-- keeps batches for 32 partitions at most, so it ends the bulk insert of
-- some partitions (finish_bulk_insert frees the batch memory) while others
-- still take rows, and starts it again for them later
CREATE TABLE pt_h (k int, v text) PARTITION BY LIST ((k % 40));
CREATE TABLE pt_e (k int, v text) PARTITION BY LIST ((k % 40));
DO $$
BEGIN
    FOR i IN 0..39 LOOP
        EXECUTE format('CREATE TABLE pt_h_%s PARTITION OF pt_h FOR VALUES IN (%s) USING heap', i, i);
        EXECUTE format('CREATE TABLE pt_e_%s PARTITION OF pt_e FOR VALUES IN (%s) USING encrypted_heap', i, i);
    END LOOP;
END $$;
INSERT INTO pt_h SELECT i, 'row ' || i || repeat('.', i % 50) FROM generate_series(1, 20000) i;
COPY (SELECT * FROM pt_h ORDER BY k) TO '/tmp/fc_tam_write_pt.copy';
COPY pt_e FROM '/tmp/fc_tam_write_pt.copy';
SELECT same('pt_h', 'pt_e');
SELECT count(DISTINCT tableoid) AS partitions, min(n), max(n)
  FROM (SELECT tableoid, count(*) AS n FROM pt_e GROUP BY tableoid) p;

-- the rows written are readable after the backend's caches are gone
\c fc_tam_write
SELECT same('fx_h', 'fx_e') AND same('vl_h', 'vl_e') AND same('mx_h', 'mx_e')
   AND same('dr_h', 'dr_e') AND same('big_h', 'big_e') AND same('tg_h', 'tg_e')
   AND same('pt_h', 'pt_e') AS all_same;

\! rm -f /tmp/fc_tam_write_mx.copy /tmp/fc_tam_write_big.copy /tmp/fc_tam_write_pt.copy
\c :regress_db
DROP DATABASE fc_tam_write;
