# Planner statistics of encrypted_heap tables stay encrypted at rest, and last.
#
# Markers fill a column of an encrypted_heap table (enc) and of a heap twin (ctl): one value
# in 40 % of the rows (it becomes a most common value), one distinct value per other row
# (histogram bounds).  After ANALYZE and a CHECKPOINT, the heap twin's markers ARE found in
# pg_statistic's data file and in the WAL ANALYZE wrote (the search can fail); the encrypted
# table's are found in neither, nor in any file of the data directory once the server is
# stopped.  The statistics are used: a skewed column makes the plan a Seq Scan with them and
# an index scan without them.  That plan holds after a restart, on a streaming standby (which
# follows a new ANALYZE on the primary), after the standby's promotion (where ANALYZE works
# too), and after pg_dump / pg_restore followed by ANALYZE (statistics are not dumped, as
# pg_statistic's are not).  Autovacuum's ANALYZE produces them too.
use strict;
use warnings;
use File::Find;
use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $primary = FcNode::new_node('stats_primary', allows_streaming => 1);
$primary->append_conf('postgresql.conf', <<'EOC');
wal_compression = off
autovacuum_naptime = 1
EOC
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { my ($node, $q, $db) = @_; return safe_tls($node, $db // 'app', $q); }

my %m = (enc => { mcv => 'FCENC_mcv_k9Zq', hist => 'FCENC_hist_k9Zq' },
		 ctl => { mcv => 'FCCTL_mcv_k9Zq', hist => 'FCCTL_hist_k9Zq' });
sql($primary, 'CREATE EXTENSION fieldcrypt');
for my $t ('enc', 'ctl')
{
	my $am = $t eq 'enc' ? 'encrypted_heap' : 'heap';
	sql($primary, <<"EOS");
CREATE TABLE $t (id int PRIMARY KEY, grp int, tag text) USING $am WITH (autovacuum_enabled = off);
INSERT INTO $t SELECT g, CASE WHEN g % 50 = 0 THEN g ELSE 0 END,
       CASE WHEN g % 5 < 2 THEN '$m{$t}{mcv}' ELSE '$m{$t}{hist}' || lpad(g::text, 6, '0') END
  FROM generate_series(1, 20000) g;
CREATE INDEX ${t}_grp ON $t (grp);
-- a short histogram: pg_statistic keeps it inline and uncompressed, so that ctl's markers
-- lie in its file as they are
ALTER TABLE $t ALTER COLUMN tag SET STATISTICS 10;
EOS
}
# The plan of a query that needs statistics: 98 % of grp is 0.
my $PLAN = q{EXPLAIN (COSTS OFF) SELECT * FROM enc WHERE grp = 0};
like(sql($primary, $PLAN), qr/Index Scan|Bitmap/, 'before ANALYZE: an index is used for grp = 0');

my $lsn_start = sql($primary, 'SELECT pg_current_wal_insert_lsn()');
sql($primary, 'ANALYZE enc; ANALYZE ctl');
sql($primary, 'CHECKPOINT');
my $lsn_end = sql($primary, 'SELECT pg_current_wal_insert_lsn()');
is(sql($primary, $PLAN), "Seq Scan on enc\n  Filter: (grp = 0)", 'after ANALYZE: a Seq Scan');
is(sql($primary, q{SELECT count(*) FROM pg_statistic WHERE starelid = 'enc'::regclass}), '0',
	'pg_statistic has no row of enc');
is(sql($primary, q{SELECT count(*) FROM pg_statistic WHERE starelid = 'ctl'::regclass}), '3',
	'pg_statistic has the rows of ctl');
is(sql($primary, q{SELECT most_common_vals FROM fieldcrypt.pg_stats WHERE tablename = 'enc' AND attname = 'tag'}),
	"{$m{enc}{mcv}}", 'fieldcrypt.pg_stats shows the most common value of enc.tag');
like(sql($primary, q{SELECT histogram_bounds FROM fieldcrypt.pg_stats WHERE tablename = 'enc' AND attname = 'tag'}),
	qr/\{$m{enc}{hist}00/, 'and its histogram bounds');

my $datadir = $primary->data_dir;
my $statfile = sql($primary, q{SELECT pg_relation_filepath('pg_statistic')});
my $statbytes = read_bytes("$datadir/$statfile");

my $wal = wal_range($primary, $lsn_start, $lsn_end);
cmp_ok(length $wal, '>', 2000, 'ANALYZE wrote ' . length($wal) . ' bytes of WAL');
for my $what ('mcv', 'hist')
{
	ok(index($statbytes, $m{ctl}{$what}) >= 0, "control: ctl's $what marker is in pg_statistic's file");
	ok(index($wal, $m{ctl}{$what}) >= 0, "control: ctl's $what marker is in the WAL of ANALYZE");
	ok(index($statbytes, $m{enc}{$what}) < 0, "enc's $what marker is not in pg_statistic's file");
	ok(index($wal, $m{enc}{$what}) < 0, "enc's $what marker is not in the WAL of ANALYZE");
}

# Restart: the statistics are still used, then the whole data directory is searched.
$primary->restart;
is(sql($primary, $PLAN), "Seq Scan on enc\n  Filter: (grp = 0)", 'after a restart: still a Seq Scan');
$primary->stop;
my @found;
my $nfiles = 0;
find(
	{
		no_chdir => 1,
		wanted => sub {
			return unless -f $_;
			$nfiles++;
			my $data = read_bytes($_);
			for my $what ('mcv', 'hist')
			{
				push @found, "$what in $File::Find::name" if index($data, $m{enc}{$what}) >= 0;
			}
		}
	},
	$datadir);
cmp_ok($nfiles, '>', 500, "the search covered $nfiles files of the data directory");
is("@found", '', "no marker of enc in any file of the data directory (WAL included)");
$primary->start;

# A streaming standby plans with the statistics, and follows a new ANALYZE on the primary.
$primary->backup('b1');
my $standby = FcNode::standby_from_backup('stats_standby', $primary, 'b1');
$standby->start;
is(sql($standby, 'SELECT pg_is_in_recovery()'), 't', 'standby: in recovery');
is(sql($standby, $PLAN), "Seq Scan on enc\n  Filter: (grp = 0)", 'standby: a Seq Scan, from the statistics');
my $bg = $standby->background_psql('app', on_error_stop => 1,
	extra_params => [ '-d', FcNode::tls_connstr($standby, 'app') ]);
like($bg->query_safe($PLAN), qr/Seq Scan on enc/, 'standby session: a Seq Scan');
# now 0 becomes rare, and 7 common
sql($primary, 'UPDATE enc SET grp = CASE WHEN grp = 0 THEN 7 ELSE 0 END; ANALYZE enc');
$primary->wait_for_catchup($standby);
like(sql($standby, $PLAN), qr/Index Scan|Bitmap/, 'standby: an index scan after the primary\'s new ANALYZE');
like($bg->query_safe($PLAN), qr/Index Scan|Bitmap/, 'standby session opened before: the same (cache invalidated)');
$bg->quit;

# Promotion: the promoted server plans with them and ANALYZE works there.
$standby->promote;
is(sql($standby, 'SELECT pg_is_in_recovery()'), 'f', 'standby promoted');
like(sql($standby, $PLAN), qr/Index Scan|Bitmap/, 'promoted: the statistics are used');
sql($standby, 'UPDATE enc SET grp = 0 WHERE grp = 7; ANALYZE enc');
is(sql($standby, $PLAN), "Seq Scan on enc\n  Filter: (grp = 0)", 'promoted: its own ANALYZE is used');
$standby->restart;
is(sql($standby, $PLAN), "Seq Scan on enc\n  Filter: (grp = 0)", 'promoted, restarted: still used');

# pg_dump / pg_restore: statistics are not dumped (as pg_statistic's are not); ANALYZE after
# the restore makes them again.
my $dir = tempdir(CLEANUP => 1);
my ($out, $err) = ('', '');
IPC::Run::run([ 'pg_dump', '-Fc', '-f', "$dir/app.dump", '-d', $standby->connstr('app') ], '>', \$out, '2>', \$err);
is($?, 0, 'pg_dump of the promoted server') or diag($err);
$standby->safe_psql('postgres', 'CREATE DATABASE app2');
IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', $standby->connstr('app2'), "$dir/app.dump" ],
	'>', \$out, '2>', \$err);
ok($? == 0 && $err !~ /ERROR/, 'pg_restore into app2') or diag($err);
is(sql($standby, q{SELECT count(*) FROM fieldcrypt.pg_stats WHERE tablename = 'enc'}, 'app2'), '0',
	'app2: no statistics after the restore');
sql($standby, 'ANALYZE enc', 'app2');
is(sql($standby, $PLAN, 'app2'), "Seq Scan on enc\n  Filter: (grp = 0)", 'app2: ANALYZE makes them again');

# Autovacuum's ANALYZE.
sql($primary, <<'EOS');
CREATE TABLE auto (id int, grp int) USING encrypted_heap
  WITH (autovacuum_analyze_threshold = 10, autovacuum_analyze_scale_factor = 0);
CREATE INDEX auto_grp ON auto (grp);
INSERT INTO auto SELECT g, CASE WHEN g % 50 = 0 THEN g ELSE 0 END FROM generate_series(1, 20000) g;
EOS
ok( $primary->poll_query_until('app',
		q{SELECT count(*) > 0 FROM fieldcrypt._tde_statistic() WHERE starelid = 'auto'::regclass}),
	'autovacuum analyzed auto');
is(sql($primary, q{SELECT autoanalyze_count > 0 AND analyze_count = 0 FROM pg_stat_user_tables WHERE relname = 'auto'}),
	't', 'by autovacuum, not by an ANALYZE');
is(sql($primary, q{EXPLAIN (COSTS OFF) SELECT * FROM auto WHERE grp = 0}), "Seq Scan on auto\n  Filter: (grp = 0)",
	'its statistics are used');
is(sql($primary, q{SELECT count(*) FROM pg_statistic WHERE starelid = 'auto'::regclass}), '0',
	'and pg_statistic has none');

$standby->stop;
$primary->stop;
done_testing();
