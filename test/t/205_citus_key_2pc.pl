# fieldcrypt on Citus (issue 15): set_data_encryption_key on the coordinator reaches every
# worker in the same decision, by two-phase commit (src/keys/cluster_2pc.c; the workers'
# side is src/keys/prepared.c, tested alone in 204):
#   - the first key and a key change on the coordinator give every node the same
#     generations (cluster_key_status, key_generations of each node); values written
#     before and after decrypt across the shards; nothing stays prepared;
#   - rotate_tde_key on the coordinator rotates the TDE key of every node (each its own);
#   - a worker down: the change fails with 08006 naming the node; no node changed, nothing
#     prepared on the other worker; rotate_tde_key fails the same way before any node rotated;
#   - a worker that holds generations of its own refuses the import: the change fails with
#     that node's SQLSTATE (42710) naming it; nothing changed;
#   - the coordinator commits but its COMMIT PREPARED never reaches the workers
#     (fieldcrypt.test_cluster_skip_commit_prepared), a worker restarts while prepared:
#     fieldcrypt.recover_cluster_key_changes() commits on every node, and its records go;
#   - a prepared fieldcrypt_<system id>_... transaction with no record and no running
#     coordinator transaction is rolled back by the recovery;
#   - a node about to be added gets the current generation with cluster_sync_keys(host, port)
#     (without it citus_add_node fails: the shell of an encrypted_heap table needs a key);
#     cluster_sync_keys() of every worker; where the
#     workers hold generations of their own it is refused (42710), naming the node;
#   - ROLLBACK, or ROLLBACK TO SAVEPOINT, of a propagated change rolls it back on every worker;
#   - PREPARE TRANSACTION on the coordinator after a propagated change: 0A000;
#     recover_cluster_key_changes() outside a Citus coordinator: 55000;
#   - no passphrase in any node's log or pg_stat_activity (sent as bind parameters).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my @K = map { "Citus-2pc-Marker-K$_-7x!" } 0 .. 5;
my $c = FcCitus::new_cluster(workers => 2);
my $co = $c->{coord};
my ($w1, $w2) = @{ $c->{workers} };
my $DB = 'k2';
FcCitus::add_database($c, $DB, db_pre => 'SET fieldcrypt.auto_activate = off; ',
	worker_pre => 'SET fieldcrypt.auto_activate = off; ');
my $STATUS = 'SELECT count(*), count(*) FILTER (WHERE matches_coordinator), min(current_generation), '
  . 'max(current_generation) FROM fieldcrypt.cluster_key_status()';
my $GENS = "SELECT string_agg(generation || ':' || encode(kcv, 'hex'), ',' ORDER BY generation) FROM fieldcrypt.key_generations";
my $CHECK = 'SELECT count(*), count(*) FILTER (WHERE fieldcrypt.decrypt(password) IS DISTINCT FROM mirror) FROM mailbox';
my $PREPARED = 'SELECT count(*) FROM pg_prepared_xacts';

# the key generations of every node, as "coordinator|worker1|worker2"
sub gens_of_nodes
{
	return join('|', map { $_->safe_psql($DB, $GENS) } FcCitus::nodes($c));
}

# --- the first key on the coordinator reaches every worker ---------------------------------
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K[0]')");
sql_is($co, $DB, $STATUS, '3|3|1|1', 'the first key: every node holds the coordinator\'s generation 1');
my $g1 = $co->safe_psql($DB, $GENS);
is(gens_of_nodes(), join('|', ($g1) x 3), 'same generation (number and key check value) on every node');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2)), '0,0', 'nothing stays prepared on the workers');
sql_is($w1, $DB, 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K[0], 'worker1: the key is the coordinator\'s');

safe_tls($co, $DB, <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox', 'id', shard_count => 8);
INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(1, 40) i;
EOS

# --- a key change on the coordinator reaches every worker ----------------------------------
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K[1]')");
sql_is($co, $DB, $STATUS, '3|3|2|2', 'a key change: every node on generation 2');
my $g2 = $co->safe_psql($DB, $GENS);
is(gens_of_nodes(), join('|', ($g2) x 3), 'generations 1 and 2 are the same on every node');
safe_tls($co, $DB, "INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(41, 60) i");
is($co->safe_psql($DB, $CHECK), '60|0', 'values of generations 1 and 2 decrypt across the shards');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2)), '0,0', 'nothing stays prepared');

# --- rotate_tde_key on the coordinator rotates every node's TDE key -------------------------
safe_tls($co, $DB, <<'EOS');
CREATE TABLE ledger (id int PRIMARY KEY, note text) USING encrypted_heap;
SELECT create_distributed_table('ledger', 'id', shard_count => 4);
INSERT INTO ledger SELECT i, 'note-' || i FROM generate_series(1, 20) i;
EOS
my $TDE = 'SELECT coalesce(max(generation) FILTER (WHERE is_current), 0) FROM fieldcrypt.tde_key_status';
sub tde_of_nodes { return join('|', map { safe_tls($_, $DB, $TDE) } FcCitus::nodes($c)); }
my @tde0 = split /\|/, tde_of_nodes();
ok($tde0[1] >= 1 && $tde0[2] >= 1, 'the workers seal their ledger shards under a TDE key: ' . join('|', @tde0));
sql_is($co, $DB, 'SELECT fieldcrypt.rotate_tde_key() > 0', 't', 'rotate_tde_key on the coordinator');
is(tde_of_nodes(), join('|', map { $_ + 1 } @tde0), 'every node is on its next TDE generation');
safe_tls($co, $DB, "INSERT INTO ledger SELECT i, 'note-' || i FROM generate_series(21, 40) i");
sql_is($co, $DB, "SELECT count(*), count(*) FILTER (WHERE note = 'note-' || id) FROM ledger", '40|40',
	'rows written before and after the rotation read back across the shards');

# --- a worker down: nothing changes anywhere --------------------------------------------------
my $tde1 = tde_of_nodes() =~ s/\|[^|]*\z//r;		# coordinator and worker1
$w2->stop('fast');
sql_fails($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K[2]')", '08006',
	'could not change the data encryption key on node 127.0.0.1:' . $w2->port,
	'a worker down: the change fails, naming the node');
is($co->safe_psql($DB, $GENS), $g2, 'the coordinator did not change');
is($w1->safe_psql($DB, $GENS), $g2, 'worker1 did not change');
is($w1->safe_psql($DB, $PREPARED), '0', 'worker1 has nothing prepared: it was rolled back');
sql_fails($co, $DB, 'SELECT fieldcrypt.rotate_tde_key()', '08006',
	'could not change the data encryption key on node 127.0.0.1:' . $w2->port,
	'a worker down: rotate_tde_key fails, naming the node');
is(join('|', map { safe_tls($_, $DB, $TDE) } ($co, $w1)), $tde1, 'no TDE key was rotated on the coordinator or worker1');
sql_is($w1, $DB, 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K[1], 'worker1 keeps its key');
$w2->start;
sql_is($co, $DB, $STATUS, '3|3|2|2', 'with worker2 back, every node is still on generation 2');

# --- a worker that holds generations of its own refuses ----------------------------------------
my $DB2 = 'own';
FcCitus::add_database($c, $DB2);		# auto-activated: each node drew its own generation 1
my ($rc, $out, $err) = FcNode::psql_tls($co, $DB2,
	"\\set VERBOSITY verbose\nSELECT fieldcrypt.set_data_encryption_key('$K[3]')");
like($err, qr/ERROR:  42710: could not change the data encryption key on node 127\.0\.0\.1:\d+\n.*DETAIL:  Nothing was changed on any node\. The node reported: this database holds a different key generation 1/s,
	'a worker with a generation of its own: 42710, naming the node and why');
is($co->safe_psql($DB2, 'SELECT generation, key_source FROM fieldcrypt.key_status'), '1|generated',
	'the coordinator kept its generated key');
is(join(',', map { $_->safe_psql($DB2, 'SELECT count(*) FROM fieldcrypt.key_generations') . '/'
			. $_->safe_psql($DB2, $PREPARED) } ($w1, $w2)), '1/0,1/0', 'no worker changed or kept anything prepared');

# --- the commit does not reach the workers; a worker restarts while prepared --------------------
sql_is($co, $DB, "SET fieldcrypt.test_cluster_skip_commit_prepared = on;\nSELECT fieldcrypt.set_data_encryption_key('$K[2]');",
	"SET\n", 'a key change whose COMMIT PREPARED never reaches the workers (test setting)');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2)), '1,1', 'each worker holds it prepared');
sql_is($co, $DB, 'SELECT count(*) FROM fieldcrypt.cluster_transactions', '2', 'the coordinator recorded both gids');
like($w1->safe_psql($DB, 'SELECT gid FROM pg_prepared_xacts'), qr/\Afieldcrypt_\d+_\d+_\d+\z/, 'gid fieldcrypt_<system id>_<xid>_<node id>');
$w1->restart;
is($w1->safe_psql($DB, $PREPARED), '1', 'worker1 restarted: still prepared');
is($w1->safe_psql($DB, $GENS), $g2, 'worker1 is still on generation 2');
# recovery run by a member of fieldcrypt_admin whose search_path puts its own "=" for text
# first: the records are read as the extension's owner (a superuser), which must not resolve
# that operator (its function would run as a superuser)
safe_tls($co, $DB, q{CREATE ROLE adminx LOGIN; GRANT fieldcrypt_admin TO adminx;
  CREATE SCHEMA hijack AUTHORIZATION adminx});
my $adminx = FcNode::tls_connstr($co, $DB) =~ s/user=\S+/user=adminx/r;
my ($hrc, $hout, $herr) = FcNode::psql_connstr($adminx, q{\set QUIET on
CREATE FUNCTION hijack.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'hijacked: ran as %', current_user; END$$;
CREATE OPERATOR hijack.= (LEFTARG = text, RIGHTARG = text, FUNCTION = hijack.eq);
SET search_path = hijack, pg_catalog;
SELECT fieldcrypt.recover_cluster_key_changes();});
unlike($herr, qr/hijacked/, 'recovery by a fieldcrypt_admin member with its own "=" first on search_path never calls that operator');
like($herr, qr/WARNING:  could not finish the interrupted key change "fieldcrypt_\d+_\d+_\d+" on node [^\n]*\nDETAIL:  permission denied to finish prepared transaction/,
	'(it reads the records, then may not finish a superuser\'s prepared transaction on the workers: a WARNING, nothing done)');
is("$hrc:$hout", '0:0', 'it finished none');
sql_is($co, $DB, 'SELECT fieldcrypt.recover_cluster_key_changes()', '2', 'recovery commits on both workers');
sql_is($co, $DB, $STATUS, '3|3|3|3', 'every node on generation 3');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2)), '0,0', 'nothing prepared any more');
sql_is($co, $DB, 'SELECT count(*) FROM fieldcrypt.cluster_transactions', '0', 'and the records are gone');
sql_is($co, $DB, 'SELECT fieldcrypt.recover_cluster_key_changes()', '0', 'a second recovery has nothing to do');
safe_tls($co, $DB, "INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(61, 80) i");
is($co->safe_psql($DB, $CHECK), '80|0', 'values of generations 1 to 3 decrypt across the shards');

# --- a prepared transaction of ours with no record is rolled back -------------------------------
my $sysid = $co->safe_psql($DB, 'SELECT system_identifier FROM pg_control_system()');
my $oldxid = $co->safe_psql($DB, 'SELECT txid_current()');	# a coordinator transaction that is over
$w1->safe_psql($DB, "BEGIN; SELECT 1; PREPARE TRANSACTION 'fieldcrypt_${sysid}_${oldxid}_1'");
$w1->safe_psql($DB, "BEGIN; SELECT 1; PREPARE TRANSACTION 'someone_else_999'");
sql_is($co, $DB, 'SELECT fieldcrypt.recover_cluster_key_changes()', '1', 'recovery finishes one transaction');
is($w1->safe_psql($DB, 'SELECT string_agg(gid, \',\') FROM pg_prepared_xacts'), 'someone_else_999',
	'it rolled back ours (no record, coordinator transaction over) and left the other one alone');
$w1->safe_psql($DB, "ROLLBACK PREPARED 'someone_else_999'");

# --- a plain login on a worker prepares transactions whose names only look like ours -------------
safe_tls($co, $DB, 'CREATE ROLE mallory LOGIN');	# Citus creates it on the workers too
my $mallory = FcNode::tls_connstr($w1, $DB) =~ s/user=\S+/user=mallory/r;
my @fake = ("fieldcrypt_${sysid}_${oldxid}_1\"", "fieldcrypt_${sysid}_${oldxid}_1''x", "fieldcrypt_${sysid}_${oldxid}_1_2");
for my $g (@fake)
{
	my ($frc, $fout, $ferr) = FcNode::psql_connstr($mallory, "BEGIN; SELECT 1; PREPARE TRANSACTION '$g';");
	is($frc, 0, "mallory prepared a transaction named $g") or diag($ferr);
}
sql_is($co, $DB, 'SELECT fieldcrypt.recover_cluster_key_changes()', '0',
	'recovery leaves them alone and does not fail (they cannot block key changes)');
is($w1->safe_psql($DB, 'SELECT count(*) FROM pg_prepared_xacts WHERE owner = \'mallory\''), '3',
	'mallory\'s three transactions are still prepared');
$w1->safe_psql($DB, "ROLLBACK PREPARED '$_'") for @fake;	# already quoted for SQL

# --- a node added later gets the current generation through cluster_sync_keys ------------------
# (before citus_add_node: Citus then creates the shell of the encrypted_heap table ledger on
# it, which needs an active key; without one citus_add_node fails)
my $w3 = FcCitus::_new_node('worker3');
$w3->safe_psql('postgres', "CREATE DATABASE $DB");
$w3->safe_psql($DB, 'CREATE EXTENSION citus; SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt;');
sql_fails($co, $DB, "SELECT citus_add_node('127.0.0.1', " . $w3->port . ')', 'XX000',
	'failure on connection marked as essential: 127.0.0.1:' . $w3->port,
	'the control: without a key the node cannot be added (the shell of ledger needs one)');
sql_is($co, $DB, "SELECT fieldcrypt.cluster_sync_keys('127.0.0.1', " . $w3->port . ')', '',
	'cluster_sync_keys(host, port) on the coordinator, for the node about to be added');
$co->safe_psql($DB, "SELECT citus_add_node('127.0.0.1', " . $w3->port . ')');
push @{ $c->{workers} }, $w3;
my $W3GEN = 'SELECT current_generation, matches_coordinator FROM fieldcrypt.cluster_key_status() WHERE nodeport = ' . $w3->port;
sql_is($co, $DB, $W3GEN, '3|f', 'the new node holds the current generation (3), not the older ones');
sql_is($co, $DB, 'SELECT count(*) FROM ledger', '40', 'ledger reads with the node added');
is($w3->safe_psql($DB, $GENS), (split /,/, $co->safe_psql($DB, $GENS))[2], 'worker3 holds generation 3, same key check value');
sql_is($w3, $DB, 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K[2], 'worker3: the current key is the coordinator\'s');
sql_is($co, $DB, 'SELECT fieldcrypt.cluster_sync_keys()', '', 'cluster_sync_keys() of every worker: nothing to add');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2, $w3)), '0,0,0', 'nothing left prepared');
($rc, $out, $err) = FcNode::psql_tls($co, $DB2, "\\set VERBOSITY verbose\nSELECT fieldcrypt.cluster_sync_keys()");
like($err, qr/ERROR:  42710: could not change the data encryption key on node 127\.0\.0\.1:\d+\n.*DETAIL:  Nothing was changed on any node\. The node reported: this database holds a different key generation 1/s,
	'cluster_sync_keys where workers hold keys of their own: 42710, naming the node');
sql_fails($w1, $DB, 'SELECT fieldcrypt.cluster_sync_keys()', '55000',
	'this database is not the coordinator of a Citus cluster', 'cluster_sync_keys on a worker');

# --- error cases --------------------------------------------------------------------------------
sql_fails($co, $DB, "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[4]');\nPREPARE TRANSACTION 'fc_coord';",
	'0A000', 'cannot prepare a transaction that changed the data encryption key of a Citus cluster',
	'PREPARE TRANSACTION on the coordinator after a propagated change');
sql_is($co, $DB, $STATUS, '4|3|3|3', 'and nothing changed on any node (worker3 holds generation 3 only)');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2, $w3)), '0,0,0', 'nothing left prepared');
sql_is($co, $DB, "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[4]');\nROLLBACK;", "BEGIN\n\nROLLBACK",
	'a propagated change rolled back on the coordinator');
sql_is($co, $DB, "BEGIN;\nSAVEPOINT s;\nSELECT fieldcrypt.set_data_encryption_key('$K[4]');\nROLLBACK TO SAVEPOINT s;\nCOMMIT;",
	"BEGIN\nSAVEPOINT\n\nROLLBACK\nCOMMIT", 'a propagated change inside a savepoint rolled back, the transaction committed');
sql_is($co, $DB, "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[4]');\nSELECT fieldcrypt.recover_cluster_key_changes();\nROLLBACK;",
	"BEGIN\n\n0\nROLLBACK", 'recovery inside the transaction of a propagated change commits none of it (not decided yet)');
sql_is($co, $DB, $STATUS, '4|3|3|3', 'none of them changed any node');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2, $w3)), '0,0,0', 'and the workers hold nothing prepared');
sql_is($w1, $DB, 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K[2], 'worker1 keeps the current key');
$co->safe_psql('postgres', 'CREATE DATABASE single');
$co->safe_psql('single', 'CREATE EXTENSION fieldcrypt');
sql_fails($co, 'single', 'SELECT fieldcrypt.recover_cluster_key_changes()', '55000',
	'this database is not the coordinator of a Citus cluster', 'recovery outside a Citus coordinator');
sql_fails($w1, $DB, 'SELECT fieldcrypt.recover_cluster_key_changes()', '55000',
	'this database is not the coordinator of a Citus cluster', 'recovery on a worker');

# --- a second propagation that fails in a savepoint leaves the first one's workers prepared ----------
# (cluster_sync_keys after a key change in one transaction: its gids are the change's, the workers
# refuse them; rolling back to the savepoint must not roll back the change's prepared transactions)
my ($src, $sout, $serr) = FcNode::psql_tls($co, $DB, "\\set ON_ERROR_STOP off\n\\set QUIET on\nBEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[5]');\n"
	  . "SAVEPOINT s;\nSELECT fieldcrypt.cluster_sync_keys();\nROLLBACK TO SAVEPOINT s;\nCOMMIT;");
like($serr, qr/could not change the data encryption key on node/, 'the second propagation failed in its savepoint')
  or diag("rc $src: $serr");
sql_is($co, $DB, $STATUS, '4|3|4|4', 'the change committed reached every node: generation 4 current everywhere (worker3 still lacks 1 and 2)');
is(join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2, $w3)), '0,0,0', 'and nothing stays prepared');

# --- no passphrase on any node ----------------------------------------------------------------------
my @logs = map { slurp_file($_->logfile) } FcCitus::nodes($c);
ok((grep { /STATEMENT:  SELECT fieldcrypt\.import_key_generations\(\$1, \$2\)/ } @logs),
	'a worker logged the refused import: its statement has bind parameters only (and the grep can fail)');
is(scalar(grep { /Citus-2pc-Marker/ } @logs), 0, 'no passphrase in the log of any node');
is(join(',', map { $_->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%Citus-2pc-Marker%' AND pid <> pg_backend_pid()}) }
		FcCitus::nodes($c)), '0,0,0,0', 'nor in pg_stat_activity');

FcCitus::stop_all($c);
done_testing();
