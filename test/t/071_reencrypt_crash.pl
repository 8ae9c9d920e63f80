# Re-encryption survives `pg_ctl stop -m immediate` at every point of a key change, driven
# by the test-only settings fieldcrypt.test_reencrypt_pause_after_batches and
# fieldcrypt.test_reencrypt_pause_before_destroy (the worker waits there, the test kills
# the server):
#   A0. right after the key change commits (timing: the worker may not have started);
#   A.  before the worker's first batch;
#   B.  in the middle, after 5 batches: the worker resumes at the block where it was, with
#       its counters (and a second key change meanwhile fails with 55P03, giving them);
#   C.  after every value was re-encrypted, before the old generation is destroyed;
#   D.  after the re-encryption finished.
# After each restart the worker finishes, every plaintext is unchanged, the old generation
# is destroyed and retrieve_data_encryption_key returns the new key.
# Also: DROP DATABASE of a database whose worker runs stops the worker and succeeds (one that
# fails, not by the owner or in a transaction block, leaves it running);
# fieldcrypt.reencrypt = off stops a running worker after its batch, keeps the old
# generations and allows further key changes; on again finishes the job; database
# defaults (read-only) do not reach the worker; old ciphertext copied into a table the
# worker has already done is found by the check pass.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my @K = map { "Crash-Rotation-K$_-w4Z!" } 0 .. 6;
my $PROGRESS_APP = q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = 'app'};
my $SUM = q{SELECT md5(string_agg(id || ':' || fieldcrypt.decrypt(pw), ',' ORDER BY id))
  || md5(string_agg(id || ':' || encode(fieldcrypt.decrypt(b), 'hex'), ',' ORDER BY id)) FROM t};
my $PHASE = q{SELECT phase FROM fieldcrypt.rotation_progress WHERE database = 'app'};

my $node = FcNode::new_node('crash', reencrypt => 'on');
$node->append_conf('postgresql.conf', <<'EOC');
fieldcrypt.reencrypt_rows_per_second = 0
fieldcrypt.reencrypt_batch_pages = 4
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', <<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE t (id int PRIMARY KEY, pw fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea);
INSERT INTO t SELECT i, 'crash-secret-' || i, decode(md5(i::text), 'hex') FROM generate_series(1, 15000) i;
CREATE TABLE t2 (id int, pw fieldcrypt.encrypted_text);
INSERT INTO t2 SELECT i, 'second-' || i FROM generate_series(1, 5000) i;
EOS
my $sum = $node->safe_psql('app', $SUM);
my $TOTAL = 20000;
my $gen = 1;

sub set_conf
{
	my ($line) = @_;
	$node->append_conf('postgresql.conf', "$line\n");
	$node->reload;
	return;
}

sub change_key
{
	my ($key, $name) = @_;
	sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$key')", '', $name);
	$gen++;
	return;
}

sub crash_restart
{
	my (@conf) = @_;
	$node->stop('immediate');
	$node->append_conf('postgresql.conf', "$_\n") for @conf;
	my $offset = -s $node->logfile;
	$node->start;
	return $offset;
}

# After a restart: the worker finishes and everything is as it should be.
sub check_finished
{
	my ($key, $name) = @_;
	$node->poll_query_until('app', $PROGRESS_APP, '0') or die "$name: the re-encryption did not finish";
	sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', "$gen|1",
		"$name: generation $gen current, the old one destroyed");
	sql_is($node, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $key,
		"$name: retrieve_data_encryption_key returns the new key");
	is($node->safe_psql('app', $SUM), $sum, "$name: every plaintext is unchanged");
	is($node->safe_psql('app', 'SELECT count(*) FROM t2 WHERE fieldcrypt.decrypt(pw) = \'second-\' || id'),
		'5000', "$name: the second table decrypts");
	return;
}

# --- A0: immediately after the key change --------------------------------------------------
change_key($K[1], 'A0: key change');
crash_restart();
check_finished($K[1], 'A0');

# --- A: before the first batch ---------------------------------------------------------------
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = 0');
change_key($K[2], 'A: key change');
$node->poll_query_until('app', $PHASE, 'paused for testing') or die 'A: the worker did not pause';
sql_is($node, 'app', 'SELECT rows_done, rows_total, tables_done, tables_total FROM fieldcrypt.rotation_progress',
	"0|$TOTAL|0|2", 'A: paused before the first batch, all rows counted');
my $offset = crash_restart('fieldcrypt.test_reencrypt_pause_after_batches = -1');
check_finished($K[2], 'A');
like(log_since($node, $offset),
	qr/re-encryption of database "app" from generation 2 to 3 resumed in pass 1 at table 1 of 2, block 0: 0 of $TOTAL rows done/,
	'A: the worker resumed at the start');

# --- B: in the middle ------------------------------------------------------------------------
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = 5');
change_key($K[3], 'B: key change');
$node->poll_query_until('app', $PHASE, 'paused for testing') or die 'B: the worker did not pause';
my ($done, $total, $tdone, $ttotal) = split /\|/, $node->safe_psql('app',
	'SELECT rows_done, rows_total, tables_done, tables_total FROM fieldcrypt.rotation_progress');
ok($done > 0 && $done < $total, "B: paused mid-way ($done of $total rows)");
my ($ret, $out, $err) = FcNode::psql_tls($node, 'app',
	"\\set VERBOSITY verbose\nSELECT fieldcrypt.set_data_encryption_key('$K[6]')");
like($err, qr/ERROR:  55P03: a data encryption key change is already in progress\nDETAIL:  Re-encryption from generation 3 to generation 4 is running: $done of $total rows, $tdone of $ttotal tables\.\nHINT:  Retry when fieldcrypt.rotation_progress shows no row for this database\./,
	'B: a second key change fails with 55P03 and says how far the running one is');
sql_is($node, 'app', 'SELECT generation FROM fieldcrypt.key_status', '4', 'B: the refused change changed nothing');
# restart paused again before the first batch of the new worker: it starts from its counters
$offset = crash_restart('fieldcrypt.test_reencrypt_pause_after_batches = 0');
$node->poll_query_until('app', $PHASE, 'paused for testing') or die 'B: the worker did not pause after restart';
is($node->safe_psql('app', 'SELECT rows_done FROM fieldcrypt.rotation_progress'), $done,
	'B: after the restart the worker continues from the rows it had done');
my $blocks = 5 * 4;
like(log_since($node, $offset),
	qr/from generation 3 to 4 resumed in pass 1 at table 1 of 2, block $blocks: $done of $total rows done/,
	"B: the worker resumed at block $blocks, where it was");
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = -1');
check_finished($K[3], 'B');

# --- C: before the old generation is destroyed ---------------------------------------------
set_conf('fieldcrypt.test_reencrypt_pause_before_destroy = on');
change_key($K[4], 'C: key change');
$node->poll_query_until('app', $PHASE, 'paused for testing') or die 'C: the worker did not pause';
sql_is($node, 'app', 'SELECT generations_kept FROM fieldcrypt.key_status', '2',
	'C: every value re-encrypted, the old generation still kept');
$offset = crash_restart('fieldcrypt.test_reencrypt_pause_before_destroy = off');
check_finished($K[4], 'C');
like(log_since($node, $offset), qr/to generation 5 finished: .* generation\(s\) 4 destroyed/,
	'C: after the restart the old generation is destroyed');

# --- D: after it finished ------------------------------------------------------------------
crash_restart();
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', "$gen|1",
	'D: after a crash the keys are as they were');
is($node->safe_psql('app', $PROGRESS_APP), '0', 'D: nothing to re-encrypt');
check_finished($K[4], 'D');

# --- DROP DATABASE while its worker runs -------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE dropme');
$node->safe_psql('dropme', q{CREATE EXTENSION fieldcrypt; CREATE TABLE d (pw fieldcrypt.encrypted_text);
	INSERT INTO d SELECT 'drop-' || i FROM generate_series(1, 100) i});
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = 0');
sql_is($node, 'dropme', "SELECT fieldcrypt.set_data_encryption_key('$K[5]')", '', 'dropme: key change');
$node->poll_query_until('app',
	q{SELECT phase FROM fieldcrypt.rotation_progress WHERE database = 'dropme'}, 'paused for testing')
  or die 'dropme: the worker did not pause';
# a DROP DATABASE that fails (not the owner, or in a transaction block) must not stop the worker:
# it did, before the ownership check, so any login could stall any database's key changes
my $PID_DROPME = q{SELECT phase || ':' || pid FROM fieldcrypt.rotation_progress WHERE database = 'dropme'};
my $worker_before = $node->safe_psql('app', $PID_DROPME);
my ($dret, $dout, $derr) = ('', '', '');
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
$dret = $node->psql('postgres', 'SET ROLE nobody; DROP DATABASE dropme', stdout => \$dout, stderr => \$derr);
like($derr, qr/ERROR:  must be owner of database dropme/, 'DROP DATABASE by a plain login fails: not the owner');
$dret = $node->psql('postgres', 'BEGIN; DROP DATABASE dropme', stdout => \$dout, stderr => \$derr);
like($derr, qr/ERROR:  DROP DATABASE cannot run inside a transaction block/, 'DROP DATABASE in a transaction block fails');
like($worker_before, qr/^paused for testing:\d+$/, 'the worker of dropme was running');
is($node->safe_psql('app', $PID_DROPME), $worker_before, 'the failed DROP DATABASE statements left it running');
# a DROP DATABASE that fails after it stopped the worker (another session is connected): the
# worker starts again at once (it was held 30 s and more: the owner could repeat the drop to
# stall key changes)
my $connected = $node->background_psql('dropme', on_error_stop => 0);
$dret = $node->psql('postgres', 'DROP DATABASE dropme', stdout => \$dout, stderr => \$derr);
like($derr, qr/ERROR:  database "dropme" is being accessed by other users/,
	'DROP DATABASE fails while another session is connected');
my $back = '';
for (1 .. 100)
{
	$back = $node->safe_psql('app', $PID_DROPME);
	last if $back =~ /^paused for testing:\d+$/ && $back ne $worker_before;
	select(undef, undef, undef, 0.1);
}
like($back, qr/^paused for testing:\d+$/, 'within 10 s a new worker of dropme runs again');
isnt($back, $worker_before, '(another process)');
$connected->quit;
$dret = $node->psql('postgres', 'DROP DATABASE dropme', stdout => \$dout, stderr => \$derr);
is($dret, 0, 'DROP DATABASE stops the worker of that database and succeeds') or diag($derr);
is($node->safe_psql('app', q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = 'dropme'}),
	'0', 'no re-encryption is left for the dropped database');
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = -1');

# --- fieldcrypt.reencrypt = off postpones ----------------------------------------------------
# turned off while a worker runs: it stops after its current batch
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = 2');
change_key($K[5], 'E: key change');
$node->poll_query_until('app', $PHASE, 'paused for testing') or die 'E: the worker did not pause';
$offset = -s $node->logfile;
set_conf('fieldcrypt.reencrypt = off');
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = -1');
$node->poll_query_until('app', $PHASE, 'postponed') or die 'E: the re-encryption was not postponed';
like(log_since($node, $offset), qr/LOG:  fieldcrypt: re-encryption postponed \(fieldcrypt.reencrypt = off\)/,
	'E: the running worker stopped when fieldcrypt.reencrypt was turned off');
sql_is($node, 'app', 'SELECT generations_kept FROM fieldcrypt.key_status', '2', 'E: the old generation is kept');
change_key($K[6], 'E: while postponed, another key change is allowed');
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', "$gen|3",
	'E: three generations kept');
set_conf('fieldcrypt.reencrypt = on');
check_finished($K[6], 'E: turned on again');

# --- F: database defaults do not reach the worker --------------------------------------------
# a read-only default would make every batch fail
$node->safe_psql('postgres', 'ALTER DATABASE app SET default_transaction_read_only = on');
sql_is($node, 'app', "SET default_transaction_read_only = off; SELECT fieldcrypt.set_data_encryption_key('$K[1]')",
	"SET\n", 'F: key change in a database whose transactions are read-only by default');
$gen++;
check_finished($K[1], 'F: the worker writes anyway');
$node->safe_psql('postgres', 'ALTER DATABASE app RESET default_transaction_read_only');

# --- G: a value copied behind the worker is found by the check pass ---------------------------
$node->safe_psql('postgres', 'CREATE DATABASE copy');
$node->safe_psql('copy', q{CREATE EXTENSION fieldcrypt;
	CREATE TABLE a (id int, pw fieldcrypt.encrypted_text);
	CREATE TABLE b (id int, pw fieldcrypt.encrypted_text);
	INSERT INTO a SELECT i, 'copy-a-' || i FROM generate_series(1, 10) i;
	INSERT INTO b SELECT i, 'copy-b-' || i FROM generate_series(1, 10) i});
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = 1');
sql_is($node, 'copy', "SELECT fieldcrypt.set_data_encryption_key('$K[2]')", '', 'G: key change');
$node->poll_query_until('copy', q{SELECT phase FROM fieldcrypt.rotation_progress}, 'paused for testing')
  or die 'G: the worker did not pause';
# table a is re-encrypted, b is not yet: copy b's old ciphertext into a's first page
$node->safe_psql('copy', 'INSERT INTO a SELECT id + 100, pw FROM b');
$offset = -s $node->logfile;
set_conf('fieldcrypt.test_reencrypt_pause_after_batches = -1');
$node->poll_query_until('copy', q{SELECT count(*) FROM fieldcrypt.rotation_progress}, '0')
  or die 'G: the re-encryption did not finish';
like(log_since($node, $offset), qr/re-encryption of database "copy" to generation 2 finished: 30 rows rewritten in 3 pass\(es\)/,
	'G: the check pass found the copied values and rewrote them, a third pass found nothing');
sql_is($node, 'copy', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '2|1',
	'G: the old generation is destroyed');
is($node->safe_psql('copy', q{SELECT string_agg(fieldcrypt.decrypt(pw), ',' ORDER BY id) FROM a WHERE id > 100}),
	join(',', map { "copy-b-$_" } 1 .. 10), 'G: the copied values decrypt');

$node->stop;
done_testing();
