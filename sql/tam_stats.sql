--
-- tam_stats: planner statistics of encrypted_heap tables, kept encrypted.
--
-- ANALYZE of an encrypted_heap table computes the statistics heap's would and
-- keeps them in fieldcrypt.tde_statistic (encrypted_heap); pg_statistic gets
-- nothing.  The planner reads them through get_relation_stats_hook /
-- get_index_stats_hook / get_attavgwidth_hook.  Three schemas hold the same
-- tables and data: sh USING heap, se USING encrypted_heap (both analyzed), and
-- sn USING encrypted_heap, vacuumed but never analyzed (same reltuples and
-- relpages, no statistics).  twin() plans a query in each (EXPLAIN (COSTS OFF),
-- search_path set to the schema) and shows heap's plan, whether encrypted_heap's
-- is the same, and whether the plan needs the statistics (sn's differs): a shape
-- whose plan does not depend on statistics proves nothing.
--
-- Runs in a database of its own, over TLS as a superuser.  Tables say USING
-- explicitly: this file also runs with default_table_access_method =
-- encrypted_heap.  After each refused statement, \echo :LAST_ERROR_SQLSTATE.
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_tam_stats;
DROP ROLE IF EXISTS regress_fc_stats_user;
DROP ROLE IF EXISTS regress_fc_stats_admin;
RESET client_min_messages;
CREATE DATABASE fc_tam_stats TEMPLATE template0;
CREATE ROLE regress_fc_stats_user LOGIN;
CREATE ROLE regress_fc_stats_admin LOGIN;
\c fc_tam_stats
CREATE EXTENSION fieldcrypt;
GRANT fieldcrypt_admin TO regress_fc_stats_admin;
-- (autovacuum_enabled = off on every table: the sn schema stays without statistics)
CREATE SCHEMA sh;
CREATE SCHEMA se;
CREATE SCHEMA sn;

-- the same tables in each schema, USING given by :am
CREATE FUNCTION make_twins(s text, am text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET LOCAL search_path = %I', s);
    -- orders: skewed status, correlated id, expression and hash indexes
    EXECUTE format('CREATE TABLE orders (id int, customer int, status text, amount numeric, note text) USING %I
                    WITH (autovacuum_enabled = off)', am);
    INSERT INTO orders SELECT g, g % 500, CASE WHEN g % 100 = 0 THEN 'open' ELSE 'closed' END,
                              (g % 1000) * 1.5, CASE WHEN g = 7 THEN 'rare' ELSE 'n' || (g % 2) END
      FROM generate_series(1, 20000) g;
    CREATE INDEX orders_id ON orders USING btree (id);
    CREATE INDEX orders_status ON orders USING btree (status);
    CREATE INDEX orders_brin ON orders USING brin (amount) WITH (pages_per_range = 4);
    CREATE INDEX orders_note ON orders USING hash (note);
    CREATE INDEX orders_upper ON orders USING btree (upper(status));
    -- customers: a small dimension table
    EXECUTE format('CREATE TABLE customers (id int, region int, name text) USING %I
                    WITH (autovacuum_enabled = off)', am);
    INSERT INTO customers SELECT g, g % 5, 'customer ' || g FROM generate_series(0, 499) g;
    CREATE INDEX customers_id ON customers (id);
    -- events: few distinct keys (Memoize), sorted prefix (incremental sort)
    EXECUTE format('CREATE TABLE events (k int, t int, payload text) USING %I
                    WITH (autovacuum_enabled = off)', am);
    INSERT INTO events SELECT g % 10, g, 'p' || g FROM generate_series(1, 10000) g;
    CREATE INDEX events_k ON events (k);
    -- a partitioned table whose partitions use am (inherited statistics)
    CREATE TABLE parted (id int, grp int, v text) PARTITION BY RANGE (id);
    EXECUTE format('CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (5000) USING %I
                    WITH (autovacuum_enabled = off)', am);
    EXECUTE format('CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (5000) TO (10000) USING %I
                    WITH (autovacuum_enabled = off)', am);
    INSERT INTO parted SELECT g, g % 3, 'v' || (g % 3) FROM generate_series(0, 9999) g;
END $$;
SELECT make_twins('sh', 'heap'), make_twins('se', 'encrypted_heap'), make_twins('sn', 'encrypted_heap');
ANALYZE sh.orders, sh.customers, sh.events, sh.parted;
ANALYZE se.orders, se.customers, se.events, se.parted;
VACUUM sn.orders, sn.customers, sn.events, sn.parted_1, sn.parted_2;

-- Plans of a query in the three schemas.
CREATE FUNCTION plan_in(s text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE p text := ''; l text;
BEGIN
    PERFORM set_config('search_path', s || ', public', true);
    FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP p := p || l || E'\n'; END LOOP;
    PERFORM set_config('search_path', 'public', true);
    RETURN p;
END $$;
CREATE FUNCTION twin(q text, OUT same_as_heap boolean, OUT needs_stats boolean, OUT heap_plan text)
LANGUAGE plpgsql AS $$
DECLARE h text := plan_in('sh', q);
BEGIN
    same_as_heap := h = plan_in('se', q);
    needs_stats := plan_in('se', q) <> plan_in('sn', q);
    heap_plan := h;
END $$;
-- The planner's row estimate of a query.
CREATE FUNCTION est(q text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE j json;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || q INTO j;
    RETURN (j -> 0 -> 'Plan' ->> 'Plan Rows')::numeric;
END $$;
\pset format unaligned
\pset fieldsep ' | '

-- pg_statistic holds nothing of the encrypted tables; tde_statistic does
SELECT s, (SELECT count(*) FROM pg_statistic st JOIN pg_class c ON c.oid = st.starelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = s) AS pg_statistic_rows
  FROM unnest(ARRAY['sh', 'se', 'sn']) s;
SELECT n.nspname, c.relname, count(*) AS tde_statistic_rows
  FROM fieldcrypt._tde_statistic() t JOIN pg_class c ON c.oid = t.starelid
  JOIN pg_namespace n ON n.oid = c.relnamespace GROUP BY 1, 2 ORDER BY 1, 2;

-- scan choice by a skewed equality: seq scan for the common value, index for the rare one
SELECT * FROM twin($$SELECT * FROM orders WHERE status = 'closed'$$);
SELECT * FROM twin($$SELECT * FROM orders WHERE status = 'open'$$);
-- expression index statistics (upper(status))
SELECT * FROM twin($$SELECT * FROM orders WHERE upper(status) = 'CLOSED'$$);
-- range on a correlated column: index scan
SELECT * FROM twin($$SELECT * FROM orders WHERE id < 50$$);
-- brin: correlation of amount is low (cycles): no brin
SELECT * FROM twin($$SELECT * FROM orders WHERE amount < 3$$);
-- hash index: a value of half the rows (seq scan), a rare one (hash index)
SELECT * FROM twin($$SELECT * FROM orders WHERE note = 'n1'$$);
SELECT * FROM twin($$SELECT * FROM orders WHERE note = 'rare'$$);
-- hash aggregate: 500 groups known; with little work_mem, 20000 groups are
-- aggregated in order instead
SELECT * FROM twin($$SELECT customer, count(*) FROM orders GROUP BY customer$$);
SET work_mem = '64kB';
SELECT * FROM twin($$SELECT id, count(*) FROM orders GROUP BY id$$);
RESET work_mem;
SELECT * FROM twin($$SELECT status, sum(amount) FROM orders GROUP BY status ORDER BY status$$);
-- join: a selective filter on the dimension
SELECT * FROM twin($$SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer WHERE c.region = 1 AND o.status = 'open'$$);
-- memoize: few distinct inner keys
SET enable_hashjoin = off; SET enable_mergejoin = off;
SELECT * FROM twin($$SELECT count(*) FROM orders o JOIN events e ON e.k = o.customer % 10 WHERE o.id < 1000$$);
RESET enable_hashjoin; RESET enable_mergejoin;
-- incremental sort over an index on the prefix
SELECT * FROM twin($$SELECT * FROM events ORDER BY k, t LIMIT 10$$);
-- partitions: inherited statistics of the parent, and pruning
SELECT * FROM twin($$SELECT grp, count(*) FROM parted GROUP BY grp$$);
SET work_mem = '64kB';
SELECT * FROM twin($$SELECT id, count(*) FROM parted GROUP BY id$$);
RESET work_mem;
SELECT * FROM twin($$SELECT * FROM parted WHERE id < 100 AND grp = 1$$);
\pset format aligned
\pset fieldsep '|'
-- the parent's statistics are stainherit ones
SELECT c.relname, t.stainherit, count(*) FROM fieldcrypt._tde_statistic() t JOIN pg_class c ON c.oid = t.starelid
 WHERE c.relnamespace = 'se'::regnamespace AND c.relname LIKE 'parted%' GROUP BY 1, 2 ORDER BY 1, 2;

-- fieldcrypt.pg_stats: the same statistics as pg_stats of the heap twin
SELECT count(*) AS rows_heap FROM pg_stats WHERE schemaname = 'sh';
SELECT count(*) AS rows_encrypted FROM fieldcrypt.pg_stats WHERE schemaname = 'se';
SELECT count(*) AS differ FROM (
    (SELECT tablename, attname, inherited, null_frac, avg_width, n_distinct, most_common_vals::text,
            most_common_freqs::text, histogram_bounds::text, correlation, most_common_elems::text
       FROM fieldcrypt.pg_stats WHERE schemaname = 'se'
     EXCEPT
     SELECT tablename, attname, inherited, null_frac, avg_width, n_distinct, most_common_vals::text,
            most_common_freqs::text, histogram_bounds::text, correlation, most_common_elems::text
       FROM pg_stats WHERE schemaname = 'sh')
    UNION ALL
    (SELECT tablename, attname, inherited, null_frac, avg_width, n_distinct, most_common_vals::text,
            most_common_freqs::text, histogram_bounds::text, correlation, most_common_elems::text
       FROM pg_stats WHERE schemaname = 'sh' AND tablename NOT LIKE 'parted%'
     EXCEPT
     SELECT tablename, attname, inherited, null_frac, avg_width, n_distinct, most_common_vals::text,
            most_common_freqs::text, histogram_bounds::text, correlation, most_common_elems::text
       FROM fieldcrypt.pg_stats WHERE schemaname = 'se')) d;
SELECT tablename, attname, inherited, null_frac, avg_width, n_distinct, most_common_vals, most_common_freqs
  FROM fieldcrypt.pg_stats WHERE schemaname = 'se' AND tablename IN ('orders', 'orders_upper')
   AND attname IN ('status', 'upper') ORDER BY 1, 2;

-- Who may read them: superusers only (42501 for everyone else, fieldcrypt_admin too)
SET ROLE regress_fc_stats_admin;
SELECT count(*) FROM fieldcrypt.pg_stats;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM fieldcrypt._tde_statistic();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM fieldcrypt.tde_statistic;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- (the storage itself is a materialized view no SQL reads: superusers use pg_stats)
SELECT count(*) FROM fieldcrypt.tde_statistic;
GRANT EXECUTE ON FUNCTION fieldcrypt._tde_statistic() TO regress_fc_stats_user;
SET ROLE regress_fc_stats_user;
SELECT count(*) FROM fieldcrypt._tde_statistic();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE EXECUTE ON FUNCTION fieldcrypt._tde_statistic() FROM regress_fc_stats_user;

-- The planner hands the statistics' values to a leaky operator only for a role
-- that may read every row of the column (as core's examine_variable): the
-- operator counts its calls in leak.n.
CREATE FUNCTION leak_lt(numeric, numeric) RETURNS boolean LANGUAGE plpgsql COST 1 AS $$
BEGIN
    PERFORM set_config('leak.n', (coalesce(nullif(current_setting('leak.n', true), ''), '0')::int + 1)::text, false);
    RETURN $1 < $2;
END $$;
CREATE OPERATOR <<< (procedure = leak_lt, leftarg = numeric, rightarg = numeric, restrict = scalarltsel);
CREATE FUNCTION leak_lt_i(int, int) RETURNS boolean LANGUAGE plpgsql COST 1 AS $$
BEGIN
    RETURN leak_lt($1, $2);
END $$;
CREATE OPERATOR <<< (procedure = leak_lt_i, leftarg = int, rightarg = int, restrict = scalarltsel);
GRANT USAGE ON SCHEMA se, sh TO regress_fc_stats_user;
CREATE FUNCTION leaks(q text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE l text;
BEGIN
    PERFORM set_config('leak.n', '0', false);
    BEGIN
        FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    RETURN current_setting('leak.n')::int;
END $$;
-- the owner: the operator sees histogram values, heap and encrypted_heap alike
SELECT leaks('SELECT id FROM sh.orders WHERE amount <<< 10') > 0 AS heap_owner,
       leaks('SELECT id FROM se.orders WHERE amount <<< 10') > 0 AS encrypted_owner;
-- a role with SELECT on id only: the statement is refused at execution, and
-- planning gave the operator nothing
GRANT SELECT (id) ON sh.orders, se.orders TO regress_fc_stats_user;
SET ROLE regress_fc_stats_user;
SELECT leaks('SELECT id FROM sh.orders WHERE amount <<< 10') AS heap_no_column,
       leaks('SELECT id FROM se.orders WHERE amount <<< 10') AS encrypted_no_column;
RESET ROLE;
-- SELECT on the column: allowed
GRANT SELECT (amount) ON sh.orders, se.orders TO regress_fc_stats_user;
SET ROLE regress_fc_stats_user;
SELECT leaks('SELECT id FROM sh.orders WHERE amount <<< 10') > 0 AS heap_column,
       leaks('SELECT id FROM se.orders WHERE amount <<< 10') > 0 AS encrypted_column;
RESET ROLE;
-- row-level security: not every row is readable
ALTER TABLE sh.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE se.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON sh.orders USING (customer = 1);
CREATE POLICY own ON se.orders USING (customer = 1);
SET ROLE regress_fc_stats_user;
SELECT leaks('SELECT id FROM sh.orders WHERE amount <<< 10') AS heap_rls,
       leaks('SELECT id FROM se.orders WHERE amount <<< 10') AS encrypted_rls;
RESET ROLE;
ALTER TABLE sh.orders DISABLE ROW LEVEL SECURITY;
ALTER TABLE se.orders DISABLE ROW LEVEL SECURITY;
-- a security-barrier view over the table
CREATE VIEW sh.orders_v WITH (security_barrier) AS SELECT * FROM sh.orders WHERE customer < 250;
CREATE VIEW se.orders_v WITH (security_barrier) AS SELECT * FROM se.orders WHERE customer < 250;
GRANT SELECT ON sh.orders_v, se.orders_v TO regress_fc_stats_user;
SET ROLE regress_fc_stats_user;
SELECT leaks('SELECT id FROM sh.orders_v WHERE amount <<< 10') AS heap_barrier_view,
       leaks('SELECT id FROM se.orders_v WHERE amount <<< 10') AS encrypted_barrier_view;
RESET ROLE;
-- a partition reached through its parent: the parent's privileges count
GRANT SELECT (id) ON sh.parted, se.parted TO regress_fc_stats_user;
SET ROLE regress_fc_stats_user;
SELECT leaks('SELECT id FROM sh.parted WHERE grp <<< 1') AS heap_parted,
       leaks('SELECT id FROM se.parted WHERE grp <<< 1') AS encrypted_parted;
RESET ROLE;
GRANT SELECT (grp) ON sh.parted, se.parted TO regress_fc_stats_user;
SET ROLE regress_fc_stats_user;
SELECT leaks('SELECT id FROM sh.parted WHERE grp <<< 1') > 0 AS heap_parted_column,
       leaks('SELECT id FROM se.parted WHERE grp <<< 1') > 0 AS encrypted_parted_column;
RESET ROLE;

-- Extended statistics: refused on encrypted_heap tables (0A000), as core would
-- build them from plaintext samples into pg_statistic_ext_data
CREATE STATISTICS se.orders_ext (ndistinct) ON customer, status FROM se.orders;
\echo :LAST_ERROR_SQLSTATE
CREATE STATISTICS sh.orders_ext (ndistinct) ON customer, status FROM sh.orders;
-- with fieldcrypt.analyze_values = on (plaintext statistics, by choice) they are allowed
SET fieldcrypt.analyze_values = on;
CREATE STATISTICS se.orders_ext (ndistinct) ON customer, status FROM se.orders;
RESET fieldcrypt.analyze_values;
DROP STATISTICS se.orders_ext;

-- analyze_values = on: plaintext statistics in pg_statistic, and ours are dropped
CREATE TABLE se.small (a int, b text) USING encrypted_heap;
INSERT INTO se.small SELECT g, 'b' || (g % 4) FROM generate_series(1, 100) g;
ANALYZE se.small;
SELECT (SELECT count(*) FROM pg_statistic WHERE starelid = 'se.small'::regclass) AS pg_statistic,
       (SELECT count(*) FROM fieldcrypt._tde_statistic() WHERE starelid = 'se.small'::regclass) AS tde_statistic;
SET fieldcrypt.analyze_values = on;
ANALYZE se.small;
RESET fieldcrypt.analyze_values;
SELECT (SELECT count(*) FROM pg_statistic WHERE starelid = 'se.small'::regclass) AS pg_statistic,
       (SELECT count(*) FROM fieldcrypt._tde_statistic() WHERE starelid = 'se.small'::regclass) AS tde_statistic;
-- and back: ours again, pg_statistic's removed
ANALYZE se.small;
SELECT (SELECT count(*) FROM pg_statistic WHERE starelid = 'se.small'::regclass) AS pg_statistic,
       (SELECT count(*) FROM fieldcrypt._tde_statistic() WHERE starelid = 'se.small'::regclass) AS tde_statistic;

-- Dropping a column, changing its type, dropping an index or the table
ALTER TABLE se.small ADD COLUMN c int;
UPDATE se.small SET c = a % 3;
ANALYZE se.small;
SELECT staattnum FROM fieldcrypt._tde_statistic() WHERE starelid = 'se.small'::regclass ORDER BY 1;
ALTER TABLE se.small DROP COLUMN b;
SELECT staattnum FROM fieldcrypt._tde_statistic() WHERE starelid = 'se.small'::regclass ORDER BY 1;
-- a new type: the old statistics are no longer used (c = 1: 1/3 of the rows with
-- them, 1/100 without)
SELECT est('SELECT * FROM se.small WHERE c = 1') AS rows_estimated;
ALTER TABLE se.small ALTER COLUMN c TYPE bigint;
SELECT est('SELECT * FROM se.small WHERE c = 1') AS rows_estimated;
ANALYZE se.small;
SELECT est('SELECT * FROM se.small WHERE c = 1') AS rows_estimated;
CREATE INDEX small_expr ON se.small ((a * 2));
ANALYZE se.small;
SELECT count(*) AS index_rows FROM fieldcrypt._tde_statistic() WHERE starelid = 'se.small_expr'::regclass;
SELECT 'se.small_expr'::regclass::oid AS idx \gset
DROP INDEX se.small_expr;
SELECT count(*) AS index_rows FROM fieldcrypt._tde_statistic() WHERE starelid = :idx;
SELECT 'se.small'::regclass::oid AS tbl \gset
DROP TABLE se.small;
SELECT count(*) AS table_rows FROM fieldcrypt._tde_statistic() WHERE starelid = :tbl;

-- a heap table never goes through the hook's statistics: pg_statistic as usual
SELECT count(*) > 0 AS heap_in_pg_statistic FROM pg_statistic WHERE starelid = 'sh.orders'::regclass;

\c :regress_db
DROP DATABASE fc_tam_stats;
DROP ROLE regress_fc_stats_user;
DROP ROLE regress_fc_stats_admin;
