# pg_restore against a database whose data encryption is active, with the real pg_dump and
# pg_restore.
# --data-only into a database with another key: the COPY of the encrypted column is refused
# (55000, naming the generation, hint to restore the whole dump into a new database) and the
# table stays empty; it used to load envelopes that failed at every read (XX001).  The same
# --data-only restore into the database the values were written in, and into a full copy that
# was given the original key, loads and decrypts every value.  An INSERT of a foreign envelope
# is still taken as is (decryption authenticates it).
# --clean (--if-exists) into the origin: refused at its first DROP, before anything is dropped,
# with a hint naming the way out (a new database): values and tables before = after, also
# without --single-transaction; restoring into a new database works.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my ($K1, $K2) = ('Restore-Key-One-2026!', 'Restore-Key-Two-2026!');
my $node = FcNode::new_node('restore');
$node->start;
sub sql { my ($db, $q) = @_; return safe_tls($node, $db, $q); }
sub run_cmd
{
	my @cmd = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}
sub dsn { my ($db) = @_; return FcNode::tls_connstr($node, $db); }
delete $ENV{PGAPPNAME};    # pg_restore and pg_dump name themselves (fallback_application_name)

my $SCHEMA = q{CREATE TABLE acct (id int PRIMARY KEY, name text, secret fieldcrypt.encrypted_text, token fieldcrypt.encrypted_bytea);
               CREATE TABLE ledger (id int PRIMARY KEY, v text) USING encrypted_heap;};
$node->safe_psql('postgres', 'CREATE DATABASE src');
sql('src', "CREATE EXTENSION fieldcrypt; SELECT fieldcrypt.set_data_encryption_key('$K1'); $SCHEMA
  INSERT INTO acct SELECT g, 'n' || g, 'secret-' || g, decode(md5(g::text), 'hex') FROM generate_series(1, 300) g;
  INSERT INTO ledger SELECT g, 'ledger-' || g FROM generate_series(1, 300) g;");
my $DIGEST = q{SELECT count(*) || ':' || md5(string_agg(id || name || fieldcrypt.decrypt(secret) || encode(fieldcrypt.decrypt(token), 'hex'), ',' ORDER BY id)) FROM acct};
my $LDIGEST = q{SELECT count(*) || ':' || md5(string_agg(id || v, ',' ORDER BY id)) FROM ledger};
my $digest = sql('src', $DIGEST);
my $ldigest = sql('src', $LDIGEST);
is($digest =~ /^300:/ ? 1 : 0, 1, 'origin: 300 values decrypt');

my $dump = $node->basedir . '/src.dump';
my ($rc, $out, $err) = run_cmd('pg_dump', '-Fc', '-f', $dump, '-d', dsn('src'));
is($rc, 0, 'pg_dump -Fc') or diag($err);

# --- --data-only into a database with another key ------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE other');
sql('other', "CREATE EXTENSION fieldcrypt; SELECT fieldcrypt.set_data_encryption_key('$K2'); $SCHEMA");
($rc, $out, $err) = run_cmd('pg_restore', '--data-only', '-t', 'acct', '-d', dsn('other'), $dump);
isnt($rc, 0, '--data-only into a database with another key fails');
like($err, qr/ERROR:  encrypted value of key generation 2 cannot be decrypted in this database/,
	'the COPY names the generation it cannot decrypt');
like($err, qr/DETAIL:  Key generation 2 of this database is another key: the value was written in another database, or was modified\./,
	'the detail says the generation is another key here');
like($err, qr/HINT:  Load encrypted values only into the database they were written in; to copy a database, restore its whole dump \(not --data-only\) into a new database/,
	'the hint says how to copy a database');
unlike($err, qr/secret-\d/, 'no plaintext in the messages');
is(sql('other', 'SELECT count(*) FROM acct'), '0', 'nothing was loaded');
# COPY table TO gives the envelopes (a query gives NULL in their place)
sub envelope_of { my ($id) = @_; return (sql('src', q{COPY acct (id, secret) TO STDOUT}) =~ /^$id\t(fcenc:v1:\S+)$/m)[0]; }
my $env1 = envelope_of(1);
my ($r1, $o1, $e1) = FcNode::psql_tls($node, 'other', "\\set VERBOSITY verbose\nCOPY acct (id, secret) FROM STDIN;\n1\t$env1\n\\.\n");
like($e1, qr/^ERROR:  55000: encrypted value of key generation 2 cannot be decrypted in this database$/m,
	'COPY FROM of a foreign envelope: SQLSTATE 55000');
# a generation the database does not hold at all
sql('src', "SELECT fieldcrypt.set_data_encryption_key('Restore-Key-Three-2026!')");
sql('src', q{INSERT INTO acct VALUES (1000, 'g3', 'third', NULL)});
my $gen3 = envelope_of(1000);
my ($rc2, $o2, $e2) = FcNode::psql_tls($node, 'other', "\\set VERBOSITY verbose\nCOPY acct (id, secret) FROM STDIN;\n5000\t$gen3\n\\.\n");
like($e2, qr/ERROR:  55000: encrypted value of key generation 3 cannot be decrypted in this database\nDETAIL:  This database holds no key generation 3:/,
	'a generation the database does not hold is named as such');
sql('src', 'DELETE FROM acct WHERE id = 1000');
# an INSERT still takes an envelope as is (decryption authenticates it)
sql('other', "INSERT INTO acct (id, secret) VALUES (9999, '$gen3')");
sql_fails($node, 'other', 'SELECT fieldcrypt.decrypt(secret) FROM acct WHERE id = 9999', '55000',
	'key generation 3 is not held by this database',
	'an inserted foreign envelope is accepted and fails at decryption');

# --- --data-only into the origin and into a full copy with the original key ---------------
sql('src', 'TRUNCATE acct');
($rc, $out, $err) = run_cmd('pg_restore', '--data-only', '-t', 'acct', '-d', dsn('src'), $dump);
is($rc, 0, '--data-only into the origin works') or diag($err);
is(sql('src', $DIGEST), $digest, 'origin: every value decrypts after the --data-only restore');

$node->safe_psql('postgres', 'CREATE DATABASE copy');
($rc, $out, $err) = run_cmd('pg_restore', '-d', dsn('copy'), $dump);
is($rc, 0, 'a full restore into a new database works') or diag($err);
sql('copy', "SELECT fieldcrypt.set_data_encryption_key('$K1')");
is(sql('copy', $DIGEST), $digest, 'copy: every value decrypts with the original key');
is(sql('copy', $LDIGEST), $ldigest, 'copy: the encrypted_heap table reads');
sql('copy', 'TRUNCATE acct');
($rc, $out, $err) = run_cmd('pg_restore', '--data-only', '-t', 'acct', '-d', dsn('copy'), $dump);
is($rc, 0, '--data-only into the full copy works') or diag($err);
is(sql('copy', $DIGEST), $digest, 'copy: every value decrypts after --data-only');

# --- --clean into the origin: refused before anything is dropped ---------------------------------
my $objects = q{SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')};
my $objects_before = sql('src', $objects);
for my $opts (['--clean', '--if-exists'], ['--clean'], ['--clean', '--if-exists', '--single-transaction'])
{
	($rc, $out, $err) = run_cmd('pg_restore', @$opts, '-d', dsn('src'), $dump);
	isnt($rc, 0, "pg_restore @$opts into an active database fails");
	like($err, qr/ERROR:  pg_restore --clean cannot replace database "src": its data encryption is active\nDETAIL:  Nothing was dropped\./,
		"@$opts: refused at its first DROP");
	like($err, qr/HINT:  Restore into a new database \(createdb, then pg_restore -d <new database>\), then restore its key there with fieldcrypt\.set_data_encryption_key\./,
		"@$opts: the hint names the way out");
	unlike($err, qr/cannot drop extension/, "@$opts: it never got to DROP EXTENSION");
	is(sql('src', $DIGEST) . ' ' . sql('src', $LDIGEST) . ' ' . sql('src', $objects),
		"$digest $ldigest $objects_before", "@$opts: every table, object and value is still there");
}

# the same statement from another client keeps the general hint
my ($r3, $o3, $e3) = FcNode::psql_tls($node, 'src', 'DROP EXTENSION fieldcrypt CASCADE');
like($e3, qr/HINT:  Drop the database if its encrypted data is no longer needed\./, 'psql keeps the general hint');

$node->stop;
done_testing();
