# fieldcrypt on Citus (issue 15): activation when Citus itself creates the extension on the
# workers. With the workers added first, CREATE EXTENSION fieldcrypt on the coordinator is
# propagated by Citus to every worker (a Citus peer session runs the script there):
#   - the coordinator auto-activates (fieldcrypt.auto_activate is on by default);
#   - the workers do not draw a random generation 1 of their own (they would then refuse
#     the coordinator's generations: 42710), they hold no generation;
#   - cluster_sync_keys() gives every worker the coordinator's generation 1 (same key check
#     value), values written through the coordinator decrypt on every shard, and the next
#     set_data_encryption_key on the coordinator reaches every node;
#   - a key change left prepared on the workers (its COMMIT PREPARED lost) is finished before
#     rotate_tde_key's check, which it would otherwise make refuse;
#   - a session named like a Citus peer session cannot change the coordinator's keys alone;
#   - a node added later: citus_add_node fails without its key, naming cluster_sync_keys;
#   - a CREATE EXTENSION run by hand on a node (not a peer session) still auto-activates.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my $DB = 'prop';
my $co = FcCitus::_new_node('coordinator');
my @w = map { FcCitus::_new_node("worker$_") } 1 .. 2;
my $c = { coord => $co, workers => \@w, opts => {}, dbs => {} };
for my $n ($co, @w)
{
	$n->safe_psql('postgres', "CREATE DATABASE $DB");
	$n->safe_psql($DB, 'CREATE EXTENSION citus');
}
$co->safe_psql($DB, "SELECT citus_set_coordinator_host('127.0.0.1', " . $co->port . ')');
$co->safe_psql($DB, "SELECT citus_add_node('127.0.0.1', " . $_->port . ')') for @w;

# CREATE EXTENSION on the coordinator alone; Citus runs it on the workers
$co->safe_psql($DB, 'CREATE EXTENSION fieldcrypt');
my $EXT = q{SELECT count(*) FROM pg_extension WHERE extname = 'fieldcrypt'};
is(join(',', map { $_->safe_psql($DB, $EXT) } @w), '1,1', 'Citus created the extension on every worker');
my $NGENS = 'SELECT count(*) FROM fieldcrypt.key_generations';
my $GENS = "SELECT string_agg(generation || ':' || encode(kcv, 'hex'), ',' ORDER BY generation) FROM fieldcrypt.key_generations";
sql_is($co, $DB, $NGENS, '1', 'the coordinator auto-activated: generation 1');
is(join(',', map { $_->safe_psql($DB, $NGENS) } @w), '0,0',
	'the workers, where a Citus peer session ran the script, drew no generation of their own');

# the coordinator's generation reaches every worker
safe_tls($co, $DB, 'SELECT fieldcrypt.cluster_sync_keys()');
my $g1 = $co->safe_psql($DB, $GENS);
like($g1, qr/^1:[0-9a-f]+$/, 'the coordinator holds generation 1');
is(join('|', map { $_->safe_psql($DB, $GENS) } @w), "$g1|$g1",
	'after cluster_sync_keys() every worker holds the coordinator\'s generation 1 (same key check value)');
sql_is($co, $DB, 'SELECT count(*), count(*) FILTER (WHERE matches_coordinator) FROM fieldcrypt.cluster_key_status()',
	'3|3', 'cluster_key_status: every node matches the coordinator');

safe_tls($co, $DB, <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox', 'id', shard_count => 8);
INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(1, 40) i;
EOS
my $CHECK = 'SELECT count(*), count(*) FILTER (WHERE fieldcrypt.decrypt(password) IS DISTINCT FROM mirror) FROM mailbox';
is($co->safe_psql($DB, $CHECK), '40|0', 'values sealed under the auto-activated key decrypt on every shard');

# the next key change reaches every node
safe_tls($co, $DB, q{SELECT fieldcrypt.set_data_encryption_key('Citus-Prop-Marker-K1-7x!')});
my $g2 = $co->safe_psql($DB, $GENS);
like($g2, qr/^1:[0-9a-f]+,2:[0-9a-f]+$/, 'the coordinator holds generations 1 and 2');
is(join('|', map { $_->safe_psql($DB, $GENS) } @w), "$g2|$g2", 'the key change reached every worker');
safe_tls($co, $DB, "INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(41, 60) i");
is($co->safe_psql($DB, $CHECK), '60|0', 'values of both generations decrypt across the shards');

# a key change whose COMMIT PREPARED never reached the workers leaves them prepared, holding
# their change lock: rotate_tde_key (checked on every worker first) finishes it before its
# check instead of being refused (55P03) on every retry
my $PREPARED = 'SELECT count(*) FROM pg_prepared_xacts';
safe_tls($co, $DB, "SET fieldcrypt.test_cluster_skip_commit_prepared = on;\nSELECT fieldcrypt.set_data_encryption_key('Citus-Prop-Marker-K2-7x!')");
is(join(',', map { $_->safe_psql($DB, $PREPARED) } @w), '1,1', 'the workers are left prepared');
my $TDEGENS = 'SELECT coalesce(max(generation), 0) FROM fieldcrypt.tde_key_status';
my @tde0 = map { $_->safe_psql($DB, $TDEGENS) } ($co, @w);
my ($rrc, $rout, $rerr) = FcNode::psql_tls($co, $DB, 'SELECT fieldcrypt.rotate_tde_key()');
is($rrc, 0, 'rotate_tde_key on the coordinator succeeds: the prepared key change is finished first')
  or diag($rerr);
is(join(',', map { $_->safe_psql($DB, $PREPARED) } @w), '0,0', 'nothing stays prepared on the workers');
is(join(',', map { $_->safe_psql($DB, $TDEGENS) } ($co, @w)), join(',', map { $_ + 1 } @tde0),
	'every node rotated its TDE key once');
my $g3 = $co->safe_psql($DB, $GENS);
like($g3, qr/,3:[0-9a-f]+$/, 'the coordinator holds generation 3');
is(join('|', map { $_->safe_psql($DB, $GENS) } @w), "$g3|$g3", 'the committed key change reached every worker');

# a session named like a Citus peer session cannot change the coordinator's keys alone
sql_fails($co, $DB, "SET application_name = 'citus_internal gpid=77';\nSELECT fieldcrypt.rotate_tde_key();",
	'55000', 'key changes cannot be made in a Citus internal session on the coordinator',
	'a key change in a session named like a Citus peer session on the coordinator: 55000');
sql_fails($co, $DB, "SET application_name = 'citus_internal gpid=77';\nSELECT fieldcrypt.set_data_encryption_key('Citus-Prop-Marker-K3-7x!');",
	'55000', 'key changes cannot be made in a Citus internal session on the coordinator',
	'set_data_encryption_key in such a session: 55000');
is(join(',', map { $_->safe_psql($DB, $TDEGENS) } ($co, @w)), join(',', map { $_ + 1 } @tde0),
	'no node rotated in that session');
is($co->safe_psql($DB, $GENS), $g3, 'no key change in that session');

# a node added later: citus_add_node copies the extension there (a peer session again, no
# generation of its own), and the shell of an encrypted_heap table needs a key: refused,
# naming the way that works; that way gives the node the coordinator's key
safe_tls($co, $DB, <<'EOS');
CREATE TABLE ledger (id int PRIMARY KEY, note text) USING encrypted_heap;
SELECT create_distributed_table('ledger', 'id', shard_count => 4);
INSERT INTO ledger SELECT i, 'note-' || i FROM generate_series(1, 20) i;
EOS
my $w3 = FcCitus::_new_node('worker3');
$w3->safe_psql('postgres', "CREATE DATABASE $DB");
$w3->safe_psql($DB, 'CREATE EXTENSION citus');
my ($rc, $out, $err) = FcNode::psql_tls($co, $DB,
	"\\set VERBOSITY verbose\nSELECT citus_add_node('127.0.0.1', " . $w3->port . ')');
# Citus relays the node's error as a WARNING (with its hint), then fails the call
ok($rc != 0 && $err =~ /WARNING:  55000: data encryption is not active in database "$DB"/
	  && $err =~ /HINT:  This node takes its key from the Citus coordinator: .*cluster_sync_keys\('host', port\)/
	  && $err =~ /ERROR:  XX000: failure on connection marked as essential/,
	'citus_add_node of a node without the key: the node\'s 55000, the hint names cluster_sync_keys(host, port)')
  or diag($err);
is($w3->safe_psql($DB, $EXT), '0', 'nothing of the refused citus_add_node stays on the node');
$w3->safe_psql($DB, 'SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt');
safe_tls($co, $DB, "SELECT fieldcrypt.cluster_sync_keys('127.0.0.1', " . $w3->port . ')');
$co->safe_psql($DB, "SELECT citus_add_node('127.0.0.1', " . $w3->port . ')');
push @w, $w3;
is($w3->safe_psql($DB, $GENS), $co->safe_psql($DB, "SELECT string_agg(generation || ':' || encode(kcv, 'hex'), ',' ORDER BY generation) FROM fieldcrypt.key_generations WHERE generation = 3"),
	'the node added later holds the coordinator\'s current generation');
is($co->safe_psql($DB, 'SELECT count(*) FROM ledger'), '20', 'encrypted_heap shards still read after the node joined');

# a CREATE EXTENSION run by hand (not a Citus peer session) still auto-activates
$w[0]->safe_psql('postgres', 'CREATE DATABASE solo');
$w[0]->safe_psql('solo', 'CREATE EXTENSION citus; CREATE EXTENSION fieldcrypt');
sql_is($w[0], 'solo', $NGENS, '1', 'CREATE EXTENSION by hand on a node with Citus installed auto-activates');

FcCitus::stop_all($c);
done_testing();
