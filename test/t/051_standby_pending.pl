# A standby whose keyring is not loaded (wrong cluster key) cannot apply key
# changes it replays. It keeps each newest one in pg_fieldcrypt/keyring.pending,
# so that the change is not lost once a restartpoint has moved past its WAL
# record: after the cluster key is fixed, the next start installs it.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my ($K1, $K2) = ('Exp-Skip-K1-q7Zx!', 'Exp-Skip-K2-q7Zx!');
my $VALUES_SQL = q{SELECT string_agg(id || '=' || fieldcrypt.decrypt(pw), ',' ORDER BY id) FROM t};
my $primary = FcNode::new_node('primary', allows_streaming => 1);
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');
$primary->safe_psql('app', 'CREATE EXTENSION fieldcrypt; CREATE TABLE t (id int, pw fieldcrypt.encrypted_text)');
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'set K1');
$primary->safe_psql('app', "INSERT INTO t VALUES (1, 'v1-k1')");
$primary->backup('b1');
my $sb = FcNode::standby_from_backup('sb', $primary, 'b1');
my $kf = $sb->data_dir . '/pg_fieldcrypt/cluster.key';
my $good = read_bytes($kf);
write_bytes($kf, ('ab' x 32) . "\n");
$sb->start;
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K2')", '', 'set K2');
$primary->safe_psql('app', "INSERT INTO t VALUES (2, 'v2-k2')");
$primary->wait_for_catchup($sb);
ok($sb->log_contains(qr/fieldcrypt: skipped a key change from WAL/), 'skipped logged');
ok(-f $sb->data_dir . '/pg_fieldcrypt/keyring.pending', 'the skipped change is kept in keyring.pending');
# a restartpoint past the record: it is never replayed again
$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->wait_for_catchup($sb);
$sb->safe_psql('postgres', 'CHECKPOINT');
# a start with the wrong key still: the pending change waits, nothing is lost
my $off0 = -s $sb->logfile;
$sb->restart;
ok(log_since($sb, $off0) =~ /a key change received through WAL still waits for the right cluster key/,
	'a start with the wrong key says the change still waits');
ok(-f $sb->data_dir . '/pg_fieldcrypt/keyring.pending', 'and keeps it');
# fix the cause as the hint says, restart
write_bytes($kf, $good);
my $off = -s $sb->logfile;
$sb->restart;
$primary->wait_for_catchup($sb);
my $log = log_since($sb, $off);
ok($log =~ /redo starts at/ && $log !~ /skipped a key change from WAL/,
	'the restart replays no key change record (the restartpoint is past it)');
ok($log =~ /installed a key change received through WAL earlier/, 'the pending change is installed at start');
ok(!-e $sb->data_dir . '/pg_fieldcrypt/keyring.pending', 'keyring.pending is gone');
sql_is($sb, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K2, 'standby after fix: retrieve returns K2');
sql_is($sb, 'app', $VALUES_SQL, '1=v1-k1,2=v2-k2', 'standby after fix: values decrypt');
sql_is($primary, 'app', $VALUES_SQL, '1=v1-k1,2=v2-k2', 'primary: values decrypt');
$sb->stop;
$primary->stop;
done_testing();
