# Self-managed tenant keys, bring-your-own-key as a PKCS#12 file, and the managed
# modes (generate, revert):
#   - fieldcrypt.tenant_key_status in every mode;
#   - refusals, each with its own SQLSTATE and message, and nothing changed on disk:
#     a cert-only PFX, an EC key, a 1024-bit RSA key, an expired certificate, a wrong
#     password, corrupt files, NULLs, no TLS, no privilege, a transaction block;
#   - upload of an RSA-3072 PFX made with openssl req / openssl pkcs12: the keyring is
#     re-sealed behind a tenant header (fingerprint = SHA-256 of the public key), data
#     decrypts, key changes go on, the private key is not on disk in clear, restart,
#     crash reinitialization and kill -9 keep it;
#   - crash safety: the sealing before a change is still readable (a crash before the
#     rename), crash recovery replays a change whose record is in WAL;
#   - a second PFX, generate_tenant_key, revert_tenant_key (plain "FCKR" again);
#   - a streaming standby follows every tenant key change and restarts with it;
#   - the PFX password never reaches the server log, on success or failure.
use strict;
use warnings;
use IPC::Run;
use POSIX ();
use PostgreSQL::Test::Utils;
use Test::More;
use DBI;
use DBD::Pg qw(:pg_types);
use FcNode;
use FcKeyTest;

my $PW = 'Pfx-Pass-7sQ!xv2';
my $PW2 = 'Pfx-Other-Pass-4kZ';
my $K1 = 'Tenant-Db-Key-1-aZ!';
my $K2 = 'Tenant-Db-Key-2-aZ!';
my $VALUES_SQL = q{SELECT string_agg(id || '=' || fieldcrypt.decrypt(pw), ',' ORDER BY id) FROM t};
my $STATUS = 'SELECT mode, algorithm, key_bits, keyring FROM fieldcrypt.tenant_key_status';
my $UPLOAD_FN = 'fieldcrypt.upload_tenant_key()';

my $dir = PostgreSQL::Test::Utils::tempdir;

# Run openssl (or any command); die with its output on failure.
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

# A self-signed certificate for a new key: key type options for openssl req.
sub make_keypair
{
	my ($name, @newkey) = @_;
	run_ok('openssl', 'req', '-x509', '-newkey', @newkey, '-nodes', '-days', '30',
		'-subj', "/CN=$name", '-keyout', "$dir/$name.key", '-out', "$dir/$name.crt");
	return;
}

sub make_pfx
{
	my ($name, $keyname, $pass, @extra) = @_;
	run_ok('openssl', 'pkcs12', '-export', @extra, '-in', "$dir/$keyname.crt",
		($keyname && !grep { $_ eq '-nokeys' } @extra) ? ('-inkey', "$dir/$keyname.key") : (),
		'-out', "$dir/$name.pfx", '-passout', "pass:$pass");
	return read_bytes("$dir/$name.pfx");
}

# SHA-256 of the DER SubjectPublicKeyInfo of a key file, as openssl computes it.
sub fingerprint
{
	my ($keyname) = @_;
	run_ok('openssl', 'pkey', '-in', "$dir/$keyname.key", '-pubout', '-outform', 'DER',
		'-out', "$dir/$keyname.spki");
	my $out = run_ok('openssl', 'dgst', '-sha256', '-r', "$dir/$keyname.spki");
	return (split / /, $out)[0];
}

sub bytea { return "'\\x" . unpack('H*', $_[0]) . "'::bytea"; }
sub upload_sql { my ($pfx, $pass) = @_; return "SELECT fieldcrypt.upload_tenant_key(" . bytea($pfx) . ", '$pass')"; }

make_keypair('rsa3072', 'rsa:3072');
make_keypair('rsa2048', 'rsa:2048');
make_keypair('rsa1024', 'rsa:1024');
make_keypair('ec', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256');
my $good = make_pfx('good', 'rsa3072', $PW);
my $second = make_pfx('second', 'rsa2048', $PW2);
my $certonly = make_pfx('certonly', 'rsa3072', $PW, '-nokeys');
my $ecpfx = make_pfx('ecpfx', 'ec', $PW);
my $short = make_pfx('short', 'rsa1024', $PW);
my $mismatch = do {
	run_ok('openssl', 'pkcs12', '-export', '-in', "$dir/rsa2048.crt", '-inkey', "$dir/rsa3072.key",
		'-out', "$dir/mismatch.pfx", '-passout', "pass:$PW", '-nocerts');
	read_bytes("$dir/mismatch.pfx");
};

# An expired certificate: openssl ca with explicit dates.
mkdir "$dir/ca" or die;
write_bytes("$dir/ca/index.txt", '');
write_bytes("$dir/ca/serial", "01\n");
write_bytes("$dir/ca/ca.cnf", <<"EOC");
[ca]
default_ca = d
[d]
database = $dir/ca/index.txt
new_certs_dir = $dir/ca
serial = $dir/ca/serial
default_md = sha256
policy = p
[p]
commonName = supplied
EOC
run_ok('openssl', 'req', '-new', '-key', "$dir/rsa2048.key", '-subj', '/CN=expired',
	'-out', "$dir/expired.csr");
run_ok('openssl', 'ca', '-batch', '-config', "$dir/ca/ca.cnf", '-selfsign', '-keyfile',
	"$dir/rsa2048.key", '-in', "$dir/expired.csr", '-startdate', '20200101000000Z',
	'-enddate', '20200102000000Z', '-out', "$dir/expired.crt");
run_ok('openssl', 'pkcs12', '-export', '-in', "$dir/expired.crt", '-inkey', "$dir/rsa2048.key",
	'-out', "$dir/expired.pfx", '-passout', "pass:$PW");
my $expired = read_bytes("$dir/expired.pfx");

# RC2-40, as older tools export: the openssl command loads its legacy provider
run_ok('openssl', 'pkcs12', '-export', '-legacy', '-in', "$dir/rsa3072.crt", '-inkey', "$dir/rsa3072.key",
	'-out', "$dir/legacy.pfx", '-passout', "pass:$PW");
my $legacy = read_bytes("$dir/legacy.pfx");

my $fp_good = fingerprint('rsa3072');
my $fp_second = fingerprint('rsa2048');
like($fp_good, qr/^[0-9a-f]{64}$/, 'openssl computes the fingerprint of the RSA-3072 key');

# --- Primary, standby, data ----------------------------------------------------------
my $node = FcNode::new_node('primary', allows_streaming => 1);
# log_statement writes statement texts before any extension sees them (see
# src/redact.c): literals are only covered with it off, bind parameters always
$node->append_conf('postgresql.conf',
	"log_statement = none\nlog_min_duration_statement = 0\nlog_min_error_statement = error\n"
	  . "restart_after_crash = on");
$node->start;
my $pgdata = $node->data_dir;
my $ringfile = "$pgdata/pg_fieldcrypt/keyring";
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION fieldcrypt; CREATE TABLE t (id int, pw fieldcrypt.encrypted_text)');
$node->safe_psql('app', 'CREATE ROLE plain LOGIN; CREATE ROLE keyadmin LOGIN IN ROLE fieldcrypt_admin');
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'set a database key');
$node->safe_psql('app', "INSERT INTO t VALUES (1, 'v1-secret')");

$node->backup('b1');
my $sb = FcNode::standby_from_backup('standby', $node, 'b1');
$sb->start;

sql_is($node, 'app', $STATUS, 'managed|AES-256-GCM|256|loaded', 'status: managed by default');
my $default_id = $node->safe_psql('app', 'SELECT key_id FROM fieldcrypt.tenant_key_status');
like($default_id, qr/^[0-9a-f]{32}$/, 'the default managed key has a key id');
sql_is($node, 'app', 'SELECT installed_at IS NULL, created_at IS NOT NULL, keyring_resealed_at IS NOT NULL, hsm_token IS NULL FROM fieldcrypt.tenant_key_status',
	't|t|t|t', 'status: default times (key file age, keyring time), no HSM');
{
	my ($ret, $out, $err) = FcNode::psql_connstr(
		FcNode::tls_connstr($node, 'app') =~ s/user=\S+/user=plain/r,
		"\\set VERBOSITY verbose\nSELECT * FROM fieldcrypt.tenant_key_status");
	like($err, qr/ERROR:  42501: permission denied for view tenant_key_status/, 'the status view is for admins only');
}

# --- Refusals: nothing changes ----------------------------------------------------
my $before = read_bytes($ringfile);
my @refusals = (
	[ $certonly, $PW, '22023', 'both the public and the private key are required', 'a certificate-only PFX' ],
	[ $mismatch, $PW, '22023', 'the PKCS#12 file holds no certificate for its private key', 'a key-only PFX' ],
	[ $ecpfx, $PW, '22023', 'the tenant key must be an RSA key', 'an EC key' ],
	[ $short, $PW, '22023', 'the RSA key is too short', 'an RSA-1024 key' ],
	[ $expired, $PW, '22023', 'the certificate of the tenant key has expired', 'an expired certificate' ],
	[ $legacy, $PW, '0A000', 'the PKCS#12 file is encrypted with an algorithm this server does not support', 'a legacy RC2 PFX' ],
	[ $good, 'Not-The-Password-1', '28P01', 'wrong password for the PKCS#12 file', 'a wrong password' ],
	[ substr($good, 0, length($good) / 2), $PW, '22P03', 'the tenant key file is not a valid PKCS#12 file', 'a truncated file' ],
	[ 'not a pfx at all, just text', $PW, '22P03', 'the tenant key file is not a valid PKCS#12 file', 'a file that is not PKCS#12' ],
);
for my $r (@refusals)
{
	my ($pfx, $pass, $state, $msg, $what) = @$r;
	sql_fails($node, 'app', upload_sql($pfx, $pass), $state, $msg, "refused: $what");
}
my $corrupt = $good;
substr($corrupt, length($corrupt) - 40, 8) = 'XXXXXXXX';
sql_fails($node, 'app', upload_sql($corrupt, $PW), '28P01', 'wrong password for the PKCS#12 file',
	'refused: a file whose integrity MAC does not verify');
sql_fails($node, 'app', "SELECT fieldcrypt.upload_tenant_key(NULL, '$PW')", '22004',
	'the PKCS#12 file and its password must not be null', 'refused: NULL file');
sql_fails($node, 'app', upload_sql($good, $PW), '28000', "$UPLOAD_FN requires an SSL connection",
	'refused without TLS', via => 'plain');
{
	my ($ret, $out, $err) = FcNode::psql_connstr(
		FcNode::tls_connstr($node, 'app') =~ s/user=\S+/user=plain/r,
		"\\set VERBOSITY verbose\n" . upload_sql($good, $PW));
	like($err, qr/ERROR:  42501: permission denied for function upload_tenant_key/, 'refused for a role that is not an admin');
}
sql_fails($node, 'app', "BEGIN;\n" . upload_sql($good, $PW), '25001',
	"$UPLOAD_FN cannot run inside a transaction block", 'refused inside a transaction block');
# a database key change in progress holds the cluster-wide key change lock
{
	my $bg = $node->background_psql('app', on_error_stop => 0,
		extra_params => [ '-d', FcNode::tls_connstr($node, 'app') ]);
	$bg->query_safe("BEGIN; SELECT fieldcrypt.set_data_encryption_key('Tenant-Pending-Key-9z!')");
	sql_fails($node, 'app', upload_sql($good, $PW), '55P03',
		'a data encryption key change is already in progress', 'refused while a database key change is in progress');
	$bg->query_safe('ROLLBACK');
	$bg->quit;
}
is(read_bytes($ringfile), $before, 'no refusal changed the keyring file');
sql_is($node, 'app', $STATUS, 'managed|AES-256-GCM|256|loaded', 'status unchanged after the refusals');

# --- Upload ---------------------------------------------------------------------
my $off = -s $node->logfile;
{
	my $connstr = FcNode::tls_connstr($node, 'app') =~ s/user=\S+/user=keyadmin/r;
	my ($ret, $out, $err) = FcNode::psql_connstr($connstr, upload_sql($good, $PW));
	is("$ret:$out", "0:$fp_good", 'a fieldcrypt_admin member uploads an RSA-3072 PFX; it returns the fingerprint')
	  or diag($err);
}
ok(log_since($node, $off) =~ /fieldcrypt: tenant key changed to an uploaded key \Q$fp_good\E; keyring re-sealed/,
	'the change is logged with the fingerprint');
sql_is($node, 'app', $STATUS, 'pfx|RSA-3072 OAEP-SHA256|3072|loaded', 'status: pfx, RSA-3072');
sql_is($node, 'app', 'SELECT key_id, created_at IS NOT NULL, installed_at IS NOT NULL FROM fieldcrypt.tenant_key_status',
	"$fp_good|t|t", 'status: key id is the SHA-256 fingerprint of the public key; times set');
my $ring = read_bytes($ringfile);
is(substr($ring, 0, 4), 'FCKT', 'the keyring has a tenant key header');
run_ok('openssl', 'pkey', '-in', "$dir/rsa3072.key", '-outform', 'DER', '-out', "$dir/rsa3072.der");
my $der = read_bytes("$dir/rsa3072.der");
ok(index($ring, $der) < 0 && index($ring, substr($der, 100, 64)) < 0, 'the private key is not on disk in clear');
unlike($ring, qr/\Q$PW\E/, 'nor is the password');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret', 'data decrypts under the uploaded key');
crash_reinit($node, 'app', 'pfx uploaded after the postmaster started');
sql_is($node, 'app', $STATUS, 'pfx|RSA-3072 OAEP-SHA256|3072|loaded', 'after the crash reinitialization: pfx');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret', 'after the crash reinitialization: data decrypts');
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K2')", '', 'a database key change under the pfx key');
$node->safe_psql('app', "INSERT INTO t VALUES (2, 'v2-secret')");
is(substr(read_bytes($ringfile), 0, 4), 'FCKT', 'the keyring keeps its tenant header across key changes');

$node->wait_for_catchup($sb);
sql_is($sb, 'app', $STATUS, 'pfx|RSA-3072 OAEP-SHA256|3072|loaded', 'standby: follows to pfx');
sql_is($sb, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'standby: data decrypts');
is(read_bytes($sb->data_dir . '/pg_fieldcrypt/keyring'), read_bytes($ringfile), 'standby: same keyring file');

# --- Restart, crash, kill -9 -------------------------------------------------------
$off = -s $node->logfile;
$node->restart;
ok(log_since($node, $off) =~ /fieldcrypt: keyring loaded with keys of 1 database\(s\)/, 'restart: keyring loaded');
sql_is($node, 'app', $STATUS, 'pfx|RSA-3072 OAEP-SHA256|3072|loaded', 'restart: still pfx');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'restart: data decrypts');
sql_is($node, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K2, 'restart: the database key is K2');
$node->stop('immediate');
$node->start;
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'kill -9 and crash recovery: data decrypts');
$sb->restart;
sql_is($sb, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'standby restart: data decrypts (private key unsealed with its cluster key)');

# --- Crash safety of a change: both sealings are readable -----------------------------
my $pfx_image = read_bytes($ringfile);
my (undef, $gen_id) = FcNode::psql_tls($node, 'app', 'SELECT fieldcrypt.generate_tenant_key()');
like($gen_id, qr/^[0-9a-f]{32}$/, 'generate_tenant_key returns a new key id');
isnt($gen_id, $default_id, 'a different key than the default');
sql_is($node, 'app', 'SELECT mode, key_id, algorithm FROM fieldcrypt.tenant_key_status',
	"managed|$gen_id|AES-256-GCM", 'status: a generated managed key');
my $gen_image = read_bytes($ringfile);
is(substr($gen_image, 0, 4), 'FCKT', 'a generated key also seals behind a tenant header');
# a crash before the rename leaves the old file and no WAL record of the change
$node->safe_psql('postgres', 'CHECKPOINT');
$node->stop('immediate');
write_bytes($ringfile, $pfx_image);
$node->start;
sql_is($node, 'app', $STATUS, 'pfx|RSA-3072 OAEP-SHA256|3072|loaded', 'old sealing after a crash before the rename: pfx');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'old sealing: data decrypts');
$node->stop('immediate');
write_bytes($ringfile, $gen_image);
$node->start;
sql_is($node, 'app', 'SELECT mode, key_id FROM fieldcrypt.tenant_key_status', "managed|$gen_id",
	'new sealing after a crash after the rename: generated key');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'new sealing: data decrypts');
# The data KEK sealed inside a generated key's header (nonce|tag|ciphertext, AES-GCM under a
# key derived from the cluster key, after the header's fixed fields and key id): one changed
# byte of its ciphertext fails that GCM tag, and the log names the unwrap, not the header MAC
# that is checked after it with the unwrapped key
{
	$node->stop;
	my $img = read_bytes($ringfile);
	is(unpack('V', substr($img, 72, 4)), 60, 'generated tenant header: a 60-byte sealed key at offset 76');
	my $bad = $img;
	substr($bad, 135, 1) = chr(ord(substr($bad, 135, 1)) ^ 1);
	write_bytes($ringfile, $bad);
	my $offset = -s $node->logfile;
	$node->start;
	like(log_since($node, $offset),
		qr/DETAIL:  [^\n]*is sealed under a tenant key this server cannot use: the generated tenant key could not be unwrapped with this server's cluster key/,
		'a changed byte of the sealed key: its GCM tag fails, and the log says so');
	$node->stop;
	write_bytes($ringfile, $img);
	$node->start;
	sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'the intact header: data decrypts again');
}
# a crash after the WAL record, over the old file: recovery installs the change
# with bind parameters, even log_statement = all keeps the password out of the log
{
	my $dbh = DBI->connect('dbi:Pg:' . FcNode::tls_connstr($node, 'app'),
		undef, undef, { RaiseError => 0, AutoCommit => 1, PrintError => 0 });
	$dbh->do("SET log_statement = 'all'");
	my $sth = $dbh->prepare('SELECT fieldcrypt.upload_tenant_key($1, $2)');
	$sth->bind_param(1, $second, { pg_type => PG_BYTEA });
	$sth->bind_param(2, 'Not-The-Password-2');
	ok(!$sth->execute && $dbh->state eq '28P01', 'bind parameters: a wrong password is refused');
	$sth->bind_param(2, $PW2);
	ok($sth->execute, 'bind parameters: upload a second PFX (RSA-2048)');
	is(($sth->fetchrow_array)[0], $fp_second, 'it returns the fingerprint of the second key');
	$dbh->disconnect;
}
my $second_image = read_bytes($ringfile);
$node->stop('immediate');
write_bytes($ringfile, $gen_image);
$node->start;
sql_is($node, 'app', 'SELECT mode, key_id, key_bits FROM fieldcrypt.tenant_key_status', "pfx|$fp_second|2048",
	'crash recovery replays the tenant key change over an old keyring file');
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'second PFX: data decrypts');

# Whether process $pid sleeps in open(2) of a FIFO: the kernel's wait for the
# other end (wchan), or else openat by this architecture's syscall number.
my %OPENAT_NR = (x86_64 => 257, aarch64 => 56, ppc64le => 286, s390x => 288);
sub in_fifo_open
{
	my ($pid) = @_;
	my $wchan = -r "/proc/$pid/wchan" ? read_bytes("/proc/$pid/wchan") : '';
	return 1 if $wchan eq 'wait_for_partner';
	my $nr = $OPENAT_NR{ (POSIX::uname())[4] };
	my $sc = -r "/proc/$pid/syscall" ? read_bytes("/proc/$pid/syscall") : '';
	return defined $nr && $sc =~ /^$nr /;
}

# A real kill -9 in the middle of a change: keyring.tmp is a FIFO, so the backend
# blocks in open(2) holding the keystore lock, after its checks and before any
# write. $while_blocked runs then, with the backend's pid.
sub kill_in_the_middle
{
	my ($sql, $what, $while_blocked) = @_;
	my $tmp = "$pgdata/pg_fieldcrypt/keyring.tmp";
	my $image = read_bytes($ringfile);
	POSIX::mkfifo($tmp, 0600) or die "mkfifo: $!";
	my $bg = $node->background_psql('app', on_error_stop => 0,
		extra_params => [ '-d', FcNode::tls_connstr($node, 'app') ]);
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_until(qr//, "$sql;\n");
	my $blocked = 0;
	for (1 .. 100)
	{
		if (in_fifo_open($pid)) { $blocked = 1; last; }
		select(undef, undef, undef, 0.1);
	}
	ok($blocked, "$what: the backend is in the middle of the change, opening keyring.tmp");
	$while_blocked->($pid) if $while_blocked;
	my $offset = -s $node->logfile;
	kill('KILL', $pid) or die "kill: $!";
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	unlink $tmp;
	$node->poll_query_until('app', 'SELECT true');
	eval { $bg->quit };
	ok(log_since($node, $offset) =~ /fieldcrypt: keyring loaded with keys of 1 database\(s\)/,
		"$what, killed in the middle: the keyring loads");
	is(read_bytes($ringfile), $image, "$what, killed in the middle: the keyring file is the one before");
	sql_is($node, 'app', 'SELECT mode, key_id FROM fieldcrypt.tenant_key_status', "pfx|$fp_second",
		"$what, killed in the middle: the previous tenant key is in use");
	sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', "$what, killed in the middle: data decrypts");
	return;
}
kill_in_the_middle('SELECT fieldcrypt.generate_tenant_key()', 'generate');
kill_in_the_middle(upload_sql($good, $PW), 'upload', sub {
	my ($pid) = @_;
	my $q = $node->safe_psql('postgres', "SELECT query FROM pg_stat_activity WHERE pid = $pid");
	ok($q =~ /upload_tenant_key/ && $q !~ /\Q$PW\E/,
		'upload: pg_stat_activity shows the running statement without the password');
});

# A tampered tenant header (one bit of installed_at): the server starts, refuses
# key operations, rewrites nothing; the intact file works again
{
	$node->stop;
	my $img = read_bytes($ringfile);
	my $bad = $img;
	substr($bad, 36, 1) = chr(ord(substr($bad, 36, 1)) ^ 1);
	write_bytes($ringfile, $bad);
	my $offset = -s $node->logfile;
	$node->start;
	ok(log_since($node, $offset) =~ /fieldcrypt: keyring not loaded, encrypted data is inaccessible\n[^\n]*DETAIL:  the tenant key header of "pg_fieldcrypt\/keyring" could not be authenticated/,
		'a tampered tenant header: not loaded, and the log says why');
	sql_fails($node, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '58000',
		'fieldcrypt keyring is not available', 'a tampered tenant header: key operations fail with 58000');
	sql_is($node, 'app', 'SELECT mode, keyring FROM fieldcrypt.tenant_key_status', 'pfx|unavailable',
		'a tampered tenant header: the view says unavailable');
	is(read_bytes($ringfile), $bad, 'a tampered tenant header: nothing was rewritten');
	$node->stop;
	write_bytes($ringfile, $img);
	$node->start;
	sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'the intact file: data decrypts again');
}

# --- Revert ---------------------------------------------------------------------------
sql_fails($node, 'app', 'SELECT fieldcrypt.revert_tenant_key()', '28000',
	'fieldcrypt.revert_tenant_key() requires an SSL connection', 'revert needs TLS', via => 'plain');
sql_is($node, 'app', 'SELECT fieldcrypt.revert_tenant_key()', $default_id, 'revert returns the default key id');
sql_is($node, 'app', 'SELECT mode, key_id, installed_at IS NULL FROM fieldcrypt.tenant_key_status',
	"managed|$default_id|t", 'status: back to the managed default');
is(substr(read_bytes($ringfile), 0, 4), 'FCKR', 'the keyring is a plain keyring again');
$node->restart;
sql_is($node, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'after revert and restart: data decrypts');
$node->wait_for_catchup($sb);
sql_is($sb, 'app', 'SELECT mode, key_id FROM fieldcrypt.tenant_key_status', "managed|$default_id",
	'standby: followed generate, upload and revert');
is(read_bytes($sb->data_dir . '/pg_fieldcrypt/keyring'), read_bytes($ringfile), 'standby: same keyring file again');
sql_is($sb, 'app', $VALUES_SQL, '1=v1-secret,2=v2-secret', 'standby: data decrypts');
sql_fails($sb, 'app', 'SELECT fieldcrypt.generate_tenant_key()', '25006',
	'cannot change the tenant key during recovery', 'no tenant key change on a standby');

# --- The password never reaches the log --------------------------------------------
$node->stop;
$sb->stop;
my $log = slurp_file($node->logfile) . slurp_file($sb->logfile);
ok($log =~ /wrong password for the PKCS#12 file/, 'the failures were logged');
ok($log =~ /upload_tenant_key/, 'and their statements');
unlike($log, qr/\Q$PW\E/, 'the PFX password is not in the log');
unlike($log, qr/\Q$PW2\E/, 'the second PFX password is not in the log');
unlike($log, qr/Not-The-Password-[12]/, 'a wrong password is not in the log either');
done_testing();
