# fieldcrypt on Citus (issue 15): rotate_tde_key on encrypted_heap shards, old TDE key
# generations destroyed only when every node is done (src/rotation/clusterwide.c).
# rotate_tde_key on the coordinator rotates every node's own TDE key (src/keys/cluster_2pc.c).
#   1. worker2's TDE re-encryption paused: the coordinator and worker1 keep their old TDE
#      generation ("waiting for the cluster"), cluster_tde_key_status shows two generations
#      on every node; once worker2 goes on, every node is left with its new one alone, and
#      every row still reads;
#   2. rotate_tde_key on worker1 alone: it waits for the cluster although the coordinator
#      has nothing to re-encrypt; finish_cluster_reencryption() on the coordinator
#      releases it and says so, and its old TDE generation is destroyed;
#   3. the rows stay encrypted at rest on the workers (a marker grep, with a heap control
#      that proves the grep finds plaintext), and no marker is in any log.
use strict;
use warnings;
use File::Find;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my $c = FcCitus::new_cluster(workers => 2, reencrypt => 'on',
	conf => "fieldcrypt.reencrypt_batch_pages = 1\nwal_compression = off\n");
my ($co, $w1, $w2) = FcCitus::nodes($c);
my $DB = 'app';
my $ENC = 'FCENC_c207_marker_Zq8';
my $CTL = 'FCCTL_c207_marker_Zq8';
my %logpos = map { $_->name => -s $_->logfile } FcCitus::nodes($c);

safe_tls($co, $DB, <<"EOS");
CREATE TABLE ledger (id int PRIMARY KEY, note text) USING encrypted_heap;
SELECT create_distributed_table('ledger', 'id', shard_count => 4);
CREATE TABLE ledger_ctl (id int PRIMARY KEY, note text) USING heap;
SELECT create_distributed_table('ledger_ctl', 'id', colocate_with => 'none', shard_count => 4);
INSERT INTO ledger SELECT i, '$ENC-' || i FROM generate_series(1, 3000) i;
INSERT INTO ledger_ctl SELECT i, '$CTL-' || i FROM generate_series(1, 300) i;
EOS
my $ROWS = q{SELECT count(*), count(*) FILTER (WHERE note = '} . $ENC . q{-' || id) FROM ledger};
my $PH = q{SELECT string_agg(COALESCE(phase, '-'), ',' ORDER BY is_coordinator DESC, nodeport)
	FROM fieldcrypt.cluster_rotation_progress() WHERE database IS NULL OR database = current_database()};
my $GENS = q{SELECT string_agg(n::text, ',' ORDER BY is_coordinator DESC, nodeport) FROM
	(SELECT is_coordinator, nodeport, count(generation) n FROM fieldcrypt.cluster_tde_key_status()
	 WHERE error IS NULL GROUP BY 1, 2) s};
my @byport = sort { $a->port <=> $b->port } ($w1, $w2);
sub expect_phases
{
	my (%ph) = @_;
	return join(',', $ph{coordinator}, map { $ph{ $_->name } } @byport);
}

# --- 1. rotate_tde_key on every node, worker2 paused -------------------------------------------
sql_is($co, $DB, $GENS, '1,1,1', 'cluster_tde_key_status: one TDE generation on every node');
FcCitus::set_conf($w2, 'fieldcrypt.test_reencrypt_pause_after_batches = 0');
safe_tls($co, $DB, 'SELECT fieldcrypt.rotate_tde_key()');	# rotates every worker's TDE key too
FcCitus::wait_coord($c, $DB, $PH,
	expect_phases(coordinator => 'waiting for the cluster', worker1 => 'waiting for the cluster',
		worker2 => 'paused for testing'),
	'cluster_rotation_progress: coordinator and worker1 wait for the cluster, worker2 is paused');
sql_is($co, $DB, $GENS, '2,2,2', 'cluster_tde_key_status: the old TDE generation kept on every node');
sql_is($co, $DB, 'SELECT count(*) FILTER (WHERE is_current), count(DISTINCT nodeport) FROM fieldcrypt.cluster_tde_key_status()',
	'3|3', 'cluster_tde_key_status: one current generation per node, every node');
FcCitus::wait_coord($c, $DB, q{SELECT problem ~ '^old generations kept: node 127\.0\.0\.1:} . $w2->port
	  . q{: not done: paused for testing' FROM fieldcrypt.rotation_progress WHERE database = current_database()},
	't', 'the coordinator says which node holds the TDE generations back');
is($co->safe_psql($DB, $ROWS), '3000|3000', 'every row reads meanwhile');
FcCitus::set_conf($w2, 'fieldcrypt.test_reencrypt_pause_after_batches = -1');
FcCitus::wait_coord($c, $DB, $PH, '-,-,-', 'once worker2 is done, no node has a re-encryption left');
sql_is($co, $DB, $GENS, '1,1,1', 'cluster_tde_key_status: the old TDE generation destroyed on every node');
sql_is($co, $DB, 'SELECT bool_and(is_current), bool_and(generation = 2) FROM fieldcrypt.cluster_tde_key_status()',
	't|t', 'every node is left with its new generation alone');
is($co->safe_psql($DB, $ROWS), '3000|3000', 'every row reads after the destruction');
like(FcKeyTest::log_since($w1, $logpos{worker1}),
	qr/old TDE key generation\(s\) are kept until the Citus coordinator finds every node done/,
	'worker1 logged its wait');
like(FcKeyTest::log_since($w2, $logpos{worker2}),
	qr/encrypted_heap tables of database "app" to TDE key generation 2 finished: [1-9]\d* rows rewritten; 1 old generation\(s\) destroyed/,
	'worker2 re-encrypted its shards, then destroyed its old generation');

# --- 2. rotate_tde_key on one worker: finish_cluster_reencryption ------------------------------
safe_tls($w1, $DB, 'SELECT fieldcrypt.rotate_tde_key()');
FcCitus::wait_coord($c, $DB, $PH,
	expect_phases(coordinator => '-', worker1 => 'waiting for the cluster', worker2 => '-'),
	'worker1 alone rotated: it waits for the cluster, the coordinator has nothing to do');
sql_is($co, $DB, q{SELECT string_agg(format('%s:%s', stage, state), ',' ORDER BY nodeport, stage)
	FROM fieldcrypt.finish_cluster_reencryption() WHERE nodeport = } . $w1->port,
	'tde:released,values:done', 'finish_cluster_reencryption releases worker1 and says so');
ok($w1->poll_query_until($DB, 'SELECT count(*) FROM fieldcrypt.tde_key_status', '1'),
	'worker1 destroyed its old TDE generation');
is($co->safe_psql($DB, $ROWS), '3000|3000', 'every row reads');

# --- 3. at rest and in the logs ----------------------------------------------------------------
$_->safe_psql($DB, 'CHECKPOINT') for ($w1, $w2);
for my $w ($w1, $w2)
{
	my ($enc, $ctl) = (0, 0);
	find(sub {
		return unless -f $_;
		my $b = FcKeyTest::read_bytes($_);
		$enc++ if index($b, $ENC) >= 0;
		$ctl++ if index($b, $CTL) >= 0;
	}, $w->data_dir . '/base');
	ok($ctl > 0, $w->name . ': the heap control table holds its marker in plaintext (the grep works)');
	is($enc, 0, $w->name . ': no encrypted_heap marker in any data file');
}
for my $n (FcCitus::nodes($c))
{
	my $log = FcKeyTest::log_since($n, 0);
	is(index($log, $ENC), -1, $n->name . ': no plaintext of an encrypted_heap row in the log');
}

FcCitus::stop_all($c);
done_testing();
