# No plaintext written to an encrypted column reaches the disk or the server
# log, with pgaudit and statement-duration logging at their most verbose.
#
# Marker plaintexts go into encrypted_text / encrypted_bytea columns through
# every usual route (literals, multi-row INSERT, UPDATE, a statement failing
# at execution, bind parameters untyped / ::text / ::varchar / bytea,
# PREPARE/EXECUTE, COPY FROM STDIN, INSERT ... SELECT, PL/pgSQL).  Each is
# then read back with fieldcrypt.decrypt (so it was really written), the
# cluster is checkpointed and stopped, and every file of the data directory
# and the server log is searched byte for byte: no marker may appear.
# Positive controls (a plain text column, the pgaudit and duration lines,
# "[redacted]") show that the search and the logging really happen.
#
# Also: GRANTs that would let pgaudit's object-audit role see an encrypted
# column are refused (0A000), and a query still returns NULL for it.
use strict;
use warnings;
use DBI;
use DBD::Pg qw(:pg_types);
use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('disklog', preload => 'pgaudit,fieldcrypt',
	extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', <<'EOC');
pgaudit.log = 'all'
pgaudit.log_parameter = on
pgaudit.role = 'auditor'
log_min_duration_statement = 0
log_min_error_statement = error
# log_statement writes a statement's text when it arrives, before parse
# analysis, so before any extension has seen its values: fieldcrypt cannot
# redact it (src/redact.c) and it must stay off.  PostgreSQL::Test::Cluster
# sets "all"; this later line wins.
log_statement = none
# WAL as in production (full-page images and heap records), not "minimal".
wal_level = replica
EOC
$node->start;

my $db = 'app';
$node->safe_psql('postgres', "CREATE DATABASE $db");

# ---------------------------------------------------------------------------
# helpers

sub sql { return safe_tls($node, $db, $_[0]); }

sub expect_error
{
	my ($sql, $state, $msg, $name) = @_;
	my ($rc, $out, $err) =
	  FcNode::psql_tls($node, $db, "\\set VERBOSITY verbose\n$sql");
	# psql prefixes the ERROR line with "psql:<stdin>:N: " when reading stdin
	ok($rc != 0 && $err =~ /ERROR:  \Q$state\E: \Q$msg\E$/m, $name)
	  or diag("rc=$rc\nstdout: $out\nstderr: $err");
	return $err;
}

# ---------------------------------------------------------------------------
# Setup.  The key is the one CREATE EXTENSION generates: no passphrase is
# typed anywhere in this test, only the markers are secrets.

sql(<<'EOS');
CREATE EXTENSION pgaudit;
CREATE EXTENSION fieldcrypt;
CREATE ROLE auditor NOLOGIN;
CREATE ROLE audit_group NOLOGIN;
GRANT audit_group TO auditor;
CREATE ROLE app_user NOLOGIN;
CREATE TABLE secrets (id int PRIMARY KEY, note text,
                      pw fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea);
CREATE FUNCTION put_secret(p_id int, p_pw text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO secrets (id, note, pw) VALUES (p_id, 'plpgsql text', p_pw);
END
$f$;
CREATE FUNCTION put_secret_enc(p_id int, p_pw fieldcrypt.encrypted_text) RETURNS void
LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO secrets (id, note, pw) VALUES (p_id, 'plpgsql encrypted_text', p_pw);
END
$f$;
EOS
is(sql('SELECT active, key_loaded FROM fieldcrypt.key_status'), 't|t',
	'encryption is active with a generated key');

# Markers: none is a substring of another; each at least 4 bytes.
my %marker = (
	101 => 'FCMK_literal_q101',
	102 => 'FCMK_multirow_q102',
	103 => 'FCMK_multirow_q103',
	104 => 'FCMK_update_q104',
	105 => 'FCMK_failed_q105',         # its INSERT fails: never stored
	106 => 'FCMK_bind_untyped_q106',
	107 => 'FCMK_bind_text_q107',
	108 => 'FCMK_bind_varchar_q108',
	109 => 'FCMK_bind_bytea_q109',     # into encrypted_bytea
	110 => 'FCMK_execute_q110',
	111 => 'FCMK_copy_q111',
	112 => 'FCMK_insert_select_q112',
	113 => 'FCMK_plpgsql_literal_q113',
	114 => 'FCMK_plpgsql_bind_q114',
	115 => 'FCMK_plpgsql_enc_q115');
my $control = 'FCPLAIN_control_q199';    # a plain text column: must be found

# literal INSERT
sql("INSERT INTO secrets (id, note, pw) VALUES (101, 'literal', '$marker{101}')");
# multi-row INSERT
sql("INSERT INTO secrets (id, note, pw) VALUES (102, 'multi', '$marker{102}'), "
	  . "(103, 'multi', '$marker{103}')");
# UPDATE
sql("INSERT INTO secrets (id, note) VALUES (104, '$control')");
sql("UPDATE secrets SET pw = '$marker{104}' WHERE id = 104");
# literal INSERT failing at execution (after the value was encrypted)
expect_error("INSERT INTO secrets (id, note, pw) VALUES (101, 'dup', '$marker{105}')",
	'23505', 'duplicate key value violates unique constraint "secrets_pkey"',
	'an INSERT of a marker failing at execution fails');

# bind parameters
{
	my $dbh = DBI->connect('dbi:Pg:' . FcNode::tls_connstr($node, $db),
		undef, undef, { RaiseError => 1, AutoCommit => 1, PrintError => 0 });
	$dbh->do('INSERT INTO secrets (id, note, pw) VALUES ($1, $2, $3)',
		undef, 106, 'bind untyped', $marker{106});
	$dbh->do('INSERT INTO secrets (id, note, pw) VALUES ($1, $2, $3::text)',
		undef, 107, 'bind text', $marker{107});
	$dbh->do('INSERT INTO secrets (id, note, pw) VALUES ($1, $2, $3::varchar)',
		undef, 108, 'bind varchar', $marker{108});
	my $sth = $dbh->prepare('INSERT INTO secrets (id, note, blob) VALUES ($1, $2, $3)');
	$sth->bind_param(1, 109);
	$sth->bind_param(2, 'bind bytea');
	$sth->bind_param(3, $marker{109}, { pg_type => PG_BYTEA });
	$sth->execute;
	# PL/pgSQL function taking the plaintext as a text parameter
	$dbh->do('SELECT put_secret($1, $2)', undef, 114, $marker{114});
	$dbh->disconnect;
}

# PREPARE / EXECUTE with a text parameter
sql("PREPARE put(int, text) AS INSERT INTO secrets (id, note, pw) VALUES (\$1, 'execute', \$2);\n"
	  . "EXECUTE put(110, '$marker{110}');");
# COPY FROM STDIN of plaintext
sql("COPY secrets (id, note, pw) FROM STDIN;\n111\tcopy\t$marker{111}\n\\.\n");
# INSERT ... SELECT: the plaintext comes from a VALUES list, not from a
# table (a plain table holding it would legitimately store it on disk)
sql("INSERT INTO secrets (id, note, pw) SELECT 112, 'insert select', v "
	  . "FROM (VALUES ('$marker{112}')) s(v)");
# PL/pgSQL: text parameter given as a literal; encrypted_text parameter
sql("SELECT put_secret(113, '$marker{113}')");
sql("SELECT put_secret_enc(115, '$marker{115}')");

# Every marker was written (except the failed one) and decrypts.
my %stored = %marker;
delete $stored{105};
is( sql("SELECT id, coalesce(fieldcrypt.decrypt(pw), convert_from(fieldcrypt.decrypt(blob), 'UTF8')) "
		  . 'FROM secrets ORDER BY id'),
	join("\n", map { "$_|$stored{$_}" } sort { $a <=> $b } keys %stored),
	'every marker written decrypts; the failed INSERT stored nothing');
is(sql('SELECT note FROM secrets WHERE id = 104'), $control,
	'the control text is stored in the plain column');

# ---------------------------------------------------------------------------
# pgaudit object-audit role: no privilege covering an encrypted column

my $audit_msg = 'encrypted column "pw" of table "secrets" cannot be audited';
my $err = expect_error('GRANT SELECT ON secrets TO auditor', '0A000', $audit_msg,
	'table-level GRANT to the audit role is refused');
like($err, qr/^DETAIL:  .*pgaudit object-audit role "auditor"/m,
	'the refusal names the pgaudit object-audit role');
expect_error('GRANT SELECT (pw) ON secrets TO auditor', '0A000', $audit_msg,
	'column GRANT of pw to the audit role is refused');
expect_error('GRANT SELECT (id, blob) ON secrets TO auditor', '0A000',
	'encrypted column "blob" of table "secrets" cannot be audited',
	'column GRANT naming the encrypted_bytea column is refused');
expect_error('GRANT SELECT ON secrets TO audit_group', '0A000', $audit_msg,
	'GRANT to a role the audit role belongs to is refused');
expect_error('GRANT SELECT ON secrets TO PUBLIC', '0A000', $audit_msg,
	'GRANT to PUBLIC is refused while pgaudit.role is set');
expect_error('GRANT SELECT ON ALL TABLES IN SCHEMA public TO auditor', '0A000',
	$audit_msg, 'GRANT ON ALL TABLES IN SCHEMA to the audit role is refused');
is( sql("BEGIN; SET LOCAL pgaudit.role = ''; GRANT SELECT ON secrets TO PUBLIC;\n"
		  . "SELECT has_table_privilege('public', 'secrets', 'SELECT'); ROLLBACK;"),
	't', 'the same GRANT to PUBLIC passes when pgaudit.role is unset');
sql('GRANT SELECT (id, note) ON secrets TO auditor');
sql('GRANT SELECT ON secrets TO app_user');
is( sql(q{SELECT has_table_privilege('auditor', 'secrets', 'SELECT'),
                 has_column_privilege('auditor', 'secrets', 'pw', 'SELECT'),
                 has_column_privilege('auditor', 'secrets', 'blob', 'SELECT'),
                 has_column_privilege('auditor', 'secrets', 'id', 'SELECT'),
                 has_column_privilege('auditor', 'secrets', 'note', 'SELECT'),
                 has_table_privilege('public', 'secrets', 'SELECT')}),
	'f|f|f|t|t|f',
	'the audit role holds SELECT on id and note only; PUBLIC nothing');

# A normal user reading everything: encrypted columns come back NULL.
is(sql("SET ROLE app_user; SELECT * FROM secrets WHERE id IN (101, 109) ORDER BY id"),
	"101|literal||\n109|bind bytea||",
	'SELECT * by a normal user returns NULL for the encrypted columns');

# ---------------------------------------------------------------------------
# Disk and log

sql('CHECKPOINT');
$node->stop;

my $datadir = $node->data_dir;
my $log     = slurp_file($node->logfile);

# Every regular file under the data directory, read as bytes:
# needle => [files containing it]
sub grep_datadir
{
	my (@needles) = @_;
	my %hits;
	my $nfiles = 0;
	find(
		{
			no_chdir => 1,
			wanted   => sub {
				return unless -f $File::Find::name;
				open my $fh, '<:raw', $File::Find::name
				  or die "$File::Find::name: $!";
				local $/;
				my $data = <$fh> // '';
				close $fh;
				$nfiles++;
				for my $n (@needles)
				{
					push @{ $hits{$n} }, substr($File::Find::name, length($datadir) + 1)
					  if index($data, $n) >= 0;
				}
			}
		},
		$datadir);
	return ($nfiles, \%hits);
}

my $bytea_hex = unpack('H*', $marker{109});    # how a bytea prints: \x4643...
my @needles = (values %marker, $bytea_hex, $control);
my ($nfiles, $hits) = grep_datadir(@needles);
ok($nfiles > 100, "searched the whole data directory ($nfiles files)");
ok(@{ $hits->{$control} // [] } > 0,
	'control: the plain-column text is found on disk ('
	  . join(', ', @{ $hits->{$control} // [] }) . ')');
ok(index($log, $control) >= 0, 'control: the plain-column text is found in the log');

for my $id (sort { $a <=> $b } keys %marker)
{
	my $m = $marker{$id};
	is_deeply($hits->{$m} // [], [], "marker $m is in no file of the data directory");
	my @lines = grep { index($_, $m) >= 0 } split /\n/, $log;
	is_deeply(\@lines, [], "marker $m is not in the server log");
}
is_deeply($hits->{$bytea_hex} // [], [], 'bytea marker in hex is not on disk');
ok(index($log, $bytea_hex) < 0, 'bytea marker in hex is not in the server log');

# The log did record these statements (so the search above is meaningful).
my %logged = (
	'literal INSERT'        => qr/INSERT INTO secrets \(id, note, pw\) VALUES \(101, 'literal', /,
	'multi-row INSERT'      => qr/VALUES \(102, 'multi', .*\(103, 'multi', /,
	'UPDATE'                => qr/UPDATE secrets SET pw = .* WHERE id = 104/,
	'bind untyped'          => qr/INSERT INTO secrets \(id, note, pw\) VALUES \(\$1, \$2, \$3\)/,
	'bind ::text'           => qr/VALUES \(\$1, \$2, \$3::text\)/,
	'bind ::varchar'        => qr/VALUES \(\$1, \$2, \$3::varchar\)/,
	'bind bytea'            => qr/INSERT INTO secrets \(id, note, blob\) VALUES \(\$1, \$2, \$3\)/,
	'EXECUTE'               => qr/EXECUTE put\(\[redacted\], '\[redacted\]'\)/,   # parameters masked
	'COPY FROM STDIN'       => qr/COPY secrets \(id, note, pw\) FROM STDIN/,
	'INSERT ... SELECT'     => qr/SELECT 112, 'insert select', v FROM \(VALUES /,
	'PL/pgSQL literal'      => qr/SELECT put_secret\(113, /,
	'PL/pgSQL bind'         => qr/SELECT put_secret\(\$1, \$2\)/,
	'PL/pgSQL encrypted'    => qr/SELECT put_secret_enc\(115, /);
for my $what (sort keys %logged)
{
	my $re = $logged{$what};
	ok($log =~ /AUDIT: SESSION,\d+,\d+,[A-Z]+,[A-Z ]+,[^\n]*$re/,
		"pgaudit logged the $what statement");
	ok($log =~ /duration: [\d.]+ ms  (?:statement|execute [^:\n]*): [^\n]*$re/,
		"log_min_duration_statement logged the $what statement");
}
ok($log =~ /AUDIT: SESSION,[^\n]*VALUES \(101, 'dup', /,
	'pgaudit logged the failing INSERT');
ok($log =~ /ERROR:  duplicate key value violates unique constraint "secrets_pkey"/,
	'the failing INSERT is logged as an ERROR');
ok($log =~ /AUDIT: OBJECT,\d+,\d+,READ,SELECT,TABLE,public\.secrets,/,
	'pgaudit object-audited the read of secrets through the audit role');
ok($log =~ /duration: [\d.]+ ms  statement: INSERT INTO secrets \(id, note, pw\) VALUES \(101, 'literal', '\[redacted\]'\)/,
	'the literal INSERT is logged with its value [redacted]');
ok($log =~ /DETAIL:  parameters: \[redacted\]/,
	'bind parameters of writes to encrypted columns are logged as [redacted]');

done_testing();
