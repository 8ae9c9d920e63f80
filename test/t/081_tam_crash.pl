# encrypted_heap and crashes: the server is stopped with "immediate" (no shutdown checkpoint,
# crash recovery at the next start) while background sessions are in the middle of
#   - a bulk COPY (multi-insert batches) and a bulk INSERT ... SELECT, both uncommitted;
#   - a large UPDATE, uncommitted, while other sessions commit single-row updates;
#   - a VACUUM slowed down by cost-based delay;
#   - the index rebuild of a VACUUM FULL, and of a CLUSTER;
#   - a CREATE INDEX and a CREATE INDEX CONCURRENTLY;
#   - right after rotate_tde_key and rows written under the new generation, and during a
#     reencrypt_table;
#   - (wal_level = minimal) right after the commit of a transaction that created or truncated
#     a table and filled it (not WAL-logged, synced at commit).
# After each restart every committed row is present with its committed version and nothing
# else (count and md5 of the ids and versions, compared with what the test knows was
# acknowledged), every row decrypts to the plaintext it should have (v = md5(id:ver), large
# values out of line), every btree index holds exactly the live rows (amcheck heapallindexed),
# and new rows can be written and read; no (instance id, counter) nonce pair of any stored row
# version is used twice across all those server lifetimes.  Also a 100 MB value that survives
# a crash.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('tamcrash');
$node->append_conf('postgresql.conf', <<'EOC');
wal_level = replica
max_wal_size = '2GB'
autovacuum = off
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return safe_tls($node, 'app', $_[0]); }

sql(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE EXTENSION amcheck;
-- a large value for one row in 500: about 12 kB of hex, stored out of line
CREATE FUNCTION big_of(id int, ver int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN id % 500 = 0 THEN
        (SELECT string_agg(md5(id || ':' || ver || ':' || g), '') FROM generate_series(1, 400) g) END
$$;
-- an index expression that is slow while fc.slow = on (to stop a build half-way)
CREATE FUNCTION slow_key(id int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_setting('fc.slow', true) = 'on' THEN PERFORM pg_sleep(0.01); END IF;
    RETURN id;
END $$;
CREATE TABLE t (id int PRIMARY KEY, ver int NOT NULL, v text, big text) USING encrypted_heap;
CREATE INDEX t_ver ON t (ver, id);
EOS

my %ver;    # id => committed version: what must be there after each crash
sub add_committed { $ver{$_} = 1 for @_; }

sql('INSERT INTO t SELECT g, 1, md5(g || \':1\'), big_of(g, 1) FROM generate_series(1, 20000) g');
add_committed(1 .. 20000);

# What the table holds, as "rows|bad rows|md5 of id:ver" (bad: plaintext not as it should be).
my $STATE_SQL = q{
SELECT count(*),
       count(*) FILTER (WHERE v IS DISTINCT FROM md5(id || ':' || ver)
                           OR big IS DISTINCT FROM big_of(id, ver)),
       md5(string_agg(id || ':' || ver, ',' ORDER BY id))
  FROM t};
sub expected_state
{
	my @ids = sort { $a <=> $b } keys %ver;
	return scalar(@ids) . '|0|' . md5_hex(join ',', map { "$_:$ver{$_}" } @ids);
}

# After a restart: the committed state, intact indexes, and the table still writable.
my $probe = 900000;
sub check_after_restart
{
	my ($what) = @_;
	is(sql($STATE_SQL), expected_state(), "$what: every committed row is there, decrypts, and nothing else is");
	my ($rc, $out, $err) = FcNode::psql_tls($node, 'app',
		q{SELECT count(*) FROM (SELECT bt_index_check(i.indexrelid, true) FROM pg_index i
		    JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
		   WHERE i.indrelid = 't'::regclass AND i.indisvalid AND a.amname = 'btree') s});
	ok($rc == 0 && $out >= 2, "$what: the btree indexes hold exactly the live rows (amcheck)")
	  or diag("rc $rc, out $out: $err");
	$probe++;
	sql("INSERT INTO t VALUES ($probe, 1, md5('$probe:1'), big_of($probe, 1))");
	add_committed($probe);
	is(sql("SELECT v = md5('$probe:1') FROM t WHERE id = $probe"), 't', "$what: a new row is written and read back");
	ok(!$node->log_contains(qr/failed authentication/), "$what: no authentication failure in the log");
	return;
}

# A psql session left running in the background (each element one -c command).
sub bg_start
{
	my (@cmds) = @_;
	my ($out, $err) = ('', '');
	my @argv = ('psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', FcNode::tls_connstr($node, 'app'));
	push @argv, map { ('-c', $_) } @cmds;
	my $h = IPC::Run::start(\@argv, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err };
}
sub bg_reap
{
	my ($bg) = @_;
	eval { $bg->{h}->finish; 1 } or eval { $bg->{h}->kill_kill; };
	return ${ $bg->{err} };
}
sub wait_for
{
	my ($query, $what) = @_;
	$node->poll_query_until('app', $query) or die "timed out waiting for $what";
	return;
}
sub crash_and_restart
{
	my (@bgs) = @_;
	$node->stop('immediate');
	my @errs = map { bg_reap($_) } @bgs;
	$node->start;
	return @errs;
}
# Single-row commits that the client saw acknowledged, from a session of their own.
sub committed_updates
{
	my (@ids) = @_;
	my $s = $node->background_psql('app', extra_params => [ '-d', FcNode::tls_connstr($node, 'app') ]);
	for my $id (@ids)
	{
		my $nv = $ver{$id} + 1;
		$s->query_safe("UPDATE t SET ver = $nv, v = md5('$id:$nv'), big = big_of($id, $nv) WHERE id = $id");
		$ver{$id} = $nv;
	}
	$s->quit;
	return;
}

# ---------------------------------------------------------------------------
# 1. Bulk COPY and bulk INSERT ... SELECT, uncommitted; committed inserts meanwhile.
{
	# a COPY whose input stops flowing after 60,000 rows (COPY reads 64 kB blocks, so it processes
	# about 57,000 of them): some 50 multi-insert batches are written
	my $prog = q{awk 'BEGIN { for (i = 100001; i <= 160000; i++) printf "%d\t1\tuncommitted\t\\\\N\n", i; fflush(); system("sleep 60") }'};
	$prog =~ s/'/''/g;
	my $copy = bg_start('BEGIN', "COPY t FROM PROGRAM '$prog'");
	my $ins = bg_start('BEGIN',
		q{INSERT INTO t SELECT g, 1, 'uncommitted', big_of(g, 1) FROM generate_series(200001, 230000) g
		   WHERE g < 230000 OR pg_sleep(120) IS NULL});
	wait_for(q{SELECT coalesce(max(tuples_processed), 0) >= 50000 FROM pg_stat_progress_copy}, 'the COPY');
	wait_for(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE 'INSERT%'},
		'the INSERT ... SELECT');
	my $s = $node->background_psql('app', extra_params => [ '-d', FcNode::tls_connstr($node, 'app') ]);
	for my $id (300001 .. 300100)
	{
		$s->query_safe("INSERT INTO t VALUES ($id, 1, md5('$id:1'), big_of($id, 1))");
		add_committed($id);
	}
	$s->quit;
	cmp_ok(sql(q{SELECT pg_relation_size('t')}), '>', 5_000_000, 'the uncommitted rows were written to the table');
	my @errs = crash_and_restart($copy, $ins);
	like($errs[0], qr/server closed the connection|terminating connection|connection to server was lost/,
		'the COPY session was cut off by the crash');
	check_after_restart('crash during COPY and INSERT ... SELECT');
}

# ---------------------------------------------------------------------------
# 2. A large UPDATE, uncommitted, while single-row updates commit.
{
	my $upd = bg_start('BEGIN',
		q{UPDATE t SET ver = ver + 100, v = md5(id || ':' || (ver + 100)), big = big_of(id, ver + 100)
		   WHERE id <= 20000 AND (id <> 15000 OR pg_sleep(120) IS NULL)});
	wait_for(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE 'UPDATE%'},
		'the UPDATE');
	# rows the big UPDATE has not reached (and so does not lock), some with large values
	committed_updates(16000, 17000, 18500, 19999, 300001 .. 300050);
	committed_updates(300001 .. 300010);
	my @errs = crash_and_restart($upd);
	check_after_restart('crash during UPDATE');
	# updates of rows with large values, committed, then a crash right after
	committed_updates(500, 1000, 1500, 2000, 7);
	crash_and_restart();
	check_after_restart('crash right after committed updates of large values');
}

# ---------------------------------------------------------------------------
# 3. A VACUUM in progress.
{
	sql('DELETE FROM t WHERE id % 3 = 0 AND id <= 20000');
	delete $ver{$_} for grep { $_ % 3 == 0 && $_ <= 20000 } keys %ver;
	my $vac = bg_start('SET vacuum_cost_delay = 10', 'SET vacuum_cost_limit = 1', 'VACUUM (VERBOSE) t');
	wait_for(q{SELECT coalesce(max(heap_blks_scanned), 0) > 20 FROM pg_stat_progress_vacuum}, 'the VACUUM');
	crash_and_restart($vac);
	check_after_restart('crash during VACUUM');
	sql('VACUUM t');
	is(sql($STATE_SQL), expected_state(), 'a VACUUM after the crash changes nothing visible');
}

# ---------------------------------------------------------------------------
# 4. VACUUM FULL and CLUSTER, stopped while they rebuild an index (the new heap is written).
sql('CREATE INDEX t_slow ON t (slow_key(id))');
for my $cmd ('VACUUM FULL t', 'CLUSTER t USING t_pkey')
{
	my ($fn_before) = sql(q{SELECT relfilenode FROM pg_class WHERE relname = 't'});
	my $bg = bg_start('SET fc.slow = on', $cmd);
	wait_for(q{SELECT count(*) = 1 FROM pg_stat_progress_cluster WHERE phase = 'rebuilding index'},
		"$cmd to rebuild indexes");
	crash_and_restart($bg);
	is(sql(q{SELECT relfilenode FROM pg_class WHERE relname = 't'}), $fn_before,
		"$cmd: the interrupted rewrite left the table's files as they were");
	check_after_restart("crash during $cmd");
}
sql('DROP INDEX t_slow');

# ---------------------------------------------------------------------------
# 5. CREATE INDEX and CREATE INDEX CONCURRENTLY half-way.
{
	my $bg = bg_start('SET fc.slow = on', 'CREATE INDEX t_slow2 ON t (slow_key(id))');
	wait_for(q{SELECT count(*) = 1 FROM pg_stat_progress_create_index WHERE phase LIKE 'building index%'},
		'CREATE INDEX');
	crash_and_restart($bg);
	is(sql(q{SELECT count(*) FROM pg_class WHERE relname = 't_slow2'}), '0', 'CREATE INDEX: no index left');
	check_after_restart('crash during CREATE INDEX');

	$bg = bg_start('SET fc.slow = on', 'CREATE INDEX CONCURRENTLY t_slow3 ON t (slow_key(id))');
	wait_for(q{SELECT count(*) = 1 FROM pg_stat_progress_create_index WHERE phase LIKE 'building index%'},
		'CREATE INDEX CONCURRENTLY');
	crash_and_restart($bg);
	is(sql(q{SELECT indisvalid FROM pg_index WHERE indexrelid = 't_slow3'::regclass}), 'f',
		'CREATE INDEX CONCURRENTLY: an invalid index is left, as on heap');
	check_after_restart('crash during CREATE INDEX CONCURRENTLY');
	sql('REINDEX INDEX t_slow3');
	is(sql(q{SELECT indisvalid FROM pg_index WHERE indexrelid = 't_slow3'::regclass}), 't',
		'the invalid index is rebuilt by REINDEX');
	is(sql(q{SELECT count(*) FROM (SELECT bt_index_check('t_slow3', true)) s}), '1',
		'the rebuilt index holds exactly the live rows (amcheck)');
	is(sql(q{SET enable_seqscan = off; SELECT v FROM t WHERE slow_key(id) = 4000}), md5_hex("4000:$ver{4000}"),
		'the rebuilt index finds a row');
}

# ---------------------------------------------------------------------------
# 6. A 100 MB value (incompressible, out of line, about 1,600 64 kB segments) committed just
#    before a crash.
{
	sql(q{CREATE TABLE huge (id int, v text) USING encrypted_heap;
	       ALTER TABLE huge ALTER COLUMN v SET STORAGE EXTERNAL});
	sql(q{INSERT INTO huge SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 3276800) g});
	my $want = sql(q{SELECT md5(string_agg(md5(g::text), '')) FROM generate_series(1, 3276800) g});
	crash_and_restart();
	is(sql(q{SELECT length(v), md5(v) FROM huge}), "104857600|$want",
		'a 100 MB value committed before the crash reads back whole');
	is(sql(q{SELECT substr(v, 52428801, 32) = md5('1638401') FROM huge}), 't',
		'a slice in the middle of the 100 MB value reads back');
}

# ---------------------------------------------------------------------------
# 6b. TDE keys: a crash right after rotate_tde_key and rows written under the new generation
#     (the keyring change comes back from WAL), and a crash during reencrypt_table (stopped
#     in its index rebuild): the table stays readable under its old generations, and a
#     reencrypt_table after the restart moves it.
{
	my $gen = sql('SELECT fieldcrypt.rotate_tde_key()');
	cmp_ok($gen, '>', 1, "rotate_tde_key: generation $gen");
	for my $id (400001 .. 400020)
	{
		sql("INSERT INTO t VALUES ($id, 1, md5('$id:1'), big_of($id, 1))");
		add_committed($id);
	}
	crash_and_restart();
	is(sql('SELECT generation FROM fieldcrypt.tde_key_status WHERE is_current'), $gen,
		'crash after rotate_tde_key: the new generation is current after the restart');
	check_after_restart('crash after rotate_tde_key');
	is(sql(q{SELECT count(*) FROM fieldcrypt.tde_key_status WHERE 't'::regclass = ANY (tables)}), '2',
		't holds rows of the old and of the new generation');

	sql('CREATE INDEX t_slow ON t (slow_key(id))');
	my $bg = bg_start('SET fc.slow = on', q{SELECT fieldcrypt.reencrypt_table('t')});
	wait_for(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'
	            AND query LIKE '%reencrypt_table%'}, 'reencrypt_table to rebuild the slow index');
	crash_and_restart($bg);
	check_after_restart('crash during reencrypt_table');
	is(sql(q{SELECT count(*) FROM fieldcrypt.tde_key_status WHERE 't'::regclass = ANY (tables)}), '2',
		'crash during reencrypt_table: t still holds rows of both generations');

	# Nonces: every stored row version of t (live or dead, written across all the restarts
	# and crash restarts above; the reencrypt_table below rewrites it in one lifetime) has its
	# own (instance id, counter) pair, read from the trailer at the end of each stored tuple
	# (README: ... instance id(8) counter(8) GCM tag(16)).
	{
		sql('CREATE EXTENSION pageinspect');
		my ($n, $distinct, $instances) = split /\|/, sql(q{
	SELECT count(*), count(DISTINCT nonce), count(DISTINCT substr(nonce, 1, 8))
	  FROM (SELECT substr(t_data, length(t_data) - 31, 16) AS nonce
	          FROM generate_series(0, pg_relation_size('t') / 8192 - 1) b,
	               heap_page_items(get_raw_page('t', b::int))
	         WHERE lp_flags = 1 AND t_data IS NOT NULL) s});
		cmp_ok($n, '>', 10000, "nonces: $n stored row versions read");
		is($distinct, $n, 'nonces: no (instance id, counter) pair is used twice');
		cmp_ok($instances, '>=', 2, "nonces: the rows come from $instances server lifetimes");
	}
	sql('DROP INDEX t_slow');
	sql(q{SELECT fieldcrypt.reencrypt_table('t')});
	is(sql(q{SELECT string_agg(generation::text, ',') FROM fieldcrypt.tde_key_status WHERE 't'::regclass = ANY (tables)}),
		$gen, 'reencrypt_table after the restart: t holds rows of the current generation only');
	is(sql($STATE_SQL), expected_state(), 'reencrypt_table after the restart: every committed row is there');
}

$node->stop;

# ---------------------------------------------------------------------------
# 7. wal_level = minimal: a table created (or truncated) and filled in one transaction is not
#    WAL-logged but synced at commit; it survives a crash right after the commit.
{
	my $min = FcNode::new_node('tamcrash_min');    # wal_level = minimal (the TAP default)
	$min->start;
	is($min->safe_psql('postgres', 'SHOW wal_level'), 'minimal', 'minimal: wal_level is minimal');
	$min->safe_psql('postgres', 'CREATE DATABASE app');
	my $q = sub { return safe_tls($min, 'app', $_[0]); };
	$q->(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE kept (id int PRIMARY KEY, v text, big text) USING encrypted_heap;
INSERT INTO kept SELECT g, 'old ' || g, NULL FROM generate_series(1, 100) g;
BEGIN;
CREATE TABLE fresh (id int PRIMARY KEY, v text, big text) USING encrypted_heap;
COPY fresh FROM PROGRAM 'seq 1 5000 | sed "s/.*/&\tv&\t\\\\N/"';
UPDATE fresh SET big = (SELECT string_agg(md5(id || ':' || g), '') FROM generate_series(1, 400) g) WHERE id % 1000 = 0;
TRUNCATE kept;
INSERT INTO kept SELECT g, 'new ' || g, NULL FROM generate_series(1, 300) g;
COMMIT;
EOS
	my $want = $q->(q{SELECT count(*), md5(string_agg(f::text, ',' ORDER BY id)) FROM fresh f});
	like($want, qr/^5000\|/, 'minimal: 5000 rows written in the transaction that created the table');
	$min->stop('immediate');
	$min->start;
	is($q->(q{SELECT count(*), md5(string_agg(f::text, ',' ORDER BY id)) FROM fresh f}), $want,
		'minimal: after a crash the table created in one transaction has all its rows');
	is($q->(q{SELECT count(*), min(v), max(id) FROM kept}), '300|new 1|300',
		'minimal: the table truncated and refilled in one transaction has exactly the new rows');
	is($q->(q{SELECT count(*) FROM fresh WHERE big = (SELECT string_agg(md5(fresh.id || ':' || g), '') FROM generate_series(1, 400) g)}),
		'5', 'minimal: its out-of-line values read back');
	$min->stop;
}
done_testing();
