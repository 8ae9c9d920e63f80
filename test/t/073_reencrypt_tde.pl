# Online re-encryption of encrypted_heap tables after fieldcrypt.rotate_tde_key()
# (src/reencrypt.c, TDE part):
#   - rotate_tde_key returns at once; the worker rewrites every row version under the
#     new generation while writers update, insert and delete rows: no update is lost
#     (v still equals its mirror everywhere) and untouched rows keep their checksum;
#     a materialized view, a table without columns and one whose first column is an
#     identity GENERATED ALWAYS are rewritten too;
#   - a second rotation meanwhile fails with 55P03; rotation_progress shows the work and
#     no row afterwards; log lines at start and end;
#   - the old generation is destroyed (tde_key_status lists only the new one, every row
#     reports it), and the table reads back unchanged; no two stored rows share a nonce;
#   - pg_ctl stop -m immediate in the middle of a re-encryption: after the restart the
#     worker finishes it and nothing is lost.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $N = 60000;
my $HOT = 5000;
my $PROGRESS = q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = current_database()};
my $SUM = "SELECT md5(string_agg(id || ':' || v || ':' || coalesce(md5(big), '-'), ',' ORDER BY id)) FROM t WHERE id > $HOT AND id <= $N";
my $MISMATCH = 'SELECT count(*) FROM t WHERE v IS DISTINCT FROM mirror';
my $GENS = 'SELECT string_agg(generation::text, \',\' ORDER BY generation) FROM fieldcrypt.tde_key_status';
my $ROWGENS = q{SELECT string_agg(DISTINCT fieldcrypt._tde_tuple_generation('t', ctid)::text, ',') FROM t};

my $node = FcNode::new_node('main', reencrypt => 'on');
$node->append_conf('postgresql.conf', <<'EOC');
max_prepared_transactions = 5
fieldcrypt.reencrypt_rows_per_second = 20000
fieldcrypt.reencrypt_batch_pages = 16
EOC
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', <<"EOS");
CREATE EXTENSION fieldcrypt;
CREATE TABLE t (id int PRIMARY KEY, v text, mirror text, big text) USING encrypted_heap;
INSERT INTO t SELECT i, 'row-' || i, 'row-' || i,
                     CASE WHEN i % 1000 = 0 THEN repeat(md5(i::text), 400) END
  FROM generate_series(1, $N) i;
CREATE MATERIALIZED VIEW mv USING encrypted_heap AS SELECT id, v FROM t WHERE id <= 100;
CREATE TABLE nocols () USING encrypted_heap;
INSERT INTO nocols DEFAULT VALUES;
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY, v text) USING encrypted_heap;
INSERT INTO ident (v) SELECT 'i' || g FROM generate_series(1, 100) g;
VACUUM ANALYZE;
EOS
my $sum_before = $node->safe_psql('app', $SUM);
is($node->safe_psql('app', $GENS), '1', 'one TDE key generation before the rotation');

# --- concurrent writers -------------------------------------------------------------------
my $script = $node->basedir . '/writers.sql';
open my $fh, '>', $script or die $!;
print $fh <<"EOS";
\\set id random(1, $HOT)
\\set nid random(1000001, 1001000)
UPDATE t SET v = 'w' || :id || '-' || txid_current(), mirror = 'w' || :id || '-' || txid_current() WHERE id = :id;
INSERT INTO t VALUES (:nid, 'n' || :nid, 'n' || :nid) ON CONFLICT (id) DO UPDATE SET v = 'u' || :nid, mirror = 'u' || :nid;
DELETE FROM t WHERE id = :nid + 1;
EOS
close $fh;
my ($pgb_out, $pgb_err) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '2', '-T', '8', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'app' ],
	'>', \$pgb_out, '2>', \$pgb_err);
sleep 1;

my $log_offset = -s $node->logfile;
my $t0 = time;
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '2', 'rotate_tde_key returns generation 2');
ok(time - $t0 < 5, 'the rotation returned without waiting for the re-encryption');

my ($ret, $out, $err) = FcNode::psql_tls($node, 'app',
	"\\set VERBOSITY verbose\nSELECT fieldcrypt.rotate_tde_key()");
like($err, qr/ERROR:  55P03: a TDE key change is already in progress/,
	'a second rotation while rows are re-encrypted fails with 55P03');

my $seen = 0;
for (1 .. 200)
{
	my $p = $node->safe_psql('app',
		"SELECT from_generation || '>' || to_generation || ':' || phase FROM fieldcrypt.rotation_progress");
	$seen++ if $p =~ /^1>2:re-encrypting/;
	last if $seen && $p eq '';
	select(undef, undef, undef, 0.1);
}
ok($seen > 0, 'rotation_progress showed the re-encryption from generation 1 to 2');

$pgbench->finish;
is($? >> 8, 0, 'the concurrent writers ran without errors') or diag($pgb_err);

$node->poll_query_until('app', $GENS, '2')
  or die 'the old TDE generation was not destroyed';
is($node->safe_psql('app', $PROGRESS), '0', 'rotation_progress has no row once finished');
# the old generation is dropped from shared memory before the worker commits and logs
$node->wait_for_log(qr/to TDE key generation 2 finished/, $log_offset);
my $log = log_since($node, $log_offset);
# 4 tables, and fieldcrypt.tde_statistic (the encrypted planner statistics: re-encrypted too)
like($log, qr/LOG:  fieldcrypt: re-encryption of the encrypted_heap tables of database "app" from TDE key generation 1 to 2 started: 5 tables/,
	'log line at start');
like($log, qr/LOG:  fieldcrypt: re-encryption of the encrypted_heap tables of database "app" to TDE key generation 2 finished: \d+ rows rewritten; 1 old generation\(s\) destroyed/,
	'log line at the end: one generation destroyed');
unlike($log, qr/row-\d+/, 'no plaintext in the server log');

is($node->safe_psql('app', $MISMATCH), '0', 'no update of the writers was lost');
is($node->safe_psql('app', $SUM), $sum_before, 'untouched rows read back unchanged');
is($node->safe_psql('app', $ROWGENS), '2', 'every row version is under generation 2');
# (fieldcrypt.tde_statistic has rows only if autovacuum analyzed a table: left out)
is($node->safe_psql('app', q{SELECT string_agg(x::text, ',' ORDER BY x::text) FROM fieldcrypt.tde_key_status, unnest(tables) x
                             WHERE x <> 'fieldcrypt.tde_statistic'::regclass}), 'ident,mv,nocols,t',
	'all four relations are under generation 2 only (also one whose first column is GENERATED ALWAYS AS IDENTITY)');
is($node->safe_psql('app', "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM mv"),
	$node->safe_psql('app', "SELECT md5(string_agg(i || ':row-' || i, ',' ORDER BY i)) FROM generate_series(1, 100) i"),
	'the materialized view reads back');
is($node->safe_psql('app', 'SELECT count(*) FROM nocols'), '1', 'the table without columns reads back');
# Rows resealed in place take a fresh nonce each: no (instance id, counter) pair of a stored row
# version of t is used twice (trailer: ... instance id(8) counter(8) tag(16)).
$node->safe_psql('app', 'CREATE EXTENSION IF NOT EXISTS pageinspect');
my ($nrows, $ndistinct) = split /\|/, $node->safe_psql('app', q{
SELECT count(*), count(DISTINCT nonce)
  FROM (SELECT substr(t_data, length(t_data) - 31, 16) AS nonce
          FROM generate_series(0, pg_relation_size('t') / 8192 - 1) b,
               heap_page_items(get_raw_page('t', b::int))
         WHERE lp_flags = 1 AND t_data IS NOT NULL) s});
cmp_ok($nrows, '>=', $N, "nonces: $nrows stored row versions of t read after the re-encryption");
is($ndistinct, $nrows, 'nonces: no row version resealed by the worker shares a nonce with another');

# --- immediate stop in the middle ----------------------------------------------------------
$node->append_conf('postgresql.conf', 'fieldcrypt.test_reencrypt_pause_after_batches = 3');
$node->reload;
my $sum_all = $node->safe_psql('app',
	"SELECT md5(string_agg(id || ':' || v || ':' || coalesce(md5(big), '-'), ',' ORDER BY id)) FROM t");
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '3', 'rotation to generation 3');
$node->poll_query_until('app',
	"SELECT phase FROM fieldcrypt.rotation_progress WHERE to_generation = 3", 'paused for testing')
  or die 'the worker did not pause';
is($node->safe_psql('app', $GENS), '2,3', 'paused: generations 2 and 3 are both kept');
$node->stop('immediate');
$node->append_conf('postgresql.conf', 'fieldcrypt.test_reencrypt_pause_after_batches = -1');
$node->start;
$node->poll_query_until('app', $GENS, '3')
  or die 'the re-encryption did not finish after the restart';
is($node->safe_psql('app',
	"SELECT md5(string_agg(id || ':' || v || ':' || coalesce(md5(big), '-'), ',' ORDER BY id)) FROM t"),
	$sum_all, 'after the crash and the resumed re-encryption every row reads back unchanged');
is($node->safe_psql('app', $ROWGENS), '3', 'every row version is under generation 3');

# --- another session's temporary table keeps an old generation, but cannot block key changes ----
# (no other backend can read a temporary table: the worker cannot re-encrypt it)
my $tmp = $node->background_psql('app', on_error_stop => 0);
$tmp->query_safe(q{CREATE TEMP TABLE mine (id int, s text) USING encrypted_heap});
$tmp->query_safe(q{INSERT INTO mine VALUES (1, 'temp-row')});
my $temp_offset = -s $node->logfile;
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '4',
	'rotation to generation 4 while another session has a temporary encrypted_heap table');
ok($node->poll_query_until('app', q{SELECT phase || ': ' || problem FROM fieldcrypt.rotation_progress},
		"retrying: other sessions' temporary encrypted_heap tables may still use older TDE key generations"),
	'rotation_progress says why the old generation is kept');
is($node->safe_psql('app', $GENS), '3,4', 'generation 3 is kept');
# the retry after the back-off (5 s) finds no row of its own left under generation 3: it does not
# go over every table again (which would also refuse rotate_tde_key meanwhile)
$node->wait_for_log(qr/re-encryption of the encrypted_heap tables of database "app" to TDE key generation 4 has nothing left to rewrite/,
	$temp_offset);
is(scalar(() = slurp_file($node->logfile, $temp_offset) =~ /TDE key generation 3 to 4 started/g), 1,
	'the retry did not go over the tables again: one run started');
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '5', 'the next rotate_tde_key is accepted, not refused with 55P03');
is($tmp->query_safe('SELECT s FROM mine'), 'temp-row', 'the temporary table still reads');
$tmp->quit;
$node->poll_query_until('app', $GENS, '5') or die 'generations 3 and 4 were not destroyed once the session ended';
is($node->safe_psql('app', $ROWGENS), '5', 'every row version is under generation 5');

# --- a transaction that created an encrypted_heap table and stays idle ---------------------------
# its rows are under generation 5 in a table the worker cannot see until it commits, and an idle
# session holds no snapshot: the worker must wait for it (it did not, destroyed generation 5, and
# the table was unreadable once the transaction committed)
my $late = $node->background_psql('app', on_error_stop => 0);
$late->query_safe('BEGIN');
$late->query_safe(q{CREATE TABLE late (id int, s text) USING encrypted_heap});
$late->query_safe(q{INSERT INTO late VALUES (1, 'late-row')});
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '6',
	'rotation to generation 6 while another session has written into a table of its open transaction');
ok($node->poll_query_until('app', q{SELECT to_generation || ': ' || problem ~ '^6: waiting for the transaction of process \d+, which has written and not ended$' FROM fieldcrypt.rotation_progress}),
	'the worker waits for that transaction, and rotation_progress.problem says so');
is($node->safe_psql('app', $GENS), '5,6', 'generation 5 is kept meanwhile');
$late->query_safe('COMMIT');
$late->quit;
$node->poll_query_until('app', $GENS, '6') or die 'generation 5 was not destroyed after the commit';
is($node->safe_psql('app', 'SELECT s FROM late'), 'late-row', 'the table committed then reads');
is($node->safe_psql('app', q{SELECT fieldcrypt._tde_tuple_generation('late', ctid) FROM late}), '6',
	'its row is under generation 6');

# --- a prepared transaction that created an encrypted_heap table ---------------------------------
# (the same: it has written under generation 6 into a table nobody else sees before COMMIT PREPARED)
$node->safe_psql('app', q{BEGIN; CREATE TABLE prep (id int, s text) USING encrypted_heap;
  INSERT INTO prep VALUES (1, 'prep-row'); PREPARE TRANSACTION 'fc_prep'});
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '7', 'rotation to generation 7 while a transaction that created a table is prepared');
ok($node->poll_query_until('app', q{SELECT to_generation || ': ' || problem FROM fieldcrypt.rotation_progress},
		'7: waiting for a prepared transaction (COMMIT PREPARED or ROLLBACK PREPARED ends it)'),
	'the worker waits for the prepared transaction, and says so');
is($node->safe_psql('app', $GENS), '6,7', 'generation 6 is kept meanwhile');
$node->safe_psql('app', "COMMIT PREPARED 'fc_prep'");
$node->poll_query_until('app', $GENS, '7') or die 'generation 6 was not destroyed after COMMIT PREPARED';
is($node->safe_psql('app', 'SELECT s FROM prep'), 'prep-row', 'the prepared table reads once committed');

# --- drop_unused_tde_keys waits only for what may still write under an older generation --------
# (it waited for every open transaction of every database: one idle BEGIN anywhere held it up)
my $idle_other = $node->background_psql('postgres', on_error_stop => 0);
$idle_other->query_safe('BEGIN');
$idle_other->query_safe('SELECT 1');
my $idle_here = $node->background_psql('app', on_error_stop => 0);
$idle_here->query_safe('BEGIN');
$idle_here->query_safe('SELECT count(*) FROM late');
sql_is($node, 'app', 'SELECT fieldcrypt.drop_unused_tde_keys()', '0',
	'drop_unused_tde_keys does not wait for read-only sessions idle in a transaction, here or in another database');
$idle_here->query_safe(q{INSERT INTO late VALUES (2, 'late-row-2')});
sql_fails($node, 'app', "SET statement_timeout = '2s'; SELECT fieldcrypt.drop_unused_tde_keys()", '57014',
	'canceling statement due to statement timeout',
	'it waits for a transaction of this database that has written (and the wait can be cancelled)');
$idle_here->query_safe('COMMIT');
$idle_here->quit;
$idle_other->quit;
sql_is($node, 'app', 'SELECT fieldcrypt.drop_unused_tde_keys()', '0',
	'once it committed drop_unused_tde_keys returns');

# --- drop_unused_tde_keys waits for a transaction that created a table, and then sees it -------
# The table is invisible until its transaction commits, and an idle session holds no snapshot:
# without the wait its generation counted as unused and was destroyed. (The function also reads
# the catalogs anew after its wait, in case its catalog snapshot predates it; this test does not
# reach a stale snapshot, the wait is what it checks.) A database of its own, re-encryption
# postponed, so that the table's rows are the only ones under generation 1.
$node->safe_psql('postgres', 'CREATE DATABASE cold');
$node->safe_psql('cold', 'CREATE EXTENSION fieldcrypt');
$node->append_conf('postgresql.conf', "fieldcrypt.reencrypt = off\n");
$node->reload;
my $creator = $node->background_psql('cold', on_error_stop => 0);
$creator->query_safe('BEGIN');
$creator->query_safe(q{CREATE TABLE cold_t (id int, s text) USING encrypted_heap});
$creator->query_safe(q{INSERT INTO cold_t VALUES (1, 'cold-row')});
sql_is($node, 'cold', 'SELECT fieldcrypt.rotate_tde_key()', '2', 'cold: rotation to generation 2 (re-encryption postponed)');
my $dropper = $node->background_psql('cold', on_error_stop => 0,
	extra_params => [ '-d', FcNode::tls_connstr($node, 'cold') ]);
$dropper->query_until(qr/start/, "\\echo start\nSELECT 'dropped:' || fieldcrypt.drop_unused_tde_keys();\n");
$node->poll_query_until('cold', q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%drop_unused_tde_keys%' AND wait_event_type = 'Lock'}, 't')
  or die 'drop_unused_tde_keys did not wait for the transaction';
$creator->query_safe('COMMIT');
$creator->quit;
like($dropper->query_safe('SELECT 1'), qr/dropped:0/, 'drop_unused_tde_keys destroyed nothing: the committed table uses generation 1');
$dropper->quit;
is($node->safe_psql('cold', q{SELECT string_agg(generation::text, ',' ORDER BY generation) FROM fieldcrypt.tde_key_status}), '1,2',
	'generations 1 and 2 are kept');
is($node->safe_psql('cold', 'SELECT s FROM cold_t'), 'cold-row', 'and the table reads');

$node->stop;
done_testing();
