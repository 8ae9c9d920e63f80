# fieldcrypt on Citus (issue 15): tenant-key changes and rotate_tde_key made on the
# coordinator reach every node, checked on every node first (src/keys/cluster_tenant.c):
#   - refusals in the check step change no node (tenant_key_status and tde_key_status of
#     every node compared before and after), each with the node named and its SQLSTATE:
#     no TLS between the nodes (28000), a worker that holds its key change lock (55P03),
#     a worker down (08006);
#   - upload_tenant_key on the coordinator: every node on the uploaded key (same id),
#     cluster_tenant_key_status shows every node, values on the shards still decrypt,
#     a restart of every node keeps it; the same upload again converges (same id);
#   - generate_tenant_key and revert_tenant_key reach every node (revert gives each node
#     its own managed key id back);
#   - a change that fails on a worker after every check passed (its EXECUTE privilege on
#     upload_tenant_key revoked, which the check does not look at) says which nodes took it;
#     the same call again, once fixed, converges;
#   - the PFX password never reaches any node's log, even with log_statement = all and
#     log_min_duration_statement = 0 on the workers;
#   - on a worker, a tenant-key change is that node's own, as on a single node;
#   - cluster_tenant_key_status without Citus: 55000; _tenant_key_check with an unknown mode.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my $PW = 'Citus-Tenant-Pfx-Marker-9xQ';
my $K = 'Citus-Tenant-Db-Key-1-aZ!';
my $DB = 'app';
my $dir = PostgreSQL::Test::Utils::tempdir;

sub run_ok
{
	my (@cmd) = @_;
	my $out = '';
	IPC::Run::run(\@cmd, '>&', \$out) or die "@cmd failed: $out";
	return $out;
}
run_ok('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30', '-subj', '/CN=tenant',
	'-keyout', "$dir/t.key", '-out', "$dir/t.crt");
run_ok('openssl', 'pkcs12', '-export', '-in', "$dir/t.crt", '-inkey', "$dir/t.key",
	'-out', "$dir/t.pfx", '-passout', "pass:$PW");
run_ok('openssl', 'pkey', '-in', "$dir/t.key", '-pubout', '-outform', 'DER', '-out', "$dir/t.spki");
my $FP = (split / /, run_ok('openssl', 'dgst', '-sha256', '-r', "$dir/t.spki"))[0];
my $PFX = "'\\x" . unpack('H*', read_bytes("$dir/t.pfx")) . "'::bytea";
my $UPLOAD = "SELECT fieldcrypt.upload_tenant_key($PFX, '$PW')";

my $off = 'SET fieldcrypt.auto_activate = off; ';
my $c = FcCitus::new_cluster(workers => 2, db_pre => $off, worker_pre => $off);
my ($co, $w1, $w2) = FcCitus::nodes($c);
my @N = map { '127.0.0.1:' . $_->port } ($w1, $w2);
safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K')");	# every node (2PC)
safe_tls($co, $DB, <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text);
SELECT create_distributed_table('mailbox', 'id', shard_count => 4);
INSERT INTO mailbox SELECT i, 'pw-' || i FROM generate_series(1, 20) i;
CREATE TABLE ledger (id int PRIMARY KEY, note text) USING encrypted_heap;
SELECT create_distributed_table('ledger', 'id', shard_count => 4);
INSERT INTO ledger SELECT i, 'note-' || i FROM generate_series(1, 20) i;
CREATE ROLE bob LOGIN;
GRANT fieldcrypt_admin TO bob;
EOS
my $CHECK = "SELECT count(*) FILTER (WHERE fieldcrypt.decrypt(password) = 'pw-' || id) FROM mailbox";
is(safe_tls($co, $DB, $CHECK), '20', 'values on the shards decrypt');

my $TENANT = q{SELECT mode || ':' || coalesce(key_id, '') || ':' || keyring FROM fieldcrypt.tenant_key_status};
sub tenant_of_nodes { return join('|', map { safe_tls($_, $DB, $TENANT) } FcCitus::nodes($c)); }
my $TDE = 'SELECT coalesce(max(generation) FILTER (WHERE is_current), 0) FROM fieldcrypt.tde_key_status';
sub tde_of_nodes { return join('|', map { safe_tls($_, $DB, $TDE) } FcCitus::nodes($c)); }

my $managed = tenant_of_nodes();
like($managed, qr/\Amanaged:[0-9a-f]{32}:loaded(\|managed:[0-9a-f]{32}:loaded){2}\z/,
	'every node starts on its own managed key');
my $tde0 = tde_of_nodes();
like($tde0, qr/\A[1-9]\d*\|[1-9]\d*\|[1-9]\d*\z/, "every node has a TDE key: $tde0");

# --- refusals in the check step: nothing changes anywhere -----------------------------------
FcCitus::set_conf($co, "citus.node_conninfo = 'sslmode=disable'");
my ($rc, $out, $err) = FcNode::psql_tls($co, $DB, "\\set VERBOSITY verbose\n$UPLOAD");
like($err, qr/ERROR:  28000: could not change the tenant key on node \Q$N[0]\E\n.*DETAIL:  Nothing was changed on any node\. The node reported: fieldcrypt\.upload_tenant_key\(\) requires an SSL connection/s,
	'no TLS between the nodes: upload_tenant_key fails in the check, naming the first worker, 28000');
sql_fails($co, $DB, 'SELECT fieldcrypt.generate_tenant_key()', '28000',
	"could not change the tenant key on node $N[0]", 'no TLS between the nodes: generate_tenant_key fails');
sql_fails($co, $DB, 'SELECT fieldcrypt.rotate_tde_key()', '28000',
	"could not change the data encryption key on node $N[0]", 'no TLS between the nodes: rotate_tde_key fails');
is(tenant_of_nodes(), $managed, 'no node changed its tenant key');
is(tde_of_nodes(), $tde0, 'no node rotated its TDE key');
FcCitus::set_conf($co, "citus.node_conninfo = 'sslmode=require'");

# worker2 holds its key change lock: a prepared transaction that took it (a key change made
# on worker2 alone, prepared); the check functions themselves refuse a transaction block
sql_fails($w2, $DB, "BEGIN;\nSELECT fieldcrypt._rotate_tde_key_check();", '25001',
	'fieldcrypt._rotate_tde_key_check() cannot run inside a transaction block',
	'_rotate_tde_key_check in a transaction block: 25001 (its lock would outlive the check)');
safe_tls($w2, $DB, "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('Hold-Marker-K9-7x!');\nPREPARE TRANSACTION 'fc_hold';");
($rc, $out, $err) = FcNode::psql_tls($co, $DB, "\\set VERBOSITY verbose\n$UPLOAD");
like($err, qr/ERROR:  55P03: could not change the tenant key on node \Q$N[1]\E\n.*DETAIL:  Nothing was changed on any node\. The node reported: a data encryption key change is already in progress/s,
	'worker2 holds its change lock: upload_tenant_key fails, naming worker2, 55P03');
is(tenant_of_nodes(), $managed, 'no node changed its tenant key (worker1 passed its check)');
sql_fails($co, $DB, 'SELECT fieldcrypt.generate_tenant_key()', '55P03',
	"could not change the tenant key on node $N[1]", 'worker2 holds its change lock: generate_tenant_key fails');
sql_fails($co, $DB, 'SELECT fieldcrypt.rotate_tde_key()', '55P03',
	"could not change the data encryption key on node $N[1]",
	'worker2 holds its change lock: rotate_tde_key fails, naming worker2');
is(tenant_of_nodes(), $managed, 'no node changed its tenant key after generate_tenant_key either');
is(tde_of_nodes(), $tde0, 'no node rotated its TDE key (worker1 passed its check)');
safe_tls($w2, $DB, "ROLLBACK PREPARED 'fc_hold'");

# worker2 down
$w2->stop('fast');
sql_fails($co, $DB, $UPLOAD, '08006', "could not change the tenant key on node $N[1]",
	'worker2 down: upload_tenant_key fails, naming it');
is(join('|', map { safe_tls($_, $DB, $TENANT) } ($co, $w1)), $managed =~ s/\|[^|]*\z//r,
	'the coordinator and worker1 did not change');
$w2->start;

# --- upload_tenant_key reaches every node --------------------------------------------------
FcCitus::set_conf($_, 'log_statement = all', 'log_min_duration_statement = 0') for ($w1, $w2);
my @offsets = map { -s $_->logfile } FcCitus::nodes($c);
sql_is($co, $DB, $UPLOAD, $FP, 'upload_tenant_key on the coordinator returns the fingerprint');
my $pfx = join('|', ("pfx:$FP:loaded") x 3);
is(tenant_of_nodes(), $pfx, 'every node is on the uploaded key, same id');
sql_is($co, $DB, q{SELECT string_agg(format('%s:%s:%s:%s:%s', nodeport, is_coordinator, mode, key_id, error IS NULL), ',' ORDER BY is_coordinator DESC, nodeport) FROM fieldcrypt.cluster_tenant_key_status()},
	join(',', $co->port . ":t:pfx:$FP:t", map { $_->port . ":f:pfx:$FP:t" } sort { $a->port <=> $b->port } ($w1, $w2)),
	'cluster_tenant_key_status: every node, on the uploaded key');
is(safe_tls($co, $DB, $CHECK), '20', 'values on the shards still decrypt');
my $i = 0;
for my $n (FcCitus::nodes($c))
{
	my $log = log_since($n, $offsets[$i++]);
	ok($log =~ /fieldcrypt: tenant key changed to an uploaded key \Q$FP\E/ && index($log, $PW) < 0,
		$n->name . ': its log records the change (the grep reads the right log) and never the password');
}
ok(index(log_since($w1, $offsets[1]), 'upload_tenant_key($1, $2)') >= 0,
	'worker1 logged the statement (log_statement = all) with its parameters as placeholders');
FcCitus::set_conf($_, 'log_statement = none', 'log_min_duration_statement = -1') for ($w1, $w2);

$_->restart for FcCitus::nodes($c);
is(tenant_of_nodes(), $pfx, 'a restart of every node keeps the uploaded key');
is(safe_tls($co, $DB, $CHECK), '20', 'values decrypt after the restart');

sql_is($co, $DB, $UPLOAD, $FP, 'the same upload again: accepted');
is(tenant_of_nodes(), $pfx, 'the same upload again: every node on the same key id');

# --- generate_tenant_key and revert_tenant_key --------------------------------------------
my $gen = safe_tls($co, $DB, 'SELECT fieldcrypt.generate_tenant_key()');
my @gen = split /\|/, tenant_of_nodes();
my %ids = map { (split /:/)[1] => 1 } @gen, split(/\|/, $managed);
ok(3 == grep({ /\Amanaged:[0-9a-f]{32}:loaded\z/ } @gen) && $gen[0] eq "managed:$gen:loaded" && keys %ids == 6,
	'generate_tenant_key: every node on a new generated key of its own: ' . join('|', @gen));
is(safe_tls($co, $DB, $CHECK), '20', 'values decrypt under the generated keys');
safe_tls($co, $DB, 'SELECT fieldcrypt.revert_tenant_key()');
is(tenant_of_nodes(), $managed, 'revert_tenant_key: every node back on its own managed key');

# --- the coordinator's own change fails after every worker took it ---------------------------
# a directory where the coordinator writes its new keyring: every check passes there
my $tmp = $co->data_dir . '/pg_fieldcrypt/keyring.tmp';
mkdir $tmp or die "mkdir $tmp: $!";
($rc, $out, $err) = FcNode::psql_tls($co, $DB, "\\set VERBOSITY verbose\nSELECT fieldcrypt.generate_tenant_key()");
like($err, qr/ERROR:  \w{5}: could not create file "pg_fieldcrypt\/keyring\.tmp": Is a directory\n.*CONTEXT:  applying the tenant key on the Citus coordinator, after every worker took the change; if it fails, run the same call on the coordinator again/s,
	'the coordinator fails after the workers took the change: the CONTEXT line says so');
my @m = split /\|/, $managed;
@gen = split /\|/, tenant_of_nodes();
ok($gen[0] eq $m[0] && $gen[1] =~ /\Amanaged:[0-9a-f]{32}:loaded\z/ && $gen[1] ne $m[1] && $gen[2] ne $m[2],
	'the workers took the generated key, the coordinator did not: ' . join('|', @gen));
rmdir $tmp or die "rmdir $tmp: $!";
safe_tls($co, $DB, 'SELECT fieldcrypt.generate_tenant_key()');
@gen = split /\|/, tenant_of_nodes();
%ids = map { (split /:/)[1] => 1 } @gen, @m;
ok(3 == grep({ /\Amanaged:[0-9a-f]{32}:loaded\z/ } @gen) && keys %ids == 6,
	'the same call again converges: every node on a generated key of its own');
safe_tls($co, $DB, 'SELECT fieldcrypt.revert_tenant_key()');
is(tenant_of_nodes(), $managed, 'reverted everywhere');

# --- a failure after every check passed: the nodes that took it are named ----------------
safe_tls($w2, $DB, 'REVOKE EXECUTE ON FUNCTION fieldcrypt.upload_tenant_key(bytea, text) FROM fieldcrypt_admin');
($rc, $out, $err) = FcNode::psql_tls($co, $DB, "\\set VERBOSITY verbose\nSET ROLE bob;\n$UPLOAD");
like($err, qr/ERROR:  42501: could not change the tenant key on node \Q$N[1]\E\n.*DETAIL:  Every node accepted the change in its check, then this node did not take it\. Workers that took the change: \Q$N[0]\E\. Workers that did not: \Q$N[1]\E\. The coordinator did not\. The node reported: permission denied for function upload_tenant_key/s,
	'a worker that fails after the checks: 42501, the nodes that took the change and those that did not');
is(tenant_of_nodes(), join('|', (split /\|/, $managed)[0], "pfx:$FP:loaded", (split /\|/, $managed)[2]),
	'worker1 took the change, the coordinator and worker2 did not');
safe_tls($w2, $DB, 'GRANT EXECUTE ON FUNCTION fieldcrypt.upload_tenant_key(bytea, text) TO fieldcrypt_admin');
sql_is($co, $DB, "SET ROLE bob;\n$UPLOAD", "SET\n$FP", 'the same call again once fixed');
is(tenant_of_nodes(), $pfx, 'the same call again converges: every node on the uploaded key');
safe_tls($co, $DB, 'SELECT fieldcrypt.revert_tenant_key()');
is(tenant_of_nodes(), $managed, 'reverted everywhere');

# --- on a worker: that node's own change ----------------------------------------------------
sql_is($w1, $DB, $UPLOAD, $FP, 'upload_tenant_key on worker1');
is(tenant_of_nodes(), join('|', (split /\|/, $managed)[0], "pfx:$FP:loaded", (split /\|/, $managed)[2]),
	'on a worker the change is that node\'s only');
safe_tls($w1, $DB, 'SELECT fieldcrypt.revert_tenant_key()');
is(tenant_of_nodes(), $managed, 'worker1 reverted alone');

# --- rotate_tde_key, once every check passes ---------------------------------------------------
sql_is($co, $DB, 'SELECT fieldcrypt.rotate_tde_key() > 0', 't', 'rotate_tde_key on the coordinator');
is(tde_of_nodes(), join('|', map { $_ + 1 } split /\|/, $tde0), 'every node is on its next TDE generation');

# --- errors of the internal and cluster functions ---------------------------------------------
sql_fails($co, $DB, "SELECT fieldcrypt._tenant_key_check('bogus', NULL, NULL, NULL, NULL, NULL)", '22023',
	'unknown tenant key change "bogus"', '_tenant_key_check: an unknown mode');
sql_fails($w1, $DB, "SELECT fieldcrypt._tenant_key_check('pfx', '\\x00'::bytea, '$PW', NULL, NULL, NULL)", '22P03',
	'the tenant key file is not a valid PKCS#12 file', '_tenant_key_check: the PFX checks of upload_tenant_key');
sql_fails($w1, $DB, 'SELECT fieldcrypt._rotate_tde_key_check()', '28000',
	'fieldcrypt.rotate_tde_key requires an SSL connection', '_rotate_tde_key_check: the checks of rotate_tde_key',
	via => 'plain');
$co->safe_psql('postgres', 'CREATE DATABASE nocitus');
$co->safe_psql('nocitus', 'CREATE EXTENSION fieldcrypt');
sql_fails($co, 'nocitus', 'SELECT * FROM fieldcrypt.cluster_tenant_key_status()', '55000',
	'the citus extension is not installed in this database', 'cluster_tenant_key_status without Citus: 55000');
($rc, $out, $err) = FcNode::psql_tls($co, 'nocitus', "\\set VERBOSITY verbose\nSELECT * FROM fieldcrypt.cluster_key_status()");
like($err, qr/HINT:  fieldcrypt\.cluster_key_status\(\) runs on a Citus coordinator; use fieldcrypt\.key_status on a single node\./,
	'the shared check keeps each function\'s hint');
sql_fails($co, $DB, 'CREATE ROLE carol LOGIN; SET ROLE carol; SELECT * FROM fieldcrypt.cluster_tenant_key_status()',
	'42501', 'permission denied for function cluster_tenant_key_status', 'cluster_tenant_key_status: fieldcrypt_admin only');

# --- the marker password in no node's whole log ----------------------------------------------
for my $n (FcCitus::nodes($c))
{
	my $log = slurp_file($n->logfile);
	ok($log =~ /fieldcrypt: tenant key changed to / && index($log, $PW) < 0,
		$n->name . ': the whole log holds tenant key changes and never the password');
}

FcCitus::stop_all($c);
done_testing();
