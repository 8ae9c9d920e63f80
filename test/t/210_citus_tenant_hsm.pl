# fieldcrypt on Citus (issue 15): use_hsm_tenant_key on the coordinator reaches every node,
# checked on every node first (src/keys/cluster_tenant.c), with SoftHSM2 as the HSM of every
# node (one token directory, each node's PIN from fieldcrypt.hsm_pin_command):
#   - a worker whose fieldcrypt.hsm_modules does not list the module refuses a
#     fieldcrypt_admin who is not a superuser in the check: 42501 naming that worker,
#     no node changed (worker1 passed its check);
#   - a key label the coordinator's HSM does not hold fails on the coordinator itself,
#     before any worker is asked (its own message, not a node's);
#   - once the worker lists the module: every node on the HSM key (same id),
#     cluster_tenant_key_status shows it, values on the shards decrypt, a restart of
#     every node unwraps through PKCS#11; revert_tenant_key brings every node back;
#   - the PIN is in no node's log.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();
my $MODULE = '/usr/lib/softhsm/libsofthsm2.so';
-f $MODULE or die "SoftHSM2 is not installed ($MODULE): run test/deps.sh";

my $PIN = 'Citus-Hsm-Pin-4kQ-x1';
my $SO_PIN = 'Citus-Hsm-SoPin-5zR';
my $K = 'Citus-Hsm-Db-Key-1-aZ!';
my $DB = 'app';
my $dir = PostgreSQL::Test::Utils::tempdir;
mkdir "$dir/tokens" or die;
write_bytes("$dir/softhsm2.conf",
	"directories.tokendir = $dir/tokens\nobjectstore.backend = file\nlog.level = ERROR\n");
$ENV{SOFTHSM2_CONF} = "$dir/softhsm2.conf";    # inherited by the servers
write_bytes("$dir/pin", "$PIN\n");
chmod 0600, "$dir/pin";

sub run_ok
{
	my (@cmd) = @_;
	my $out = '';
	IPC::Run::run(\@cmd, '>&', \$out) or die "@cmd failed: $out";
	return $out;
}
run_ok('softhsm2-util', '--init-token', '--free', '--label', 'fctenant', '--pin', $PIN, '--so-pin', $SO_PIN);
run_ok('pkcs11-tool', '--module', $MODULE, '--token-label', 'fctenant', '--login', '--pin', $PIN,
	'--keypairgen', '--key-type', 'rsa:2048', '--label', 'tenantkey', '--id', '01');
run_ok('pkcs11-tool', '--module', $MODULE, '--token-label', 'fctenant', '--read-object',
	'--type', 'pubkey', '--label', 'tenantkey', '-o', "$dir/pub.der");
run_ok('openssl', 'pkey', '-pubin', '-inform', 'DER', '-in', "$dir/pub.der", '-outform', 'DER',
	'-out', "$dir/spki.der");
my $FP = (split / /, run_ok('openssl', 'dgst', '-sha256', '-r', "$dir/spki.der"))[0];
like($FP, qr/^[0-9a-f]{64}$/, 'the key pair was generated in the token');

my $off = 'SET fieldcrypt.auto_activate = off; ';
my $c = FcCitus::new_cluster(workers => 2, db_pre => $off, worker_pre => $off,
	conf => "fieldcrypt.hsm_pin_command = 'cat $dir/pin'\n");
my ($co, $w1, $w2) = FcCitus::nodes($c);
my @N = map { '127.0.0.1:' . $_->port } ($w1, $w2);
FcCitus::set_conf($_, "fieldcrypt.hsm_modules = '$MODULE'") for ($co, $w1);
FcCitus::set_conf($_, 'log_statement = all') for ($w1, $w2);
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K')");
safe_tls($co, $DB, <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text);
SELECT create_distributed_table('mailbox', 'id', shard_count => 4);
INSERT INTO mailbox SELECT i, 'pw-' || i FROM generate_series(1, 20) i;
CREATE ROLE bob LOGIN;
GRANT fieldcrypt_admin TO bob;
EOS
my $CHECK = "SELECT count(*) FILTER (WHERE fieldcrypt.decrypt(password) = 'pw-' || id) FROM mailbox";
my $TENANT = q{SELECT mode || ':' || coalesce(key_id, '') || ':' || keyring FROM fieldcrypt.tenant_key_status};
sub tenant_of_nodes { return join('|', map { safe_tls($_, $DB, $TENANT) } FcCitus::nodes($c)); }
my $managed = tenant_of_nodes();
like($managed, qr/\Amanaged:[0-9a-f]{32}:loaded(\|managed:[0-9a-f]{32}:loaded){2}\z/,
	'every node starts on its own managed key');
my $USE = "SELECT fieldcrypt.use_hsm_tenant_key('$MODULE', 'fctenant', 'tenantkey')";

# --- worker2 does not list the module: refused there, nothing changed ----------------------
my ($rc, $out, $err) = FcNode::psql_tls($co, $DB, "\\set VERBOSITY verbose\nSET ROLE bob;\n$USE");
like($err, qr/ERROR:  42501: could not change the tenant key on node \Q$N[1]\E\n.*DETAIL:  Nothing was changed on any node\. The node reported: permission denied to load PKCS#11 module "\Q$MODULE\E"/s,
	'worker2 does not list the module: 42501 naming worker2, with its reason');
is(tenant_of_nodes(), $managed, 'no node changed (the coordinator and worker1 passed their checks)');

# --- a key the HSM does not hold: the coordinator's own check, no worker asked --------------
my @offsets = map { -s $_->logfile } ($w1, $w2);
sql_fails($co, $DB, "SELECT fieldcrypt.use_hsm_tenant_key('$MODULE', 'fctenant', 'nosuchkey')", '58000',
	'could not use the HSM key', 'a key the HSM does not hold: the coordinator refuses it itself');
ok(log_since($w1, $offsets[0]) !~ /_tenant_key_check/ && log_since($w2, $offsets[1]) !~ /_tenant_key_check/,
	'no worker was asked (log_statement = all there shows no check)');
is(tenant_of_nodes(), $managed, 'no node changed');

# --- every node on the HSM key ------------------------------------------------------------
FcCitus::set_conf($w2, "fieldcrypt.hsm_modules = '$MODULE'");
@offsets = map { -s $_->logfile } ($w1, $w2);
sql_is($co, $DB, "SET ROLE bob;\n$USE", "SET\n$FP", 'use_hsm_tenant_key on the coordinator: the key fingerprint');
ok(log_since($w1, $offsets[0]) =~ /_tenant_key_check/ && log_since($w2, $offsets[1]) =~ /_tenant_key_check/,
	'control: with log_statement = all, a worker\'s log shows the check it ran');
my $hsm = join('|', ("hsm:$FP:loaded") x 3);
is(tenant_of_nodes(), $hsm, 'every node on the HSM key, same id');
sql_is($co, $DB, q{SELECT string_agg(format('%s:%s:%s:%s', is_coordinator, mode, hsm_token, hsm_key_label), ',' ORDER BY is_coordinator DESC, nodeport) FROM fieldcrypt.cluster_tenant_key_status() WHERE key_id = '} . $FP . q{'},
	't:hsm:fctenant:tenantkey,f:hsm:fctenant:tenantkey,f:hsm:fctenant:tenantkey',
	'cluster_tenant_key_status: every node, its token and key label');
is(safe_tls($co, $DB, $CHECK), '20', 'values on the shards decrypt');
$_->restart for FcCitus::nodes($c);
is(tenant_of_nodes(), $hsm, 'a restart of every node unwraps through PKCS#11');
is(safe_tls($co, $DB, $CHECK), '20', 'values decrypt after the restart');

safe_tls($co, $DB, 'SELECT fieldcrypt.revert_tenant_key()');
is(tenant_of_nodes(), $managed, 'revert_tenant_key: every node back on its own managed key');

for my $n (FcCitus::nodes($c))
{
	my $log = slurp_file($n->logfile);
	ok($log =~ /fieldcrypt: tenant key changed to an HSM key \Q$FP\E/ && index($log, $PIN) < 0,
		$n->name . ': its log records the change and never the PIN');
}

FcCitus::stop_all($c);
done_testing();
