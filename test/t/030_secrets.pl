# Passphrases never leak into the server log, the data directory or
# pg_stat_activity, whether the statement that carried them succeeded or failed.
#
# The server logs every statement's duration (log_min_duration_statement = 0) and
# the text of every failing statement (log_min_error_statement = error), so each
# marker below does reach the logging code; fieldcrypt must mask it.
#
# Not covered, by design (see src/redact.c): log_statement = 'all' (or 'mod'/'ddl'
# matching) writes the statement text when it is received, before any extension
# sees it; the same holds for statements that fail before set_data_encryption_key
# runs (a syntax error, a misspelt function name). The node therefore sets
# log_statement = none, overriding PostgreSQL::Test::Cluster's default of 'all'.
use strict;
use warnings;
use File::Find;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my %marker = (
	set_ok       => 'Marker-Key-7f3e9a!X',
	set_in_do    => 'Marker-InDo-7f3e9a!V',
	set_weak     => 'markerweak7f3e9a',
	set_weak_do  => 'markerweakdo7f3e9a',
	set_same     => 'Marker-Key-7f3e9a!X',
	set_twice    => 'Marker-Twice-7f3e9a!T',
	set_no_tls   => 'Marker-NoTls-7f3e9a!Z',
	set_no_admin => 'Marker-NoAdmin-7f3e9a!W',
	restore_bad  => 'Marker-Wrong-7f3e9a!Y',
	set_idle     => 'Marker-Idle-7f3e9a!U',
	set_idle_bad => 'markeridle7f3e9a',);

my $node = FcNode::new_node('secrets');
$node->append_conf('postgresql.conf', <<'EOC');
log_statement = none
log_min_duration_statement = 0
log_min_error_statement = error
log_error_verbosity = verbose
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE s; CREATE ROLE plain_role');
$node->safe_psql('s', 'CREATE EXTENSION fieldcrypt');
my $generated = (FcNode::psql_tls($node, 's', 'SELECT fieldcrypt.retrieve_data_encryption_key()'))[1];
like($generated, qr/^Fc1\./, 'the generated key was retrieved');

# A plain statement with a marker that is not a key: it must show up in the log,
# which proves the log is searched where statements land.
sql_is($node, 's', "SELECT 'Control-Marker-5b1d' AS c", 'Control-Marker-5b1d', 'control statement');

# Successful key changes: a plain statement, and one inside a DO block.
sql_is($node, 's', "SELECT fieldcrypt.set_data_encryption_key('$marker{set_ok}')", '', 'set a marker key');
sql_is($node, 's', "DO \$\$ BEGIN PERFORM fieldcrypt.set_data_encryption_key('$marker{set_in_do}'); END \$\$",
	'DO', 'set a marker key inside DO');
sql_is($node, 's', "SELECT fieldcrypt.set_data_encryption_key('$marker{set_ok}')", '', 'set the first marker key again');

# Failing ones, each with the key literal in the statement text.
sql_fails($node, 's', "SELECT fieldcrypt.set_data_encryption_key('$marker{set_weak}')", '22023',
	'data encryption key is too weak', 'weak marker key refused');
sql_fails($node, 's', "DO \$\$ BEGIN PERFORM fieldcrypt.set_data_encryption_key('$marker{set_weak_do}'); END \$\$",
	'22023', 'data encryption key is too weak', 'weak marker key refused inside DO (error with a CONTEXT line)');
sql_fails($node, 's', "SELECT fieldcrypt.set_data_encryption_key('$marker{set_same}')", '22023',
	'the new data encryption key must differ from the current one', 'same marker key refused');
sql_fails($node, 's',
	"BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('Not-A-Marker-Key-1');\nSELECT fieldcrypt.set_data_encryption_key('$marker{set_twice}');",
	'55000', 'only one data encryption key change is allowed per transaction', 'second marker key in a transaction refused');
sql_fails($node, 's', "SELECT fieldcrypt.set_data_encryption_key('$marker{set_no_tls}')", '28000',
	'fieldcrypt.set_data_encryption_key requires an SSL connection', 'marker key without TLS refused', via => 'plain');
sql_fails($node, 's', "SET ROLE plain_role;\nSELECT fieldcrypt.set_data_encryption_key('$marker{set_no_admin}')", '42501',
	'permission denied to set the data encryption key', 'marker key from a plain role refused');
$node->safe_psql('postgres', 'CREATE DATABASE s_copy TEMPLATE s');
sql_fails($node, 's_copy', "SELECT fieldcrypt.set_data_encryption_key('$marker{restore_bad}')", '28P01',
	'data encryption key does not match this database', 'wrong marker key refused at restore');

# pg_stat_activity of a session that set a key, read from another session while it is idle.
my $bg = $node->background_psql('s', on_error_stop => 0,
	extra_params => [ '-d', FcNode::tls_connstr($node, 's') ]);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe("SELECT fieldcrypt.set_data_encryption_key('$marker{set_idle}')");
my $activity = $node->safe_psql('postgres', "SELECT state || ': ' || query FROM pg_stat_activity WHERE pid = $pid");
like($activity, qr/^idle: SELECT fieldcrypt\.set_data_encryption_key\('\[redacted\]'\)/,
	'pg_stat_activity shows the statement with the key masked');
unlike($activity, qr/\Q$marker{set_idle}\E/, 'pg_stat_activity does not show the key');
$bg->query("SELECT fieldcrypt.set_data_encryption_key('$marker{set_idle_bad}')");
like($bg->{stderr}, qr/data encryption key is too weak/, 'the weak key failed in that session');
$activity = $node->safe_psql('postgres', "SELECT state || ': ' || query FROM pg_stat_activity WHERE pid = $pid");
like($activity, qr/^idle: SELECT fieldcrypt\.set_data_encryption_key\('\[redacted\]'\)/,
	'pg_stat_activity masks the key of a failed call too');
unlike($activity, qr/\Q$marker{set_idle_bad}\E/, 'pg_stat_activity does not show the weak key');
$bg->quit;

# Flush everything to disk, then search.
$node->safe_psql('postgres', 'CHECKPOINT');
$node->stop;

my $log = read_bytes($node->logfile);
like($log, qr/Control-Marker-5b1d/, 'the control marker is in the log');
like($log, qr/duration: [0-9.]+ ms  statement: SELECT fieldcrypt\.set_data_encryption_key\('\[redacted\]'\)/,
	'the successful statement was logged, masked');
like($log, qr/ERROR:  22023: data encryption key is too weak/, 'the weak-key error was logged');
like($log, qr/ERROR:  28P01: data encryption key does not match this database/, 'the wrong-key error was logged');
like($log, qr/CONTEXT:  SQL statement "SELECT fieldcrypt\.set_data_encryption_key\('\[redacted\]'\)"/,
	'the CONTEXT line of the error inside DO was logged, masked');

my @files;
find({ wanted => sub { push @files, $File::Find::name if -f $_ }, no_chdir => 1 }, $node->data_dir);
ok(@files > 100, 'the data directory was listed (' . scalar(@files) . ' files)');
my %seen;
for my $what (sort keys %marker)
{
	my $m = $marker{$what};
	next if $seen{$m}++;
	unlike($log, qr/\Q$m\E/, "server log does not contain the $what key");
	my @hits = grep { index(read_bytes($_), $m) >= 0 } @files;
	is("@hits", '', "no file in the data directory contains the $what key");
}
unlike($log, qr/\Q$generated\E/, 'server log does not contain the generated key');
my @hits = grep { index(read_bytes($_), $generated) >= 0 } @files;
is("@hits", '', 'no file in the data directory contains the generated key');

done_testing();
