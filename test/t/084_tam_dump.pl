# encrypted_heap through pg_dump and pg_restore: a database holding encrypted_heap tables (with
# indexes, out-of-line values, a partitioned table with an encrypted and a heap leaf, a
# materialized view USING encrypted_heap, a table made encrypted by
# default_table_access_method, and a plain heap table) is dumped in plain and custom format.
# The dump says which tables use encrypted_heap and holds their rows as plaintext (pg_dump reads
# through the access method).  Restored into another database of the same cluster, and into
# another cluster (custom format with a parallel pg_restore, and plain format with psql), every
# table keeps its access method and its rows, indexes work, and the restored tables can be
# written to.  In the other cluster the key of the database is restored the way 040_column_dump.pl
# does; the tables read before and after that.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $K1 = 'Tam-Dump-Key-2026!';

sub sql { return safe_tls(@_); }
sub run_cmd
{
	my @cmd = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

my $node_a = FcNode::new_node('tamdump_a');
$node_a->start;
$node_a->safe_psql('postgres', 'CREATE DATABASE src');
sql($node_a, 'src', <<"EOS");
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.set_data_encryption_key('$K1');
CREATE TABLE t (id int PRIMARY KEY, v text, big text, tags text[]) USING encrypted_heap;
CREATE INDEX t_v ON t (v);
CREATE INDEX t_tags ON t USING gin (tags);
INSERT INTO t SELECT g, 'row-' || g,
       CASE WHEN g % 100 = 0 THEN (SELECT string_agg(md5(g || ':' || i), '') FROM generate_series(1, 300) i) END,
       ARRAY['tag' || (g % 5)]
  FROM generate_series(1, 3000) g;
CREATE TABLE h (id int PRIMARY KEY, v text) USING heap;
INSERT INTO h SELECT g, 'heap-' || g FROM generate_series(1, 100) g;
CREATE TABLE p (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE p_enc PARTITION OF p FOR VALUES FROM (0) TO (100) USING encrypted_heap;
CREATE TABLE p_heap PARTITION OF p FOR VALUES FROM (100) TO (200) USING heap;
INSERT INTO p SELECT g, 'p' || g FROM generate_series(0, 199) g;
CREATE MATERIALIZED VIEW mv USING encrypted_heap AS SELECT id % 10 AS grp, count(*) AS n FROM t GROUP BY 1;
SET default_table_access_method = encrypted_heap;
CREATE TABLE d (id int, note text);
INSERT INTO d VALUES (1, 'made with default_table_access_method');
RESET default_table_access_method;
SELECT fieldcrypt.rotate_tde_key();
INSERT INTO t VALUES (5000, 'after rotation', NULL, NULL);
REFRESH MATERIALIZED VIEW mv;
EOS

# What must survive: each relation's access method, and a digest of its rows.
my $AMS = q{SELECT string_agg(c.relname || '=' || coalesce(a.amname, '-'), ',' ORDER BY c.relname)
              FROM pg_class c LEFT JOIN pg_am a ON a.oid = c.relam
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'm')};
my $ROWS = q{SELECT (SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY id)) FROM t x) || ' '
                 || (SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY id)) FROM h x) || ' '
                 || (SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY k)) FROM p x) || ' '
                 || (SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY grp)) FROM mv x) || ' '
                 || (SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY id)) FROM d x)};
my $LOOKUP = q{SET enable_seqscan = off; SELECT (SELECT id FROM t WHERE v = 'row-2500') || ','
                   || (SELECT count(*) FROM t WHERE tags @> ARRAY['tag3'])};
my $ams = sql($node_a, 'src', $AMS);
is($ams, 'd=encrypted_heap,h=heap,mv=encrypted_heap,p=-,p_enc=encrypted_heap,p_heap=heap,t=encrypted_heap',
	'A: the access methods of the source relations');
my $rows = sql($node_a, 'src', $ROWS);
my $lookup = sql($node_a, 'src', $LOOKUP);
is($lookup, '2500,600', 'A: index lookups');

# ---------------------------------------------------------------------------
# Dumps

my $dir = PostgreSQL::Test::Utils::tempdir;
my ($rc, $out, $err) = run_cmd('pg_dump', '-Fp', '-f', "$dir/plain.sql", '-d', $node_a->connstr('src'));
is($rc, 0, 'pg_dump, plain format') or diag($err);
($rc, $out, $err) = run_cmd('pg_dump', '-Fc', '-f', "$dir/custom.dump", '-d', $node_a->connstr('src'));
is($rc, 0, 'pg_dump, custom format') or diag($err);
my $text = slurp_file("$dir/plain.sql");
# pg_dump sets default_table_access_method before a relation only when it changes: follow it
# (a partitioned table has no access method: pg_dump sets none for it).
my (%am_in_dump, $cur_am);
for my $line (split /\n/, $text)
{
	$cur_am = $1 if $line =~ /^SET default_table_access_method = (\w+);$/;
	$am_in_dump{$1} = $cur_am // 'none'
	  if $line =~ /^-- Name: (\w+); Type: (?:TABLE|MATERIALIZED VIEW);/ && $1 ne 'p';
}
is(join(',', map { "$_=$am_in_dump{$_}" } sort keys %am_in_dump),
	'd=encrypted_heap,h=heap,mv=encrypted_heap,p_enc=encrypted_heap,p_heap=heap,t=encrypted_heap',
	'the dump creates each relation under its access method');
ok($text =~ /^2501\trow-2501\t\\N\t\{tag1\}$/m, 'the dump holds the rows of t as plaintext (read through the AM)');
ok($text =~ /^1\tmade with default_table_access_method$/m, '... and those of d');

# Restore and check: access methods, rows, index lookups, and a write.
sub check_restored
{
	my ($node, $db, $what) = @_;
	is(sql($node, $db, $AMS), $ams, "$what: every relation kept its access method");
	is(sql($node, $db, $ROWS), $rows, "$what: every row arrived and reads");
	is(sql($node, $db, $LOOKUP), $lookup, "$what: the indexes work");
	sql($node, $db, q{INSERT INTO t VALUES (6000, 'written after restore', repeat('z', 9000), NULL)});
	is(sql($node, $db, q{SELECT v, length(big) FROM t WHERE id = 6000}), 'written after restore|9000',
		"$what: a row written after the restore reads back");
	sql($node, $db, q{DELETE FROM t WHERE id = 6000});
	is(sql($node, $db, q{SELECT count(*) > 0 FROM fieldcrypt.tde_key_status WHERE 't'::regclass = ANY (tables)}), 't',
		"$what: tde_key_status lists t");
	return;
}

# Another database of the same cluster, from the custom dump.
$node_a->safe_psql('postgres', 'CREATE DATABASE copy1');
($rc, $out, $err) = run_cmd('pg_restore', '--exit-on-error', '-d', $node_a->connstr('copy1'), "$dir/custom.dump");
ok($rc == 0 && $err !~ /ERROR/, 'pg_restore into another database of the same cluster') or diag("rc $rc\n$err");
is(sql($node_a, 'copy1', 'SELECT active, key_loaded FROM fieldcrypt.key_status'), 't|f',
	'A/copy1: the imported key metadata lock the database key, as for any import');
check_restored($node_a, 'copy1', 'A/copy1');

# Another cluster: a parallel pg_restore of the custom dump, and psql with the plain dump.
my $node_b = FcNode::new_node('tamdump_b');
$node_b->start;
$node_b->safe_psql('postgres', 'CREATE DATABASE r_custom');
($rc, $out, $err) = run_cmd('pg_restore', '--exit-on-error', '-j', '2', '-d', $node_b->connstr('r_custom'),
	"$dir/custom.dump");
ok($rc == 0 && $err !~ /ERROR/, 'pg_restore -j 2 into another cluster') or diag("rc $rc\n$err");
check_restored($node_b, 'r_custom', 'B/r_custom');
sql($node_b, 'r_custom', "SELECT fieldcrypt.set_data_encryption_key('$K1')");
is(sql($node_b, 'r_custom', 'SELECT active, key_loaded FROM fieldcrypt.key_status'), 't|t',
	'B/r_custom: the database key is restored');
is(sql($node_b, 'r_custom', $ROWS), $rows, 'B/r_custom: the rows still read after the key restore');

$node_b->safe_psql('postgres', 'CREATE DATABASE r_plain');
($rc, $out, $err) = run_cmd('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node_b->connstr('r_plain'),
	'-f', "$dir/plain.sql");
ok($rc == 0 && $err !~ /ERROR/, 'the plain dump restores into another cluster with psql') or diag("rc $rc\n$err");
check_restored($node_b, 'r_plain', 'B/r_plain');

# A dump of the restored database is the same as the original dump (apart from the header).
($rc, $out, $err) = run_cmd('pg_dump', '-Fp', '-d', $node_b->connstr('r_plain'), '--exclude-table-data',
	'fieldcrypt.key_generations');
my ($out_src) = (run_cmd('pg_dump', '-Fp', '-d', $node_a->connstr('src'), '--exclude-table-data',
	'fieldcrypt.key_generations'))[1];
s/^(?:-- Dumped (?:from|by) |\\(?:un)?restrict )[^\n]*\n//mg for $out, $out_src;
is($out, $out_src, 'B/r_plain dumps the same as the source');

$node_a->stop;
$node_b->stop;
done_testing();
