# Re-encryption and streaming replication, and dumps taken before a rotation:
#   - a standby made with pg_basebackup follows two key changes of the primary, each with
#     its re-encryption and the destruction of the old generation (WAL records of the
#     resource manager "fieldcrypt" and ordinary heap WAL): its values decrypt and it keeps
#     one generation, like the primary; rotation_progress is empty on a standby;
#   - promoted while the primary's re-encryption is half-way, its own worker resumes it
#     where the WAL left it; then it changes keys itself, and its worker re-encrypts;
#   - a dump taken before the rotations restores only with the key that was current
#     then, not with the newer key;
#   - its envelopes cannot be decrypted in the rotated database (generation destroyed).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my ($KA, $KB, $KC, $KD, $KE) = map { "Standby-Rotation-K$_-7p!" } qw(A B C D E);
my $PROGRESS = q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = 'app'};
my $SUM = q{SELECT count(*) || ':' || md5(string_agg(id || ':' || fieldcrypt.decrypt(pw) || ':'
  || encode(fieldcrypt.decrypt(b), 'hex'), ',' ORDER BY id)) FROM t};
my $STATUS = 'SELECT generation, generations_kept FROM fieldcrypt.key_status';
my $dir = PostgreSQL::Test::Utils::tempdir;

my $primary = FcNode::new_node('primary', allows_streaming => 1, reencrypt => 'on');
$primary->append_conf('postgresql.conf', "fieldcrypt.reencrypt_rows_per_second = 0\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');
$primary->safe_psql('app', <<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE t (id int PRIMARY KEY, pw fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea);
INSERT INTO t SELECT i, 'standby-secret-' || i, decode(md5(i::text), 'hex') FROM generate_series(1, 3000) i;
EOS
my $sum = $primary->safe_psql('app', $SUM);

# generation 2 (KA): the key of the dump
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$KA')", '', 'primary: set KA');
$primary->poll_query_until('app', $PROGRESS, '0') or die 'the first re-encryption did not finish';
sql_is($primary, 'app', $STATUS, '2|1', 'primary: generation 2, generation 1 destroyed');
command_ok([ 'pg_dump', '-Fc', '-d', $primary->connstr('app'), '-f', "$dir/before.dump" ],
	'a dump taken before the rotations');
my $envelope = $primary->safe_psql('app', 'COPY t (pw) TO STDOUT');
($envelope) = $envelope =~ /^(fcenc:v1:\S+)$/m;

# A streaming standby.
$primary->backup('b1');
my $standby = FcNode::standby_from_backup('standby', $primary, 'b1');
$standby->start;
is($standby->safe_psql('app', $SUM), $sum, 'standby: the values decrypt');

for my $step ([ $KB, 3 ], [ $KC, 4 ])
{
	my ($key, $gen) = @$step;
	sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$key')", '', "primary: key change to generation $gen");
	$primary->poll_query_until('app', $PROGRESS, '0') or die "re-encryption to $gen did not finish";
	sql_is($primary, 'app', $STATUS, "$gen|1", "primary: generation $gen, older one destroyed");
	$primary->wait_for_catchup($standby);
	sql_is($standby, 'app', $STATUS, "$gen|1", "standby: generation $gen, older one destroyed (from WAL)");
	is($standby->safe_psql('app', $SUM), $sum, "standby: the values decrypt after the rotation to $gen");
	is($standby->safe_psql('app', 'SELECT count(*) FROM fieldcrypt.rotation_progress'), '0',
		'standby: rotation_progress is empty in recovery');
}
is($primary->safe_psql('app', $SUM), $sum, 'primary: the values decrypt after two rotations');
is(read_bytes($standby->data_dir . '/pg_fieldcrypt/keyring'), read_bytes($primary->data_dir . '/pg_fieldcrypt/keyring'),
	'standby: its keyring file is the primary\'s');

# envelopes of the dump (generation 2) are no longer readable in the rotated database
$primary->safe_psql('app', "CREATE TABLE old (pw fieldcrypt.encrypted_text); INSERT INTO old VALUES ('$envelope')");
sql_fails($primary, 'app', 'SELECT fieldcrypt.decrypt(pw) FROM old', '55000',
	'key generation 2 is not held by this database',
	'primary: a value from the old dump cannot be decrypted after the rotations');
$primary->safe_psql('app', 'DROP TABLE old');
$primary->wait_for_catchup($standby);

# --- a third rotation, interrupted by the promotion of the standby ---------------------------
# (the primary's settings only: the standby's postgresql.conf came with the backup)
$primary->append_conf('postgresql.conf', "fieldcrypt.reencrypt_batch_pages = 4\nfieldcrypt.test_reencrypt_pause_after_batches = 2\n");
$primary->reload;
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$KD')", '', 'primary: key change to generation 5');
$primary->poll_query_until('app', q{SELECT phase FROM fieldcrypt.rotation_progress}, 'paused for testing')
  or die 'the primary did not pause';
$primary->wait_for_catchup($standby);
sql_is($standby, 'app', $STATUS, '5|2', 'standby: generation 5 current, generation 4 still kept');
is($standby->safe_psql('app', $SUM), $sum, 'standby: values of both generations decrypt mid-way');

my $offset = -s $standby->logfile;
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die 'promotion failed';
$standby->poll_query_until('app', $PROGRESS, '0') or die 'the promoted standby did not finish the re-encryption';
like(log_since($standby, $offset), qr/re-encryption of database "app" from generation 4 to 5 resumed in pass 1 at table 1 of 1, block 8:/,
	'promoted: its worker resumed the primary\'s re-encryption where the WAL left it');
sql_is($standby, 'app', $STATUS, '5|1', 'promoted: generation 4 destroyed by its own worker');
is($standby->safe_psql('app', $SUM), $sum, 'promoted: the values decrypt');

# --- the promoted standby changes keys itself ------------------------------------------------
sql_is($standby, 'app', "SELECT fieldcrypt.set_data_encryption_key('$KE')", '', 'promoted: key change to generation 6');
$standby->poll_query_until('app', $PROGRESS, '0') or die 'the promoted standby did not re-encrypt';
sql_is($standby, 'app', $STATUS, '6|1', 'promoted: generation 6, generation 5 destroyed');
is($standby->safe_psql('app', $SUM), $sum, 'promoted: the values decrypt after its own rotation');
sql_is($standby, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KE, 'promoted: retrieve returns KE');

# --- the old dump restores only with the old key -------------------------------------------
$standby->safe_psql('postgres', 'CREATE DATABASE restored');
command_ok([ 'pg_restore', '-d', $standby->connstr('restored'), "$dir/before.dump" ],
	'the old dump restores into the promoted standby');
sql_fails($standby, 'restored', "SELECT fieldcrypt.set_data_encryption_key('$KC')", '28P01',
	'data encryption key does not match this database', 'the old dump does not accept the newer key');
sql_fails($standby, 'restored', "SELECT fieldcrypt.set_data_encryption_key('$KE')", '28P01',
	'data encryption key does not match this database', 'nor the newest');
sql_is($standby, 'restored', "SELECT fieldcrypt.set_data_encryption_key('$KA')", '',
	'the old dump accepts the key that was current when it was taken');
is($standby->safe_psql('restored', $SUM), $sum, 'the old dump decrypts with its key');

$standby->stop;
$primary->stop;
done_testing();
