# The tenant key in an HSM (SoftHSM2 through its PKCS#11 module):
#   - a token initialised in the test, an RSA-3072 key pair generated inside it
#     (pkcs11-tool --keypairgen); the PIN comes from fieldcrypt.hsm_pin_command;
#   - refusals (no TLS, relative module path, a module not listed for admins, unknown
#     token or key label, wrong PIN, transaction block) change nothing;
#   - use_hsm_tenant_key re-seals the keyring: status hsm, key id = SHA-256 of the
#     public key in the token; data decrypts, key changes go on, restart unwraps the
#     KEK through PKCS#11;
#   - a streaming standby with the HSM follows; a standby whose PIN is wrong keeps its
#     previous keys, says so, keeps the change in keyring.pending and installs it at
#     the first start with a good PIN;
#   - the HSM absent at start (token directory renamed): the server is up, encrypted
#     data is inaccessible, the log says why, key operations fail with 58000, nothing
#     on disk changes; with the token back, everything decrypts again;
#   - revert to the managed default no longer needs the HSM;
#   - the PIN never appears in any log.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $MODULE = '/usr/lib/softhsm/libsofthsm2.so';
-f $MODULE or die "SoftHSM2 is not installed ($MODULE): run test/deps.sh";

my $PIN = 'Hsm-Pin-83kQ-x1';
my $SO_PIN = 'Hsm-SoPin-51zR-y2';
my $K1 = 'Hsm-Db-Key-1-aZ!';
my $K2 = 'Hsm-Db-Key-2-aZ!';
my $UNAVAILABLE = 'fieldcrypt keyring is not available';
my $VALUES_SQL = q{SELECT string_agg(id || '=' || fieldcrypt.decrypt(pw), ',' ORDER BY id) FROM t};
my $STATUS = 'SELECT mode, algorithm, hsm_token, hsm_key_label, keyring FROM fieldcrypt.tenant_key_status';
# SoftHSM 2.6 supports RSA-OAEP with SHA-1 only: fieldcrypt falls back to it
my $HSM_STATUS = 'hsm|RSA-3072 OAEP-SHA1|fctenant|tenantkey|loaded';

my $dir = PostgreSQL::Test::Utils::tempdir;
my $tokens = "$dir/tokens";
mkdir $tokens or die;
write_bytes("$dir/softhsm2.conf",
	"directories.tokendir = $tokens\nobjectstore.backend = file\nlog.level = ERROR\n");
$ENV{SOFTHSM2_CONF} = "$dir/softhsm2.conf";    # inherited by the servers
write_bytes("$dir/pin", "$PIN\n");
write_bytes("$dir/wrong-pin", "Not-The-Pin-99\n");
chmod 0600, "$dir/pin", "$dir/wrong-pin";

# Kill a backend with SIGKILL: the postmaster reinitializes shared memory and reads
# the keyring again, unwrapping a tenant key changed since it started.
sub crash_reinit
{
	my ($node, $db, $what) = @_;
	my $bg = $node->background_psql($db, on_error_stop => 0);
	my $victim = $bg->query_safe('SELECT pg_backend_pid()');
	my $offset = -s $node->logfile;
	kill('KILL', $victim) or die "kill: $!";
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	$node->poll_query_until($db, 'SELECT true');
	$bg->quit;
	my $log = log_since($node, $offset);
	ok($log =~ /all server processes terminated; reinitializing/
		  && $log =~ /fieldcrypt: keyring loaded with keys of 1 database\(s\)/,
		"$what: a crash reinitialization loads the keyring");
	return;
}

sub run_ok
{
	my (@cmd) = @_;
	my $out = '';
	IPC::Run::run(\@cmd, '>&', \$out) or die "@cmd failed: $out";
	return $out;
}

run_ok('softhsm2-util', '--init-token', '--free', '--label', 'fctenant', '--pin', $PIN,
	'--so-pin', $SO_PIN);
run_ok('pkcs11-tool', '--module', $MODULE, '--token-label', 'fctenant', '--login', '--pin', $PIN,
	'--keypairgen', '--key-type', 'rsa:3072', '--label', 'tenantkey', '--id', '01');
run_ok('pkcs11-tool', '--module', $MODULE, '--token-label', 'fctenant', '--login', '--pin', $PIN,
	'--keypairgen', '--key-type', 'EC:prime256v1', '--label', 'eckey', '--id', '02');
run_ok('pkcs11-tool', '--module', $MODULE, '--token-label', 'fctenant', '--read-object',
	'--type', 'pubkey', '--label', 'tenantkey', '-o', "$dir/pub.der");
run_ok('openssl', 'pkey', '-pubin', '-inform', 'DER', '-in', "$dir/pub.der", '-outform', 'DER',
	'-out', "$dir/spki.der");
my $fp = (split / /, run_ok('openssl', 'dgst', '-sha256', '-r', "$dir/spki.der"))[0];
like($fp, qr/^[0-9a-f]{64}$/, 'the key pair was generated in the token');

sub use_sql
{
	my ($module, $token, $label) = @_;
	return "SELECT fieldcrypt.use_hsm_tenant_key('$module', '$token', '$label')";
}

# --- Primary, two standbys, data ------------------------------------------------------
my $node = FcNode::new_node('primary', allows_streaming => 1);
$node->append_conf('postgresql.conf', "fieldcrypt.hsm_pin_command = 'cat $dir/pin'\nrestart_after_crash = on");
$node->start;
my $pgdata = $node->data_dir;
my $ringfile = "$pgdata/pg_fieldcrypt/keyring";
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION fieldcrypt; CREATE TABLE t (id int, pw fieldcrypt.encrypted_text)');
$node->safe_psql('app', 'CREATE ROLE keyadmin LOGIN IN ROLE fieldcrypt_admin');
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'set a database key');
$node->safe_psql('app', "INSERT INTO t VALUES (1, 'v1-secret')");

$node->backup('b1');
my $sb = FcNode::standby_from_backup('standby', $node, 'b1');
my $sb2 = FcNode::standby_from_backup('standby_wrong_pin', $node, 'b1');
$sb2->append_conf('postgresql.conf', "fieldcrypt.hsm_pin_command = 'cat $dir/wrong-pin'");
$sb->start;
$sb2->start;

# --- Refusals -----------------------------------------------------------------------
my $before = read_bytes($ringfile);
sql_fails($node, 'app', use_sql($MODULE, 'fctenant', 'tenantkey'), '28000',
	'fieldcrypt.use_hsm_tenant_key() requires an SSL connection', 'refused without TLS', via => 'plain');
sql_fails($node, 'app', use_sql('libsofthsm2.so', 'fctenant', 'tenantkey'), '22023',
	'the PKCS#11 module path must be absolute', 'refused: a relative module path');
{
	my ($ret, $out, $err) = FcNode::psql_connstr(
		FcNode::tls_connstr($node, 'app') =~ s/user=\S+/user=keyadmin/r,
		"\\set VERBOSITY verbose\n" . use_sql($MODULE, 'fctenant', 'tenantkey'));
	like($err, qr/ERROR:  42501: permission denied to load PKCS#11 module "(?:\Q$MODULE\E|\[redacted\])"/,
		'refused: an admin who is not superuser names a module not in fieldcrypt.hsm_modules');
}
sql_fails($node, 'app', use_sql($MODULE, 'nosuchtoken', 'tenantkey'), '58000',
	'could not use the HSM key', 'refused: an unknown token');
{
	my ($ret, $out, $err) = FcNode::psql_tls($node, 'app', use_sql($MODULE, 'nosuchtoken', 'tenantkey'));
	# the client gets the message as PostgreSQL made it; only the server-log copy masks
	# the arguments of volatile extension functions (see src/redact.c)
	like($err, qr/DETAIL:  HSM token "nosuchtoken" was not found through PKCS#11 module/, 'the detail says the token was not found');
}
sql_fails($node, 'app', use_sql($MODULE, 'fctenant', 'nosuchkey'), '58000',
	'could not use the HSM key', 'refused: an unknown key label');
sql_fails($node, 'app', use_sql($MODULE, 'fctenant', 'eckey'), '58000',
	'could not use the HSM key', 'refused: an EC key in the token');
sql_fails($node, 'app', use_sql('/nonexistent/libnothing.so', 'fctenant', 'tenantkey'), '58000',
	'could not use the HSM key', 'refused: a module that does not exist');
sql_fails($node, 'app', "BEGIN;\n" . use_sql($MODULE, 'fctenant', 'tenantkey'), '25001',
	'fieldcrypt.use_hsm_tenant_key() cannot run inside a transaction block', 'refused inside a transaction block');
# wrong PIN
$node->append_conf('postgresql.conf', "fieldcrypt.hsm_pin_command = 'cat $dir/wrong-pin'");
$node->reload;
{
	my ($ret, $out, $err) = FcNode::psql_tls($node, 'app', "\\set VERBOSITY verbose\n" . use_sql($MODULE, 'fctenant', 'tenantkey'));
	like($err, qr/ERROR:  58000: could not use the HSM key\nDETAIL:  Could not log in to HSM token "fctenant": the PIN from fieldcrypt.hsm_pin_command is wrong/,
		'refused: a wrong PIN, and the detail says so');
}
$node->append_conf('postgresql.conf', "fieldcrypt.hsm_pin_command = 'cat $dir/pin'");
$node->reload;
is(read_bytes($ringfile), $before, 'no refusal changed the keyring file');
sql_is($node, 'app', 'SELECT mode FROM fieldcrypt.tenant_key_status', 'managed', 'still managed');

# --- Switch to the HSM key ------------------------------------------------------------
# a fieldcrypt_admin member may name a module listed in fieldcrypt.hsm_modules
$node->append_conf('postgresql.conf', "fieldcrypt.hsm_modules = '/usr/lib/other.so, $MODULE'");
$node->reload;
{
	my ($ret, $out, $err) = FcNode::psql_connstr(
		FcNode::tls_connstr($node, 'app') =~ s/user=\S+/user=keyadmin/r,
		use_sql($MODULE, 'fctenant', 'tenantkey'));
	is("$ret:$out", "0:$fp",
		'a fieldcrypt_admin member switches to the HSM key; it returns the fingerprint of the public key in the token')
	  or diag($err);
	like($err, qr/NOTICE:  the HSM does not support RSA-OAEP with SHA-256, using SHA-1/,
		'SoftHSM refuses OAEP-SHA256: a notice says SHA-1 is used');
}
sql_is($node, 'app', $STATUS, $HSM_STATUS, 'status: hsm, RSA-3072, token and key label');
sql_is($node, 'app', 'SELECT key_id, key_bits, installed_at IS NOT NULL FROM fieldcrypt.tenant_key_status',
	"$fp|3072|t", 'status: key id and size');
is(substr(read_bytes($ringfile), 0, 4), 'FCKT', 'the keyring has a tenant key header');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret', 'data decrypts');
crash_reinit($node, 'app', 'HSM key switched after the postmaster started');
sql_is($node, 'app', $STATUS, $HSM_STATUS, 'after the crash reinitialization: hsm');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret', 'after the crash reinitialization: data decrypts');
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K2')", '', 'a key change under the HSM key');
$node->safe_psql('app', "INSERT INTO t VALUES (2, 'v2-secret')");

my $off = -s $node->logfile;
$node->restart;
ok(log_since($node, $off) =~ /fieldcrypt: keyring loaded with keys of 1 database\(s\)/,
	'restart: the KEK is unwrapped in the HSM and the keyring loaded');
sql_is($node, 'app', $STATUS, $HSM_STATUS, 'restart: still hsm');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'restart: data decrypts');
sql_is($node, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K2, 'restart: the database key is K2');

# --- Standbys -----------------------------------------------------------------------
$node->wait_for_catchup($sb);
sql_is($sb, 'app', $STATUS, $HSM_STATUS, 'standby with the HSM: follows to hsm');
sql_is($sb, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'standby with the HSM: data decrypts');
$sb->restart;
sql_is($sb, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'standby with the HSM: decrypts after a restart');

$node->wait_for_catchup($sb2);
ok($sb2->log_contains(qr/fieldcrypt: could not apply a key change from WAL, keeping the previous keys/),
	'standby with a wrong PIN: says it keeps its previous keys');
ok($sb2->log_contains(qr/is sealed under a tenant key this server cannot use: the tenant key in the HSM is not available: could not log in to HSM token "fctenant"/),
	'standby with a wrong PIN: says why');
sql_is($sb2, 'app', 'SELECT mode, keyring FROM fieldcrypt.tenant_key_status', 'managed|loaded',
	'standby with a wrong PIN: keeps the previous sealing');
sql_is($sb2, 'app', "SELECT fieldcrypt.decrypt(pw) FROM t WHERE id = 1", 'v1-secret',
	'standby with a wrong PIN: the previous keys still decrypt');
ok(-f $sb2->data_dir . '/pg_fieldcrypt/keyring.pending', 'standby with a wrong PIN: the change waits in keyring.pending');
$sb2->append_conf('postgresql.conf', "fieldcrypt.hsm_pin_command = 'cat $dir/pin'");
$off = -s $sb2->logfile;
$sb2->restart;
$node->wait_for_catchup($sb2);
ok(log_since($sb2, $off) =~ /installed a key change received through WAL earlier/,
	'standby with the PIN fixed: installs the waiting change at start');
sql_is($sb2, 'app', $STATUS, $HSM_STATUS, 'standby with the PIN fixed: hsm');
sql_is($sb2, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'standby with the PIN fixed: data decrypts');

# --- The HSM absent at start --------------------------------------------------------
$sb->stop;
$sb2->stop;
my $hsm_image = read_bytes($ringfile);
$node->stop;
rename $tokens, "$tokens.away" or die "rename: $!";
$off = -s $node->logfile;
$node->start;
my $log = log_since($node, $off);
ok($log =~ /fieldcrypt: keyring not loaded, encrypted data is inaccessible/, 'HSM absent: the server is up and says data is inaccessible');
ok($log =~ /DETAIL:  "pg_fieldcrypt\/keyring" is sealed under a tenant key this server cannot use: the tenant key in the HSM is not available: /,
	'HSM absent: the log says the HSM tenant key is not available');
sql_fails($node, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '58000', $UNAVAILABLE,
	'HSM absent: key operations fail with 58000');
sql_fails($node, 'app', 'SELECT fieldcrypt.generate_tenant_key()', '58000', $UNAVAILABLE,
	'HSM absent: tenant key changes fail with 58000');
sql_fails($node, 'app', $VALUES_SQL, '58000', $UNAVAILABLE, 'HSM absent: encrypted data cannot be decrypted');
sql_fails($node, 'app', "INSERT INTO t VALUES (3, 'v3')", '58000', $UNAVAILABLE,
	'HSM absent: nothing can be encrypted either');
sql_is($node, 'app', 'SELECT mode, hsm_token, keyring, detail LIKE \'%HSM%\' FROM fieldcrypt.tenant_key_status',
	'hsm|fctenant|unavailable|t', 'HSM absent: the status view says which HSM is missing');
is(read_bytes($ringfile), $hsm_image, 'HSM absent: the keyring file is untouched');
$node->stop;
rename "$tokens.away", $tokens or die "rename: $!";
$node->start;
sql_is($node, 'app', $STATUS, $HSM_STATUS, 'HSM back: hsm and loaded');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'HSM back: nothing was lost');

# --- Revert: the HSM is no longer needed ----------------------------------------------
{
	my ($ret, $out, $err) = FcNode::psql_tls($node, 'app', 'SELECT fieldcrypt.revert_tenant_key()');
	ok($ret == 0 && $out =~ /^[0-9a-f]{32}$/, 'revert to the managed default') or diag($err);
}
is(substr(read_bytes($ringfile), 0, 4), 'FCKR', 'a plain keyring again');
$node->stop;
rename $tokens, "$tokens.away" or die "rename: $!";
$node->start;
sql_is($node, 'app', 'SELECT mode, keyring FROM fieldcrypt.tenant_key_status', 'managed|loaded',
	'after revert: loads without the HSM');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'after revert: data decrypts');
$node->stop;
rename "$tokens.away", $tokens or die "rename: $!";

# --- The PIN never reaches a log ----------------------------------------------------
my $all = join '', map { slurp_file($_->logfile) } ($node, $sb, $sb2);
unlike($all, qr/\Q$PIN\E/, 'the PIN is not in any server log');
unlike($all, qr/Not-The-Pin-99/, 'nor the wrong PIN');
unlike($all, qr/\Q$SO_PIN\E/, 'nor the SO PIN');
done_testing();
