# Re-encryption after a key change (src/rotation/):
#   - set_data_encryption_key returns at once; a background worker re-encrypts 200,000
#     values while concurrent writers update, insert and delete rows of the same table:
#     no update is lost (every row's value still equals its plain mirror column) and the
#     plaintexts of untouched rows have the same checksum before and after;
#   - other columns: encrypted_bytea, a domain over encrypted_text, NULLs, a TOASTed value;
#     user triggers do not fire for the worker's updates;
#   - fieldcrypt.rotation_progress shows the re-encryption while it runs and no row after;
#     log lines at start and end; a second key change meanwhile fails with 55P03;
#   - the old generation is then destroyed: generations_kept = 1, one metadata row, and an
#     envelope under the old generation can no longer be decrypted;
#   - the worker's helper functions are not executable by PUBLIC;
#   - values inside arrays, composites (nested) and domains, in a table and a materialized
#     view, are re-encrypted too, and the old generation is destroyed; so is an empty table
#     with such a column.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $N = 200000;
my $HOT = 20000;    # writers touch ids 1..$HOT and 1000001.. only
my ($K1, $K2, $K3, $K4) = map { "Reencrypt-K$_-x9Q!" } 1 .. 4;
my $PROGRESS = q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = current_database()};
my $SUM = "SELECT md5(string_agg(id || ':' || fieldcrypt.decrypt(pw), ',' ORDER BY id)) FROM t WHERE id > $HOT AND id <= $N";
my $MISMATCH = 'SELECT count(*) FROM t WHERE fieldcrypt.decrypt(pw) IS DISTINCT FROM mirror';
my $MISC = q{SELECT string_agg(id || ':' || coalesce(encode(fieldcrypt.decrypt(b), 'hex'), '-') || ':'
  || coalesce(fieldcrypt.decrypt(d), '-') || ':' || coalesce(md5(fieldcrypt.decrypt(big)), '-'), ',' ORDER BY id)
  FROM misc};

my $node = FcNode::new_node('main', reencrypt => 'on');
$node->append_conf('postgresql.conf', <<'EOC');
fieldcrypt.reencrypt_rows_per_second = 50000
fieldcrypt.reencrypt_batch_pages = 32
EOC
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', <<"EOS");
CREATE EXTENSION fieldcrypt;
CREATE TABLE t (id int PRIMARY KEY, pw fieldcrypt.encrypted_text, mirror text);
INSERT INTO t SELECT i, 'secret-' || i, 'secret-' || i FROM generate_series(1, $N) i;
CREATE DOMAIN secret_dom AS fieldcrypt.encrypted_text;
CREATE TABLE misc (id int PRIMARY KEY, b fieldcrypt.encrypted_bytea, d secret_dom,
                   big fieldcrypt.encrypted_text, plain text);
INSERT INTO misc VALUES (1, '\\x01ff02', 'domain-secret-1', repeat('L', 300000)::text, 'p1'),
                        (2, NULL, NULL, NULL, 'p2');
CREATE TABLE audit (n int);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END\$\$;
CREATE TRIGGER misc_audit BEFORE UPDATE ON misc FOR EACH ROW EXECUTE FUNCTION bump();
CREATE ROLE plain_user LOGIN;
VACUUM ANALYZE;
EOS

my $sum_before = $node->safe_psql('app', $SUM);
my $misc_before = $node->safe_psql('app', $MISC);
is($node->safe_psql('app', $MISMATCH), '0', 'before: every value equals its mirror');
is($misc_before, '1:01ff02:domain-secret-1:' . md5_hex('L' x 300000) . ',2:-:-:-',
	'before: bytea, domain, TOASTed and NULL values decrypt');
is($node->safe_psql('app', $PROGRESS), '0', 'no re-encryption before the key change');
# an envelope under generation 1, as a dump would carry it
my $old_envelope = $node->safe_psql('app', 'COPY misc (d) TO STDOUT');
($old_envelope) = $old_envelope =~ /^(fcenc:v1:\S+)$/m;
ok(defined $old_envelope, 'an envelope of generation 1 was read with COPY TO');

# --- concurrent writers ---------------------------------------------------------------
my $script = $node->basedir . '/writers.sql';
open my $fh, '>', $script or die $!;
print $fh <<"EOS";
\\set id random(1, $HOT)
\\set nid random(1000001, 1002000)
UPDATE t SET pw = 'w' || :id || '-' || txid_current(), mirror = 'w' || :id || '-' || txid_current() WHERE id = :id;
INSERT INTO t VALUES (:nid, 'n' || :nid, 'n' || :nid) ON CONFLICT (id) DO UPDATE SET pw = 'u' || :nid, mirror = 'u' || :nid;
DELETE FROM t WHERE id = :nid + 1;
EOS
close $fh;
my ($pgb_out, $pgb_err) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '2', '-T', '12', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'app' ],
	'>', \$pgb_out, '2>', \$pgb_err);
sleep 1;

# --- the key change ---------------------------------------------------------------------
my $log_offset = -s $node->logfile;
my $t0 = time;
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'key change to K1 returns');
ok(time - $t0 < 10, 'the key change returned without waiting for the re-encryption');
sql_is($node, 'app', 'SELECT generation FROM fieldcrypt.key_status', '2', 'generation 2 is current at once');
sql_is($node, 'app', "SELECT from_generation, to_generation FROM fieldcrypt.rotation_progress WHERE database = 'app'",
	'1|2', 'rotation_progress: one row, from generation 1 to 2');

# a second key change while it runs
my ($ret, $out, $err) = FcNode::psql_tls($node, 'app',
	"\\set VERBOSITY verbose\nSELECT fieldcrypt.set_data_encryption_key('$K2')");
like($err, qr/ERROR:  55P03: a data encryption key change is already in progress\n.*DETAIL:  Re-encryption from generation 1 to generation 2 (is running: \d+ of \d+ rows, \d+ of \d+ tables|has not started yet)\./s,
	'a second key change fails with 55P03 and says how far the first one is');

# progress while running
my $seen_midway = 0;
my $seen_rate = 0;
my $writers_midway;    # were the writers running when the first mid-way progress was seen
for (1 .. 300)
{
	my $p = $node->safe_psql('app',
		"SELECT phase, rows_done, rows_total, tables_done, tables_total, rows_per_second > 0, estimated_end IS NOT NULL, started_at IS NOT NULL FROM fieldcrypt.rotation_progress");
	last if $p eq '';
	my ($phase, $done, $total, $tdone, $ttotal, $rate, $eta, $started) = split /\|/, $p;
	if ($phase eq 're-encrypting' && $done > 0 && $done < $total && $ttotal == 2 && $started eq 't')
	{
		$seen_midway++;
		$writers_midway //= $pgbench->pumpable ? 1 : 0;
		$seen_rate++ if $rate eq 't' && $eta eq 't';
	}
	select(undef, undef, undef, 0.1);
}
ok($seen_midway > 0, 'rotation_progress showed rows and tables done and total mid-way');
ok($seen_rate > 0, 'rotation_progress showed a rate and an estimated end');
ok($writers_midway, 'the writers were still running during the re-encryption');

$pgbench->finish;
is($? >> 8, 0, 'the concurrent writers ran without errors') or diag($pgb_err);
my ($ntx) = $pgb_out =~ /number of transactions actually processed: (\d+)/;
ok(($ntx // 0) > 100, "the writers committed transactions (" . ($ntx // 0) . ')');

$node->poll_query_until('app', $PROGRESS, '0') or die 'the re-encryption did not finish';
my $log = log_since($node, $log_offset);
like($log, qr/LOG:  fieldcrypt: re-encryption of database "app" from generation 1 to 2 started: \d+ rows in 2 tables/,
	'log line at start');
like($log, qr/LOG:  fieldcrypt: re-encryption of database "app" to generation 2 finished: \d+ rows rewritten in \d+ pass\(es\); generation\(s\) 1 destroyed/,
	'log line at the end: generation 1 destroyed');
unlike($log, qr/secret-\d|domain-secret/, 'no plaintext in the server log');

is($node->safe_psql('app', $MISMATCH), '0', 'after: no update of the writers was lost (values equal mirrors)');
is($node->safe_psql('app', $SUM), $sum_before, 'after: the checksum of the untouched plaintexts is unchanged');
is($node->safe_psql('app', $MISC), $misc_before, 'after: bytea, domain, TOASTed and NULL values are unchanged');
is($node->safe_psql('app', 'SELECT count(*) FROM audit'), '0', 'user triggers did not fire for the worker');
$node->safe_psql('app', "UPDATE misc SET plain = 'x' WHERE id = 2");
is($node->safe_psql('app', 'SELECT count(*) FROM audit'), '1', 'the trigger still fires for users');

sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '2|1',
	'generation 1 is destroyed in shared memory');
is($node->safe_psql('app', 'SELECT string_agg(generation::text, \',\') FROM fieldcrypt.key_generations'), '2',
	'only generation 2 is left in the metadata');
sql_is($node, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K1, 'retrieve returns K1');
$node->safe_psql('app', "INSERT INTO misc (id, d) VALUES (3, '$old_envelope')");
sql_fails($node, 'app', 'SELECT fieldcrypt.decrypt(d) FROM misc WHERE id = 3', '55000',
	'key generation 1 is not held by this database',
	'a value under the destroyed generation cannot be decrypted');
$node->safe_psql('app', 'DELETE FROM misc WHERE id = 3');

# the keyring on disk lost generation 1 too: a restart keeps one generation
$node->restart;
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '2|1',
	'after a restart: still one generation (the keyring was rewritten)');
is($node->safe_psql('app', $MISMATCH), '0', 'after a restart: values decrypt');

# --- privileges -----------------------------------------------------------------------------
my $bytea_envelope = $node->safe_psql('app', 'COPY misc (b) TO STDOUT');
($bytea_envelope) = $bytea_envelope =~ /^(fcenc:v1:\S+)$/m;
for my $f ("_reencrypt('$old_envelope'::fieldcrypt.encrypted_text)",
	"_reencrypt('$bytea_envelope'::fieldcrypt.encrypted_bytea)",
	"_stale('$old_envelope'::fieldcrypt.encrypted_text)",
	"_stale('$bytea_envelope'::fieldcrypt.encrypted_bytea)")
{
	my ($fname) = $f =~ /^(\w+)/;
	sql_fails($node, 'app', "SET ROLE plain_user; SELECT fieldcrypt.$f", '42501',
		"permission denied for function $fname", "PUBLIC cannot execute fieldcrypt.$fname");
}
sql_is($node, 'app', "SET ROLE plain_user; $PROGRESS", "SET\n0", 'PUBLIC can read rotation_progress');

# --- a second rotation, no writers ----------------------------------------------------------
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K2')", '', 'key change to K2');
$node->poll_query_until('app', $PROGRESS, '0') or die 'the second re-encryption did not finish';
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '3|1',
	'second rotation: generation 2 destroyed');
is($node->safe_psql('app', $MISMATCH), '0', 'second rotation: values equal mirrors');
is($node->safe_psql('app', $SUM), $sum_before, 'second rotation: checksum unchanged');

# --- values inside arrays, composites and domains ------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE blk');
$node->safe_psql('blk', <<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE DOMAIN secret AS fieldcrypt.encrypted_text;
CREATE TYPE pair AS (label text, s fieldcrypt.encrypted_text, n int);
CREATE TYPE nest AS (p pair, many fieldcrypt.encrypted_text[], d secret);
CREATE TABLE a (id int, pw fieldcrypt.encrypted_text, many fieldcrypt.encrypted_text[],
                p pair, deep nest[], d secret, ds secret[]);
CREATE TABLE empty (many fieldcrypt.encrypted_text[]);
INSERT INTO a SELECT g, 'blk-secret-' || g,
       ARRAY['arr-' || g || '-a', NULL, 'arr-' || g || '-c'],
       ROW('pair-' || g, 'pair-secret-' || g, g)::pair,
       ARRAY[ROW(ROW('x', 'deep-' || g, 1)::pair, ARRAY['deep-arr-' || g], 'deep-d-' || g)::nest],
       'dom-' || g, ARRAY['dom-arr-' || g]::secret[]
  FROM generate_series(1, 300) g;
CREATE MATERIALIZED VIEW mv AS SELECT id, pw, many FROM a;
EOS
my $ALL = q{SELECT md5(string_agg(concat_ws('|', id, fieldcrypt.decrypt(pw),
    (SELECT string_agg(coalesce(fieldcrypt.decrypt(x), '-'), ',') FROM unnest(many) x),
    (p).label, fieldcrypt.decrypt((p).s), (p).n,
    (SELECT string_agg(fieldcrypt.decrypt(((x).p).s) || fieldcrypt.decrypt((x).many[1]) || fieldcrypt.decrypt((x).d), ',') FROM unnest(deep) x),
    fieldcrypt.decrypt(d), fieldcrypt.decrypt(ds[1])), ',' ORDER BY id)) FROM a};
my $MV = q{SELECT md5(string_agg(id || fieldcrypt.decrypt(pw) || fieldcrypt.decrypt(many[3]), ',' ORDER BY id)) FROM mv};
my $all_before = $node->safe_psql('blk', $ALL);
my $mv_before = $node->safe_psql('blk', $MV);
# once generation 1 is destroyed, a value left under it could not be decrypted: $ALL would fail
sql_is($node, 'blk', "SELECT fieldcrypt.set_data_encryption_key('$K3')", '', 'blk: key change');
$node->poll_query_until('blk', $PROGRESS, '0')
  or die 'the re-encryption of blk did not finish';
sql_is($node, 'blk', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '2|1',
	'blk: arrays, composites, domains and a materialized view do not block: generation 1 is destroyed');
is($node->safe_psql('blk', $ALL), $all_before, 'blk: every value at every depth decrypts as before');
is($node->safe_psql('blk', $MV), $mv_before, 'blk: the materialized view decrypts as before');
sql_is($node, 'blk', "SELECT fieldcrypt.set_data_encryption_key('$K4')", '', 'blk: a second key change');
$node->poll_query_until('blk', $PROGRESS, '0') or die 'the second re-encryption of blk did not finish';
sql_is($node, 'blk', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '3|1',
	'blk: and again');
is($node->safe_psql('blk', $ALL), $all_before, 'blk: every value still decrypts');

$node->stop;
done_testing();
