# The keyring on disk and the cluster key providers: keys survive restarts, and a
# damaged keyring, a missing or wrong cluster key or a failing key command never
# stop the server nor destroy anything: the server starts, says why in the log,
# refuses key operations with 58000, and works again once the cause is fixed.
# Also: the preload requirement, Unix sockets, the cluster-wide change lock and
# PREPARE TRANSACTION with prepared transactions enabled.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $KEY = 'Tap-Keyring-Key-1';
my $UNAVAILABLE = 'fieldcrypt keyring is not available';
my $NOT_LOADED = 'fieldcrypt: keyring not loaded, encrypted data is inaccessible';
my $STATUS = 'SELECT active, key_loaded, generation, key_source, generations_kept, keyring FROM fieldcrypt.key_status';

my $node = FcNode::new_node('keyring');
$node->append_conf('postgresql.conf', 'max_prepared_transactions = 2');
$node->start;
my $pgdata = $node->data_dir;
my $ringfile = "$pgdata/pg_fieldcrypt/keyring";
my $keyfile = "$pgdata/pg_fieldcrypt/cluster.key";
my $outside = PostgreSQL::Test::Utils::tempdir;

# --- First start: a cluster key is made, no keyring yet --------------------------
ok($node->log_contains(qr/fieldcrypt: created a new cluster key in "pg_fieldcrypt\/cluster\.key"/),
	'first start creates the cluster key and says so');
ok($node->log_contains(qr/fieldcrypt: keyring loaded with keys of 0 database\(s\)/),
	'first start loads an empty keyring');
is((stat "$pgdata/pg_fieldcrypt")[2] & 07777, 0700, 'pg_fieldcrypt has mode 0700');
is((stat $keyfile)[2] & 07777, 0600, 'cluster.key has mode 0600');
like(read_bytes($keyfile), qr/\A[0-9a-f]{64}\n\z/, 'cluster.key holds 64 hex digits');
ok(!-e $ringfile, 'no keyring before any database is activated');
my $kek = read_bytes($keyfile);

# --- Activation, a key change, restart --------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE k');
$node->safe_psql('k', 'CREATE EXTENSION fieldcrypt');
ok(-e $ringfile, 'activation writes the keyring');
is((stat $ringfile)[2] & 07777, 0600, 'keyring has mode 0600');
is(substr(read_bytes($ringfile), 0, 4), 'FCKR', 'keyring starts with its magic');
sql_is($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('$KEY')", '', 'set a key');
sql_is($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY, 'retrieve returns it');
my $generated_and_set = read_bytes($ringfile);
unlike($generated_and_set, qr/\Q$KEY\E/, 'the keyring does not hold the key in clear');

# PREPARE TRANSACTION with prepared transactions enabled: the change waits for COMMIT
# PREPARED (test/t/204); rolled back here, it leaves the key as it was
sql_is($node, 'k',
	"BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('Tap-Prepared-Key-1');\nPREPARE TRANSACTION 'fc_tap';",
	"BEGIN\n\nPREPARE TRANSACTION", 'PREPARE TRANSACTION after a key change is accepted');
sql_is($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY, 'while prepared the key is unchanged');
sql_is($node, 'k', "ROLLBACK PREPARED 'fc_tap'", 'ROLLBACK PREPARED', 'ROLLBACK PREPARED');
sql_is($node, 'k', 'SELECT count(*) FROM pg_prepared_xacts', '0', 'nothing is prepared');
sql_is($node, 'k', "BEGIN;\nSELECT 1;\nPREPARE TRANSACTION 'fc_tap_plain';\nCOMMIT PREPARED 'fc_tap_plain';",
	"BEGIN\n1\nPREPARE TRANSACTION\nCOMMIT PREPARED", 'a transaction without a key change can be prepared');
sql_is($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY, 'the key did not change');

my $offset = -s $node->logfile;
$node->restart;
ok(log_since($node, $offset) =~ /fieldcrypt: keyring loaded with keys of 1 database\(s\)/,
	'restart loads the keyring with one database');
sql_is($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY, 'the key survives a restart');
sql_is($node, 'k', $STATUS, 't|t|2|administrator|2|loaded', 'key_status survives a restart');
is(read_bytes($keyfile), $kek, 'restart keeps the cluster key');
is(read_bytes($ringfile), $generated_and_set, 'restart does not rewrite the keyring');

# --- Unix-domain sockets are refused ----------------------------------------------
sql_fails($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('Tap-Socket-Key-1')", '28000',
	'fieldcrypt.set_data_encryption_key requires an SSL connection',
	'set over the Unix socket is refused', via => 'socket');
sql_fails($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '28000',
	'fieldcrypt.retrieve_data_encryption_key requires an SSL connection',
	'retrieve over the Unix socket is refused', via => 'socket');
sql_fails($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '28000',
	'fieldcrypt.retrieve_data_encryption_key requires an SSL connection',
	'retrieve over TCP without TLS is refused', via => 'plain');

# --- One key change at a time in the whole cluster --------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE k2');
$node->safe_psql('k2', 'CREATE EXTENSION fieldcrypt');
my $bg = $node->background_psql('k', on_error_stop => 0,
	extra_params => [ '-d', FcNode::tls_connstr($node, 'k') ]);
$bg->query_safe('BEGIN');
$bg->query_safe("SELECT fieldcrypt.set_data_encryption_key('Tap-Pending-Key-1')");
sql_fails($node, 'k2', "SELECT fieldcrypt.set_data_encryption_key('Tap-Other-Db-Key-1')",
	'55P03', 'a data encryption key change is already in progress',
	'a key change in another database is refused while one is uncommitted');
$bg->query_safe('ROLLBACK');
$bg->quit;
sql_is($node, 'k2', "SELECT fieldcrypt.set_data_encryption_key('Tap-Other-Db-Key-1')", '',
	'after the rollback the other database may change its key');
sql_is($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY,
	'the rolled-back change left the key of k alone');

my $ring = read_bytes($ringfile);
my $ring_len = length $ring;

# Restart with the keyring (or key) in some state; check the server is up, the log
# says why the keyring is not loaded, keys are refused and nothing was rewritten.
sub check_unavailable
{
	my ($what, $why_re, $ring_now) = @_;
	my $offset = -s $node->logfile;
	$node->restart;
	my $log = log_since($node, $offset);
	like($log, qr/WARNING:  \Q$NOT_LOADED\E\n[^\n]*DETAIL:  $why_re\n/,
		"$what: the log says why the keyring is not loaded");
	like($log, qr/HINT:  .*Nothing was changed on disk\./, "$what: the log says nothing was changed");
	sql_is($node, 'k', 'SELECT 1', '1', "$what: the server is up");
	sql_fails($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '58000', $UNAVAILABLE,
		"$what: retrieve fails");
	sql_fails($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('Tap-While-Broken-1')", '58000',
		$UNAVAILABLE, "$what: set fails");
	sql_is($node, 'k', $STATUS, 't|f|2|administrator|0|unavailable',
		"$what: key_status shows the keyring unavailable");
	sql_is($node, 'k', 'SELECT fieldcrypt.is_data_encryption_active()', 't',
		"$what: encryption is still reported active");
	is(read_bytes($ringfile), $ring_now, "$what: the keyring file is untouched");
	return;
}

sub check_back
{
	my ($what) = @_;
	$node->restart;
	sql_is($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY, "$what: the key works again");
	sql_is($node, 'k', $STATUS, 't|t|2|administrator|2|loaded', "$what: key_status is back");
	return;
}

# --- (a) a corrupted byte in the sealed part ---------------------------------------
my $bad = $ring;
substr($bad, $ring_len - 100, 1) = chr(ord(substr($bad, $ring_len - 100, 1)) ^ 0x01);
write_bytes($ringfile, $bad);
check_unavailable('corrupted keyring', qr/"pg_fieldcrypt\/keyring" could not be authenticated: it is corrupted or sealed with another cluster key/, $bad);
# a new database cannot be activated either, and the server does not crash on it
$node->safe_psql('postgres', 'CREATE DATABASE k3');
sql_fails($node, 'k3', 'CREATE EXTENSION fieldcrypt', '58000', $UNAVAILABLE,
	'corrupted keyring: CREATE EXTENSION cannot activate a new database');
is(read_bytes($keyfile), $kek, 'corrupted keyring: the cluster key is untouched');
write_bytes($ringfile, $ring);
check_back('corrupted keyring restored');

# a corrupted byte in the authenticated header
$bad = $ring;
substr($bad, 8, 1) = chr(ord(substr($bad, 8, 1)) ^ 0x01);
write_bytes($ringfile, $bad);
check_unavailable('corrupted keyring header', qr/"pg_fieldcrypt\/keyring" has an unknown format or is truncated/, $bad);
write_bytes($ringfile, $ring);

# --- (b) a truncated keyring ---------------------------------------------------------
$bad = substr($ring, 0, $ring_len - 1);
write_bytes($ringfile, $bad);
check_unavailable('keyring missing its last byte', qr/"pg_fieldcrypt\/keyring" has an unknown format or is truncated/, $bad);
$bad = substr($ring, 0, 20);
write_bytes($ringfile, $bad);
check_unavailable('keyring cut to 20 bytes', qr/"pg_fieldcrypt\/keyring" is not a fieldcrypt keyring or is truncated/, $bad);
write_bytes($ringfile, '');
check_unavailable('empty keyring file', qr/"pg_fieldcrypt\/keyring" is not a fieldcrypt keyring or is truncated/, '');
write_bytes($ringfile, $ring);
check_back('truncated keyring restored');

# --- (c) cluster.key missing while a keyring exists -------------------------------
rename $keyfile, "$outside/cluster.key.saved" or die "rename: $!";
check_unavailable('cluster.key missing',
	qr/key file "pg_fieldcrypt\/cluster\.key" is missing but a keyring exists; refusing to create a new key over existing data/,
	$ring);
ok(!-e $keyfile, 'cluster.key missing: no new cluster key was created');
rename "$outside/cluster.key.saved", $keyfile or die "rename: $!";
check_back('cluster.key put back');

# --- (d) a wrong cluster key, and a key file that is not a key ------------------
my $wrong = ('0123456789abcdef' x 4) . "\n";
isnt($wrong, $kek, 'the wrong key differs from the real one');
write_bytes($keyfile, $wrong);
check_unavailable('wrong cluster key',
	qr/"pg_fieldcrypt\/keyring" could not be authenticated: it is corrupted or sealed with another cluster key/,
	$ring);
is(read_bytes($keyfile), $wrong, 'wrong cluster key: the key file is not overwritten');
write_bytes($keyfile, "not a key\n");
check_unavailable('key file without a key',
	qr/key file "pg_fieldcrypt\/cluster\.key" does not hold 64 hexadecimal digits/, $ring);
write_bytes($keyfile, $kek);
check_back('right cluster key put back');

# --- (e) the command provider ------------------------------------------------------
# The key lives outside the data directory; cluster.key is moved away so that only
# the command can supply it.
write_bytes("$outside/kek.hex", $kek);
chmod 0600, "$outside/kek.hex";
rename $keyfile, "$outside/cluster.key.saved" or die "rename: $!";
sub set_command
{
	my ($command) = @_;
	$node->append_conf('postgresql.conf',
		"fieldcrypt.key_provider = command\nfieldcrypt.key_command_timeout = 2\n"
		  . "fieldcrypt.key_command = '$command'");
	return;
}
set_command("cat $outside/kek.hex");
$offset = -s $node->logfile;
check_back('key command printing the key');
like(log_since($node, $offset), qr/fieldcrypt: keyring loaded with keys of 2 database\(s\)/,
	'key command: the keyring is loaded');
ok(!-e $keyfile, 'key command: no key file is created in the data directory');

set_command('exit 1');
check_unavailable('key command exiting 1', qr/fieldcrypt\.key_command failed \(exit code 1\)/, $ring);
set_command('echo this-is-not-a-key');
check_unavailable('key command printing garbage',
	qr/fieldcrypt\.key_command did not print a 256-bit key as 64 hexadecimal digits/, $ring);
set_command("cut -c1-63 $outside/kek.hex");
check_unavailable('key command printing 63 digits',
	qr/fieldcrypt\.key_command did not print a 256-bit key as 64 hexadecimal digits/, $ring);
set_command("echo \$\$ > $outside/sleeper.pid; exec sleep 60");
my $t0 = time;
check_unavailable('key command that hangs', qr/fieldcrypt\.key_command did not finish within 2 s/, $ring);
ok(time - $t0 < 30, 'key command that hangs: the server did not wait for it');
my $sleeper = read_bytes("$outside/sleeper.pid");
chomp $sleeper;
like($sleeper, qr/^\d+$/, 'key command that hangs: it ran');
ok(!kill(0, $sleeper), 'key command that hangs: it was killed');
# A command that prints the key, closes its output and keeps running is still
# bound by the timeout (whether its key is then used or not).
set_command("cat $outside/kek.hex; exec >&-; echo \$\$ > $outside/lingerer.pid; exec sleep 20");
$t0 = time;
$node->restart;
ok(time - $t0 < 12, 'key command that lingers after printing: the server did not wait for it');
my $lingerer = read_bytes("$outside/lingerer.pid");
chomp $lingerer;
like($lingerer, qr/^\d+$/, 'key command that lingers after printing: it ran');
ok(!kill(0, $lingerer), 'key command that lingers after printing: it was killed');
set_command('');
check_unavailable('empty key command', qr/fieldcrypt\.key_command is empty/, $ring);

# back to the file provider
$node->append_conf('postgresql.conf', "fieldcrypt.key_provider = file");
rename "$outside/cluster.key.saved", $keyfile or die "rename: $!";
check_back('file provider again');

# --- fieldcrypt.max_databases --------------------------------------------------------
$node->append_conf('postgresql.conf', 'fieldcrypt.max_databases = 1');
check_unavailable('max_databases below the keyring',
	qr/"pg_fieldcrypt\/keyring" holds 2 databases, more than fieldcrypt\.max_databases = 1/, $ring);
$node->append_conf('postgresql.conf', 'fieldcrypt.max_databases = 2');
check_back('max_databases = 2');
sql_fails($node, 'k3', 'CREATE EXTENSION fieldcrypt', '53400',
	'fieldcrypt cannot hold keys for more than 2 databases',
	'max_databases = 2: activating a third database fails');
sql_is($node, 'k3', "SELECT count(*) FROM pg_extension WHERE extname = 'fieldcrypt'", '0',
	'max_databases = 2: the extension was not created');
is(read_bytes($ringfile), $ring, 'max_databases = 2: the keyring is untouched');
$node->append_conf('postgresql.conf', 'fieldcrypt.max_databases = 64');

# --- Without shared_preload_libraries ------------------------------------------------
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->restart;
$node->safe_psql('postgres', 'CREATE DATABASE nopreload');
my ($ret, $out, $err) = FcNode::psql_tls($node, 'nopreload',
	"\\set VERBOSITY verbose\nCREATE EXTENSION fieldcrypt");
ok($ret != 0 && $err =~ /ERROR:  55000: fieldcrypt must be loaded via shared_preload_libraries\n/,
	'CREATE EXTENSION without preload fails with 55000') or diag($err);
like($err, qr/HINT:  Add fieldcrypt to shared_preload_libraries in postgresql\.conf and restart the server\./,
	'the hint says to add it to shared_preload_libraries');
sql_fails($node, 'k', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '55000',
	'fieldcrypt must be loaded via shared_preload_libraries',
	'an installed fieldcrypt refuses to work without preload');
is(read_bytes($ringfile), $ring, 'without preload the keyring is untouched');
$node->stop;

# --- (f) fieldcrypt.key_file outside the data directory ----------------------------
my $ext = FcNode::new_node('extkey');
my $extfile = "$outside/ext/cluster.key";
mkdir "$outside/ext" or die "mkdir: $!";
$ext->append_conf('postgresql.conf', "fieldcrypt.key_file = '$extfile'");
$ext->start;
ok(-e $extfile, 'key_file outside the data directory is created at first start');
is((stat $extfile)[2] & 07777, 0600, 'it has mode 0600');
like(read_bytes($extfile), qr/\A[0-9a-f]{64}\n\z/, 'it holds 64 hex digits');
ok(!-e $ext->data_dir . '/pg_fieldcrypt/cluster.key', 'no cluster.key in the data directory');
ok($ext->log_contains(qr/fieldcrypt: created a new cluster key in "\Q$extfile\E"/), 'the log names it');
my $extkek = read_bytes($extfile);
$ext->safe_psql('postgres', 'CREATE EXTENSION fieldcrypt');
sql_is($ext, 'postgres', "SELECT fieldcrypt.set_data_encryption_key('$KEY')", '', 'set a key');
$ext->restart;
sql_is($ext, 'postgres', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY,
	'the key survives a restart with an outside key file');
is(read_bytes($extfile), $extkek, 'the outside key file is kept');
$ext->stop;

done_testing();
