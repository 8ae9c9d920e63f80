# More of the keyring and its providers (see 010_keyring.pl for the rest):
#   - a key file with group or world access is refused at start, like any other
#     provider failure: the server starts, says why, refuses key operations
#     with 58000, and works again once the mode is fixed;
#   - a crash reinitialization (a backend killed with SIGKILL) reloads the keyring
#     with the cluster key the postmaster kept: the key command does not run
#     again, keys and encrypted values still work;
#   - the key command gets none of the postmaster's files beyond 0, 1 and 2;
#   - DROP DATABASE takes the database's keys out of the keyring.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $KEY = 'Tap-More-Key-1';
my $KEY2 = 'Tap-More-Key-2';
my $UNAVAILABLE = 'fieldcrypt keyring is not available';
my $NOT_LOADED = 'fieldcrypt: keyring not loaded, encrypted data is inaccessible';
my $STATUS = 'SELECT active, key_loaded, generation, key_source, generations_kept, keyring FROM fieldcrypt.key_status';

my $node = FcNode::new_node('more');
# PostgreSQL::Test::Cluster turns crash restarts off; this test needs one.
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
$node->start;
my $pgdata = $node->data_dir;
my $keyfile = "$pgdata/pg_fieldcrypt/cluster.key";
my $ringfile = "$pgdata/pg_fieldcrypt/keyring";
my $outside = PostgreSQL::Test::Utils::tempdir;

$node->safe_psql('postgres', 'CREATE DATABASE m; CREATE DATABASE m2; CREATE DATABASE plain');
$node->safe_psql('m', 'CREATE EXTENSION fieldcrypt');
$node->safe_psql('m2', 'CREATE EXTENSION fieldcrypt');
sql_is($node, 'm', "SELECT fieldcrypt.set_data_encryption_key('$KEY')", '', 'set a key in m');
sql_is($node, 'm2', "SELECT fieldcrypt.set_data_encryption_key('$KEY2')", '', 'set a key in m2');
$node->safe_psql('m', <<'EOS');
CREATE TABLE t (id int PRIMARY KEY, v fieldcrypt.encrypted_text);
INSERT INTO t VALUES (1, 'Tap-More-Value-1'), (2, 'Tap-More-Value-2');
EOS
my $VALUES_SQL = 'SELECT string_agg(id || fieldcrypt.decrypt(v), \',\' ORDER BY id) FROM t';
my $VALUES = '1Tap-More-Value-1,2Tap-More-Value-2';
sql_is($node, 'm', $VALUES_SQL, $VALUES, 'the encrypted values decrypt');
my $kek = read_bytes($keyfile);
my $ring = read_bytes($ringfile);

# Restart and check the keyring is not loaded for the reason given by $why_re.
sub check_unavailable
{
	my ($what, $why_re) = @_;
	my $offset = -s $node->logfile;
	$node->restart;
	my $log = log_since($node, $offset);
	like($log, qr/WARNING:  \Q$NOT_LOADED\E\n[^\n]*DETAIL:  $why_re\n/,
		"$what: the log says why the keyring is not loaded");
	sql_is($node, 'm', 'SELECT 1', '1', "$what: the server is up");
	sql_fails($node, 'm', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '58000', $UNAVAILABLE,
		"$what: retrieve fails");
	sql_fails($node, 'm', "SELECT fieldcrypt.set_data_encryption_key('Tap-More-Broken-1')", '58000',
		$UNAVAILABLE, "$what: set fails");
	sql_fails($node, 'm', $VALUES_SQL, '58000', $UNAVAILABLE, "$what: decrypt fails");
	sql_is($node, 'm', $STATUS, 't|f|2|administrator|0|unavailable',
		"$what: key_status shows the keyring unavailable");
	is(read_bytes($ringfile), $ring, "$what: the keyring file is untouched");
	return;
}

sub check_back
{
	my ($what) = @_;
	my $offset = -s $node->logfile;
	$node->restart;
	like(log_since($node, $offset), qr/fieldcrypt: keyring loaded with keys of 2 database\(s\)/,
		"$what: the keyring is loaded");
	sql_is($node, 'm', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY, "$what: the key works");
	sql_is($node, 'm', $VALUES_SQL, $VALUES, "$what: the values decrypt");
	return;
}

# --- 1. Mode of the key file ----------------------------------------------------------
my $PERM_RE = qr/key file "pg_fieldcrypt\/cluster\.key" has group or world access; it must be mode 0600 or stricter/;
for my $mode (0640, 0604, 0660, 0601)
{
	my $m = sprintf('%04o', $mode);
	chmod $mode, $keyfile or die "chmod: $!";
	check_unavailable("cluster.key with mode $m", $PERM_RE);
	is((stat $keyfile)[2] & 07777, $mode, "cluster.key with mode $m: the mode is left as it was");
	is(read_bytes($keyfile), $kek, "cluster.key with mode $m: the key file is untouched");
}
chmod 0400, $keyfile or die "chmod: $!";
check_back('cluster.key with mode 0400');
chmod 0600, $keyfile or die "chmod: $!";
check_back('cluster.key with mode 0600 again');

# --- 2 and 3. The command provider: crash reinitialization, inherited files ---------------
# The command counts its runs, lists its own open files and those of its parent
# (the postmaster, as a control that there was something to inherit), and prints
# the key, which now lives outside the data directory. Each listing runs in a
# subshell that opens its output file itself: sh (dash) applies the redirection
# of a simple command in the shell, keeping a copy of its stdout open meanwhile.
write_bytes("$outside/kek.hex", $kek);
chmod 0600, "$outside/kek.hex";
rename $keyfile, "$outside/cluster.key.saved" or die "rename: $!";
$node->append_conf('postgresql.conf', <<"EOC");
fieldcrypt.key_provider = command
fieldcrypt.key_command_timeout = 10
fieldcrypt.key_command = 'echo run >> $outside/runs.txt; (ls /proc/\$\$/fd) > $outside/fds.txt; (ls /proc/\$PPID/fd) > $outside/parent_fds.txt; cat $outside/kek.hex'
EOC
check_back('key command');
is(read_bytes("$outside/runs.txt"), "run\n", 'the key command ran once at start');

# Numeric entries above 2 of a /proc/PID/fd listing. ls lists the directory of
# the shell (or of the postmaster), not its own: its own open files are not in it.
sub fds_above_2
{
	my ($file) = @_;
	return join(' ', sort { $a <=> $b } grep { /^\d+$/ && $_ > 2 } split /\s+/, read_bytes($file));
}
my $all_fds = read_bytes("$outside/fds.txt");
like($all_fds, qr/\A0\n1\n2\n/, 'the key command has standard input, output and error');
is(fds_above_2("$outside/fds.txt"), '', 'the key command has no other file open')
  or diag("the key command's /proc/PID/fd:\n$all_fds");
isnt(fds_above_2("$outside/parent_fds.txt"), '',
	'control: the postmaster had other files open then (' . fds_above_2("$outside/parent_fds.txt") . ')');

# Kill a backend with SIGKILL: the postmaster kills every other one and
# reinitializes shared memory, without a new postmaster.
my $pm_pid = (split /\n/, read_bytes("$pgdata/postmaster.pid"))[0];
my $bg = $node->background_psql('m', on_error_stop => 0);
my $victim = $bg->query_safe('SELECT pg_backend_pid()');
like($victim, qr/^\d+$/, 'a backend to kill');
my $offset = -s $node->logfile;
ok(kill('KILL', $victim), 'SIGKILL sent to the backend');
$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
ok($node->poll_query_until('m', 'SELECT true'), 'the server accepts connections again');
$bg->quit;
my $log = log_since($node, $offset);
like($log, qr/server process \(PID $victim\) was terminated by signal 9/, 'the postmaster saw the crash');
like($log, qr/all server processes terminated; reinitializing/, 'the postmaster reinitialized');
like($log, qr/fieldcrypt: keyring loaded with keys of 2 database\(s\)/,
	'the reinitialization loaded the keyring again');
is((split /\n/, read_bytes("$pgdata/postmaster.pid"))[0], $pm_pid, 'the postmaster is the same process');
is(read_bytes("$outside/runs.txt"), "run\n", 'the key command did not run again');
sql_is($node, 'm', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY,
	'after the crash the key is retrieved over TLS');
sql_is($node, 'm2', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY2,
	'after the crash the key of the other database too');
sql_is($node, 'm', $STATUS, 't|t|2|administrator|2|loaded', 'after the crash key_status is loaded');
sql_is($node, 'm', $VALUES_SQL, $VALUES, 'after the crash the values written before decrypt');
sql_is($node, 'm', "INSERT INTO t VALUES (3, 'Tap-More-Value-3');\n"
	  . 'SELECT fieldcrypt.decrypt(v) FROM t WHERE id = 3',
	"INSERT 0 1\nTap-More-Value-3", 'after the crash new values are written and decrypt');
$node->safe_psql('m', 'DELETE FROM t WHERE id = 3');

# back to the file provider
$node->append_conf('postgresql.conf', 'fieldcrypt.key_provider = file');
rename "$outside/cluster.key.saved", $keyfile or die "rename: $!";
check_back('file provider again');
is(read_bytes("$outside/runs.txt"), "run\n", 'the key command is not run with the file provider');

# --- 4. DROP DATABASE --------------------------------------------------------------------
# A database without the extension: the keyring is not rewritten.
$ring = read_bytes($ringfile);
$node->safe_psql('postgres', 'DROP DATABASE plain');
is(read_bytes($ringfile), $ring, 'dropping a database without keys leaves the keyring alone');
# A refused DROP DATABASE keeps the keys.
my $holder = $node->background_psql('m2', on_error_stop => 0);
$holder->query_safe('SELECT 1');
sql_fails($node, 'postgres', 'DROP DATABASE m2', '55006',
	'database "m2" is being accessed by other users', 'DROP DATABASE of a database in use fails');
$holder->quit;
is(read_bytes($ringfile), $ring, 'the failed DROP DATABASE left the keyring alone');
sql_is($node, 'm2', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY2,
	'the failed DROP DATABASE left the key alone');

$node->safe_psql('postgres', 'DROP DATABASE m2');
isnt(read_bytes($ringfile), $ring, 'DROP DATABASE rewrote the keyring');
ok(length(read_bytes($ringfile)) < length($ring), 'the keyring is smaller');
$offset = -s $node->logfile;
$node->restart;
like(log_since($node, $offset), qr/fieldcrypt: keyring loaded with keys of 1 database\(s\)/,
	'after DROP DATABASE and a restart the keyring holds one database');
sql_is($node, 'm', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY,
	'the key of the remaining database is kept');
sql_is($node, 'm', $VALUES_SQL, $VALUES, 'the values of the remaining database decrypt');

$node->safe_psql('postgres', 'DROP DATABASE m');
$offset = -s $node->logfile;
$node->restart;
like(log_since($node, $offset), qr/fieldcrypt: keyring loaded with keys of 0 database\(s\)/,
	'after dropping the last one the keyring holds none');
$node->stop;

done_testing();
