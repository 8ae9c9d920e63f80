# fieldcrypt on Citus (issue 15), a key change and nodes added afterwards (the coordinator
# is the origin; README "Running on Citus"):
#   - a key change on the coordinator reaches both workers (two-phase commit, 205); the
#     export imported on them by hand afterwards adds nothing: cluster_key_status shows
#     every node on generation 2; values of both generations decrypt across the shards;
#   - a node added afterwards with both generations imported before citus_add_node: the
#     rebalancer (block_writes) moves shards there and every value still decrypts,
#     including new rows routed to it;
#   - a node added without the import (it auto-activated a key of its own):
#     cluster_key_status flags it, and a shard move to it is refused by that node (it
#     cannot decrypt the envelopes it would store), nothing moved.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my ($K1, $K2) = ('Citus-Added-K1-7x!', 'Citus-Added-K2-7x!');
my $c = FcCitus::new_cluster(workers => 2);
my $co = $c->{coord};
my $DB = 'shared';
FcCitus::add_shared_key_database($c, $DB, $K1);
my $CHECK = 'SELECT count(*), count(*) FILTER (WHERE fieldcrypt.decrypt(password) IS DISTINCT FROM mirror) FROM mailbox';
my $STATUS = 'SELECT count(*), count(*) FILTER (WHERE matches_coordinator), min(current_generation), '
  . 'max(current_generation) FROM fieldcrypt.cluster_key_status()';

safe_tls($co, $DB, <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox', 'id', shard_count => 8);
INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(1, 40) i;
EOS

# --- a key change on the coordinator, imported on every worker ----------------------------
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K2')");
sql_is($co, $DB, $STATUS, '3|3|2|2', 'the change on the coordinator reached every worker');
my $doc = safe_tls($co, $DB, 'SELECT fieldcrypt.export_key_generations()') =~ s/\n/\\n/gr;
is(join(',', map { safe_tls($_, $DB, "SELECT fieldcrypt.import_key_generations(E'$doc', '$K2')") } @{ $c->{workers} }),
	'{},{}', 'importing its export by hand on the workers adds nothing');
sql_is($co, $DB, $STATUS, '3|3|2|2', 'after the import on every worker, every node is on generation 2');
safe_tls($co, $DB, "INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(41, 60) i");
is($co->safe_psql($DB, $CHECK), '60|0', 'values of generations 1 and 2 decrypt across the shards');
# --- a node added later, with the keys imported first -------------------------------------
my $w3 = FcCitus::_new_node('worker3');
$w3->safe_psql('postgres', "CREATE DATABASE $DB");
$w3->safe_psql($DB, 'CREATE EXTENSION citus; SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt;');
safe_tls($w3, $DB, "SELECT fieldcrypt.import_key_generations(E'$doc', '$_')") for ($K1, $K2);
is($w3->safe_psql($DB, 'SELECT string_agg(generation::text, \',\' ORDER BY generation) FROM fieldcrypt.key_generations'),
	'1,2', 'worker3: both generations imported before it joins');
$co->safe_psql($DB, "SELECT citus_add_node('127.0.0.1', " . $w3->port . ')');
push @{ $c->{workers} }, $w3;
sql_is($co, $DB, $STATUS, '4|4|2|2', 'cluster_key_status: the new node matches');
safe_tls($co, $DB, "SELECT rebalance_table_shards('mailbox', shard_transfer_mode => 'block_writes')");
my $on3 = $co->safe_psql($DB, q{SELECT count(*) FROM citus_shards WHERE table_name = 'mailbox'::regclass AND nodeport = }
	  . $w3->port);
ok($on3 > 0, "the rebalancer moved $on3 shards to worker3");
is($co->safe_psql($DB, $CHECK), '60|0', 'after the rebalance every value still decrypts');
safe_tls($co, $DB, "INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(61, 100) i");
is($co->safe_psql($DB, $CHECK), '100|0', 'new rows, some routed to worker3, decrypt');
sql_is($co, $DB, 'SELECT count(*) FROM mailbox WHERE password IS NULL', '0', 'no value was stored as NULL');

# --- a node added without the import ------------------------------------------------------
my $w4 = FcCitus::_new_node('worker4');
$w4->safe_psql('postgres', "CREATE DATABASE $DB");
$w4->safe_psql($DB, 'CREATE EXTENSION citus; CREATE EXTENSION fieldcrypt;');
$co->safe_psql($DB, "SELECT citus_add_node('127.0.0.1', " . $w4->port . ')');
push @{ $c->{workers} }, $w4;
sql_is($co, $DB, "SELECT matches_coordinator, generations FROM fieldcrypt.cluster_key_status() WHERE nodeport = "
	  . $w4->port, 'f|{1}', 'cluster_key_status flags the node that holds a key of its own');
my ($shardid, $src) = split /\|/, $co->safe_psql($DB, q{SELECT shardid, nodeport FROM citus_shards
	WHERE table_name = 'mailbox'::regclass ORDER BY shardid LIMIT 1});
my ($rc, $out, $err) = FcNode::psql_tls($co, $DB, "SELECT citus_move_shard_placement($shardid, '127.0.0.1', $src, "
	  . "'127.0.0.1', " . $w4->port . ", shard_transfer_mode => 'block_writes')");
like("$rc:$err", qr/\A[1-9]\d*:.*encrypted value of key generation \d+ cannot be decrypted in this database/s,
	'a shard move to it is refused: it cannot decrypt what it would store');
is($co->safe_psql($DB, "SELECT nodeport FROM citus_shards WHERE shardid = $shardid"), $src, 'the shard did not move');
is($co->safe_psql($DB, $CHECK), '100|0', 'every value still decrypts');

FcCitus::stop_all($c);
done_testing();
