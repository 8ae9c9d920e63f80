# Key state through WAL: every key change is WAL-logged by the custom resource manager
# "fieldcrypt" (ID 205) as the whole keyring image sealed under the cluster key.
#   - a streaming standby (made with pg_basebackup, so it has the primary's cluster key)
#     follows key changes, activations and dropped databases: its values decrypt, its
#     keyring file is the primary's, and a restart loads it from its own disk;
#   - the promoted standby changes keys on its own;
#   - crash recovery replays key changes, also over a stale keyring file;
#   - a standby with another cluster key stays up, keeps its previous keys and says so:
#     "skipped" when its own keyring could not be loaded at start, "could not apply"
#     when its (empty) keyring was loaded but the records are sealed with another key;
#   - WAL never holds a passphrase or a value in clear; pg_waldump shows one custom205
#     record per key change.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my ($K1, $K2, $K3, $K4, $K5, $K6) = map { "Wal-Standby-K$_-q7Zx!" } 1 .. 6;
my @KEYS = ($K1, $K2, $K3, $K4, $K5, $K6);
my $UNAVAILABLE = 'fieldcrypt keyring is not available';
my $STATUS = 'SELECT generation, generations_kept, key_loaded, keyring FROM fieldcrypt.key_status';
my $VALUES_SQL = q{SELECT string_agg(id || '=' || fieldcrypt.decrypt(pw), ',' ORDER BY id) FROM t};
my $RETRIEVE = 'SELECT fieldcrypt.retrieve_data_encryption_key()';
my $LOADED_RE = qr/fieldcrypt: keyring loaded with keys of (\d+) database\(s\)/;
my $SKIPPED = 'fieldcrypt: skipped a key change from WAL: this server\'s keyring is not loaded';
my $NOT_APPLIED = 'fieldcrypt: could not apply a key change from WAL, keeping the previous keys';
my $CANARY = 'Wal-Plain-Canary-5s9K';

my %plain;    # id => plaintext of every row of app.t
my @ROW_SECRETS;
sub expected_values
{
	return join ',', map { "$_=$plain{$_}" } sort { $a <=> $b } keys %plain;
}

# Insert rows into app.t on $node: id => plaintext.
sub add_rows
{
	my ($node, %rows) = @_;
	my $sql = join ";\n",
	  map { "INSERT INTO t VALUES ($_, '$rows{$_}')" } sort { $a <=> $b } keys %rows;
	$node->safe_psql('app', $sql);
	%plain = (%plain, %rows);
	push @ROW_SECRETS, values %rows;
	return;
}

# The database count of the last "keyring loaded" line after $offset, or -1.
sub loaded_count
{
	my ($node, $offset) = @_;
	my @n = log_since($node, $offset) =~ /$LOADED_RE/g;
	return @n ? $n[-1] : -1;
}

sub restart_standby
{
	my ($node) = @_;
	my $offset = -s $node->logfile;
	$node->restart;
	return $offset;
}

# pg_waldump of [start, end) on $node: the lines of fieldcrypt's records.
sub custom_records
{
	my ($node, $start, $end, $tli) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_waldump', '-p', $node->data_dir . '/pg_wal', '-t', $tli // 1,
			'-s', $start, '-e', $end ], '>', \$out, '2>', \$err);
	diag("pg_waldump: $err") if $? != 0;
	return grep { /^rmgr: custom205 / } split /\n/, $out;
}


my $primary = FcNode::new_node('primary', allows_streaming => 1);
# keep every WAL segment, so the scan at the end sees all of them
$primary->append_conf('postgresql.conf', "wal_keep_size = '1GB'");
$primary->start;
my $keyfile_rel = 'pg_fieldcrypt/cluster.key';
my $ring_rel = 'pg_fieldcrypt/keyring';
my $primary_kek = read_bytes($primary->data_dir . "/$keyfile_rel");

# b0: before any database was activated, so it holds no keyring
$primary->backup('b0');
ok(!-e $primary->backup_dir . "/b0/$ring_rel", 'b0 holds no keyring');

# --- Activation, a key change, a backup ----------------------------------------------
$primary->safe_psql('postgres', 'CREATE DATABASE app');
$primary->safe_psql('app', <<"EOS");
CREATE EXTENSION fieldcrypt;
CREATE TABLE t (id int PRIMARY KEY, pw fieldcrypt.encrypted_text);
CREATE TABLE canary (v text);
EOS
add_rows($primary, 1 => 'Row-Secret-01-generated');
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'primary: set K1');
add_rows($primary, 2 => 'Row-Secret-02-k1', 3 => 'Row-Secret-03-k1');
sql_is($primary, 'app', $VALUES_SQL, expected_values(), 'primary: the values decrypt');
$primary->backup('b1');
is(read_bytes($primary->backup_dir . "/b1/$keyfile_rel"), $primary_kek,
	'b1 carries the cluster key of the primary');

# A streaming standby from b1: pg_basebackup copied postgresql.conf (preload, TLS),
# the certificate and pg_fieldcrypt.
my $standby = FcNode::standby_from_backup('standby', $primary, 'b1');
$standby->start;
is((stat $standby->data_dir . "/$keyfile_rel")[2] & 07777, 0600,
	'standby: cluster.key is private (mode 0600)');
is(loaded_count($standby, 0), 1, 'standby: its keyring (from the backup) is loaded at start');
sql_is($standby, 'app', 'SELECT pg_is_in_recovery(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
	't|t', 'standby: in recovery, reached over TLS');

# A standby from b1 with another cluster key: its keyring from the backup cannot be
# unsealed, so it is not loaded at all.
my $wrong_kek = join('', map { sprintf '%02x', int(rand(256)) } 1 .. 32) . "\n";
my $foreign = FcNode::standby_from_backup('foreign', $primary, 'b1');
write_bytes($foreign->data_dir . "/$keyfile_rel", $wrong_kek);
chmod 0600, $foreign->data_dir . "/$keyfile_rel";
my $foreign_ring = read_bytes($foreign->data_dir . "/$ring_rel");
$foreign->start;
like(log_since($foreign, 0),
	qr/WARNING:  fieldcrypt: keyring not loaded, encrypted data is inaccessible\n[^\n]*DETAIL:  "pg_fieldcrypt\/keyring" could not be authenticated/,
	'foreign: keyring not loaded at start (sealed with the primary key)');

# A standby from b0 with another cluster key: no keyring, so an empty one is loaded;
# the records from the primary cannot be unsealed with its key.
my $fresh = FcNode::standby_from_backup('fresh', $primary, 'b0');
write_bytes($fresh->data_dir . "/$keyfile_rel", $wrong_kek);
chmod 0600, $fresh->data_dir . "/$keyfile_rel";
$fresh->start;
is(loaded_count($fresh, 0), 0, 'fresh: an empty keyring is loaded at start');

# --- Key changes reach the standby -------------------------------------------------------
# a plain value in WAL after b1, for the WAL scan at the end to find
$primary->safe_psql('app', "INSERT INTO canary VALUES ('$CANARY')");
my $lsn0 = $primary->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K2')", '', 'primary: set K2');
my $lsn1 = $primary->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
my @recs = custom_records($primary, $lsn0, $lsn1);
is(scalar @recs, 1, 'pg_waldump: one custom205 record for one key change')
  or diag(join "\n", @recs);
like($recs[0] // '', qr/^rmgr: custom205 +len \(rec\/tot\): +\d+\/ *\d+, tx: +\d+, lsn: /,
	'pg_waldump: the record is shown as rmgr custom205');
add_rows($primary, 4 => 'Row-Secret-04-k2');
$primary->wait_for_catchup($standby);
# A session on the standby that has the keys of K2 cached sees K3 once it is replayed.
my $bg = $standby->background_psql('app', on_error_stop => 1,
	extra_params => [ '-d', FcNode::tls_connstr($standby, 'app') ]);
is($bg->query_safe($VALUES_SQL), expected_values(), 'standby session: the values up to K2 decrypt');
is($bg->query_safe($RETRIEVE), $K2, 'standby session: retrieve returns K2');
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K3')", '', 'primary: set K3');
my $lsn_k3 = $primary->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
add_rows($primary, 5 => 'Row-Secret-05-k3', 6 => 'Row-Secret-06-k3');
$primary->wait_for_catchup($standby);
is($bg->query_safe($VALUES_SQL), expected_values(),
	'standby session: after the replay of K3 the same session decrypts the new values');
is($bg->query_safe($RETRIEVE), $K3, 'standby session: and retrieve returns K3');
$bg->quit;

sql_is($standby, 'app', $VALUES_SQL, expected_values(),
	'standby: the values of every generation decrypt');
sql_is($standby, 'app', $RETRIEVE, $K3, 'standby: retrieve returns K3');
sql_is($standby, 'app', $STATUS, '4|4|t|loaded',
	'standby: generation 4 (generated, K1, K2, K3), 4 generations kept');
is(read_bytes($standby->data_dir . "/$ring_rel"), read_bytes($primary->data_dir . "/$ring_rel"),
	'standby: its keyring file is the primary\'s image');
ok(!$standby->log_contains(qr/\Q$NOT_APPLIED\E|fieldcrypt: skipped/),
	'standby: no key change was skipped or refused');

# --- Restart of the standby: the keys come from its own keyring file -----------------
# A restartpoint past the key changes: they are not replayed again at the restart.
$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->wait_for_catchup($standby);
$standby->safe_psql('postgres', 'CHECKPOINT');
my $offset = restart_standby($standby);
my ($redo) = log_since($standby, $offset) =~ m{redo starts at ([0-9A-F]+/[0-9A-F]+)};
is($standby->safe_psql('postgres', "SELECT '" . ($redo // '0/0') . "'::pg_lsn > '$lsn_k3'::pg_lsn"), 't',
	'standby restart: replay starts after the K3 record, the keys come from the disk');
my $standby_dbs = loaded_count($standby, $offset);
is($standby_dbs, 1, 'standby restart: the keyring is loaded with one database');
sql_is($standby, 'app', $RETRIEVE, $K3, 'standby restart: retrieve still returns K3');
sql_is($standby, 'app', $VALUES_SQL, expected_values(), 'standby restart: the values decrypt');

# --- An activated database, then a dropped one ---------------------------------------
$primary->safe_psql('postgres', 'CREATE DATABASE app2');
$primary->safe_psql('app2', <<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE t2 (id int, pw fieldcrypt.encrypted_text);
INSERT INTO t2 VALUES (1, 'Row-Secret-App2');
EOS
push @ROW_SECRETS, 'Row-Secret-App2';
my ($ret, $app2_key, $err) = FcNode::psql_tls($primary, 'app2', $RETRIEVE);
like($app2_key, qr/^Fc1\./, 'primary: app2 was auto-activated with a generated key');
$primary->wait_for_catchup($standby);
sql_is($standby, 'app2', 'SELECT fieldcrypt.decrypt(pw) FROM t2', 'Row-Secret-App2',
	'standby: a value of the newly activated database decrypts');
sql_is($standby, 'app2', $RETRIEVE, $app2_key, 'standby: retrieve in app2 returns the generated key');
$offset = restart_standby($standby);
is(loaded_count($standby, $offset), $standby_dbs + 1,
	'standby restart: the keyring holds one more database');
my $with_app2 = $standby_dbs + 1;

$primary->safe_psql('postgres', 'DROP DATABASE app2');
$primary->wait_for_catchup($standby);
is(read_bytes($standby->data_dir . "/$ring_rel"), read_bytes($primary->data_dir . "/$ring_rel"),
	'standby: after DROP DATABASE its keyring file is the primary\'s image again');
$offset = restart_standby($standby);
is(loaded_count($standby, $offset), $with_app2 - 1,
	'standby restart: the dropped database left the keyring');
sql_is($standby, 'app', $RETRIEVE, $K3, 'standby: the key of app is still K3');

# --- Standbys with another cluster key -------------------------------------------------
$primary->wait_for_catchup($foreign);
$primary->wait_for_catchup($fresh);

my $skipped = () = log_since($foreign, 0) =~ /WARNING:  \Q$SKIPPED\E/g;
is($skipped, 4, 'foreign: the log says each key change since b1 was skipped (K2, K3, app2 activated and dropped)');
unlike(log_since($foreign, 0), qr/\Q$NOT_APPLIED\E/, 'foreign: nothing was tried to be applied');
sql_is($foreign, 'app', 'SELECT 1', '1', 'foreign: the standby is up');
is($foreign->safe_psql('app', 'SELECT count(*) FROM t'), scalar(keys %plain),
	'foreign: the rows were replicated');
sql_fails($foreign, 'app', $RETRIEVE, '58000', $UNAVAILABLE, 'foreign: retrieve fails with 58000');
sql_fails($foreign, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K4')", '58000', $UNAVAILABLE,
	'foreign: set fails with 58000');
sql_fails($foreign, 'app', $VALUES_SQL, '58000', $UNAVAILABLE, 'foreign: decrypt fails with 58000');
is(read_bytes($foreign->data_dir . "/$ring_rel"), $foreign_ring, 'foreign: its keyring file is untouched');

my $fresh_log = log_since($fresh, 0);
like($fresh_log,
	qr/WARNING:  \Q$NOT_APPLIED\E\n[^\n]*DETAIL:  a key change record in WAL could not be authenticated: it is corrupted or sealed with another cluster key\. The change is kept in "pg_fieldcrypt\/keyring\.pending" and installed at the next start that has the right cluster key\.\n/,
	'fresh: the log says a key change could not be applied and why');
my $not_applied = () = $fresh_log =~ /\Q$NOT_APPLIED\E/g;
is($not_applied, 6, 'fresh: each key change since b0 could not be applied (app activated, K1, K2, K3, app2 activated and dropped)');
sql_is($fresh, 'app', 'SELECT 1', '1', 'fresh: the standby is up');
ok(!-e $fresh->data_dir . "/$ring_rel", 'fresh: no keyring file was written');
sql_fails($fresh, 'app', $RETRIEVE, '55000', 'the data encryption key of this database has not been restored',
	'fresh: app has no key (its previous, empty keyring was kept)');
sql_fails($fresh, 'app', $VALUES_SQL, '55000', 'no data encryption key is loaded for database "app"',
	'fresh: decrypt fails with 55000');
sql_is($fresh, 'app', $STATUS, '4|0|f|loaded', 'fresh: key_status shows no key kept');
$foreign->stop;
$fresh->stop;

# --- Promotion: the former standby changes keys on its own -------------------------------
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
my $tli = $standby->safe_psql('postgres', 'SELECT timeline_id FROM pg_control_checkpoint()');
$lsn0 = $standby->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
sql_is($standby, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K4')", '', 'promoted: set K4');
$lsn1 = $standby->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
is(scalar(custom_records($standby, $lsn0, $lsn1, $tli)), 1,
	'promoted: pg_waldump shows its own custom205 record for K4');
my %promoted_rows = (7 => 'Row-Secret-07-k4');
$standby->safe_psql('app', "INSERT INTO t VALUES (7, '$promoted_rows{7}')");
push @ROW_SECRETS, values %promoted_rows;
sql_is($standby, 'app', $VALUES_SQL, expected_values() . ",7=$promoted_rows{7}",
	'promoted: old and new values decrypt');
sql_is($standby, 'app', $RETRIEVE, $K4, 'promoted: retrieve returns K4');
sql_is($standby, 'app', $STATUS, '5|5|t|loaded', 'promoted: generation 5, 5 kept');
$standby->restart;
sql_is($standby, 'app', $RETRIEVE, $K4, 'promoted: K4 survives a restart');

# --- Crash recovery on the (old) primary -------------------------------------------------
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K5')", '', 'primary: set K5');
add_rows($primary, 8 => 'Row-Secret-08-k5');
$primary->stop('immediate');
$primary->start;
sql_is($primary, 'app', $RETRIEVE, $K5, 'crash recovery: retrieve returns K5');
sql_is($primary, 'app', $VALUES_SQL, expected_values(), 'crash recovery: all values decrypt');

# The same with the keyring file of before the change: only WAL replay brings K6.
my $stale = read_bytes($primary->data_dir . "/$ring_rel");
sql_is($primary, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K6')", '', 'primary: set K6');
add_rows($primary, 9 => 'Row-Secret-09-k6');
$primary->stop('immediate');
write_bytes($primary->data_dir . "/$ring_rel", $stale);
$offset = -s $primary->logfile;
$primary->start;
is(loaded_count($primary, $offset), 1, 'stale keyring: it is loaded at start');
sql_is($primary, 'app', $RETRIEVE, $K6, 'stale keyring: crash recovery replays K6 from WAL');
sql_is($primary, 'app', $VALUES_SQL, expected_values(), 'stale keyring: all values decrypt');
sql_is($primary, 'app', $STATUS, '6|6|t|loaded', 'stale keyring: generation 6, 6 kept');
isnt(read_bytes($primary->data_dir . "/$ring_rel"), $stale, 'stale keyring: replay rewrote the file');
ok(!$primary->log_contains(qr/\Q$NOT_APPLIED\E|fieldcrypt: skipped/),
	'primary: no key change was skipped or refused in recovery');

# --- WAL never holds a passphrase or a value in clear ------------------------------------
sub wal_scan
{
	my ($node) = @_;
	my $dir = $node->data_dir . '/pg_wal';
	opendir my $dh, $dir or die "opendir $dir: $!";
	my @segs = grep { /^[0-9A-F]{24}(?:\.partial)?$/ } readdir $dh;
	closedir $dh;
	my %found;
	for my $seg (@segs)
	{
		my $data = read_bytes("$dir/$seg");
		for my $s (grep { length } @KEYS, @ROW_SECRETS, $CANARY, $app2_key)
		{
			$found{$s}++ if index($data, $s) >= 0;
		}
	}
	return (scalar @segs, \%found);
}
for my $node ($primary, $standby)
{
	my $name = $node->name;
	my ($nsegs, $found) = wal_scan($node);
	cmp_ok($nsegs, '>=', 2, "$name: WAL segments to scan");
	ok($found->{$CANARY}, "$name: the scan finds a plain value in WAL");
	my @leaked = grep { length && $found->{$_} } @KEYS, $app2_key;
	is("@leaked", '', "$name: no passphrase in clear in WAL");
	@leaked = grep { $found->{$_} } @ROW_SECRETS;
	is("@leaked", '', "$name: no encrypted value in clear in WAL");
}

$standby->stop;
$primary->stop;
done_testing();
