# A key change inside a prepared transaction (issue 15: the worker side of a two-phase
# key change made on a Citus coordinator; src/keys/prepared.c), on one node:
#   - PREPARE TRANSACTION after set_data_encryption_key keeps the change sealed in
#     pg_fieldcrypt/prepared/<xid> (no passphrase in it), the old key stays current, the
#     change lock stays held (another key change fails with 55P03); COMMIT PREPARED from
#     another session applies it, and it survives a restart;
#   - ROLLBACK PREPARED leaves nothing: key, generations, file;
#   - a restart while prepared keeps it prepared (file and lock); COMMIT PREPARED after the
#     restart applies it;
#   - after import_key_generations, too; and a server stopped with -m immediate right after
#     COMMIT PREPARED, before the apply (fieldcrypt.test_prepared_skip_apply), applies it at
#     its next start;
#   - a committed change left unapplied is applied by the next key function first, so the
#     next change builds on it;
#   - a PREPARE that fails (gid in use) removes the file and frees the lock;
#   - no passphrase in the server log (the statements of failed key changes) or pg_stat_activity.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my @K = map { "Prep-Marker-K$_-9q!" } 0 .. 7;
my $node = FcNode::new_node('prepared');
$node->append_conf('postgresql.conf', "max_prepared_transactions = 10\nlog_statement = none\n");
$node->start;
my $prepdir = $node->data_dir . '/pg_fieldcrypt/prepared';
my $BUSY = 'a data encryption key change is already in progress';
my $KEY = 'SELECT fieldcrypt.retrieve_data_encryption_key()';
my $GENS = "SELECT string_agg(generation::text, ',' ORDER BY generation) FROM fieldcrypt.key_generations";

sub prepared_files
{
	opendir my $dh, $prepdir or return ();
	my @f = sort grep { /^\d+$/ } readdir $dh;
	closedir $dh;
	return @f;
}

$node->safe_psql('postgres', 'CREATE DATABASE k');
$node->safe_psql('k', 'CREATE EXTENSION fieldcrypt');
safe_tls($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[0]')");
safe_tls($node, 'k', "CREATE TABLE t (id int, v fieldcrypt.encrypted_text); INSERT INTO t VALUES (1, 'before')");

# --- set_data_encryption_key, PREPARE, COMMIT PREPARED from another session -------------------
sql_is($node, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[1]');\nPREPARE TRANSACTION 'fc_p1';",
	"BEGIN\n\nPREPARE TRANSACTION", 'PREPARE TRANSACTION after a key change succeeds');
sql_is($node, 'k', q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'fc_p1'}, '1', 'it is prepared');
my @files = prepared_files();
is(scalar @files, 1, 'the change is sealed in one file of pg_fieldcrypt/prepared');
my $xid = $node->safe_psql('k', q{SELECT transaction FROM pg_prepared_xacts WHERE gid = 'fc_p1'});
is($files[0], $xid, 'the file is named by the prepared transaction id');
unlike(read_bytes("$prepdir/$files[0]"), qr/\Q$K[1]\E/, 'the file does not hold the passphrase in clear');
like(read_bytes("$prepdir/$files[0]"), qr/\AFCPX/, 'the file starts with its magic');
sql_is($node, 'k', $KEY, $K[0], 'while prepared, the old key is current');
sql_fails($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[2]')", '55P03', $BUSY,
	'while prepared, another key change fails: the prepared transaction holds the change lock');
sql_is($node, 'k', "COMMIT PREPARED 'fc_p1'", 'COMMIT PREPARED', 'COMMIT PREPARED from another session');
sql_is($node, 'k', $KEY, $K[1], 'the change is applied at COMMIT PREPARED');
sql_is($node, 'k', $GENS, '1,2,3', 'key_generations holds generation 3 (1: generated, 2: the first key)');
is(scalar prepared_files(), 0, 'the file is removed once applied');
safe_tls($node, 'k', "INSERT INTO t VALUES (2, 'after')");
sql_is($node, 'k', 'SELECT string_agg(fieldcrypt.decrypt(v), \',\' ORDER BY id) FROM t', 'before,after',
	'values of both generations decrypt');
$node->restart;
sql_is($node, 'k', $KEY, $K[1], 'the applied change survives a restart');
sql_is($node, 'k', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '3|3',
	'key_status after the restart: generation 3, three kept');

# --- ROLLBACK PREPARED leaves nothing --------------------------------------------------------
safe_tls($node, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[2]');\nPREPARE TRANSACTION 'fc_p2';");
is(scalar prepared_files(), 1, 'prepared again: one file');
sql_is($node, 'k', "ROLLBACK PREPARED 'fc_p2'", 'ROLLBACK PREPARED', 'ROLLBACK PREPARED');
sql_is($node, 'k', $KEY, $K[1], 'after ROLLBACK PREPARED the key is unchanged');
sql_is($node, 'k', $GENS, '1,2,3', 'and no generation was added');
is(scalar prepared_files(), 0, 'and the file is removed');

# --- a restart while prepared ------------------------------------------------------------------
safe_tls($node, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[3]');\nPREPARE TRANSACTION 'fc_p3';");
$node->restart;
sql_is($node, 'k', q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'fc_p3'}, '1',
	'after a restart the transaction is still prepared');
is(scalar prepared_files(), 1, 'its file stays (the start-up pass keeps prepared ones)');
sql_is($node, 'k', $KEY, $K[1], 'and the old key is still current');
sql_fails($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[4]')", '55P03', $BUSY,
	'the restored prepared transaction still holds the change lock');
sql_is($node, 'k', "COMMIT PREPARED 'fc_p3'", 'COMMIT PREPARED', 'COMMIT PREPARED after the restart');
sql_is($node, 'k', $KEY, $K[3], 'the change is applied');
sql_is($node, 'k', $GENS, '1,2,3,4', 'generation 4 added');
is(scalar prepared_files(), 0, 'file removed');

# --- import_key_generations prepared; stop -m immediate before the apply ------------------------
$node->safe_psql('postgres', 'CREATE DATABASE origin');
$node->safe_psql('origin', 'SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt');
safe_tls($node, 'origin', "SELECT fieldcrypt.set_data_encryption_key('$K[5]')");
my $doc = safe_tls($node, 'origin', 'SELECT fieldcrypt.export_key_generations()') =~ s/\n/\\n/gr;
$node->safe_psql('postgres', 'CREATE DATABASE copy');
$node->safe_psql('copy', 'SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt');
sql_is($node, 'copy', "BEGIN;\nSELECT fieldcrypt.import_key_generations(E'$doc', '$K[5]');\nPREPARE TRANSACTION 'fc_p4';",
	"BEGIN\n{1}\nPREPARE TRANSACTION", 'PREPARE TRANSACTION after import_key_generations');
sql_fails($node, 'copy', $KEY, '55000', 'data encryption is not active in this database',
	'while prepared, the imported generation is not there yet');
sql_is($node, 'copy', "SET fieldcrypt.test_prepared_skip_apply = on;\nCOMMIT PREPARED 'fc_p4';",
	"SET\nCOMMIT PREPARED", 'COMMIT PREPARED, with the apply skipped (test setting)');
is(scalar prepared_files(), 1, 'the committed change waits in its file');
sql_is($node, 'copy', 'SELECT key_loaded FROM fieldcrypt.key_status', 'f',
	'not applied yet (the control: the start below is what applies it)');
my $offset = -s $node->logfile;
$node->stop('immediate');
$node->start;
ok($node->poll_query_until('copy', 'SELECT key_loaded FROM fieldcrypt.key_status'),
	'after the start the key of the copy is loaded');
# the worker writes this line after it removed the file (and WAL-logged the removal)
ok($node->wait_for_log(qr/fieldcrypt: applied the key change of committed prepared transaction \d+/, $offset),
	'the start-up worker applied it');
sql_is($node, 'copy', $KEY, $K[5], 'after the crash the imported generation is current');
sql_is($node, 'copy', 'SELECT generation, kcv = (SELECT kcv FROM fieldcrypt.key_generations) FROM fieldcrypt.key_generations',
	'1|t', 'key_generations of the copy');
is(scalar prepared_files(), 0, 'and the file is removed');
$node->restart;
sql_is($node, 'copy', $KEY, $K[5], 'it survives another restart');

# --- a committed change left unapplied: the next key function applies it first ---------------------
safe_tls($node, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[4]');\nPREPARE TRANSACTION 'fc_p5';");
safe_tls($node, 'k', "SET fieldcrypt.test_prepared_skip_apply = on;\nCOMMIT PREPARED 'fc_p5';");
sql_is($node, 'k', $KEY, $K[3], 'committed but not applied: still the key before it');
safe_tls($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[6]')");
sql_is($node, 'k', $KEY, $K[6], 'the next change succeeds');
sql_is($node, 'k', $GENS, '1,2,3,4,5,6', 'and builds on the committed one: generations 5 and 6');
sql_is($node, 'k', 'SELECT generations_kept FROM fieldcrypt.key_status', '6', 'six generations kept');
is(scalar prepared_files(), 0, 'no file left');
$node->restart;
sql_is($node, 'k', 'SELECT string_agg(fieldcrypt.decrypt(v), \',\' ORDER BY id) FROM t', 'before,after',
	'after a restart every value still decrypts');

# --- a PREPARE that fails removes its file and frees the lock --------------------------------------
safe_tls($node, 'k', "BEGIN;\nSELECT 1;\nPREPARE TRANSACTION 'fc_dup';");
sql_fails($node, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('Prep-Dup-Key-1x!');\nPREPARE TRANSACTION 'fc_dup';",
	'42710', 'transaction identifier "fc_dup" is already in use', 'PREPARE with a gid in use fails');
is(scalar prepared_files(), 0, 'the failed PREPARE left no file');
sql_is($node, 'k', $KEY, $K[6], 'and changed nothing');
safe_tls($node, 'k', "ROLLBACK PREPARED 'fc_dup'");

# --- a file that cannot be applied does not stop key management ------------------------------------
# (a committed transaction's file that is damaged: a WARNING at the next key change, which goes on)
my $donexid = $node->safe_psql('k', 'SELECT txid_current()');
my $bad = $node->data_dir . "/pg_fieldcrypt/prepared/$donexid";
open my $bfh, '>', $bad or die "$bad: $!";
print $bfh 'FCPRdamaged, not a sealed keyring image' x 4;
close $bfh;
chmod 0600, $bad;
system('chown', 'postgres', $bad) == 0 or die 'chown';
my ($brc, $bout, $berr) = FcNode::psql_tls($node, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[7]')");
is($brc, 0, 'a key change succeeds although a prepared file cannot be applied') or diag($berr);
like($berr, qr/WARNING:  fieldcrypt: could not apply the key change of a committed prepared transaction/,
	'and says so in a WARNING');
sql_is($node, 'k', $KEY, $K[7], 'the new key is current');
ok(-e $bad, 'the damaged file stays for the next try');
unlink $bad;

# --- no passphrase anywhere -------------------------------------------------------------------------
sql_is($node, 'k', q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%Prep-Marker%' AND pid <> pg_backend_pid()},
	'0', 'no passphrase in pg_stat_activity');
my $log = slurp_file($node->logfile);
ok($log =~ /STATEMENT:  SELECT fieldcrypt.set_data_encryption_key\(/,
	'the log has statements that held passphrases (the grep below can fail)');
unlike($log, qr/Prep-Marker/, 'no passphrase in the server log');

$node->stop;
done_testing();
