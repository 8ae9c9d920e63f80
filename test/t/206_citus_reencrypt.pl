# fieldcrypt on Citus (issue 15): re-encryption after a key change on every node, and the
# old generation destroyed cluster-wide only when every node is done (src/rotation/clusterwide.c).
# Key changes reach the workers by export/import, as in 203.
#   1. K2 imported on both workers, worker2's re-encryption paused: the coordinator and
#      worker1 finish but destroy nothing ("waiting for the cluster"), cluster_rotation_progress
#      shows each node's phase and the coordinator names worker2 as the reason; once worker2
#      goes on, generation 1 is destroyed on every node and every value decrypts, also those
#      of a shard moved meanwhile from worker2 (not done) to worker1 (done and waiting);
#   2. K3: worker2 stopped (immediate) in the middle of its re-encryption and worker1 down
#      while it waits: nothing is destroyed anywhere, the coordinator reports worker1 as not
#      reachable; worker2 resumes where it was, and once worker1 is back the cluster finishes;
#   3. K4 and a node added after it (generations imported first, as 203 does) with its
#      re-encryption postponed: the coordinator waits for it too, then it is destroyed there;
#   4. no passphrase and no plaintext in any node's log.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my @K = (undef, map { "Citus-Reenc-K$_-9q!" } 1 .. 4);
my $MARK = 'Mk206plain';
my $c = FcCitus::new_cluster(workers => 2, reencrypt => 'on',
	conf => "fieldcrypt.reencrypt_batch_pages = 1\n");
my ($co, $w1, $w2) = FcCitus::nodes($c);
my $DB = 'shared';
FcCitus::add_shared_key_database($c, $DB, $K[1]);
my $CHECK = 'SELECT count(*), count(*) FILTER (WHERE fieldcrypt.decrypt(password) IS DISTINCT FROM mirror) FROM mailbox';
my %logpos = map { $_->name => -s $_->logfile } FcCitus::nodes($c);

safe_tls($co, $DB, <<"EOS");
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox', 'id', shard_count => 4);
INSERT INTO mailbox SELECT i, '$MARK-' || i, '$MARK-' || i FROM generate_series(1, 3000) i;
EOS

# the phase of each node in this database (NULL: '-'), coordinator first, then by port
my $PH = q{SELECT string_agg(COALESCE(phase, '-'), ',' ORDER BY is_coordinator DESC, nodeport)
	FROM fieldcrypt.cluster_rotation_progress() WHERE database IS NULL OR database = current_database()};
my @byport = sort { $a->port <=> $b->port } ($w1, $w2);
sub expect_phases
{
	my (%ph) = @_;    # node name => phase
	return join(',', $ph{coordinator}, map { $ph{ $_->name } } @byport);
}

# --- 1. K2, worker2 paused -----------------------------------------------------------------
FcCitus::set_conf($w2, 'fieldcrypt.test_reencrypt_pause_after_batches = 0');
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K[2]')");
my $doc = FcCitus::export_doc($c, $DB);
FcCitus::import_doc($DB, $doc, $K[2], $w1, $w2);
FcCitus::wait_coord($c, $DB, $PH,
	expect_phases(coordinator => 'waiting for the cluster', worker1 => 'waiting for the cluster',
		worker2 => 'paused for testing'),
	'cluster_rotation_progress: coordinator and worker1 wait for the cluster, worker2 is paused');
is(FcCitus::generations($_, $DB), '1,2', $_->name . ': generation 1 not destroyed while worker2 is not done')
  for ($co, $w1, $w2);
FcCitus::wait_coord($c, $DB, q{SELECT problem ~ '^old generations kept: node 127\\.0\\.0\\.1:} . $w2->port
	  . q{: not done: paused for testing, \\d+ of [1-9]\\d* rows$' FROM fieldcrypt.rotation_progress
	  WHERE database = current_database()}, 't', 'the coordinator says which node holds it back');
is($co->safe_psql($DB, q{SELECT count(*) FROM fieldcrypt.cluster_rotation_progress()
	WHERE database = current_database() AND from_generation = 1 AND to_generation = 2 AND error IS NULL}),
	'3', 'cluster_rotation_progress: one row per node, from generation 1 to 2');
is($co->safe_psql($DB, $CHECK), '3000|0', 'every value decrypts meanwhile');
# a shard moved from worker2 (not done: old values) to worker1 (done, waiting): worker1 must
# look again once released, or it would destroy generation 1 under the moved values
my $sid = $co->safe_psql($DB, q{SELECT shardid FROM citus_shards WHERE table_name = 'mailbox'::regclass AND nodeport = }
	  . $w2->port . ' ORDER BY shardid LIMIT 1');
safe_tls($co, $DB, "SELECT citus_move_shard_placement($sid, '127.0.0.1', " . $w2->port . ", '127.0.0.1', "
	  . $w1->port . ", shard_transfer_mode => 'block_writes')");
is($co->safe_psql($DB, "SELECT nodeport FROM citus_shards WHERE shardid = $sid"), $w1->port,
	'a shard with generation 1 values moved from worker2 to worker1 while worker1 waits');

FcCitus::set_conf($w2, 'fieldcrypt.test_reencrypt_pause_after_batches = -1');
FcCitus::wait_coord($c, $DB, $PH, '-,-,-', 'once worker2 is done, no node has a re-encryption left');
is(FcCitus::generations($_, $DB), '2', $_->name . ': generation 1 destroyed') for ($co, $w1, $w2);
sql_is($co, $DB, 'SELECT count(*), min(current_generation), bool_and(matches_coordinator) FROM fieldcrypt.cluster_key_status()',
	'3|2|t', 'cluster_key_status: every node on generation 2 alone, the coordinator\'s');
is($co->safe_psql($DB, $CHECK), '3000|0', 'every value decrypts after the destruction, the moved shard\'s too');
like(FcKeyTest::log_since($_, $logpos{ $_->name }),
	qr/re-encryption of database "shared" to generation 2 finished: [1-9]\d* rows rewritten/,
	$_->name . ': its shards were re-encrypted (the worker sees the shards Citus hides)') for ($w1, $w2);
ok(FcKeyTest::log_since($w1, $logpos{worker1}) =~ /old key generation\(s\) are kept until the Citus coordinator finds every node done/
	  && FcKeyTest::log_since($w1, $logpos{worker1}) =~ /the Citus coordinator found every node done: destroying/,
	'worker1 logged its wait and the release');
like(FcKeyTest::log_since($co, $logpos{coordinator}),
	qr/the old key generation\(s\) are kept until every node of the Citus cluster is done/,
	'the coordinator logged why it kept generation 1');

# --- 2. K3: worker2 restarted in the middle, worker1 down while it waits ----------------------
FcCitus::set_conf($w2, 'fieldcrypt.test_reencrypt_pause_after_batches = 2');
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K[3]')");
$doc = FcCitus::export_doc($c, $DB);
FcCitus::import_doc($DB, $doc, $K[3], $w1, $w2);
FcCitus::wait_coord($c, $DB, $PH,
	expect_phases(coordinator => 'waiting for the cluster', worker1 => 'waiting for the cluster',
		worker2 => 'paused for testing'),
	'K3: worker2 paused after two batches, the others wait');
my $w2pos = -s $w2->logfile;
$w1->stop('immediate');
$w2->stop('immediate');
$w2->append_conf('postgresql.conf', "fieldcrypt.test_reencrypt_pause_after_batches = -1\n");
$w2->start;
ok($w2->poll_query_until($DB, q{SELECT phase FROM fieldcrypt.rotation_progress WHERE database = current_database()},
		'waiting for the cluster'), 'worker2, restarted, finishes its re-encryption and waits');
like(FcKeyTest::log_since($w2, $w2pos), qr/re-encryption of database "shared" from generation 2 to 3 resumed in pass 1 at table \d+ of \d+, block [1-9]\d*/,
	'worker2 resumed where it was after the restart');
FcCitus::wait_coord($c, $DB,
	q{SELECT problem ~ '^old generations kept: node 127\.0\.0\.1:} . $w1->port . q{: not reachable: '
	  FROM fieldcrypt.rotation_progress WHERE database = current_database()}, 't',
	'the coordinator reports worker1 as not reachable');
like($co->safe_psql($DB, "SELECT error FROM fieldcrypt.cluster_rotation_progress() WHERE nodeport = " . $w1->port),
	qr/^failed to connect to 127\.0\.0\.1:${\ $w1->port}/, 'cluster_rotation_progress: worker1 has an error');
is(FcCitus::generations($_, $DB), '2,3', $_->name . ': generation 2 kept while worker1 is down') for ($co, $w2);
$w1->start;
FcCitus::wait_coord($c, $DB, $PH, '-,-,-', 'once worker1 is back, the cluster finishes');
is(FcCitus::generations($_, $DB), '3', $_->name . ': generation 2 destroyed') for ($co, $w1, $w2);
is($co->safe_psql($DB, $CHECK), '3000|0', 'every value decrypts');

# --- 3. K4 and a node added after it --------------------------------------------------------
FcCitus::set_conf($w1, 'fieldcrypt.test_reencrypt_pause_after_batches = 0');
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K[4]')");
$doc = FcCitus::export_doc($c, $DB);
FcCitus::import_doc($DB, $doc, $K[4], $w1, $w2);
my $w3 = FcCitus::add_worker_importing($c, 'worker3', $DB, $doc, [ $K[3], $K[4] ],
	conf => "fieldcrypt.reencrypt = off\n");
is(FcCitus::generations($w3, $DB), '3,4', 'worker3 joined with generations 3 and 4');
FcCitus::set_conf($w1, 'fieldcrypt.test_reencrypt_pause_after_batches = -1');
FcCitus::wait_coord($c, $DB,
	q{SELECT problem FROM fieldcrypt.rotation_progress WHERE database = current_database()},
	'old generations kept: node 127.0.0.1:' . $w3->port . ': not done: postponed (fieldcrypt.reencrypt = off)',
	'the coordinator waits for the node added after the key change');
is(FcCitus::generations($_, $DB), '3,4', $_->name . ': generation 3 kept while worker3 is not done') for ($co, $w1);
safe_tls($co, $DB, "SELECT rebalance_table_shards('mailbox', shard_transfer_mode => 'block_writes')");
ok($co->safe_psql($DB, q{SELECT count(*) FROM citus_shards WHERE nodeport = } . $w3->port) > 0,
	'shards moved to worker3 before its re-encryption');
FcCitus::set_conf($w3, 'fieldcrypt.reencrypt = on');
my $PH4 = q{SELECT count(phase) FROM fieldcrypt.cluster_rotation_progress() WHERE database IS NULL OR database = current_database()};
FcCitus::wait_coord($c, $DB, $PH4, '0', 'with worker3 done, the cluster finishes');
is(FcCitus::generations($_, $DB), '4', $_->name . ': generation 3 destroyed') for ($co, $w1, $w2, $w3);
is($co->safe_psql($DB, $CHECK), '3000|0', 'every value decrypts, on worker3 too');

# --- 4. logs ----------------------------------------------------------------------------------
for my $n (FcCitus::nodes($c))
{
	my $log = FcKeyTest::log_since($n, 0);
	my @found = grep { index($log, $_) >= 0 } (@K[1 .. 4], "$MARK-");
	is("@found", '', $n->name . ': no passphrase and no plaintext in the log');
}

FcCitus::stop_all($c);
done_testing();
