# Encrypted columns survive pg_dump / restore into another cluster, in every
# dump format, and stay unreadable there until the original key is restored.
#
# Node A: a database with a table holding encrypted_text / encrypted_bytea
# values of every awkward kind, written through bind parameters and through
# SQL literals, under an administrator key K1.  Its dumps (plain COPY,
# plain --inserts, custom) are restored into three databases of node B,
# which never saw K1.  In each: the rows and the key metadata arrived, the
# database is active but locked (55000), a wrong key is refused (28P01) and
# changes nothing, K1 unlocks every value bit for bit, new writes work.
# Finally envelopes are tampered with on A: a flipped or truncated ciphertext
# is refused at decryption (XX001), malformed envelopes at input (22P02).
use strict;
use warnings;
use utf8;
use DBI;
use DBD::Pg qw(:pg_types);
use Digest::SHA qw(sha256_hex);
use Encode qw(encode_utf8);
use IPC::Run;
use MIME::Base64 qw(encode_base64 decode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;

my $K1     = 'Dump-Key#2024-Orig';     # strong: 4 classes, 18 chars
my $KWRONG = 'Dump-Key#2024-Wrong';    # strong too, so only the KCV refuses it

# Every node: UTF8 so that the unicode plaintexts are stored as such.
my @initdb = (extra => [ '--encoding=UTF8', '--locale=C' ]);

# ---------------------------------------------------------------------------
# helpers

# Run SQL over TLS; die (fail the test file) on error; return stdout.
sub sql
{
	my ($node, $db, $sql) = @_;
	my ($rc, $out, $err) = FcNode::psql_tls($node, $db, encode_utf8("\\set QUIET on\n$sql"));
	die "SQL failed on " . $node->name . "/$db (rc $rc): $err\nSQL: "
	  . substr($sql, 0, 500) . "\n"
	  if $rc != 0;
	return $out;
}

# SQL must fail with SQLSTATE $state and a primary message equal to $msg.
# Returns stderr (verbose: "ERROR:  SQLSTATE: message", DETAIL, HINT ...).
sub expect_error
{
	my ($node, $db, $sql, $state, $msg, $name) = @_;
	my ($rc, $out, $err) =
	  FcNode::psql_tls($node, $db, encode_utf8("\\set VERBOSITY verbose\n$sql"));
	# psql prefixes the ERROR line with "psql:<stdin>:N: " when reading stdin
	ok($rc != 0 && $err =~ /ERROR:  \Q$state\E: \Q$msg\E$/m, $name)
	  or diag("rc=$rc\nstdout: $out\nstderr: $err");
	return $err;
}

# Run a program; return (exit code, stdout, stderr).
sub run_cmd
{
	my @cmd = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

# Canonical form of all plaintexts, ordered by id:
#   id ":" hex(utf8 pw) | "N" ":" hex(blob) | "N"   joined with "\n".
# The same string is built in SQL from fieldcrypt.decrypt().
my $canon_sql = <<'EOQ';
SELECT count(*) || ' ' || encode(sha256(convert_to(coalesce(string_agg(
         id || ':' ||
         coalesce(encode(convert_to(fieldcrypt.decrypt(pw), 'UTF8'), 'hex'), 'N') || ':' ||
         coalesce(encode(fieldcrypt.decrypt(blob), 'hex'), 'N'),
         E'\n' ORDER BY id), ''), 'UTF8')), 'hex')
  FROM t
EOQ

# Key metadata, comparable across clusters.
my $meta_sql = <<'EOQ';
SELECT string_agg(format('%s|%s|%s|%s|%s|%s', generation, encode(salt, 'hex'),
                         iterations, encode(kcv, 'hex'), key_source,
                         extract(epoch FROM set_at)), E'\n' ORDER BY generation)
  FROM fieldcrypt.key_generations
EOQ

# ---------------------------------------------------------------------------
# The plaintexts: id => [pw (perl text or undef), blob (bytes or undef), how]
# how: 'bind' = DBD::Pg parameters (pw untyped -> encrypted_text input,
# blob typed bytea -> assignment cast), 'bindtext' = pw as $3::text
# (assignment cast), 'literal' = SQL literals (input functions).

my %rows;
my $big = join('', map { sprintf('%06d;', $_) } 1 .. 14630);    # 102410 bytes
$rows{1} = [ '', '', 'bind' ];                                 # empty values
$rows{2} = [ "Grüße — 日本語 テキスト \x{1F510} ñ", "\x00\xff\x00", 'bind' ];
$rows{3} = [ $big, "\x00" x 1000 . "\xff" x 1000, 'bind' ];    # 100 kB
$rows{4} = [ undef, undef, 'bind' ];                           # NULLs
$rows{5} = [ q{O'Brien said "hi" \ back\\slash \N \x00 $$}, "'\\", 'bind' ];
$rows{6} = [ "tab\there\nnew line\r\nCRLF\\.\n", "\n\t\r", 'bind' ];
$rows{7} = [ 'fcenc:v1:this-is-plaintext-not-an-envelope', undef, 'bindtext' ];
$rows{8} = [ 'literal-plain-08', "\x00\xff", 'literal' ];      # '\x00ff'
$rows{9} = [ q{lit O'Reilly \ back\slash 09}, "\xde\xad\xbe\xef", 'literal' ];
$rows{10} = [ 'literal ünïcødé 10', '', 'literal' ];
$rows{11} = [ undef, 'blob-only-11', 'bind' ];
$rows{12} = [ 'pw-only-12', undef, 'bind' ];
for my $id (13 .. 50)
{
	$rows{$id} = [
		sprintf('pw-secret-%04d-%s', $id, 'x' x ($id % 7)),
		pack('C*', map { ($id * 31 + $_ * 7) % 256 } 0 .. ($id % 40)),
		'bind'
	];
}
my $nrows = scalar keys %rows;

my $canon = join("\n",
	map {
		my ($pw, $blob) = @{ $rows{$_} };
		"$_:"
		  . (defined $pw ? unpack('H*', encode_utf8($pw)) : 'N') . ':'
		  . (defined $blob ? unpack('H*', $blob) : 'N')
	} sort { $a <=> $b } keys %rows);
my $expected_sum = "$nrows " . sha256_hex($canon);

# Plaintexts distinctive enough to look for in a dump (not '' or a prefix).
my @needles = (
	(map { encode_utf8($rows{$_}[0]) } grep { defined $rows{$_}[0] && length $rows{$_}[0] >= 10 } keys %rows),
	'blob-only-11', unpack('H*', 'blob-only-11'));

# ---------------------------------------------------------------------------
# Node A: the source database

my $node_a = FcNode::new_node('dump_a', @initdb);
$node_a->start;
$node_a->safe_psql('postgres', 'CREATE DATABASE src');
sql($node_a, 'src', 'CREATE EXTENSION fieldcrypt');
sql($node_a, 'src', "SELECT fieldcrypt.set_data_encryption_key('$K1')");
is( sql($node_a, 'src',
		'SELECT key_loaded, key_source, generation FROM fieldcrypt.key_status'),
	't|administrator|2',
	'A: administrator key K1 is the current generation 2');

sql($node_a, 'src', <<'EOS');
CREATE TABLE t (id int PRIMARY KEY, name text,
                pw fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea);
EOS

{
	my $dbh = DBI->connect('dbi:Pg:' . FcNode::tls_connstr($node_a, 'src'),
		undef, undef,
		{ RaiseError => 1, AutoCommit => 1, PrintError => 0, pg_enable_utf8 => 1 });
	my %sth = (
		bind => $dbh->prepare('INSERT INTO t (id, name, pw, blob) VALUES ($1, $2, $3, $4)'),
		bindtext => $dbh->prepare('INSERT INTO t (id, name, pw, blob) VALUES ($1, $2, $3::text, $4)'));
	for my $id (sort { $a <=> $b } keys %rows)
	{
		my ($pw, $blob, $how) = @{ $rows{$id} };
		next if $how eq 'literal';
		my $sth = $sth{$how};
		$sth->bind_param(1, $id);
		$sth->bind_param(2, "name $id");
		$sth->bind_param(3, $pw);
		$sth->bind_param(4, $blob, { pg_type => PG_BYTEA });
		$sth->execute;
	}
	$dbh->disconnect;
}
# SQL literals: encrypted_text_in / encrypted_bytea_in (bytea hex syntax).
sql($node_a, 'src', <<'EOS');
INSERT INTO t VALUES (8, 'name 8', 'literal-plain-08', '\x00ff');
INSERT INTO t VALUES (9, 'name 9', 'lit O''Reilly \ back\slash 09', '\xdeadbeef');
INSERT INTO t VALUES (10, 'name 10', 'literal ünïcødé 10', '\x');
EOS

is(sql($node_a, 'src', $canon_sql), $expected_sum,
	"A: the $nrows rows decrypt to exactly the plaintexts written");
# Write-only: the values are there (count), but a query hands out NULLs.
my $n_pw   = grep { defined $rows{$_}[0] } keys %rows;
my $n_blob = grep { defined $rows{$_}[1] } keys %rows;
is(sql($node_a, 'src', 'SELECT count(pw), count(blob) FROM t'),
	"$n_pw|$n_blob", 'A: the encrypted values are stored');
is(sql($node_a, 'src', "SELECT id, pw, blob FROM t ORDER BY id"),
	join("\n", map { "$_||" } sort { $a <=> $b } keys %rows),
	'A: a query returns NULL for every encrypted value');
my $meta_a = sql($node_a, 'src', $meta_sql);
like($meta_a, qr/^1\|.*\|generated\|.*\n2\|.*\|administrator\|/,
	'A: key_generations holds the generated and the administrator generation');

# ---------------------------------------------------------------------------
# Dumps

my $dumpdir = PostgreSQL::Test::Utils::tempdir;
my $src_conn = $node_a->connstr('src');
my %dump = (
	plain   => [ "$dumpdir/plain.sql",   '-Fp' ],
	inserts => [ "$dumpdir/inserts.sql", '-Fp', '--inserts' ],
	custom  => [ "$dumpdir/custom.dump", '-Fc' ]);
for my $fmt (qw(plain inserts custom))
{
	my ($file, @opts) = @{ $dump{$fmt} };
	my ($rc, $out, $err) = run_cmd('pg_dump', @opts, '-f', $file, '-d', $src_conn);
	is($rc, 0, "pg_dump $fmt") or diag($err);

	# The dump as SQL text (custom: through pg_restore -f -).
	my $text;
	if ($fmt eq 'custom')
	{
		($rc, $text, $err) = run_cmd('pg_restore', '-f', '-', $file);
		die "pg_restore -f - failed: $err" if $rc != 0;
	}
	else
	{
		$text = slurp_file($file);
	}
	my $env_count = () = $text =~ /fcenc:v1:[A-Za-z0-9+\/]+={0,2}/g;
	is($env_count, $n_pw + $n_blob,
		"$fmt dump carries every non-null encrypted value as an envelope");
	my @found = grep { index($text, $_) >= 0 } @needles;
	is_deeply(\@found, [], "$fmt dump contains none of the plaintexts");
	# control for the search above: the plain column is there, in clear
	ok($text =~ /name 13\b/ && $text =~ /name 50\b/,
		"$fmt dump contains the values of the plain column");
}

# ---------------------------------------------------------------------------
# Node B: restore each format into a fresh database

my $node_b = FcNode::new_node('dump_b', @initdb);
$node_b->start;

for my $fmt (qw(plain inserts custom))
{
	my $db = "r_$fmt";
	my ($file) = @{ $dump{$fmt} };
	$node_b->safe_psql('postgres', "CREATE DATABASE $db");
	my ($rc, $out, $err) =
	  $fmt eq 'custom'
	  ? run_cmd('pg_restore', '--exit-on-error', '-d', $node_b->connstr($db), $file)
	  : run_cmd('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
		$node_b->connstr($db), '-f', $file);
	ok($rc == 0 && $err !~ /ERROR/, "$fmt: restore into B/$db succeeds")
	  or diag("rc=$rc\n$err");

	is(sql($node_b, $db, 'SELECT count(*), count(pw), count(blob) FROM t'),
		"$nrows|$n_pw|$n_blob",
		"$fmt: every row and every encrypted value arrived");
	is(sql($node_b, $db, 'SELECT fieldcrypt.is_data_encryption_active()'),
		't', "$fmt: is_data_encryption_active() is true");
	is(sql($node_b, $db, 'SELECT active, key_loaded FROM fieldcrypt.key_status'),
		't|f', "$fmt: key_status: active, key not loaded");
	my $meta_b = sql($node_b, $db, $meta_sql);
	is($meta_b, $meta_a, "$fmt: key_generations arrived identical to A's");

	my $locked = qq{no data encryption key is loaded for database "$db"};
	my $err_dec = expect_error($node_b, $db,
		'SELECT fieldcrypt.decrypt(pw) FROM t WHERE id = 13',
		'55000', $locked, "$fmt: decrypt without the key fails");
	like($err_dec, qr/^HINT:  .*fieldcrypt\.set_data_encryption_key/m,
		"$fmt: the error hints at fieldcrypt.set_data_encryption_key");
	expect_error($node_b, $db,
		"SELECT fieldcrypt.decrypt(blob) FROM t WHERE id = 13",
		'55000', $locked, "$fmt: decrypt(encrypted_bytea) without the key fails");
	expect_error($node_b, $db,
		"INSERT INTO t (id, pw) VALUES (1000, 'new plaintext on B')",
		'55000', $locked, "$fmt: inserting a plaintext without the key fails");
	expect_error($node_b, $db,
		"INSERT INTO t (id, blob) VALUES (1001, '\\x0102')",
		'55000', $locked, "$fmt: inserting a bytea plaintext without the key fails");
	expect_error($node_b, $db,
		'SELECT fieldcrypt.retrieve_data_encryption_key()',
		'55000', 'the data encryption key of this database has not been restored',
		"$fmt: retrieve_data_encryption_key fails before the restore");

	expect_error($node_b, $db,
		"SELECT fieldcrypt.set_data_encryption_key('$KWRONG')",
		'28P01', 'data encryption key does not match this database',
		"$fmt: a wrong key is refused");
	is(sql($node_b, $db, $meta_sql), $meta_b,
		"$fmt: the refused key left key_generations unchanged");
	is(sql($node_b, $db, 'SELECT active, key_loaded FROM fieldcrypt.key_status'),
		't|f', "$fmt: the refused key left the database locked");
	expect_error($node_b, $db,
		'SELECT fieldcrypt.decrypt(pw) FROM t WHERE id = 13',
		'55000', $locked, "$fmt: still no decryption after the refused key");

	sql($node_b, $db, "SELECT fieldcrypt.set_data_encryption_key('$K1')");
	is(sql($node_b, $db, 'SELECT key_loaded, key_source FROM fieldcrypt.key_status'),
		't|administrator', "$fmt: K1 restores the key");
	is(sql($node_b, $db, 'SELECT fieldcrypt.retrieve_data_encryption_key()'),
		$K1, "$fmt: retrieve_data_encryption_key returns K1");
	is(sql($node_b, $db, $canon_sql), $expected_sum,
		"$fmt: every value decrypts to exactly what was written on A");
	is( sql($node_b, $db,
			"SELECT fieldcrypt.decrypt(pw) = 'fcenc:v1:this-is-plaintext-not-an-envelope' FROM t WHERE id = 7"),
		't', "$fmt: a plaintext that looks like an envelope round-trips");

	sql($node_b, $db,
		"INSERT INTO t (id, name, pw, blob) VALUES (51, 'new', 'written on B after restore', '\\xcafe00')");
	is( sql($node_b, $db,
			"SELECT pw, blob, fieldcrypt.decrypt(pw), encode(fieldcrypt.decrypt(blob), 'hex') FROM t WHERE id = 51"),
		'||written on B after restore|cafe00',
		"$fmt: a new value is encrypted, write-only and decrypts");
}

# ---------------------------------------------------------------------------
# Tampering, on A (key loaded)

sql($node_a, 'src', <<'EOS');
CREATE TABLE tamper (id int, pw fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea);
INSERT INTO tamper VALUES (1, 'tamper target: 0123456789 abcdefghijklmnop', '\x000102030405060708090a0b0c0d0e0f');
EOS
my $copy = sql($node_a, 'src', 'COPY tamper TO STDOUT');
my (undef, $env, $benv) = split /\t/, $copy;
like($env, qr{^fcenc:v1:[A-Za-z0-9+/]+={0,2}$}, 'COPY TO gives the text envelope');
my $raw = decode_base64(substr($env, 9));
is(length($raw), 22 + 42 + 16,
	'envelope = 22-byte header + ciphertext as long as the plaintext + 16-byte tag');

# Control: the untouched envelope goes back in and decrypts.
sql($node_a, 'src', "INSERT INTO tamper (id, pw, b) VALUES (2, '$env', '$benv')");
is( sql($node_a, 'src',
		"SELECT fieldcrypt.decrypt(pw), encode(fieldcrypt.decrypt(b), 'hex') FROM tamper WHERE id = 2"),
	'tamper target: 0123456789 abcdefghijklmnop|000102030405060708090a0b0c0d0e0f',
	'an envelope copied back through the input syntax decrypts');

# One base64 character in the middle (inside the ciphertext) flipped.
my $b64 = substr($env, 9);
my $pos = int(length($b64) / 2);
my $c = substr($b64, $pos, 1);
substr($b64, $pos, 1) = ($c eq 'A' ? 'B' : 'A');
my $flipped = "fcenc:v1:$b64";
my $fraw = decode_base64($b64);
ok(length($flipped) == length($env) && length($fraw) == length($raw)
	  && $fraw ne $raw && substr($fraw, 0, 22) eq substr($raw, 0, 22),
	'flipped envelope: same length, valid base64, same header, other ciphertext');
sql($node_a, 'src', "INSERT INTO tamper (id, pw) VALUES (3, '$flipped')");
expect_error($node_a, 'src', 'SELECT fieldcrypt.decrypt(pw) FROM tamper WHERE id = 3',
	'XX001', 'encrypted value could not be authenticated',
	'a flipped ciphertext character is detected at decryption');

# One byte cut off the tag: still long enough to be accepted as an envelope.
my $short = 'fcenc:v1:' . encode_base64(substr($raw, 0, length($raw) - 1), '');
sql($node_a, 'src', "INSERT INTO tamper (id, pw) VALUES (4, '$short')");
expect_error($node_a, 'src', 'SELECT fieldcrypt.decrypt(pw) FROM tamper WHERE id = 4',
	'XX001', 'encrypted value could not be authenticated',
	'an envelope missing its last byte is detected at decryption');

# Shorter than header + tag: refused by the input function.
my $trunc = 'fcenc:v1:' . encode_base64(substr($raw, 0, 37), '');
expect_error($node_a, 'src', "INSERT INTO tamper (id, pw) VALUES (5, '$trunc')",
	'22P02', 'invalid fieldcrypt envelope',
	'a truncated envelope (37 bytes) is refused at input');
expect_error($node_a, 'src', "INSERT INTO tamper (id, pw) VALUES (5, 'fcenc:v1:')",
	'22P02', 'invalid fieldcrypt envelope', 'an empty envelope is refused at input');
expect_error($node_a, 'src',
	"INSERT INTO tamper (id, pw) VALUES (5, 'fcenc:v1:this is *not* base64!')",
	'22P02', 'invalid fieldcrypt envelope', 'a non-base64 envelope is refused at input');
expect_error($node_a, 'src', "INSERT INTO tamper (id, b) VALUES (5, '$env')",
	'22P02', 'invalid fieldcrypt envelope',
	'an encrypted_text envelope is refused by encrypted_bytea');
is(sql($node_a, 'src', 'SELECT count(*) FROM tamper'), '4',
	'refused envelopes stored nothing');

$node_b->stop;
$node_a->stop;
done_testing();
