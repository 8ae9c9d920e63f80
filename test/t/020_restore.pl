# Export and import: pg_dump of a database on cluster A, restored on cluster B that
# never saw its key. The key metadata travels with the dump; the key does not. The
# restored database is active but locked until an administrator supplies the key
# that was current on A; a wrong key changes nothing.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $K1 = 'Export-Key-K1-9d2c!';
my $WRONG = 'Wrong-But-Strong-9!';
my $META = "SELECT md5(string_agg(g::text, ',' ORDER BY generation)) FROM fieldcrypt.key_generations g";
my $STATUS = 'SELECT active, key_loaded, generation, key_source, generations_kept, keyring FROM fieldcrypt.key_status';
my $dir = PostgreSQL::Test::Utils::tempdir;

my $src = FcNode::new_node('export');
$src->start;
my $dst = FcNode::new_node('import');
$dst->start;

# --- Cluster A: activation, a key change, some ordinary data, dumps ------------
$src->safe_psql('postgres', 'CREATE DATABASE src');
$src->safe_psql('src', 'CREATE EXTENSION fieldcrypt; CREATE TABLE plain_data AS SELECT g AS id FROM generate_series(1, 5) g');
sql_is($src, 'src', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'A: set K1');
sql_is($src, 'src', $STATUS, 't|t|2|administrator|2|loaded', 'A: generation 2 is current');
my $meta_a = $src->safe_psql('src', $META);

command_ok([ 'pg_dump', '-d', $src->connstr('src'), '-f', "$dir/src.sql" ], 'A: plain pg_dump');
command_ok([ 'pg_dump', '-Fc', '-d', $src->connstr('src'), '-f', "$dir/src.dump" ], 'A: custom-format pg_dump');
command_ok([ 'pg_dump', '--inserts', '-d', $src->connstr('src'), '-f', "$dir/src_inserts.sql" ],
	'A: plain pg_dump with one INSERT per row');
my $dump = read_bytes("$dir/src.sql");
like($dump, qr/^COPY fieldcrypt\.key_generations \(generation, salt, iterations, kcv, key_source, set_at\) FROM stdin;$/m,
	'the plain dump carries the key metadata');
unlike($dump, qr/\Q$K1\E/, 'the plain dump does not carry the key');
unlike(read_bytes("$dir/src.dump"), qr/\Q$K1\E/, 'the custom dump does not carry the key');

# Checks of a database restored on B, before and after its key is restored.
sub check_restored
{
	my ($db, $what) = @_;
	my $ring_before = read_bytes($dst->data_dir . '/pg_fieldcrypt/keyring');
	is($dst->safe_psql($db, 'SELECT count(*) FROM plain_data'), '5', "$what: the data is there");
	is($dst->safe_psql($db, $META), $meta_a, "$what: the key metadata is A's");
	sql_is($dst, $db, 'SELECT fieldcrypt.is_data_encryption_active()', 't', "$what: encryption is active");
	sql_is($dst, $db, $STATUS, 't|f|2|administrator|0|loaded', "$what: the key is not loaded");
	sql_fails($dst, $db, 'SELECT fieldcrypt.retrieve_data_encryption_key()', '55000',
		'the data encryption key of this database has not been restored', "$what: retrieve is refused");

	sql_fails($dst, $db, "SELECT fieldcrypt.set_data_encryption_key('$WRONG')", '28P01',
		'data encryption key does not match this database', "$what: a wrong key is refused");
	is($dst->safe_psql($db, $META), $meta_a, "$what: the wrong key changed no metadata");
	sql_is($dst, $db, $STATUS, 't|f|2|administrator|0|loaded', "$what: the wrong key loaded nothing");
	is(read_bytes($dst->data_dir . '/pg_fieldcrypt/keyring'), $ring_before,
		"$what: the wrong key did not touch the keyring");

	sql_is($dst, $db, "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', "$what: K1 is accepted");
	sql_is($dst, $db, 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K1, "$what: retrieve returns K1");
	sql_is($dst, $db, $STATUS, 't|t|2|administrator|1|loaded', "$what: the key is loaded");
	is($dst->safe_psql($db, $META), $meta_a, "$what: restoring the key adds no metadata");
	return;
}

# --- Plain dump restored with psql ---------------------------------------------
$dst->safe_psql('postgres', 'CREATE DATABASE dst_plain');
my ($ret, $out, $err) = FcNode::psql_connstr(FcNode::tls_connstr($dst, 'dst_plain'), read_bytes("$dir/src.sql"));
is($ret, 0, 'B: psql restores the plain dump without error') or diag($err);
check_restored('dst_plain', 'plain dump');

# --- Plain dump with INSERTs (one transaction per metadata row) ---------------
$dst->safe_psql('postgres', 'CREATE DATABASE dst_inserts');
($ret, $out, $err) = FcNode::psql_connstr(FcNode::tls_connstr($dst, 'dst_inserts'), read_bytes("$dir/src_inserts.sql"));
is($ret, 0, 'B: psql restores the dump with INSERTs without error') or diag($err);
check_restored('dst_inserts', 'dump with INSERTs');

# --- Custom dump restored with pg_restore ----------------------------------------
$dst->safe_psql('postgres', 'CREATE DATABASE dst_custom');
command_ok([ 'pg_restore', '--exit-on-error', '-d', $dst->connstr('dst_custom'), "$dir/src.dump" ],
	'B: pg_restore restores the custom dump without error');
check_restored('dst_custom', 'custom dump');

# --- The restored key survives a restart of B ----------------------------------------
$dst->restart;
sql_is($dst, 'dst_plain', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K1, 'B restarted: dst_plain keeps K1');
sql_is($dst, 'dst_custom', $STATUS, 't|t|2|administrator|1|loaded', 'B restarted: dst_custom keeps its key');

# --- A restored database is an ordinary one afterwards -------------------------------
sql_is($dst, 'dst_plain', "SELECT fieldcrypt.set_data_encryption_key('Import-Key-K2-1!')", '', 'B: a new key after the restore');
sql_is($dst, 'dst_plain', $STATUS, 't|t|3|administrator|2|loaded', 'B: it is generation 3');
sql_is($src, 'src', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K1, 'A still has K1');

# --- Restoring in a single transaction (pg_restore --single-transaction) ----------
$dst->safe_psql('postgres', 'CREATE DATABASE dst_single');
command_ok([ 'pg_restore', '--exit-on-error', '--single-transaction', '-d', $dst->connstr('dst_single'), "$dir/src.dump" ],
	'B: pg_restore --single-transaction restores the custom dump without error');
sql_is($dst, 'dst_single', $STATUS, 't|f|2|administrator|0|loaded', 'single transaction: the key is not loaded');
sql_is($dst, 'dst_single', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'single transaction: K1 is accepted');

$src->stop;
$dst->stop;
done_testing();
