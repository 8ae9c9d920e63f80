# The re-encryption worker runs nobody's code (issue 10, parts 1 and 2).
#
# mallory, a plain login with CREATE on schema mal and INSERT/UPDATE/SELECT on
# app.mailbox, builds every kind of trap an ordinary role can build around tables
# with encrypted columns and around encrypted_heap tables:
#   - CHECK constraints, ENABLE ALWAYS triggers, rules and FORCEd row-level security
#     policies whose functions steal every secret and make mallory a superuser when
#     they run as a superuser (the privilege escalation of part 1);
#   - CHECK constraints and ALWAYS triggers that raise an error for anybody but
#     mallory, a policy that hides every row, and an empty table with an
#     encrypted_text[] column (the denial of service of part 2).
# Then an administrator changes the data encryption key and rotates the TDE key.
# Expected: both re-encryptions finish, the old generations are destroyed, nothing
# was stolen, mallory is no superuser, every value decrypts, and no trap fired.
#
# Last, a table the worker really cannot finish: an index expression that raises
# for the worker, on rows whose stale values are out of line (they are updated,
# not rewritten in place, and the update needs index entries, which are made as
# the owner, restricted). The worker logs the table by name, rotation_progress
# shows it (phase "retrying", column problem), the other tables are done, the next
# key change is not refused, and once the owner fixes the index the old
# generations go. Then an index expression records that the worker ran it as the
# table's owner, in a security-restricted operation.
#
# Last, sessions that hold the worker up (a table or a row kept locked, a snapshot kept
# open) do not block key changes, and an import accepted meanwhile keeps its generation.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 qw(encode_base64 decode_base64);
use FcNode;
use FcKeyTest;

my ($K1, $KL, $K2, $K3) = ('Rotate-Key-2027!', 'Rotate-Key-2027L!', 'Rotate-Key-2028!', 'Rotate-Key-2029!');
my $PROGRESS = q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE database = current_database()};

my $node = FcNode::new_node('attacker', reencrypt => 'on');
$node->append_conf('postgresql.conf', "fieldcrypt.reencrypt_rows_per_second = 0\n");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', <<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE ROLE mallory LOGIN;
CREATE SCHEMA app;
CREATE TABLE app.mailbox (id serial PRIMARY KEY, address text, password fieldcrypt.encrypted_text);
INSERT INTO app.mailbox (address, password)
  SELECT 'user' || g || '@contoso.example', 'mailbox-secret-' || g FROM generate_series(1, 50) g;
GRANT USAGE ON SCHEMA app TO mallory;
GRANT INSERT, UPDATE, SELECT ON app.mailbox TO mallory;
GRANT USAGE ON SEQUENCE app.mailbox_id_seq TO mallory;
CREATE SCHEMA mal;
GRANT CREATE, USAGE ON SCHEMA mal TO mallory;
EOS

# --- mallory's traps ------------------------------------------------------------------------
my $steal = q{
  IF current_setting('is_superuser') = 'on' AND current_user <> 'mallory' THEN
    INSERT INTO mal.loot SELECT current_user, fieldcrypt.decrypt(password) FROM app.mailbox;
    EXECUTE 'ALTER ROLE mallory SUPERUSER';
  END IF;
  INSERT INTO mal.fired VALUES (TG_NAME_OR_CHECK, current_user);};
my $mallory_sql = <<'EOS';
SET ROLE mallory;
CREATE TABLE mal.loot (who text, pw text);
CREATE TABLE mal.fired (what text, who text);
CREATE FUNCTION mal.chk(int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN STEAL_CHECK RETURN true; END $$;
CREATE FUNCTION mal.trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN STEAL_TRIGGER RETURN NEW; END $$;
CREATE FUNCTION mal.pol() RETURNS bool LANGUAGE plpgsql AS $$
BEGIN STEAL_POLICY RETURN true; END $$;
CREATE FUNCTION mal.deny(int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  IF current_user <> 'mallory' OR current_setting('synchronous_commit') = 'off' THEN
    RAISE EXCEPTION 'denied to %', current_user;
  END IF;
  RETURN true;
END $$;
CREATE FUNCTION mal.deny_trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM mal.deny(0); RETURN NEW; END $$;

-- escalation traps
CREATE TABLE mal.trap (id int CHECK (mal.chk(id)), s fieldcrypt.encrypted_text);
CREATE TABLE mal.trap_trg (id int, s fieldcrypt.encrypted_text);
CREATE TRIGGER steal BEFORE UPDATE ON mal.trap_trg FOR EACH ROW EXECUTE FUNCTION mal.trg();
ALTER TABLE mal.trap_trg ENABLE ALWAYS TRIGGER steal;
CREATE TABLE mal.trap_rule (id int, s fieldcrypt.encrypted_text);
CREATE RULE steal AS ON UPDATE TO mal.trap_rule DO ALSO
  INSERT INTO mal.loot SELECT current_user, fieldcrypt.decrypt(password) FROM app.mailbox;
CREATE TABLE mal.trap_rls (id int, s fieldcrypt.encrypted_text);
CREATE TABLE mal.tde_trap (id int CHECK (mal.chk(id)), note text) USING encrypted_heap;
CREATE TRIGGER steal BEFORE UPDATE ON mal.tde_trap FOR EACH ROW EXECUTE FUNCTION mal.trg();
ALTER TABLE mal.tde_trap ENABLE ALWAYS TRIGGER steal;

-- denial-of-service traps
CREATE TABLE mal.dos_check (id int CHECK (mal.deny(id)), s fieldcrypt.encrypted_text);
CREATE TABLE mal.dos_trg (id int, s fieldcrypt.encrypted_text);
CREATE TRIGGER deny BEFORE UPDATE ON mal.dos_trg FOR EACH ROW EXECUTE FUNCTION mal.deny_trg();
ALTER TABLE mal.dos_trg ENABLE ALWAYS TRIGGER deny;
CREATE TABLE mal.dos_rls (id int, s fieldcrypt.encrypted_text);
CREATE TABLE mal.empty_arr (a fieldcrypt.encrypted_text[]);
CREATE TABLE mal.tde_dos (id int CHECK (mal.deny(id)), note text) USING encrypted_heap;
CREATE TRIGGER deny BEFORE UPDATE ON mal.tde_dos FOR EACH ROW EXECUTE FUNCTION mal.deny_trg();
ALTER TABLE mal.tde_dos ENABLE ALWAYS TRIGGER deny;

INSERT INTO mal.trap SELECT g, 'trap-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.trap_trg SELECT g, 'trap-trg-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.trap_rule SELECT g, 'trap-rule-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.trap_rls SELECT g, 'trap-rls-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.tde_trap SELECT g, 'tde-trap-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.dos_check SELECT g, 'dos-check-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.dos_trg SELECT g, 'dos-trg-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.dos_rls SELECT g, 'dos-rls-' || g FROM generate_series(1, 20) g;
INSERT INTO mal.tde_dos SELECT g, 'tde-dos-' || g FROM generate_series(1, 20) g;

ALTER TABLE mal.trap_rls ENABLE ROW LEVEL SECURITY;
ALTER TABLE mal.trap_rls FORCE ROW LEVEL SECURITY;
CREATE POLICY steal ON mal.trap_rls USING (mal.pol()) WITH CHECK (mal.pol());
ALTER TABLE mal.dos_rls ENABLE ROW LEVEL SECURITY;
ALTER TABLE mal.dos_rls FORCE ROW LEVEL SECURITY;
CREATE POLICY hide ON mal.dos_rls USING (false) WITH CHECK (false);
TRUNCATE mal.fired;
EOS
for my $what ('CHECK', 'TRIGGER', 'POLICY')
{
	(my $code = $steal) =~ s/TG_NAME_OR_CHECK/'$what'/;
	$mallory_sql =~ s/STEAL_$what/$code/;
}
$node->safe_psql('app', $mallory_sql);

my $VALUES = q{SELECT md5(string_agg(v, ',' ORDER BY v)) FROM (
  SELECT fieldcrypt.decrypt(password) AS v FROM app.mailbox
  UNION ALL SELECT fieldcrypt.decrypt(s) FROM mal.trap
  UNION ALL SELECT fieldcrypt.decrypt(s) FROM mal.trap_trg
  UNION ALL SELECT fieldcrypt.decrypt(s) FROM mal.trap_rule
  UNION ALL SELECT fieldcrypt.decrypt(s) FROM mal.trap_rls
  UNION ALL SELECT fieldcrypt.decrypt(s) FROM mal.dos_check
  UNION ALL SELECT fieldcrypt.decrypt(s) FROM mal.dos_trg
  UNION ALL SELECT fieldcrypt.decrypt(s) FROM mal.dos_rls
  UNION ALL SELECT note FROM mal.tde_trap
  UNION ALL SELECT note FROM mal.tde_dos) x};
my $values_before = $node->safe_psql('app', $VALUES);

# a forged envelope under generation 1: a real one with a flipped ciphertext byte,
# written back in its text form (accepted without the key); it can never be
# re-encrypted, and must not keep generation 1 alive or stop the worker
my $envelope = $node->safe_psql('app', 'COPY mal.trap (s) TO STDOUT');
($envelope) = $envelope =~ /^(fcenc:v1:\S+)$/m or die "no envelope in COPY output";
my $raw = decode_base64(substr($envelope, 9));
substr($raw, 30, 1) = chr(ord(substr($raw, 30, 1)) ^ 1);
my $forged = 'fcenc:v1:' . encode_base64($raw, '');
$node->safe_psql('app', "SET ROLE mallory; CREATE TABLE mal.forged (s fieldcrypt.encrypted_text);
  INSERT INTO mal.forged VALUES ('$forged')");
is($node->safe_psql('app', 'SELECT count(*) FROM mal.trap_rls'), '20',
	'control: the superuser reads all rows of the FORCEd-policy table');

# --- the key change -------------------------------------------------------------------------
my $log_offset = -s $node->logfile;
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '',
	'administrator changes the data encryption key over TLS');
$node->poll_query_until('app', $PROGRESS, '0')
  or die 'the re-encryption did not finish: ' . $node->safe_psql('app', 'SELECT * FROM fieldcrypt.rotation_progress');
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '2|1',
	'the re-encryption finished through every trap and destroyed generation 1');
is($node->safe_psql('app', 'SELECT count(*) FROM mal.loot'), '0', 'nothing was stolen');
is($node->safe_psql('app', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
	'mallory is not a superuser');
is($node->safe_psql('app', 'SELECT count(*) FROM mal.fired'), '0',
	'no CHECK, trigger or policy function of mallory ran');
is($node->safe_psql('app', $VALUES), $values_before, 'every value decrypts as before');
unlike(log_since($node, $log_offset), qr/denied to|could not re-encrypt/,
	'no trap raised an error in the worker');
my ($frc, $fout, $ferr) = FcNode::psql_tls($node, 'app',
	"\\set VERBOSITY verbose\nSELECT fieldcrypt.decrypt(s) FROM mal.forged");
like($ferr, qr/ERROR:  (XX001|55000): /, 'the forged envelope was left as it was: still unreadable');

# --- the TDE key rotation ----------------------------------------------------------------------
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '2', 'administrator rotates the TDE key');
$node->poll_query_until('app', $PROGRESS, '0') or die 'the TDE re-encryption did not finish';
is($node->safe_psql('app', q{SELECT string_agg(DISTINCT g::text, ',') FROM (
      SELECT fieldcrypt._tde_tuple_generation('mal.tde_trap', ctid) g FROM mal.tde_trap
      UNION ALL SELECT fieldcrypt._tde_tuple_generation('mal.tde_dos', ctid) FROM mal.tde_dos) x}),
	'2', 'every row of the encrypted_heap traps is under TDE generation 2');
is($node->safe_psql('app', q{SELECT count(*) FROM fieldcrypt.tde_key_status WHERE generation <> 2}), '0',
	'TDE generation 1 was destroyed');
is($node->safe_psql('app', 'SELECT count(*) FROM mal.loot'), '0', 'TDE: nothing was stolen');
is($node->safe_psql('app', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
	'TDE: mallory is not a superuser');
is($node->safe_psql('app', 'SELECT count(*) FROM mal.fired'), '0', 'TDE: no trap function ran');
is($node->safe_psql('app', $VALUES), $values_before, 'TDE: every value and row reads as before');

# --- a table somebody keeps locked does not hold back the others ----------------------------
# generations of the envelopes of one column, from their binary form (COPY TO)
sub gens
{
	my ($table, $col) = @_;
	my %g;
	for my $line (split /\n/, $node->safe_psql('app', "COPY $table ($col) TO STDOUT"))
	{
		next unless $line =~ /^fcenc:v1:(\S+)$/;
		$g{ unpack('N', substr(decode_base64($1), 2, 4)) } = 1;
	}
	return join ',', sort keys %g;
}
$node->safe_psql('app', q{SET ROLE mallory; CREATE TABLE mal.locked (s fieldcrypt.encrypted_text);
  INSERT INTO mal.locked VALUES ('locked-secret')});
# A session of mallory's that keeps a transaction open: $begin, then @sql.
sub mallory_holds
{
	my ($begin, @sql) = @_;
	my $s = $node->background_psql('app', on_error_stop => 0);
	$s->query_safe($_) for ('SET ROLE mallory', $begin, @sql);
	return $s;
}
# Commit such a session's transaction, wait for the re-encryption to finish, and check that
# generation $gen alone is kept.
sub commit_and_finish
{
	my ($s, $gen, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$s->query_safe('COMMIT');
	$s->quit;
	$node->poll_query_until('app', $PROGRESS, '0') or die "the re-encryption to generation $gen did not finish";
	sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', "$gen|1", $name);
	return;
}
my $LOCK = 'LOCK TABLE mal.locked IN ACCESS EXCLUSIVE MODE';
my $locker = mallory_holds('BEGIN', $LOCK);
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$KL')", '',
	'key change to generation 3 while mallory keeps a table locked');
$node->poll_query_until('app', q{SELECT phase FROM fieldcrypt.rotation_progress},
	'waiting for older transactions')
  or die 'the worker did not get past the locked table';
my $HELD = q{SELECT phase || ': ' || problem FROM fieldcrypt.rotation_progress};
my $HELD_RE = qr/^waiting for older transactions: table mal\.locked is in use by another session \(it or a row of it locked, or a page pinned\); next try in (\d+) s$/;
ok($node->poll_query_until('app', "SELECT ($HELD) LIKE '%table mal.locked is in use by another session (it or a row of it locked, or a page pinned); next try in %'"),
	'rotation_progress.problem names the table in use');
my ($wait1) = $node->safe_psql('app', $HELD) =~ $HELD_RE;
# mallory's idle transaction holds no snapshot: the worker must not loop pass after pass
my $PASS = q{SELECT pass FROM fieldcrypt.reencryption};
my ($pass1, $lsn1) = split /\|/, $node->safe_psql('app', "SELECT ($PASS), pg_current_wal_insert_lsn()");
sleep 4;
my ($pass2, $lsn2) = split /\|/, $node->safe_psql('app', "SELECT ($PASS), pg_current_wal_insert_lsn()");
cmp_ok($pass2 - $pass1, '<=', 3, "while the table stays locked the worker tries again at a slowing pace (passes $pass1 to $pass2 in 4 s)");
cmp_ok($node->safe_psql('app', "SELECT pg_wal_lsn_diff('$lsn2', '$lsn1')"), '<', 65536,
	'and writes next to no WAL meanwhile');
my ($wait2) = $node->safe_psql('app', $HELD) =~ $HELD_RE;
ok(defined $wait1 && defined $wait2 && $wait2 > $wait1, 'the wait grows (next try in ' . ($wait1 // '?') . ' s, then ' . ($wait2 // '?') . ' s)');
is(gens('app.mailbox', 'password'), '3', 'the other tables were re-encrypted meanwhile');
is(gens('mal.trap', 's'), '3', 'so were mallory\'s other tables');
commit_and_finish($locker, 3,
	'once the lock is gone the locked table is done too and generation 2 destroyed');
is(gens('mal.locked', 's'), '3', 'the locked table is under generation 3');
sql_is($node, 'app', 'SELECT fieldcrypt.decrypt(s) FROM mal.locked', 'locked-secret',
	'its value decrypts');

# --- a table the worker cannot finish --------------------------------------------------------
$node->safe_psql('app', <<'EOS');
SET ROLE mallory;
CREATE FUNCTION mal.ix(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  -- the worker commits asynchronously: that tells it from mallory's sessions
  IF current_setting('synchronous_commit') = 'off' THEN
    RAISE EXCEPTION 'index expression refuses the worker';
  END IF;
  RETURN $1;
END $$;
CREATE TABLE mal.big (id int, s fieldcrypt.encrypted_text) WITH (fillfactor = 100);
ALTER TABLE mal.big ALTER COLUMN s SET STORAGE EXTERNAL;
INSERT INTO mal.big SELECT g, repeat(md5(g::text), 100) FROM generate_series(1, 500) g;
CREATE INDEX big_ix ON mal.big (mal.ix(id));
EOS
my $BIG = q{SELECT md5(string_agg(fieldcrypt.decrypt(s), ',' ORDER BY id)) FROM mal.big};
my $big_before = $node->safe_psql('app', $BIG);
$log_offset = -s $node->logfile;
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K2')", '', 'key change to generation 4');
$node->poll_query_until('app',
	q{SELECT phase || ' ' || problem FROM fieldcrypt.rotation_progress},
	'retrying table mal.big could not be re-encrypted (SQLSTATE P0001)')
  or die 'rotation_progress did not show the failing table: '
  . $node->safe_psql('app', 'SELECT * FROM fieldcrypt.rotation_progress');
like(log_since($node, $log_offset),
	qr/WARNING:  fieldcrypt: could not re-encrypt table mal\.big, older key generations are kept\n(?:.*\n)?.*DETAIL:  index expression refuses the worker \(SQLSTATE P0001\)/,
	'the server log names the table and says why');
is($node->safe_psql('app', q{SELECT count(*) FROM mal.fired}), '0', 'still no trap function ran');
sql_is($node, 'app', 'SELECT generations_kept FROM fieldcrypt.key_status', '2',
	'the generation the failing table still uses is kept');
is($node->safe_psql('app', $VALUES), $values_before, 'the other tables were re-encrypted and decrypt');
sql_is($node, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K3')", '',
	'a table that fails does not block the next key change');
$node->poll_query_until('app',
	q{SELECT to_generation || ' ' || phase FROM fieldcrypt.rotation_progress}, '5 retrying')
  or die 'the worker did not retry for generation 5';
$node->safe_psql('app', 'SET ROLE mallory; DROP INDEX mal.big_ix');
$node->poll_query_until('app', $PROGRESS, '0')
  or die 'the re-encryption did not finish once the index was gone';
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '5|1',
	'once the owner fixed the table, the old generations are destroyed');
is($node->safe_psql('app', $BIG), $big_before, 'the out-of-line values decrypt as before');
is($node->safe_psql('app', $VALUES), $values_before, 'and every other value');

# --- index expressions run as the table's owner, in a security-restricted operation -----------
# Rows whose stale values are out of line are updated by the worker, and their index entries
# computed: the index function records who ran it and whether it could create a temporary
# table (refused inside a security-restricted operation).
$node->safe_psql('app', <<'EOS');
SET ROLE mallory;
CREATE TABLE mal.seen (who name, restricted bool);
-- (an immutable function may not write: it calls a volatile one that does)
CREATE FUNCTION mal.record() RETURNS void VOLATILE LANGUAGE plpgsql AS $$
DECLARE r bool := false;
BEGIN
  BEGIN
    CREATE TEMP TABLE mal_probe (i int);
    DROP TABLE mal_probe;
  EXCEPTION WHEN insufficient_privilege THEN
    r := true;
  END;
  INSERT INTO mal.seen VALUES (current_user, r);
END $$;
CREATE FUNCTION mal.ix2(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('synchronous_commit') = 'off' THEN
    PERFORM mal.record();
  END IF;
  RETURN $1;
END $$;
CREATE TABLE mal.big2 (id int, s fieldcrypt.encrypted_text) WITH (fillfactor = 100);
ALTER TABLE mal.big2 ALTER COLUMN s SET STORAGE EXTERNAL;
INSERT INTO mal.big2 SELECT g, repeat(md5(g::text), 100) FROM generate_series(1, 500) g;
CREATE INDEX big2_ix ON mal.big2 (mal.ix2(id));
EOS
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2030!')}, '', 'key change to generation 6');
$node->poll_query_until('app', $PROGRESS, '0') or die 'the re-encryption to generation 6 did not finish';
# (full pages: the updates are not HOT, so they need index entries)
my ($nseen, $how) = split /\|/, $node->safe_psql('app',
	q{SELECT count(*), string_agg(DISTINCT who || ':' || restricted, ',') FROM mal.seen});
cmp_ok($nseen, '>', 0, "the worker computed index entries ($nseen rows)");
is($how, 'mallory:true', 'the worker computed them as the owner, in a security-restricted operation');

# --- a session that holds the worker up does not block key management -----------------------------
# (a) a table kept locked in an idle transaction
$locker = mallory_holds('BEGIN', $LOCK);
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2031!')}, '',
	'key change to generation 7 while mallory keeps a table locked');
$node->poll_query_until('app', q{SELECT to_generation || ': ' || problem LIKE '7: table mal.locked is in use by another session%' FROM fieldcrypt.rotation_progress})
  or die 'the worker was not held up by the locked table';
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2032!')}, '',
	'a key change is accepted while the locked table holds the re-encryption up (generation 8)');
commit_and_finish($locker, 8,
	'once the lock is gone the worker finishes under generation 8 and destroys 6 and 7');
is(gens('mal.locked', 's'), '8', 'the locked table is under generation 8');

# (b) a snapshot kept open: the worker waits for it before its check pass
my $holder = mallory_holds('BEGIN ISOLATION LEVEL REPEATABLE READ', 'SELECT count(*) FROM mal.locked');
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2033!')}, '',
	'key change to generation 9 while mallory keeps a snapshot open');
$node->poll_query_until('app', q{SELECT phase FROM fieldcrypt.rotation_progress}, 'waiting for older transactions')
  or die 'the worker did not wait for the snapshot';
my (undef, undef, $err) = FcNode::psql_tls($node, 'app',
	"\\set VERBOSITY verbose\nSELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2034!')");
like($err, qr/ERROR:  55P03: a data encryption key change is already in progress/,
	'while the wait is short, a second key change is refused (55P03)');
ok($node->poll_query_until('app', q{SELECT problem FROM fieldcrypt.rotation_progress},
		"waiting for the transaction of process $holder_pid, which keeps an older snapshot"),
	'after 5 s rotation_progress.problem names the process that holds the worker up');
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2034!')}, '',
	'then a key change is accepted (generation 10)');
commit_and_finish($holder, 10,
	'once the snapshot is gone the worker finishes under generation 10');
is($node->safe_psql('app', $VALUES), $values_before, 'every value decrypts as before');

# (c) a row kept locked: rows whose stale values are out of line are updated, and the worker
# must not wait for a row lock as long as it lasts. It goes through its pass without that row,
# then waits for the transaction that locked it (which has a transaction id: it may have written
# under the old generation), held up, so that key changes are accepted.
my $WRITER_WAIT = q{'^%d: waiting for the transaction of process \d+, which has written and not ended$'};
my $rowlocker = mallory_holds('BEGIN', 'SELECT id FROM mal.big WHERE id = 1 FOR UPDATE');
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2035!')}, '',
	'key change to generation 11 while mallory keeps a row locked');
ok($node->poll_query_until('app', sprintf(q{SELECT to_generation || ': ' || problem ~ %s FROM fieldcrypt.rotation_progress}, sprintf($WRITER_WAIT, 11))),
	'the worker does not wait for the locked row: it waits for its transaction, and rotation_progress.problem says so');
is(gens('mal.big', 's'), '10,11', 'the pass re-encrypted every other row of mal.big meanwhile');
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2036!')}, '',
	'a key change is accepted while the locked row holds the re-encryption up (generation 12)');
commit_and_finish($rowlocker, 12,
	'once the row lock is gone the worker finishes under generation 12');
is($node->safe_psql('app', $BIG), $big_before, 'the locked row and the other out-of-line values decrypt as before');

# (d) an import accepted while the worker is held up, whose transaction commits only once the
# worker waits for it (it has written): the worker's next pass, which counts as clean, starts
# after the import committed and so knows its generation (values.c destroys only the
# generations a clean pass knew when it started: an import committed during that pass keeps
# its generation)
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION fieldcrypt');
sql_is($node, 'other', q{SELECT fieldcrypt.set_data_encryption_key('Other-Key-2040!')}, '',
	'another database: generation 2 under a passphrase');
$node->poll_query_until('other', q{SELECT generations_kept FROM fieldcrypt.key_status}, '1')
  or die 'the other database kept its generation 1';
my $doc = safe_tls($node, 'other', 'SELECT fieldcrypt.export_key_generations()');
$locker = mallory_holds('BEGIN', $LOCK);
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2037!')}, '', 'key change to generation 13');
$node->poll_query_until('app', q{SELECT to_generation || ': ' || problem LIKE '13: table mal.locked is in use by another session%' FROM fieldcrypt.rotation_progress})
  or die 'the worker was not held up by the locked table';
my $importer = $node->background_psql('app', on_error_stop => 0,
	extra_params => [ '-d', FcNode::tls_connstr($node, 'app') ]);
$importer->query_safe('BEGIN');
is($importer->query_safe("SELECT fieldcrypt.import_key_generations(E'" . ($doc =~ s/\n/\\n/gr) . "', 'Other-Key-2040!')"),
	'{2}', 'import_key_generations is accepted while the worker is held up (generation 2, not committed yet)');
my $offset = -s $node->logfile;
$locker->query_safe('COMMIT');
$locker->quit;
$node->poll_query_until('app', sprintf(q{SELECT to_generation || ': ' || problem ~ %s FROM fieldcrypt.rotation_progress}, sprintf($WRITER_WAIT, 13)))
  or die 'the worker did not wait for the import\'s transaction';
$importer->query_safe('COMMIT');
$importer->quit;
$node->wait_for_log(qr/re-encryption of database "app" to generation 13 finished: [^\n]*destroyed/, $offset);
my ($gone) = slurp_file($node->logfile, $offset) =~ /re-encryption of database "app" to generation 13 finished: [^\n]*; generation\(s\) ([\d, ]+) destroyed/;
is($gone, '12, 2', 'the worker waited for the import and its check pass knew generation 2: no value uses it, so it went with 12');
$node->poll_query_until('app', $PROGRESS, '0') or die 'the re-encryption did not finish after the import';
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '13|1',
	'generation 13 alone is kept');

# (e) a row updated by another session between the worker's look at its page and its update of
# that row: the update carries the stale out-of-line value into a new version on the same page,
# which this pass has looked at already. The worker must re-encrypt the newest version: if it
# skipped the row, it counted the pass clean and destroyed the generation the new version needs.
$node->safe_psql('app', q{SET ROLE mallory;
CREATE TABLE mal.race (id int, note int, s fieldcrypt.encrypted_text) WITH (fillfactor = 50);
ALTER TABLE mal.race ALTER COLUMN s SET STORAGE EXTERNAL;
INSERT INTO mal.race SELECT g, 0, repeat(md5(g::text), 100) FROM generate_series(1, 2) g});
my $RACE = q{SELECT string_agg(id || ':' || note || ':' || md5(fieldcrypt.decrypt(s)), ',' ORDER BY id) FROM mal.race};
my $race_want = $node->safe_psql('app', $RACE) =~ s/^1:0:/1:1:/r;
# a first pass leaves the row mallory keeps locked, and the worker waits for her transaction;
# the race is in the next pass, which counts as clean when it rewrites nothing
$rowlocker = mallory_holds('BEGIN', 'SELECT id FROM mal.race WHERE id = 1 FOR UPDATE');
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2038!')}, '',
	'key change to generation 14 while mallory keeps a row of mal.race locked');
$node->poll_query_until('app', sprintf(q{SELECT to_generation || ': ' || problem ~ %s FROM fieldcrypt.rotation_progress}, sprintf($WRITER_WAIT, 14)))
  or die 'the worker was not held up by the locked row\'s transaction';
$offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "fieldcrypt.test_reencrypt_pause_before_update = 'race'");
$node->reload;
$node->wait_for_log(qr/parameter "fieldcrypt.test_reencrypt_pause_before_update" changed to "race"/, $offset);
$rowlocker->query_safe('COMMIT');
$rowlocker->quit;
$node->wait_for_log(qr/re-encryption paused for testing before updating rows of block 0 of table race/, $offset);
$node->safe_psql('app', 'SET ROLE mallory; UPDATE mal.race SET note = 1 WHERE id = 1');
is($node->safe_psql('app', q{SELECT (ctid::text::point)[0] FROM mal.race WHERE id = 1}), '0',
	'while the worker waits to update the row, mallory updates it: the new version is on the page it looked at');
$node->append_conf('postgresql.conf', "fieldcrypt.test_reencrypt_pause_before_update = ''");
$node->reload;
$node->poll_query_until('app', $PROGRESS, '0') or die 'the re-encryption to generation 14 did not finish';
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '14|1',
	'the worker finished under generation 14 and destroyed generation 13');
is($node->safe_psql('app', $RACE), $race_want,
	'the row updated in the race decrypts, with the update (the worker re-encrypted its newest version)');
is(gens('mal.race', 's'), '14', 'every value of mal.race is under generation 14');

# (f) a transaction that wrote values under the old generation into a table it created, then
# stays idle: it holds no snapshot, and its table is invisible to the worker until it commits.
# The worker must wait for it (it did not, destroyed the old generation, and the values became
# unreadable once the transaction committed); the key change is accepted meanwhile.
my $writer = mallory_holds('BEGIN', 'CREATE TABLE mal.late (s fieldcrypt.encrypted_text)',
	q{INSERT INTO mal.late VALUES ('late-secret')});
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2039!')}, '',
	'key change to generation 15 while mallory has written into a table of her open transaction');
ok($node->poll_query_until('app', q{SELECT to_generation || ': ' || problem ~ '^15: waiting for the transaction of process \d+, which has written and not ended$' FROM fieldcrypt.rotation_progress}),
	'the worker waits for that transaction: rotation_progress.problem says so');
sql_is($node, 'app', 'SELECT generation, generations_kept FROM fieldcrypt.key_status', '15|2',
	'generation 14 is kept meanwhile');
# the problem names processes and tables: shown in the database itself, and to superusers and
# fieldcrypt_admin members from other databases, not to a plain login there
is($node->safe_psql('other', q{SET ROLE mallory; SELECT database || ':' || coalesce(problem, 'NULL') FROM fieldcrypt.rotation_progress}),
	'app:NULL', 'from another database a plain login sees app\'s row without its problem');
like($node->safe_psql('other', q{SELECT problem FROM fieldcrypt.rotation_progress WHERE database = 'app'}),
	qr/^waiting for the transaction of process \d+/, 'a superuser there sees it');
like($node->safe_psql('app', q{SET ROLE mallory; SELECT problem FROM fieldcrypt.rotation_progress}),
	qr/^waiting for the transaction of process \d+/, 'a plain login of app sees it in app');
sql_is($node, 'app', q{SELECT fieldcrypt.set_data_encryption_key('Rotate-Key-2040!')}, '',
	'a key change is accepted while it waits (generation 16)');
commit_and_finish($writer, 16,
	'once it committed the worker finished under generation 16');
sql_is($node, 'app', 'SELECT fieldcrypt.decrypt(s) FROM mal.late', 'late-secret',
	'the value written in that transaction decrypts');
is(gens('mal.late', 's'), '16', 'and is under generation 16');

# no plaintext of any value the worker re-encrypted reached the server log
# (the statements that wrote them hold only their prefix, through log_statement)
my $whole_log = slurp_file($node->logfile);
unlike($whole_log, qr/(?:mailbox-secret|trap|trap-trg|trap-rule|trap-rls|dos-check|dos-trg|dos-rls)-\d/,
	'no plaintext of a re-encrypted value in the server log');

$node->stop;
done_testing();
