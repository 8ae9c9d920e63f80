# More log redaction of plaintexts written to encrypted columns, with pgaudit
# (every class, with parameters) and statement-duration logging on, and the
# text of failing statements logged (see 030_secrets.pl and
# 041_column_disk_log.pl for the rest):
#   - a statement failing at execution keeps its STATEMENT: line, masked;
#   - CALL of a procedure that writes its text argument into an encrypted column;
#   - plaintexts with a single quote (doubled in the SQL literal) or a double
#     quote (doubled by pgaudit's CSV): no spelling of them reaches the log;
#   - pg_stat_activity shows such statements masked to other sessions.
# Then the data directory and the log are searched for every marker.
#
# Not covered: log_statement (off here, see 030_secrets.pl), and a plaintext
# inside the body of a DO block, which pgaudit logs as it is: it logs the DO
# statement before the body is parsed.
use strict;
use warnings;
use File::Find;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my %marker = (
	fail_1 => 'Mk31-Stmt-Fail-1a',
	fail_2 => 'Mk31-Stmt-Fail-1b',
	call   => 'Mk31-Call-Proc-2',
	quote  => q{Mk31'Quote-77},
	dquote => q{Mk31"Dq-88},
	active => 'Mk31-Activity-5',
	dqcall => q{Mk31"DqCall-3},
	esc    => q{Mk31'Esc-4},
	hex    => 'Mk31AHex-5',
	uni    => 'Mk31AUni-6',
	copy   => 'Mk31-Copy-Line-7',
	upsert => 'Mk31-Upsert-Set-8',
	cte    => 'Mk31-Cte-Insert-9',
	exec   => 'Mk31-Execute-Arg-10',);
# How the last two are written in the statements: their escaped spellings
# must not reach the log either.
my %spelled = (hex => 'Mk31\x41Hex-5', uni => 'Mk31\0041Uni-6');
my $control = 'Mk31-Plain-Control-9';    # written to a plain column: must be found

# Every spelling of a marker: each quote character may be doubled, repeated
# or escaped, as SQL literals and CSV write them.
sub marker_re
{
	my ($m) = @_;
	my $re = join '[\\\\\'"]+', map { quotemeta } split /['"]/, $m, -1;
	return qr/$re/;
}

my $node = FcNode::new_node('secrets_more', preload => 'pgaudit,fieldcrypt');
$node->append_conf('postgresql.conf', <<'EOC');
pgaudit.log = 'all'
pgaudit.log_parameter = on
log_min_duration_statement = 0
log_min_error_statement = error
log_statement = none
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE s');
$node->safe_psql('s', <<'EOS');
CREATE EXTENSION pgaudit;
CREATE EXTENSION fieldcrypt;
CREATE TABLE secrets (id int PRIMARY KEY, note text, pw fieldcrypt.encrypted_text);
CREATE PROCEDURE put_proc(p_id int, p_pw text) LANGUAGE plpgsql AS $p$
BEGIN
    INSERT INTO secrets (id, pw) VALUES (p_id, p_pw);
END
$p$;
EOS

# --- a. a statement failing at execution, after its values were encrypted -------------
sql_fails($node, 's',
	"INSERT INTO secrets (id, pw) VALUES (1, '$marker{fail_1}'), (1, '$marker{fail_2}')",
	'23505', 'duplicate key value violates unique constraint "secrets_pkey"',
	'a multi-row INSERT with a duplicate key fails');

# --- b. CALL of a procedure writing its argument ------------------------------------------
sql_is($node, 's', "CALL put_proc(2, '$marker{call}')", 'CALL', 'CALL of a procedure writing a marker');

# --- c, d. quotes ------------------------------------------------------------------------
(my $quote_literal = $marker{quote}) =~ s/'/''/g;
sql_is($node, 's', "INSERT INTO secrets (id, pw) VALUES (3, '$quote_literal')", 'INSERT 0 1',
	'INSERT of a marker with a single quote');
sql_is($node, 's', "INSERT INTO secrets (id, pw) VALUES (4, '$marker{dquote}')", 'INSERT 0 1',
	'INSERT of a marker with a double quote');

# --- pg_stat_activity, read from another session ------------------------------------------
my $bg = $node->background_psql('s', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe("INSERT INTO secrets (id, pw) VALUES (5, '$marker{active}')");
my $activity = $node->safe_psql('postgres',
	"SELECT state || ': ' || query FROM pg_stat_activity WHERE pid = $pid");
like($activity, qr/^idle: INSERT INTO secrets \(id, pw\) VALUES \(5, '\[redacted\]'\)/,
	'pg_stat_activity shows the INSERT with its value masked');
unlike($activity, marker_re($marker{active}), 'pg_stat_activity does not show the plaintext');
$bg->query_safe("CALL put_proc(6, '$marker{active}')");
$activity = $node->safe_psql('postgres',
	"SELECT state || ': ' || query FROM pg_stat_activity WHERE pid = $pid");
like($activity, qr/^idle: CALL put_proc\(6, '\[redacted\]'\)/,
	'pg_stat_activity shows the CALL with its argument masked');
$bg->quit;

# control: a plain column, logged as it is
sql_is($node, 's', "INSERT INTO secrets (id, note) VALUES (7, '$control')", 'INSERT 0 1', 'control INSERT');

# A double quote in a procedure argument: pgaudit escapes its parameter
# field twice; escaped literal spellings (E'', U&'').
sql_is($node, 's', "CALL put_proc(8, '$marker{dqcall}')", 'CALL', 'CALL with a double-quoted marker');
sql_is($node, 's', "INSERT INTO secrets (id, pw) VALUES (9, E'Mk31\\'Esc-4')", 'INSERT 0 1',
	'INSERT of an E-string marker with an escaped quote');
sql_is($node, 's', "INSERT INTO secrets (id, pw) VALUES (10, E'$spelled{hex}')", 'INSERT 0 1',
	'INSERT of an E-string marker with a hex escape');
sql_is($node, 's', "INSERT INTO secrets (id, pw) VALUES (11, U&'$spelled{uni}')", 'INSERT 0 1',
	'INSERT of a Unicode-escaped marker');

# COPY FROM: a line that fails before any input function ran is quoted in
# the error context; and ON CONFLICT DO UPDATE SET values in a failing statement.
my ($cret, $cout, $cerr) = ('', '', '');
$cret = $node->psql('s', "COPY secrets (id, pw) FROM stdin;\n12\t$marker{copy}\textra\n\\.\n",
	stdout => \$cout, stderr => \$cerr);
ok($cret != 0 && $cerr =~ /extra data after last expected column/, 'COPY with an extra column fails');
my ($uret, $uout, $uerr) = FcNode::psql_tls($node, 's',
	"INSERT INTO secrets (id, pw) VALUES (2, 'x'::text) ON CONFLICT (id) DO UPDATE SET pw = '$marker{upsert}'::text WHERE 1/0 = 1");
ok($uret != 0 && $uerr =~ /division by zero/, 'failing upsert');

# a data-modifying CTE, and EXECUTE of a statement with an encrypted parameter
sql_is($node, 's', "WITH x AS (INSERT INTO secrets (id, pw) VALUES (20, '$marker{cte}') RETURNING id) SELECT count(*) FROM x",
	'1', 'INSERT in a CTE');
sql_is($node, 's', "PREPARE pe(int, fieldcrypt.encrypted_text) AS INSERT INTO secrets (id, pw) VALUES (\$1, \$2); EXECUTE pe(21, '$marker{exec}')",
	"PREPARE\nINSERT 0 1", 'EXECUTE with an encrypted parameter');
# an empty COPY line: the redacted context is longer than the quoted line
my ($eret, $eout, $eerr) = ('', '', '');
$eret = $node->psql('s', "COPY secrets (id, pw) FROM stdin;\n\n\\.\n", stdout => \$eout, stderr => \$eerr);
ok($eret != 0 && $eerr =~ /invalid input syntax for type integer|missing data/, 'COPY of an empty line fails cleanly');

# Every marker written decrypts (so each did go through the encrypting path);
# the failed INSERT stored nothing.
sql_is($node, 's', 'SELECT string_agg(id || \'=\' || fieldcrypt.decrypt(pw), \'|\' ORDER BY id) FROM secrets',
	"2=$marker{call}|3=$marker{quote}|4=$marker{dquote}|5=$marker{active}|6=$marker{active}|"
	  . "8=$marker{dqcall}|9=$marker{esc}|10=$marker{hex}|11=$marker{uni}|20=$marker{cte}|21=$marker{exec}",
	'every marker written decrypts');

# --- Disk and log ---------------------------------------------------------------------------
$node->safe_psql('s', 'CHECKPOINT');
$node->stop;
my $log = read_bytes($node->logfile);

# The statements did reach the log, masked.
like($log, qr/CONTEXT:  COPY secrets, line 1: \[redacted\]\n/, 'the failing COPY line is logged, masked');
# 'x' is written to pw too: every literal that can reach it is masked, whatever its length
like($log, qr/STATEMENT:  INSERT INTO secrets \(id, pw\) VALUES \(2, '\[redacted\]'::text\) ON CONFLICT \(id\) DO UPDATE SET pw = '\[redacted\]'::text/,
	'the failing upsert has its STATEMENT line, masked');
like($log, qr/\n[^\n]*STATEMENT:  INSERT INTO secrets \(id, pw\) VALUES \(1, '\[redacted\]'\), \(1, '\[redacted\]'\)\n/,
	'a. the failing INSERT has its STATEMENT line, masked');
like($log, qr/ERROR:  duplicate key value violates unique constraint "secrets_pkey"/,
	'a. the error itself is logged');
like($log, qr/AUDIT: SESSION,\d+,\d+,WRITE,INSERT,,,"INSERT INTO secrets \(id, pw\) VALUES \(1, '\[redacted\]'\), \(1, '\[redacted\]'\)",/,
	'a. pgaudit logged the failing INSERT, masked');
like($log, qr/AUDIT: SESSION,\d+,\d+,MISC,CALL,,,"CALL put_proc\(2, '\[redacted\]'\)",/,
	'b. pgaudit logged the CALL, masked');
like($log, qr/AUDIT: SESSION,\d+,\d+,FUNCTION,EXECUTE,FUNCTION,public\.put_proc,"CALL put_proc\(2, '\[redacted\]'\)",/,
	'b. pgaudit logged the procedure execution, masked');
like($log, qr/AUDIT: SESSION,\d+,\d+,WRITE,INSERT,,,"INSERT INTO secrets \(id, pw\) VALUES \(p_id, p_pw\)","2,\[redacted\],"/,
	'b. pgaudit logged the INSERT inside the procedure with its parameter masked');
like($log, qr/duration: [\d.]+ ms  statement: CALL put_proc\(2, '\[redacted\]'\)/,
	'b. the CALL is logged with its duration, masked');
like($log, qr/AUDIT: SESSION,\d+,\d+,WRITE,INSERT,,,"INSERT INTO secrets \(id, pw\) VALUES \(3, '\[redacted\]'\)",/,
	'c. pgaudit logged the INSERT with a single quote, masked');
like($log, qr/duration: [\d.]+ ms  statement: INSERT INTO secrets \(id, pw\) VALUES \(3, '\[redacted\]'\)/,
	'c. the INSERT with a single quote is logged with its duration, masked');
like($log, qr/AUDIT: SESSION,\d+,\d+,WRITE,INSERT,,,"INSERT INTO secrets \(id, pw\) VALUES \(4, '\[redacted\]'\)",/,
	'd. pgaudit logged the INSERT with a double quote, masked');
like($log, qr/duration: [\d.]+ ms  statement: INSERT INTO secrets \(id, pw\) VALUES \(4, '\[redacted\]'\)/,
	'd. the INSERT with a double quote is logged with its duration, masked');
ok(index($log, $control) >= 0, 'control: the plain-column text is in the log');
# the spelling patterns do match what they are meant to
like(q{Mk31''Quote-77 Mk31""Dq-88 Mk31""""Dq-88 Mk31\'Quote-77},
	qr/^${\ marker_re($marker{quote})} ${\ marker_re($marker{dquote})} ${\ marker_re($marker{dquote})} ${\ marker_re($marker{quote})}$/,
	'control: the spelling patterns match doubled, quadrupled and escaped quotes');

my @files;
find({ wanted => sub { push @files, $File::Find::name if -f $_ }, no_chdir => 1 }, $node->data_dir);
ok(@files > 100, 'the data directory was listed (' . scalar(@files) . ' files)');
my %content = map { $_ => read_bytes($_) } @files;
ok((grep { index($content{$_}, $control) >= 0 } @files) > 0, 'control: the plain-column text is on disk');

for my $what (sort keys %marker)
{
	my $re = marker_re($marker{$what});
	my @lines = grep { /$re/ } split /\n/, $log;
	is_deeply(\@lines, [], "the $what marker is not in the server log, in any spelling");
	my @hits = grep { $content{$_} =~ $re } @files;
	is_deeply(\@hits, [], "the $what marker is in no file of the data directory");
}
for my $what (sort keys %spelled)
{
	my @lines = grep { index($_, $spelled{$what}) >= 0 } split /\n/, $log;
	is_deeply(\@lines, [], "the escaped spelling of the $what marker is not in the server log");
}

done_testing();
