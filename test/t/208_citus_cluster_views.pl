# fieldcrypt on Citus (issue 15): the cluster views and functions of src/rotation/clusterwide.c
# and of the ISSUE15-VIEWS section, their privileges and errors:
#   - cluster_rotation_progress() (everyone), cluster_tde_key_status() (fieldcrypt_admin):
#     one row per node; 55000 without Citus; 42501 for a plain login where the single-node
#     view needs fieldcrypt_admin;
#   - finish_cluster_reencryption(): fieldcrypt_admin (42501), TLS (28000), Citus (55000),
#     the coordinator only (55000);
#   - _cluster_reencryption_node(): fieldcrypt_admin, TLS, a known stage (22023);
#   - a coordinator whose connections to the workers do not use TLS: the workers refuse its
#     question, so the old generation is kept (reported), and destroyed once TLS is back.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my ($K1, $K2) = ('Citus-Views-K1-4w!', 'Citus-Views-K2-4w!');
my $c = FcCitus::new_cluster(workers => 1, reencrypt => 'on');
my ($co, $w1) = FcCitus::nodes($c);
my $DB = 'app';
$co->safe_psql('postgres', 'CREATE DATABASE nocitus');
$co->safe_psql('nocitus', 'CREATE EXTENSION fieldcrypt');
$co->safe_psql($DB, q{CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; GRANT fieldcrypt_admin TO bob;});
my $CP = $w1->port;
# a TDE key generation is drawn on each node with its first encrypted_heap table
safe_tls($co, $DB, q{CREATE TABLE ledger (id int) USING encrypted_heap; SELECT create_distributed_table('ledger', 'id');});

# --- without Citus ---------------------------------------------------------------------------
sql_fails($co, 'nocitus', 'SELECT * FROM fieldcrypt.cluster_rotation_progress()', '55000',
	'the citus extension is not installed in this database', 'cluster_rotation_progress without Citus: 55000');
sql_fails($co, 'nocitus', 'SELECT * FROM fieldcrypt.cluster_tde_key_status()', '55000',
	'the citus extension is not installed in this database', 'cluster_tde_key_status without Citus: 55000');
sql_fails($co, 'nocitus', 'SELECT * FROM fieldcrypt.finish_cluster_reencryption()', '55000',
	'the citus extension is not installed in this database', 'finish_cluster_reencryption without Citus: 55000');

# --- the views --------------------------------------------------------------------------------
sql_is($co, $DB, 'SET ROLE alice; SELECT count(*), count(*) FILTER (WHERE phase IS NULL AND error IS NULL), '
	  . 'count(*) FILTER (WHERE is_coordinator) FROM fieldcrypt.cluster_rotation_progress()',
	"SET\n2|2|1", 'cluster_rotation_progress for everyone: one row per node, nothing running');
sql_fails($co, $DB, 'SET ROLE alice; SELECT * FROM fieldcrypt.cluster_tde_key_status()', '42501',
	'permission denied for function cluster_tde_key_status', 'cluster_tde_key_status: not for a plain login');
sql_is($co, $DB, 'SET ROLE bob; SELECT string_agg(format(\'%s:%s:%s\', nodeport, generation, is_current), \',\' '
	  . 'ORDER BY is_coordinator DESC) FROM fieldcrypt.cluster_tde_key_status() WHERE error IS NULL',
	"SET\n" . $co->port . ":1:t,$CP:1:t", 'cluster_tde_key_status for fieldcrypt_admin: every node');

# --- finish_cluster_reencryption and the node function ------------------------------------------
sql_fails($co, $DB, 'SET ROLE alice; SELECT * FROM fieldcrypt.finish_cluster_reencryption()', '42501',
	'permission denied for function finish_cluster_reencryption', 'finish_cluster_reencryption: not for a plain login');
sql_fails($co, $DB, 'SET ROLE bob; SELECT * FROM fieldcrypt.finish_cluster_reencryption()', '28000',
	'fieldcrypt.finish_cluster_reencryption requires an SSL connection',
	'finish_cluster_reencryption: TLS only', via => 'plain');
sql_is($co, $DB, 'SET ROLE bob; SELECT string_agg(format(\'%s:%s:%s\', nodeport, stage, state), \',\' ORDER BY stage) '
	  . 'FROM fieldcrypt.finish_cluster_reencryption()',
	"SET\n$CP:tde:done,$CP:values:done",
	'finish_cluster_reencryption: every other node, each stage done');
sql_fails($w1, $DB, 'SELECT * FROM fieldcrypt.finish_cluster_reencryption()', '55000',
	'this node is not the coordinator of its Citus cluster', 'finish_cluster_reencryption on a worker: 55000');
sql_fails($w1, $DB, "SELECT fieldcrypt._cluster_reencryption_node('bogus', 1, false)", '22023',
	'unknown re-encryption stage "bogus"', '_cluster_reencryption_node: an unknown stage');
sql_fails($w1, $DB, "SET ROLE alice; SELECT fieldcrypt._cluster_reencryption_node('values', 1, true)", '42501',
	'permission denied for function _cluster_reencryption_node', '_cluster_reencryption_node: not for a plain login');
sql_fails($w1, $DB, "SELECT fieldcrypt._cluster_reencryption_node('values', 1, true)", '28000',
	'fieldcrypt._cluster_reencryption_node requires an SSL connection', '_cluster_reencryption_node: TLS only',
	via => 'plain');
sql_is($w1, $DB, "SELECT fieldcrypt._cluster_reencryption_node('values', 7, false)",
	'not done: this node is on generation 1, the coordinator on 7', '_cluster_reencryption_node: a node behind says so');

# --- no TLS between the nodes: the coordinator keeps the old generation -------------------------
FcCitus::add_shared_key_database($c, 'shared', $K1);
safe_tls($co, 'shared', <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text);
SELECT create_distributed_table('mailbox', 'id', shard_count => 2);
INSERT INTO mailbox SELECT i, 'v' || i FROM generate_series(1, 100) i;
EOS
FcCitus::set_conf($co, "citus.node_conninfo = 'sslmode=disable'");
sql_fails($co, 'shared', "SELECT fieldcrypt.set_data_encryption_key('$K2')", '28000',
	"could not change the data encryption key on node 127.0.0.1:$CP",
	'without TLS to the worker, the coordinator\'s key change is refused (two-phase commit: nothing changed)');
is(FcCitus::generations($_, 'shared'), '1', $_->name . ': still generation 1 only') for ($co, $w1);
# the change made with TLS (it reaches the worker), then TLS taken away before the coordinator's
# re-encryption asks the worker whether it is done
FcCitus::set_conf($co, "citus.node_conninfo = 'sslmode=require'", 'fieldcrypt.reencrypt = off');
safe_tls($co, 'shared', "SELECT fieldcrypt.set_data_encryption_key('$K2')");
is(FcCitus::generations($w1, 'shared'), '1,2', 'the key change reached the worker');
FcCitus::set_conf($co, "citus.node_conninfo = 'sslmode=disable'", 'fieldcrypt.reencrypt = on');
FcCitus::wait_coord($c, 'shared', q{SELECT problem FROM fieldcrypt.rotation_progress WHERE database = current_database()},
	"old generations kept: node 127.0.0.1:$CP: not reachable: fieldcrypt._cluster_reencryption_node requires an SSL connection",
	'without TLS to the worker, the coordinator keeps the old generation and says why');
is(FcCitus::generations($_, 'shared'), '1,2', $_->name . ': generation 1 kept') for ($co, $w1);
FcCitus::set_conf($co, "citus.node_conninfo = 'sslmode=require'");
FcCitus::wait_coord($c, 'shared', q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = current_database()},
	'0', 'with TLS back, the cluster finishes');
is(FcCitus::generations($_, 'shared'), '2', $_->name . ': generation 1 destroyed') for ($co, $w1);
is($co->safe_psql('shared', 'SELECT count(*) FROM mailbox WHERE fieldcrypt.decrypt(password) = \'v\' || id'), '100',
	'every value decrypts');

FcCitus::stop_all($c);
done_testing();
