# fieldcrypt on Citus (issue 15), encrypted_heap: a coordinator and two workers.
#   - an encrypted_heap distributed table and an encrypted_heap reference table get
#     encrypted_heap shards; marker strings written through the coordinator (INSERT, COPY,
#     UPDATE) are found in no file of any worker's data directory (heap, TOAST, WAL) after a
#     CHECKPOINT, while the same markers in a heap distributed table are found on every
#     worker: the search can fail;
#   - a shard move with shard_transfer_mode => 'block_writes' works and the moved shard is
#     still encrypted_heap, its rows readable and absent from the target's files; a move
#     through logical replication (the default 'auto', or 'force_logical') meets the
#     publication fence and is refused with a message naming 'block_writes'; so is the
#     rebalancer unless given that mode; nothing moved on refusal.
use strict;
use warnings;
use File::Find;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my $c = FcCitus::new_cluster(workers => 2, conf => "wal_compression = off\n");
my $co = $c->{coord};
my @w = @{ $c->{workers} };
my $DB = 'app';
my $ENC = 'FCENC_citus_marker_q4Zt';
my $CTL = 'FCCTL_citus_marker_q4Zt';
my $REF = 'FCENC_citus_refmark_q4Zt';

safe_tls($co, $DB, <<"EOS");
CREATE TABLE ledger (id int PRIMARY KEY, note text, big text) USING encrypted_heap;
SELECT create_distributed_table('ledger', 'id', shard_count => 4);
CREATE TABLE ledger_ctl (id int PRIMARY KEY, note text, big text) USING heap;
SELECT create_distributed_table('ledger_ctl', 'id', colocate_with => 'none', shard_count => 4);
CREATE TABLE ref_enc (k int PRIMARY KEY, note text) USING encrypted_heap;
SELECT create_reference_table('ref_enc');
INSERT INTO ref_enc VALUES (1, '$REF');
EOS
for my $t ([ 'ledger', $ENC ], [ 'ledger_ctl', $CTL ])
{
	my ($table, $m) = @$t;
	safe_tls($co, $DB, "INSERT INTO $table SELECT i, '$m-ins-' || i, NULL FROM generate_series(1, 40) i");
	safe_tls($co, $DB, "COPY $table (id, note) FROM STDIN;\n"
		  . join('', map { "$_\t$m-copy-$_\n" } 41 .. 80) . "\\.\n");
	safe_tls($co, $DB, "UPDATE $table SET note = note || '-upd', big = repeat('$m-big-', 800) WHERE id % 10 = 0");
}
is($co->safe_psql($DB, q{SELECT string_agg(DISTINCT result, ',') FROM run_command_on_shards('ledger',
	$$SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = '%s'::regclass$$)}),
	'encrypted_heap', 'every shard of the distributed table is encrypted_heap');
is($co->safe_psql($DB, q{SELECT string_agg(DISTINCT result, ',') FROM run_command_on_shards('ref_enc',
	$$SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = '%s'::regclass$$)}),
	'encrypted_heap', 'every placement of the reference table is encrypted_heap');
is($co->safe_psql($DB, "SELECT count(*), count(*) FILTER (WHERE note LIKE '%-upd'), count(big) FROM ledger"),
	'80|8|8', 'the encrypted_heap distributed table reads back what was written');

# Does any file under $dir hold $marker? (byte search; files read whole)
sub files_with
{
	my ($dir, $marker) = @_;
	my @hits;
	find({ no_chdir => 1, wanted => sub {
		return unless -f $_;
		my $data = eval { read_bytes($_) } // '';
		push @hits, $_ if index($data, $marker) >= 0;
	} }, $dir);
	return @hits;
}

sub check_at_rest
{
	my ($label) = @_;
	$_->safe_psql($DB, 'CHECKPOINT') for @w;
	for my $wk (@w)
	{
		my $dir = $wk->data_dir;
		my @ctl = files_with($dir, $CTL);
		ok((grep { m{/base/} } @ctl) && (grep { m{/pg_wal/} } @ctl),
			"$label, " . $wk->name . ': the heap control\'s markers are in its data files and WAL (the search works)');
		my @enc = (files_with($dir, $ENC), files_with($dir, $REF));
		is(scalar(@enc), 0, "$label, " . $wk->name . ': no marker of the encrypted_heap tables in any file')
		  or diag(join("\n", @enc));
	}
	return;
}
check_at_rest('written');

# ---------------------------------------------------------------------------------------
# shard moves
# ---------------------------------------------------------------------------------------
my ($shardid, $src) = split /\|/, $co->safe_psql($DB, q{SELECT shardid, nodeport FROM citus_shards
	WHERE table_name = 'ledger'::regclass ORDER BY shardid LIMIT 1});
my ($dst) = grep { $_ != $src } map { $_->port } @w;
my $where = q{SELECT nodeport FROM citus_shards WHERE shardid = } . $shardid;
my $HINT = "shard_transfer_mode => 'block_writes', which copies their rows";
for my $mode ('auto', 'force_logical')
{
	my ($rc, $out, $err) = FcNode::psql_tls($co, $DB, "SELECT citus_move_shard_placement($shardid, "
		  . "'127.0.0.1', $src, '127.0.0.1', $dst, shard_transfer_mode => '$mode')");
	like($err, qr/ERROR:  tables using access method encrypted_heap cannot be published/,
		"move with shard_transfer_mode '$mode': refused by the publication fence");
	like($err, qr/HINT:  .*\Q$HINT\E/, "move with '$mode': the hint names the mode that works") or diag($err);
	is($co->safe_psql($DB, $where), $src, "move with '$mode': the shard did not move");
}
safe_tls($co, $DB, "SELECT citus_move_shard_placement($shardid, '127.0.0.1', $src, '127.0.0.1', $dst, "
	  . "shard_transfer_mode => 'block_writes')");
is($co->safe_psql($DB, $where), $dst, "move with 'block_writes': the shard moved");
my ($shard) = $co->safe_psql($DB, "SELECT shard_name FROM citus_shards WHERE shardid = $shardid");
my ($dw) = grep { $_->port == $dst } @w;
is($dw->safe_psql($DB, "SET citus.override_table_visibility = off; SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = '$shard'::regclass"),
	'encrypted_heap', 'the moved shard is an encrypted_heap table on its new worker');
is($co->safe_psql($DB, "SELECT count(*), count(*) FILTER (WHERE note LIKE '%-upd'), count(big) FROM ledger"),
	'80|8|8', 'after the move, every row reads back');
# the rebalancer: the move above left the workers with 1 and 3 shards of ledger
my $spread = q{SELECT string_agg(n::text, ',' ORDER BY n) FROM (SELECT count(*) n FROM citus_shards
	WHERE table_name = 'ledger'::regclass GROUP BY nodeport) s};
is($co->safe_psql($DB, $spread), '1,3', 'rebalancer: the move left 1 and 3 shards');
sql_fails($co, $DB, "SELECT rebalance_table_shards('ledger', shard_transfer_mode => 'force_logical')",
	'0A000', 'tables using access method encrypted_heap cannot be published',
	"rebalancer with 'force_logical': refused by the publication fence");
is($co->safe_psql($DB, $spread), '1,3', "rebalancer with 'force_logical': nothing moved");
safe_tls($co, $DB, "SELECT rebalance_table_shards('ledger', shard_transfer_mode => 'block_writes')");
is($co->safe_psql($DB, $spread), '2,2', "rebalancer with 'block_writes': 2 shards on each worker");
is($co->safe_psql($DB, q{SELECT string_agg(DISTINCT result, ',') FROM run_command_on_shards('ledger',
	$$SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = '%s'::regclass$$)}),
	'encrypted_heap', 'after the rebalance every shard is still encrypted_heap');
safe_tls($co, $DB, "UPDATE ledger SET note = note || '-again' WHERE id % 7 = 0");
check_at_rest('after the move');

FcCitus::stop_all($c);
done_testing();
