# Prepared key changes survive failover, crash and PITR, and an old one is never applied
# (issue 15; src/keys/prepared.c, records XLOG_FC_PREPARED / _DONE of src/keys/wal.c):
#   - the file of a key change sealed by PREPARE TRANSACTION reaches a streaming standby
#     through WAL (same bytes); ROLLBACK PREPARED on the primary removes it there too;
#   - two standbys promoted while a key change is prepared: COMMIT PREPARED on one applies
#     the change there (key, key_generations, old and new values decrypt, after a restart
#     too); ROLLBACK PREPARED on the other leaves no file and the old key;
#   - a file of a committed change put back after it was applied (keyring = its target) is
#     only removed; a file put back after a later key change is older than the keyring: not
#     applied (WARNING, kept aside as <xid>.stale), the keyring keeps the newer generation;
#   - pg_ctl stop -m immediate right after PREPARE (crash recovery replays the file) and right
#     after COMMIT PREPARED: correct after the restart, nothing left behind;
#   - PITR from a base backup taken before the PREPARE: to a restore point while the change is
#     prepared, the restored node holds the file and COMMIT PREPARED applies it; to a point
#     after a later key change, the later key is current and no file (stale or not) is left.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my @K = map { "Failover-Marker-K$_-8w!" } 0 .. 6;
my $KEY = 'SELECT fieldcrypt.retrieve_data_encryption_key()';
my $GENS = "SELECT string_agg(generation::text, ',' ORDER BY generation) FROM fieldcrypt.key_generations";
my $VALUES = q{SELECT string_agg(fieldcrypt.decrypt(v), ',' ORDER BY id) FROM t};

my $p = FcNode::new_node('primary', allows_streaming => 1);
$p->append_conf('postgresql.conf', "max_prepared_transactions = 10\nlog_statement = none\n");
$p->start;
$p->safe_psql('postgres', 'CREATE DATABASE k');
$p->safe_psql('k', 'SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt');
safe_tls($p, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[0]')");
safe_tls($p, 'k', "CREATE TABLE t (id int, v fieldcrypt.encrypted_text); INSERT INTO t VALUES (1, 'before')");

sub files_of
{
	my ($node) = @_;
	my $dir = $node->data_dir . '/pg_fieldcrypt/prepared';
	opendir my $dh, $dir or return ();
	my @f = sort grep { !/^\./ } readdir $dh;
	closedir $dh;
	return @f;
}
sub file_of { my ($node, $name) = @_; return read_bytes($node->data_dir . "/pg_fieldcrypt/prepared/$name"); }

$p->backup('b1');
my $s1 = FcNode::standby_from_backup('standby1', $p, 'b1');
my $s2 = FcNode::standby_from_backup('standby2', $p, 'b1');
$_->start for ($s1, $s2);
$p->wait_for_catchup($_) for ($s1, $s2);
sql_is($s1, 'k', $KEY, $K[0], 'set-up: the standby follows the key');

# --- a prepared change reaches the standbys; ROLLBACK PREPARED removes it there ----------------
safe_tls($p, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[1]');\nPREPARE TRANSACTION 'fc_f1';");
my $x1 = $p->safe_psql('k', q{SELECT transaction FROM pg_prepared_xacts WHERE gid = 'fc_f1'});
$p->wait_for_catchup($s1);
is(join(',', files_of($s1)), $x1, 'the standby holds the file of the prepared change (named by its xid)');
is(file_of($s1, $x1), file_of($p, $x1), 'with the same bytes as the primary');
unlike(file_of($s1, $x1), qr/\Q$K[1]\E/, 'no passphrase in it in clear');
safe_tls($p, 'k', "ROLLBACK PREPARED 'fc_f1'");
$p->wait_for_catchup($s1);
is(join(',', files_of($p)) . '|' . join(',', files_of($s1)), '|', 'ROLLBACK PREPARED removed the file on the primary and the standby');
sql_is($s1, 'k', $KEY, $K[0], 'the standby keeps the old key');

# --- failover while a change is prepared ----------------------------------------------------------
safe_tls($p, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[2]');\nPREPARE TRANSACTION 'fc_f2';");
my $x2 = $p->safe_psql('k', q{SELECT transaction FROM pg_prepared_xacts WHERE gid = 'fc_f2'});
$p->wait_for_catchup($_) for ($s1, $s2);
my $gens0 = $p->safe_psql('k', $GENS);
$p->stop('immediate');
$s1->promote;
$s2->promote;
$_->poll_query_until('k', 'SELECT NOT pg_is_in_recovery()') or die 'promotion' for ($s1, $s2);
sql_is($s1, 'k', q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'fc_f2'}, '1', 'the promoted node inherits the prepared transaction');
is(join(',', files_of($s1)), $x2, 'and its key change file (the start-up pass keeps it: still prepared)');
my $saved = file_of($s1, $x2);
sql_is($s1, 'k', $KEY, $K[0], 'while prepared the old key is current there');
sql_is($s1, 'k', "COMMIT PREPARED 'fc_f2'", 'COMMIT PREPARED', 'COMMIT PREPARED on the promoted node');
sql_is($s1, 'k', $KEY, $K[2], 'the key change is applied on the promoted node');
my $gens2 = $s1->safe_psql('k', $GENS);
isnt($gens2, $gens0, 'key_generations shows the new generation') or diag($gens2);
is(scalar files_of($s1), 0, 'the file is gone once applied');
safe_tls($s1, 'k', "INSERT INTO t VALUES (2, 'after')");
sql_is($s1, 'k', $VALUES, 'before,after', 'values of the old and the new generation decrypt');
$s1->restart;
sql_is($s1, 'k', $KEY, $K[2], 'the applied change survives a restart of the promoted node');

sql_is($s2, 'k', "ROLLBACK PREPARED 'fc_f2'", 'ROLLBACK PREPARED', 'ROLLBACK PREPARED on the other promoted node');
is(scalar files_of($s2), 0, 'leaves no file');
sql_is($s2, 'k', $KEY, $K[0], 'and the old key');
sql_is($s2, 'k', $GENS, $gens0, 'and the old generations');

# --- a file put back: applied before → removed; older than the keyring → not applied ---------------
my $path = $s1->data_dir . "/pg_fieldcrypt/prepared/$x2";
sub put_back
{
	write_bytes($path, $saved);
	chmod 0600, $path;
	system('chown', 'postgres', $path) == 0 or die 'chown';
	return;
}
put_back();
my $offset = -s $s1->logfile;
$s1->restart;
ok($s1->poll_query_until('k', "SELECT count(*) = 0 FROM pg_ls_dir('pg_fieldcrypt/prepared')"),
	'a file of a change applied before: removed at start');
# the unlink comes before the directory's fsync, the WAL record and the log line
ok($s1->wait_for_log(qr/LOG:  fieldcrypt: removed the key change of transaction $x2: it was applied before/, $offset),
	'the log says it was applied before');
sql_is($s1, 'k', $KEY, $K[2], 'the key is unchanged');
sql_is($s1, 'k', $GENS, $gens2, 'and the generations');

safe_tls($s1, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[3]')");
my $gens3 = $s1->safe_psql('k', $GENS);
safe_tls($s1, 'k', "INSERT INTO t VALUES (3, 'later')");
put_back();
$offset = -s $s1->logfile;
$s1->restart;
ok($s1->poll_query_until('k', "SELECT count(*) = 1 FROM pg_ls_dir('pg_fieldcrypt/prepared') f WHERE f = '$x2.stale'"),
	'a file older than the keyring is set aside as <xid>.stale');
# the rename comes before the directory's fsync, the WAL record and the WARNING
ok($s1->wait_for_log(qr/WARNING:  fieldcrypt: the key change of prepared transaction $x2 is older than the keyring and was not applied/, $offset),
	'with a WARNING');
my $log = log_since($s1, $offset);
like($log, qr/DETAIL:  It was made when generation \d+ was current; the keyring holds generation \d+\. The file was kept as "pg_fieldcrypt\/prepared\/$x2\.stale"\./,
	'whose detail names the generations and the file');
ok(!-e $path, 'the file is not there under its own name any more');
sql_is($s1, 'k', $KEY, $K[3], 'the keyring keeps the newer key');
sql_is($s1, 'k', $GENS, $gens3, 'and the newer generations');
sql_is($s1, 'k', $VALUES, 'before,after,later', 'every value still decrypts');
# the set-aside file is not taken for a prepared change: key changes go on
safe_tls($s1, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[4]')");
sql_is($s1, 'k', $KEY, $K[4], 'key changes go on beside the set-aside file');
ok(-e "$path.stale", 'which stays for the administrator');

# --- stop -m immediate right after PREPARE and right after COMMIT PREPARED -------------------------
$s1->safe_psql('k', 'CHECKPOINT');
safe_tls($s1, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[5]');\nPREPARE TRANSACTION 'fc_f3';");
my $x3 = $s1->safe_psql('k', q{SELECT transaction FROM pg_prepared_xacts WHERE gid = 'fc_f3'});
my $bytes3 = file_of($s1, $x3);
unlink $s1->data_dir . "/pg_fieldcrypt/prepared/$x3";	# as if the crash lost the file: WAL has it
$s1->stop('immediate');
$s1->start;
is(file_of($s1, $x3), $bytes3, 'after a crash right after PREPARE, crash recovery wrote the file again from WAL');
sql_is($s1, 'k', $KEY, $K[4], 'the old key is current');
sql_is($s1, 'k', "COMMIT PREPARED 'fc_f3'", 'COMMIT PREPARED', 'COMMIT PREPARED after the restart');
sql_is($s1, 'k', $KEY, $K[5], 'the change is applied');
my $gens5 = $s1->safe_psql('k', $GENS);
$offset = -s $s1->logfile;
$s1->stop('immediate');
$s1->start;
sql_is($s1, 'k', $KEY, $K[5], 'after a crash right after COMMIT PREPARED the change is still applied');
sql_is($s1, 'k', $GENS, $gens5, 'with the same generations');
is(join(',', grep { $_ ne "$x2.stale" } files_of($s1)), '', 'and no file is left');
unlike(log_since($s1, $offset), qr/removed the key change of transaction $x3/,
	'the start-up pass found nothing of it to remove (the apply had removed it, and WAL says so)');
sql_is($s1, 'k', $VALUES, 'before,after,later', 'every value decrypts');

# --- no passphrase in any log or file ------------------------------------------------------------
is(scalar(grep { /Failover-Marker/ } map { slurp_file($_->logfile) } ($p, $s1, $s2)), 0, 'no passphrase in any log');
unlike(read_bytes("$path.stale"), qr/Failover-Marker/, 'nor in the set-aside file');

$_->stop for ($s1, $s2);

# --- PITR ------------------------------------------------------------------------------------------
my $q = FcNode::new_node('pitr', allows_streaming => 1, has_archiving => 1);
$q->append_conf('postgresql.conf', "max_prepared_transactions = 10\nlog_statement = none\n");
$q->start;
$q->safe_psql('postgres', 'CREATE DATABASE k');
$q->safe_psql('k', 'SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt');
safe_tls($q, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[0]')");
safe_tls($q, 'k', "CREATE TABLE t (id int, v fieldcrypt.encrypted_text); INSERT INTO t VALUES (1, 'before')");
$q->backup('pitr0');
safe_tls($q, 'k', "BEGIN;\nSELECT fieldcrypt.set_data_encryption_key('$K[1]');\nPREPARE TRANSACTION 'fc_p1';");
$q->safe_psql('postgres', q{SELECT pg_create_restore_point('while_prepared')});
safe_tls($q, 'k', "COMMIT PREPARED 'fc_p1'");
safe_tls($q, 'k', "SELECT fieldcrypt.set_data_encryption_key('$K[2]')");
my $gensq = $q->safe_psql('k', $GENS);
$q->safe_psql('postgres', q{SELECT pg_create_restore_point('after_later_change')});
my $seg = $q->safe_psql('postgres', 'SELECT pg_walfile_name(pg_switch_wal())');
ok($q->poll_query_until('postgres', "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver"),
	'PITR set-up: the WAL is archived');
$q->stop;

# a node restored from the base backup up to restore point $target (then promoted)
sub restored
{
	my ($name, $target) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	my $old = umask 0077;
	$node->init_from_backup($q, 'pitr0', has_restoring => 1, standby => 0);
	umask $old;
	# its own timeline stays out of the archive, and it follows the primary's timeline only
	$node->append_conf('postgresql.conf', "recovery_target_name = '$target'\nrecovery_target_action = 'promote'\n"
		  . "recovery_target_timeline = 'current'\narchive_mode = off\n");
	$node->start;
	$node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die "PITR to $target";
	return $node;
}

my $r1 = restored('pitr_prepared', 'while_prepared');
sql_is($r1, 'k', q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'fc_p1'}, '1',
	'PITR to a point while prepared: the transaction is prepared');
is(scalar files_of($r1), 1, 'and its key change file was replayed (the base backup predates it)');
sql_is($r1, 'k', $KEY, $K[0], 'the old key is current');
sql_is($r1, 'k', "COMMIT PREPARED 'fc_p1'", 'COMMIT PREPARED', 'COMMIT PREPARED on the restored node');
sql_is($r1, 'k', $KEY, $K[1], 'applies the change there');
is(scalar files_of($r1), 0, 'and removes the file');
$r1->stop;

my $r2 = restored('pitr_later', 'after_later_change');
sql_is($r2, 'k', $KEY, $K[2], 'PITR past a later key change: the later key is current');
sql_is($r2, 'k', $GENS, $gensq, 'with the generations of that point');
is(scalar files_of($r2), 0, 'no prepared file is left, stale or not');
unlike(slurp_file($r2->logfile), qr/older than the keyring|applied the key change of committed prepared/,
	'nothing was applied or set aside at the start');
sql_is($r2, 'k', $VALUES, 'before', 'the value decrypts');
$r2->stop;

done_testing();
