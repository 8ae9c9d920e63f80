# Literal masking (issue 10, part 5): in a statement that writes to an
# encrypted column, no constant that can reach it appears in the server log
# (STATEMENT lines, log_min_duration_statement, pgaudit SESSION lines,
# auto_explain's Query Text and Output), in a parallel worker's lines, or in
# pg_stat_activity read by a pg_read_all_stats role, whatever its type or the
# expression around it.  A statement failing in parse analysis is logged with
# every literal masked.  The client always gets PostgreSQL's own message: a
# rejected passphrase never rewrites a later message, and an error CONTEXT
# quoting a plaintext reaches the client as it is while its log copy is masked.
#
# Not covered (README): log_statement, which writes the text as it arrives.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('redact_literals', preload => 'pgaudit,fieldcrypt');
$node->append_conf('postgresql.conf', <<'EOC');
log_statement = none
log_min_duration_statement = 0
log_min_error_statement = error
pgaudit.log = 'all'
pgaudit.log_parameter = on
session_preload_libraries = 'auto_explain'
auto_explain.log_min_duration = 0
auto_explain.log_analyze = on
auto_explain.log_verbose = on
auto_explain.log_nested_statements = on
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE s');
$node->safe_psql('s', <<'EOS');
CREATE EXTENSION pgaudit;
CREATE EXTENSION fieldcrypt;
CREATE SCHEMA app;
CREATE TABLE app.mailbox (id int PRIMARY KEY, address text, password fieldcrypt.encrypted_text);
CREATE ROLE stats_reader LOGIN IN ROLE pg_read_all_stats;
EOS

my @markers;
sub run_ok
{
	my ($sql, $name) = @_;
	my ($rc, $out, $err) = FcNode::psql_tls($node, 's', $sql);
	is($rc, 0, $name) or diag($err);
	return;
}

# --- the writes of the issue, each with its own marker --------------------------------
push @markers, qw(Mk120-Arr-A Mk120-Json-J Mk120-Unnest-U Mk120-Upd-V Mk120-Typo-T Mk120-Fail-F
  Mk120-Cte-C Mk120-Num-1234567);
run_ok(q{INSERT INTO app.mailbox(id, address, password) VALUES (1, NULL, ('{Mk120-Arr-A}'::text[])[1])},
	'INSERT of an array element');
run_ok(q{INSERT INTO app.mailbox(id, address, password) VALUES (2, NULL, '{"p":"Mk120-Json-J"}'::jsonb->>'p')},
	'INSERT of a jsonb field');
run_ok(q{INSERT INTO app.mailbox(id, address, password) SELECT 3, NULL, x FROM unnest(ARRAY['Mk120-Unnest-U']) x},
	'INSERT ... SELECT from unnest');
run_ok(q{UPDATE app.mailbox SET password = ('{Mk120-Upd-V}'::text[])[1] WHERE id = 1}, 'UPDATE of an array element');
run_ok(q{WITH c(v) AS (SELECT 'Mk120-Cte' || '-C') INSERT INTO app.mailbox(id, password) SELECT 4, v FROM c},
	'INSERT from a CTE');
run_ok(q{INSERT INTO app.mailbox(id, password) VALUES (5, 1234567::text || '')}, 'INSERT of a number');
sql_fails($node, 's', q{INSERT INTO app.mailbox(adress, password) VALUES ('a', 'Mk120-Typo-T')},
	'42703', 'column "adress" of relation "mailbox" does not exist', 'a misspelt column fails in parse analysis');
sql_fails($node, 's', q{INSERT INTO app.mailbox(id, address, password) VALUES (6, 'Mk120-Plain-Addr', ('{Mk120-Fail-F}'::text[])[1]), (7, 'x', (1/0)::text)},
	'22012', 'division by zero', 'a failing write');
is($node->safe_psql('s', 'SELECT string_agg(id || fieldcrypt.decrypt(password), \',\' ORDER BY id) FROM app.mailbox'),
	'1Mk120-Upd-V,2Mk120-Json-J,3Mk120-Unnest-U,4Mk120-Cte-C,51234567', 'every value was written');

# --- a parallel worker failing in a CREATE TABLE AS with an encrypted constant ---------
push @markers, 'Mk120-Par-P';
sql_fails($node, 's', q{SET force_parallel_mode = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
CREATE TABLE app.ctas AS SELECT g, 'Mk120-Par-P'::fieldcrypt.encrypted_text AS pw, 1 / (g - g) AS z
  FROM generate_series(1, 3) g},
	'22012', 'division by zero', 'a parallel CREATE TABLE AS fails in a worker');

# --- pg_stat_activity, read by a pg_read_all_stats role while the write runs -----------
# (read while it sleeps: before its parse analysis, for well under a millisecond, the
# backend shows the text as received; docs/security.md)
push @markers, 'Mk120-Act-S';
my $bg = $node->background_psql('s', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/go/, q{\echo go
INSERT INTO app.mailbox(id, password) SELECT 8, ('{Mk120-Act-S}'::text[])[1] FROM pg_sleep(3);
});
my $activity = '';
for (1 .. 100)
{
	$activity = $node->safe_psql('s',
		"SET ROLE stats_reader; SELECT state || ': ' || query FROM pg_stat_activity WHERE pid = $pid AND wait_event = 'PgSleep'");
	last if $activity =~ /^active: INSERT/;
	usleep(50_000);
}
like($activity, qr/^active: INSERT INTO app\.mailbox\(id, password\) SELECT 8, \('\[redacted\]'::text\[\]\)\[\[redacted\]\] FROM pg_sleep\(3\)/,
	'pg_stat_activity shows the running write with its literals masked');
$bg->quit;

# --- the client gets PostgreSQL's messages -----------------------------------------------
sql_fails($node, 's', q{SELECT fieldcrypt.set_data_encryption_key('password')}, '22023',
	'data encryption key is too weak', 'a weak passphrase is refused');
my ($rc, $out, $err) = FcNode::psql_tls($node, 's',
	"SELECT fieldcrypt.set_data_encryption_key('password');\n");
sql_fails($node, 's', "SELECT 1;\nCREATE INDEX ON app.mailbox (password)", '0A000',
	'encrypted column "password" of table "mailbox" cannot be indexed',
	'a later error names the column, not [redacted]');
push @markers, 'Mk120-Ctx-D';
($rc, $out, $err) = FcNode::psql_tls($node, 's',
	q{DO $$ BEGIN INSERT INTO app.mailbox(id, password) VALUES (1, 'Mk120-Ctx-D'); END $$});
like($err, qr/CONTEXT:  SQL statement "INSERT INTO app\.mailbox\(id, password\) VALUES \(1, 'Mk120-Ctx-D'\)"/,
	'the client gets the CONTEXT line of its own statement as it is');

# A literal of a statement nested in a DO block, spelt with an escape (its value
# Mk120-Esc-E is what the secret ring knows): neither spelling reaches the log,
# and the STATEMENT line of the failing DO block masks the whole body.
push @markers, 'Mk120-Esc-\\x45', 'Mk120-Esc-E';
($rc, $out, $err) = FcNode::psql_tls($node, 's',
	q{DO $$ BEGIN INSERT INTO app.mailbox(id, password) VALUES (30, E'Mk120-Esc-\\x45'); PERFORM 1/0; END $$});
like($err, qr/division by zero/, 'the DO block with a nested escaped literal fails after its INSERT');

# Function bodies: a SQL-language body is analyzed when CREATE FUNCTION validates
# it, and its nested INSERT's literal lies in the CREATE statement's text only as
# part of the body's literal: dollar-quoted (the body is there as it is), quoted
# (quotes doubled), or an E'' string whose own escape spells the secret.  Each
# escape-spelt secret's value is what the ring knows; the log must hold neither
# spelling.  A later statement of each body fails validation, so the CREATE
# statement is logged as STATEMENT (and as a duration line when it succeeds).
# BEGIN ATOMIC bodies are analyzed by CREATE FUNCTION without the analysis hook:
# all their literals are masked.
push @markers, 'Mk120-FnDollar-\\x46', 'Mk120-FnDollar-F', 'Mk120-FnQuote-\\x47', 'Mk120-FnQuote-G',
  'Mk120-FnOuterE-\\x48', 'Mk120-FnOuterE-H', 'Mk120-Atomic-\\x49', 'Mk120-Atomic-I',
  'Mk120-FnOk-\\x4A', 'Mk120-FnOk-J', 'Mk120-AtomicOk-K', 'Mk120-FnUni-';
my @fn_fail = (
	[ 'dollar-quoted body',
	  q{CREATE FUNCTION app.f_dollar() RETURNS void LANGUAGE sql AS $$ INSERT INTO app.mailbox(id, password) VALUES (40, E'Mk120-FnDollar-\\x46'); SELECT * FROM app.no_such_table $$} ],
	[ 'quoted body',
	  q{CREATE FUNCTION app.f_quote() RETURNS void LANGUAGE sql AS 'INSERT INTO app.mailbox(id, password) VALUES (41, E''Mk120-FnQuote-\\x47''); SELECT * FROM app.no_such_table'} ],
	[ 'E-string body',
	  q{CREATE PROCEDURE app.p_outer() LANGUAGE sql AS E'INSERT INTO app.mailbox(id, password) VALUES (42, ''Mk120-FnOuterE-\\x48''); SELECT * FROM app.no_such_table'} ],
	[ 'U&-string body',
	  q{CREATE FUNCTION app.f_uni() RETURNS void LANGUAGE sql AS U&'INSERT INTO app.mailbox(id, password) VALUES (46, E''Mk120-FnUni-\\\\x4D\0021''); SELECT * FROM app.no_such_table'} ],
	[ 'BEGIN ATOMIC body',
	  q{CREATE FUNCTION app.f_atomic() RETURNS void LANGUAGE sql BEGIN ATOMIC INSERT INTO app.mailbox(id, password) VALUES (43, E'Mk120-Atomic-\\x49'); SELECT * FROM app.no_such_table; END} ]);
for my $c (@fn_fail)
{
	sql_fails($node, 's', $c->[1], '42P01', 'relation "app.no_such_table" does not exist',
		"CREATE with a $c->[0] writing an escape-spelt secret fails validation");
}
run_ok(q{CREATE FUNCTION app.f_ok() RETURNS void LANGUAGE sql AS 'INSERT INTO app.mailbox(id, password) VALUES (44, E''Mk120-FnOk-\\x4A'')'},
	'CREATE FUNCTION with a quoted body writing an escape-spelt secret');
run_ok(q{CREATE FUNCTION app.f_atomic_ok() RETURNS void LANGUAGE sql BEGIN ATOMIC INSERT INTO app.mailbox(id, password) VALUES (45, 'Mk120-AtomicOk-K'); END},
	'CREATE FUNCTION with a BEGIN ATOMIC body writing a secret');
run_ok(q{CREATE FUNCTION app.f_plain() RETURNS int LANGUAGE sql AS 'SELECT length(''Mk120-FnPlain-P'')'},
	'control: CREATE FUNCTION whose body writes no encrypted column');

# The same with standard_conforming_strings off: a plain quoted body then decodes
# backslash escapes too.
push @markers, 'Mk120-Scs-';
($rc, $out, $err) = FcNode::psql_tls($node, 's', <<'EOS');
SET standard_conforming_strings = off;
SET escape_string_warning = off;
CREATE FUNCTION app.f_scs() RETURNS void LANGUAGE sql AS 'INSERT INTO app.mailbox(id, password) VALUES (47, E''Mk120-Scs-\\x57''); SELECT * FROM app.no_such_table';
EOS
like($err, qr/relation "app\.no_such_table" does not exist/,
	'with standard_conforming_strings off, the quoted body writing an escape-spelt secret fails validation');

# EXECUTE of a statement prepared by PREPARE analyzes its parameters itself, without
# the analysis hook.  When the prepared statement writes to an encrypted column, every
# constant of the parameters is masked (EXPLAIN ANALYZE EXECUTE too); a prepared
# statement that writes none keeps its EXECUTE visible.
push @markers, 'Mk120-Exec-\\x4E', 'Mk120-Exec-N', 'Mk120-ExecOk-O', 'Mk120-ExecExpl-';
($rc, $out, $err) = FcNode::psql_tls($node, 's', <<'EOS');
PREPARE wr(int, text) AS INSERT INTO app.mailbox(id, password) VALUES ($1, $2);
EXECUTE wr(50, 'Mk120-ExecOk-O');
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE wr(51, E'Mk120-ExecExpl-\x50');
PREPARE rd(int, text) AS SELECT $1, $2;
EXECUTE rd(1, 'Mk120-ExecPlain-Q');
EXECUTE wr(1/0, E'Mk120-Exec-\x4E');
EOS
like($err, qr/division by zero/, 'the EXECUTE of a prepared write fails evaluating its parameters');

# DDL refused because it would customize an encrypted column: its literals may be
# plaintexts (a default, a constraint's constant, a USING expression), so every
# literal of the refused statement is masked in the log.
push @markers, 'Mk120-Def-\\x52', 'Mk120-Def2-S', 'Mk120-Chk-T', 'Mk120-Dom-U', 'Mk120-Using-V';
sql_fails($node, 's', q{ALTER TABLE app.mailbox ADD COLUMN p2 fieldcrypt.encrypted_text DEFAULT E'Mk120-Def-\x52'},
	'0A000', 'encrypted column "p2" of table "mailbox" cannot be given a default',
	'ADD COLUMN with a default on an encrypted column is refused');
sql_fails($node, 's', q{CREATE TABLE app.t_def (id int, p fieldcrypt.encrypted_text DEFAULT 'Mk120-Def2-S')},
	'0A000', 'encrypted column "p" of table "t_def" cannot be given a default',
	'CREATE TABLE with a default on an encrypted column is refused');
sql_fails($node, 's', q{ALTER TABLE app.mailbox ADD CONSTRAINT c_chk CHECK (password IS DISTINCT FROM 'Mk120-Chk-T')},
	'0A000', 'encrypted column "password" of table "mailbox" cannot be used in a CHECK constraint',
	'a CHECK constraint on an encrypted column is refused');
sql_fails($node, 's', q{CREATE DOMAIN app.d_enc AS fieldcrypt.encrypted_text DEFAULT 'Mk120-Dom-U'},
	'0A000', 'a domain over an encrypted type cannot have a default',
	'a domain default over an encrypted type is refused');
sql_fails($node, 's', q{ALTER TABLE app.mailbox ALTER COLUMN address TYPE fieldcrypt.encrypted_text USING 'Mk120-Using-V'},
	'0A000', 'cannot change the type of column "address" of table "mailbox" to an encrypted type',
	'changing a column to an encrypted type is refused');

# The same refusal of a statement run by EXECUTE in PL/pgSQL: the log copy of its
# CONTEXT line, which quotes the nested statement, is masked too.
push @markers, 'Mk120-NestDef-W';
($rc, $out, $err) = FcNode::psql_tls($node, 's',
	q{DO $$ BEGIN EXECUTE 'ALTER TABLE app.mailbox ADD COLUMN p3 fieldcrypt.encrypted_text DEFAULT ''Mk120-NestDef-W'''; END $$});
like($err, qr/encrypted column "p3" of table "mailbox" cannot be given a default/,
	'a nested ADD COLUMN with a default on an encrypted column is refused');

# control: a marker nobody protects reaches the log
run_ok(q{SELECT 'Mk120-Control-Z'}, 'control statement');

$node->stop;
my $log = slurp_file($node->logfile);
like($log, qr/Mk120-Control-Z/, 'control: an unprotected marker is found in the log');
like($log, qr/Mk120-Plain-Addr/, 'control: a literal that goes to a plain column stays visible');
like($log, qr/duration: [\d.]+ ms  statement: INSERT INTO app\.mailbox\(id, address, password\) VALUES \(1, NULL, \('\[redacted\]'::text\[\]\)\[\[redacted\]\]\)/,
	'the duration line shows the array write masked');
like($log, qr/AUDIT: SESSION,\d+,\d+,WRITE,INSERT,,,"INSERT INTO app\.mailbox\(id, address, password\) VALUES \(2, NULL, '\[redacted\]'::jsonb->>'\[redacted\]'\)"/,
	'pgaudit logged the jsonb write masked');
like($log, qr/Query Text: INSERT INTO app\.mailbox\(id, address, password\) SELECT 3, NULL, x FROM unnest\(ARRAY\['\[redacted\]'\]\) x/,
	'auto_explain logged the unnest write masked');
like($log, qr/STATEMENT:  INSERT INTO app\.mailbox\(adress, password\) VALUES \('\[redacted\]', '\[redacted\]'\)/,
	'the statement failing in parse analysis is logged with its literals masked');
like($log, qr/STATEMENT:  INSERT INTO app\.mailbox\(id, address, password\) VALUES \(6, 'Mk120-Plain-Addr', \('\[redacted\]'::text\[\]\)\[\[redacted\]\]\), \(7, 'x', \(\[redacted\]\/\[redacted\]\)::text\)/,
	'the failing write is logged with the literals that reach password masked');
like($log, qr/CONTEXT:  parallel worker/, 'the division by zero did happen in a parallel worker');
my @ctas = $log =~ /STATEMENT:  CREATE TABLE app\.ctas AS SELECT g, '\[redacted\]'::fieldcrypt\.encrypted_text AS pw/g;
cmp_ok(scalar(@ctas), '>=', 2, 'the worker and the leader both logged the statement, masked');
like($log, qr/ERROR:  0A000: encrypted column "password" of table "mailbox" cannot be indexed|ERROR:  encrypted column "password" of table "mailbox" cannot be indexed/,
	'the server log names the column too');
unlike($log, qr/encrypted column "\[redacted\]"/, 'no identifier is rewritten in the log');
like($log, qr/CONTEXT:  SQL statement "INSERT INTO app\.mailbox\(id, password\) VALUES \(1, '\[redacted\]'\)"/,
	'the log copy of the CONTEXT line is masked');
like($log, qr/STATEMENT:  CREATE FUNCTION app\.f_quote\(\) RETURNS void LANGUAGE sql AS '\[redacted\]'$/m,
	'the failing CREATE FUNCTION with a quoted body is logged with the body masked');
like($log, qr/STATEMENT:  CREATE PROCEDURE app\.p_outer\(\) LANGUAGE sql AS '\[redacted\]'$/m,
	'the failing CREATE PROCEDURE with an E-string body is logged with the body masked');
like($log, qr/STATEMENT:  CREATE FUNCTION app\.f_uni\(\) RETURNS void LANGUAGE sql AS '\[redacted\]'$/m,
	'the failing CREATE FUNCTION with a U&-string body is logged with the body masked');
like($log, qr/STATEMENT:  CREATE FUNCTION app\.f_dollar\(\) RETURNS void LANGUAGE sql AS '\[redacted\]'$/m,
	'the failing CREATE FUNCTION with a dollar-quoted body is logged with the body masked');
like($log, qr/STATEMENT:  CREATE FUNCTION app\.f_atomic\(\) RETURNS void LANGUAGE sql BEGIN ATOMIC INSERT INTO app\.mailbox\(id, password\) VALUES \(\[redacted\], '\[redacted\]'\); SELECT \* FROM app\.no_such_table; END$/m,
	'the failing BEGIN ATOMIC function is logged with every literal masked');
like($log, qr/duration: [\d.]+ ms  statement: CREATE FUNCTION app\.f_ok\(\) RETURNS void LANGUAGE sql AS '\[redacted\]'$/m,
	'the duration line of a CREATE FUNCTION whose body writes a secret masks the body');
like($log, qr/Mk120-FnPlain-P/, 'control: a function body that writes no encrypted column stays visible');
like($log, qr/STATEMENT:  CREATE FUNCTION app\.f_scs\(\) RETURNS void LANGUAGE sql AS '\[redacted\]';?$/m,
	'with standard_conforming_strings off, the failing CREATE FUNCTION is logged with the body masked');
like($log, qr/STATEMENT:  EXECUTE wr\(\[redacted\]\/\[redacted\], '\[redacted\]'\);?$/m,
	'the failing EXECUTE of a prepared write is logged with its parameters masked');
like($log, qr/duration: [\d.]+ ms  statement: EXECUTE wr\(\[redacted\], '\[redacted\]'\)/,
	'the duration line of an EXECUTE of a prepared write masks its parameters');
like($log, qr/duration: [\d.]+ ms  statement: EXPLAIN \(ANALYZE, COSTS OFF\) EXECUTE wr\(\[redacted\], '\[redacted\]'\)/,
	'the duration line of EXPLAIN ANALYZE EXECUTE of a prepared write masks its parameters');
like($log, qr/EXECUTE rd\(1, 'Mk120-ExecPlain-Q'\)/,
	'control: the EXECUTE of a prepared statement that writes no encrypted column stays visible');
like($log, qr/STATEMENT:  ALTER TABLE app\.mailbox ADD COLUMN p2 fieldcrypt\.encrypted_text DEFAULT '\[redacted\]'$/m,
	'the refused default is logged masked');
like($log, qr/CONTEXT:  SQL statement "ALTER TABLE app\.mailbox ADD COLUMN p3 fieldcrypt\.encrypted_text DEFAULT '\[redacted\]'"/,
	'the log copy of the nested refused statement\'s CONTEXT line is masked');
my @do_lines = grep { /STATEMENT:  DO / } split /\n/, $log;
is_deeply([grep { !/STATEMENT:  DO '\[redacted\]'$/ } @do_lines], [],
	'every failing DO block, the one with a nested escaped literal too, is logged with its body masked');
cmp_ok(scalar(@do_lines), '>=', 2, 'both failing DO blocks were logged');
for my $m (@markers)
{
	my @lines = grep { index($_, $m) >= 0 } split /\n/, $log;
	is_deeply(\@lines, [], "marker $m is not in the server log");
	unlike($activity, qr/\Q$m\E/, "marker $m is not in the pg_stat_activity capture");
}

done_testing();
