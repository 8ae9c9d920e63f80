# Keyed hash indexes (fieldcrypt.<type>_keyed_ops) at rest, through a key change, crashes, a
# standby and pg_dump:
#   - at rest: an encrypted_heap table whose columns are indexed only by keyed hash indexes
#     leaves none of its values in any file of the data directory or in the WAL written,
#     after a CHECKPOINT; the same values in a heap table with a B-tree ARE found (in its
#     index file too), so the search can fail; the keyed index's hash codes are not the
#     plain hashtext() codes, which a plain hash index does hold (a dictionary reverses them);
#   - pg_ctl stop -m immediate during CREATE INDEX CONCURRENTLY loses nothing;
#   - after rotate_tde_key the worker rebuilds the keyed indexes under the new generation
#     (REINDEX CONCURRENTLY; a plain REINDEX for an exclusion constraint), as the table's
#     owner, then destroys the old generation; answers stay equal to a heap twin's;
#   - an index whose rebuild fails (its owner made its expression raise an error) is named
#     in a WARNING and in rotation_progress, only its generation is kept, and a later run
#     finishes once it is fixed;
#   - pg_ctl stop -m immediate in the middle of the rebuild (a REINDEX CONCURRENTLY waiting
#     for a writer) loses nothing, and the worker finishes after the restart;
#   - a streaming standby answers through the keyed indexes;
#   - pg_dump and a restore into another cluster: the dump names the operator class and the
#     generation; the indexes are rebuilt under that database's own key (generation 1 there,
#     the NOTICE saying so is asserted in sql/keyed_hash.sql) and answer;
#   - a transaction kept open on the table holds the rebuild up (rotation_progress says so)
#     but not key management: the next rotate_tde_key is accepted;
#   - a leftover copy on a table another session keeps locked is left without waiting (a wait
#     could deadlock with a REINDEX CONCURRENTLY), and dropped by a later attempt.
use strict;
use warnings;
use File::Find;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $N = 3000;
my $node = FcNode::new_node('keyed', reencrypt => 'on', allows_streaming => 1);
$node->append_conf('postgresql.conf', <<'EOC');
wal_compression = off
fieldcrypt.reencrypt_rows_per_second = 0
fieldcrypt.tde_plain_indexes = refuse
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
sub sql { return safe_tls($node, 'app', $_[0]); }

sql(<<"EOS");
CREATE EXTENSION fieldcrypt;
CREATE EXTENSION pageinspect;
CREATE ROLE alice LOGIN;
GRANT CREATE ON SCHEMA public TO alice;
EOS
# alice owns the tables; her index expression checks that the worker evaluates it as alice
safe_tls($node, 'app', <<"EOS");
SET ROLE alice;
CREATE FUNCTION norm(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS \$\$
BEGIN
    IF current_user <> 'alice' AND (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()) <> 'client backend' THEN
        RAISE EXCEPTION 'norm() evaluated as % by the worker', current_user;
    END IF;
    RETURN lower(t);
END \$\$;
CREATE TABLE enc (id int, email text, phone text, code int8) USING encrypted_heap;
CREATE TABLE ctl (id int, email text, phone text, code int8) USING heap;
INSERT INTO enc SELECT g, 'FCENCmail' || g || 'q4Zt\@contoso.example', 'FCENCph' || lpad(g::text, 6, '0'), g
  FROM generate_series(1, $N) g;
INSERT INTO ctl SELECT g, 'FCCTLmail' || g || 'q4Zt\@contoso.example', 'FCCTLph' || lpad(g::text, 6, '0'), g
  FROM generate_series(1, $N) g;
CREATE INDEX enc_email ON enc USING hash (email fieldcrypt.text_keyed_ops);
CREATE INDEX enc_norm ON enc USING hash (norm(email) fieldcrypt.text_keyed_ops);
CREATE INDEX enc_code ON enc USING hash (code fieldcrypt.int8_keyed_ops);
ALTER TABLE enc ADD CONSTRAINT enc_phone_excl EXCLUDE USING hash (phone fieldcrypt.text_keyed_ops WITH =);
CREATE INDEX ctl_email ON ctl (email);
CREATE INDEX ctl_phone ON ctl USING hash (phone);
EOS
is(sql(q{SELECT string_agg(table_name || '.' || index_name || ':' || stores_plaintext, ',' ORDER BY index_name::text) FROM fieldcrypt.tde_exposure WHERE table_name = 'enc'::regclass}),
	'enc.enc_code:false,enc.enc_email:false,enc.enc_norm:false,enc.enc_phone_excl:false',
	'tde_exposure: the four indexes of enc store no plaintext');

# answers of enc equal those of its heap twin
my $Q = join(' UNION ALL ',
	"SELECT 'e', id FROM T WHERE email = replace('FCXXXmail42q4Zt\@contoso.example', 'XXX', 'Y')",
	"SELECT 'n', id FROM T WHERE norm(email) = lower(replace('FCXXXmail77q4Zt\@contoso.example', 'XXX', 'Y'))",
	"SELECT 'p', id FROM T WHERE phone = ANY (ARRAY[replace('FCXXXph000005', 'XXX', 'Y'), replace('FCXXXph002999', 'XXX', 'Y')])",
	"SELECT 'c', id FROM T WHERE code = 1234::bigint",
	"SELECT 'j', t.id FROM T t JOIN generate_series(10, 20) g ON t.code = g::bigint");
sub answers
{
	my ($n, $t) = @_;
	my $q = $Q;
	$q =~ s/\bT\b/$t/g;
	my $y = $t eq 'enc' ? 'ENC' : 'CTL';
	$q =~ s/'Y'/'$y'/g;
	return safe_tls($n, 'app', "SET enable_seqscan = off; SELECT string_agg(k || id, ',' ORDER BY k, id) FROM ($q) x(k, id)");
}
my $want = answers($node, 'ctl');
like($want, qr/^c1234,e42,j10,.*,n77,p5,p2999$/, 'the heap twin answers');
is(answers($node, 'enc'), $want, 'the keyed indexes answer as the heap twin');
like(sql(q{SET enable_seqscan = off; EXPLAIN (COSTS OFF) SELECT id FROM enc WHERE email = 'x'}),
	qr/Index Scan on enc_email|Bitmap Index Scan on enc_email/, 'an ordinary equality uses the keyed index');

# --- at rest ------------------------------------------------------------------------------
# hash codes: the keyed index holds none of the plain hashtext() codes; a plain hash index does
my $CODES = <<'EOS';
SELECT count(*) FROM generate_series(1, pg_relation_size('%s') / 8192 - 1) b,
       LATERAL hash_page_items(get_raw_page('%s', b::int)) i
 WHERE hash_page_type(get_raw_page('%s', b::int)) IN ('bucket', 'overflow')
   AND i.data IN (SELECT hashtext(phone)::bigint & 4294967295 FROM %s)
EOS
is(sql(sprintf($CODES, ('ctl_phone') x 3, 'ctl')), $N, 'the plain hash index holds hashtext() of every value');
is(sql(sprintf($CODES, ('enc_phone_excl') x 3, 'enc')), '0', 'the keyed hash index holds none of them');
my $items = <<'EOS';
SELECT count(*) FROM generate_series(1, pg_relation_size('enc_phone_excl') / 8192 - 1) b,
       LATERAL hash_page_items(get_raw_page('enc_phone_excl', b::int)) i
 WHERE hash_page_type(get_raw_page('enc_phone_excl', b::int)) IN ('bucket', 'overflow')
EOS
is(sql($items), $N, 'the keyed hash index holds one code per row');

my $lsn_start = sql('SELECT pg_current_wal_insert_lsn()');
sql(q{UPDATE enc SET email = replace(email, 'mail', 'MAIL') WHERE id > 2900});
sql(q{UPDATE ctl SET email = replace(email, 'mail', 'MAIL') WHERE id > 2900});
sql('CHECKPOINT');
my $lsn_end = sql('SELECT pg_current_wal_insert_lsn()');
my $datadir = $node->data_dir;
my %where = map { $_ => sql("SELECT pg_relation_filepath('$_')") } qw(enc_email enc_norm enc_phone_excl ctl_email);
$node->stop;

my %found;    # needle => [files]
my @needles = ('FCENCmail', 'FCENCMAIL', 'fcencmail', 'FCENCph', 'FCCTLmail', 'FCCTLMAIL', 'FCCTLph');
find({ no_chdir => 1, wanted => sub {
	return unless -f $_;
	my $data = read_bytes($_);
	for my $n (@needles) { push @{ $found{$n} }, $_ if index($data, $n) >= 0; }
} }, $datadir);
for my $n ('FCENCmail', 'FCENCMAIL', 'fcencmail', 'FCENCph')
{
	is(scalar @{ $found{$n} // [] }, 0, "no file of the data directory holds $n (values of enc)")
	  or diag(join("\n", @{ $found{$n} }));
}
for my $n ('FCCTLmail', 'FCCTLMAIL', 'FCCTLph')
{
	ok(scalar @{ $found{$n} // [] } > 0, "the control: $n (values of ctl) is found");
}
ok((grep { $_ eq "$datadir/$where{ctl_email}" } @{ $found{FCCTLmail} }),
	'the control: the B-tree file of ctl holds its values');
ok((grep { m{/pg_wal/} } @{ $found{FCCTLMAIL} }), 'the control: the WAL holds the updated values of ctl');
for my $i (qw(enc_email enc_norm enc_phone_excl))
{
	ok(-s "$datadir/$where{$i}" >= 8 * 8192, "$i was written to disk (" . (-s "$datadir/$where{$i}") . ' bytes)');
}
$node->start;

# --- crash during CREATE INDEX CONCURRENTLY -------------------------------------------------
# a writer keeps a transaction open: CREATE INDEX CONCURRENTLY waits for it after the
# index's catalog entry is committed; then the server stops at once
my ($w_in, $w_out, $w_err) = ('', '', '');
my $writer = IPC::Run::start([ 'psql', '-X', '-d', FcNode::tls_connstr($node, 'app') ],
	'<', \$w_in, '>', \$w_out, '2>', \$w_err);
$w_in .= "BEGIN; INSERT INTO enc VALUES (-1, 'uncommitted', 'uncommitted', -1);\n";
$writer->pump until $w_out =~ /INSERT/ || $w_err ne '';
my ($c_in, $c_out, $c_err) = ('', '', '');
my $cic = IPC::Run::start([ 'psql', '-X', '-d', FcNode::tls_connstr($node, 'app') ],
	'<', \$c_in, '>', \$c_out, '2>', \$c_err);
$c_in .= "SET ROLE alice; CREATE INDEX CONCURRENTLY enc_code2 ON enc USING hash (code fieldcrypt.int8_keyed_ops);\n";
$cic->pump_nb;
$node->poll_query_until('app', q{SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'CREATE INDEX CONCURRENTLY%'}, '1')
  or die 'CREATE INDEX CONCURRENTLY did not wait';
$node->stop('immediate');
$writer->kill_kill;
$cic->kill_kill;
$node->start;
is(sql(q{SELECT indisvalid FROM pg_index WHERE indexrelid = 'enc_code2'::regclass}), 'f',
	'after the crash the interrupted index is left invalid');
is(answers($node, 'enc'), $want, 'after the crash during CREATE INDEX CONCURRENTLY the answers are the same');
is(sql('SELECT count(*) FROM enc WHERE id = -1'), '0', 'the uncommitted row is not there');
safe_tls($node, 'app', 'DROP INDEX enc_code2; SET ROLE alice; CREATE INDEX CONCURRENTLY enc_code2 ON enc USING hash (code fieldcrypt.int8_keyed_ops)');
is(sql(q{SELECT indisvalid FROM pg_index WHERE indexrelid = 'enc_code2'::regclass}), 't', 'made again, it is valid');

# --- a standby --------------------------------------------------------------------------------
$node->backup('b1');
my $standby = FcNode::standby_from_backup('keyed_standby', $node, 'b1');
$standby->start;
$node->wait_for_catchup($standby);
is(answers($standby, 'ctl'), $want, 'the standby: the heap twin answers');
is(answers($standby, 'enc'), $want, 'the standby answers through the keyed indexes');
like(safe_tls($standby, 'app', q{SET enable_seqscan = off; EXPLAIN (COSTS OFF) SELECT id FROM enc WHERE email = 'x'}),
	qr/enc_email/, 'the standby plans with the keyed index');

# --- key change: the worker rebuilds the keyed indexes ------------------------------------------
my $GENS = q{SELECT string_agg(generation::text, ',' ORDER BY generation) FROM fieldcrypt.tde_key_status};
my $KEYED = q{SELECT string_agg(c.relname || '=' || a.attoptions[1], ',' ORDER BY c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_attribute a ON a.attrelid = i.indexrelid AND a.attnum = 1
 WHERE i.indrelid = 'enc'::regclass AND c.relname NOT LIKE '%ccnew%'};
is(sql($KEYED), 'enc_code=generation=1,enc_code2=generation=1,enc_email=generation=1,enc_norm=generation=1,enc_phone_excl=generation=1',
	'every keyed index is keyed with generation 1');
my $log_offset = -s $node->logfile;
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '2', 'rotate_tde_key: generation 2');
$node->poll_query_until('app', $GENS, '2') or die 'generation 1 was not destroyed';
is(sql($KEYED), 'enc_code=generation=2,enc_code2=generation=2,enc_email=generation=2,enc_norm=generation=2,enc_phone_excl=generation=2',
	'the worker rebuilt every keyed index under generation 2 (the expression index as its owner)');
is(answers($node, 'enc'), $want, 'after the rebuild the answers are the same');
is(sql(q{SELECT count(*) FROM pg_index WHERE indrelid = 'enc'::regclass AND NOT indisvalid}), '0',
	'no index is invalid');
my $log = log_since($node, $log_offset);
like($log, qr/fieldcrypt: 5 keyed hash index\(es\) of database "app" rebuilt under TDE key generation 2, 0 failed/,
	'log: five keyed indexes rebuilt');
unlike($log, qr/FCENC/i, 'no value of enc in the server log');
sql_fails($node, 'app', q{INSERT INTO enc VALUES (0, 'x', 'FCENCph000005', 0)}, '23P01',
	'conflicting key value violates exclusion constraint "enc_phone_excl"',
	'the rebuilt exclusion constraint still refuses a duplicate');

# --- a rebuild that fails: only its generation is kept --------------------------------------------
safe_tls($node, 'app', 'DROP INDEX enc_code2');
safe_tls($node, 'app', <<'EOS');
SET ROLE alice;
CREATE OR REPLACE FUNCTION norm(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RAISE EXCEPTION 'norm() is broken'; END $$;
EOS
$log_offset = -s $node->logfile;
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '3', 'rotate_tde_key: generation 3');
$node->poll_query_until('app', $KEYED, 'enc_code=generation=3,enc_email=generation=3,enc_norm=generation=2,enc_phone_excl=generation=3')
  or die 'the other indexes were not rebuilt';
ok($node->poll_query_until('app', q{SELECT count(*) FROM fieldcrypt.rotation_progress WHERE problem LIKE '%keyed hash index public.enc_norm could not be rebuilt (SQLSTATE P0001)%'}, '1'),
	'rotation_progress names the index that could not be rebuilt');
$node->poll_query_until('app', $GENS, '2,3') or die 'generation 1 was not destroyed';
$log = log_since($node, $log_offset);
like($log, qr/WARNING:  fieldcrypt: could not rebuild keyed hash index public\.enc_norm under the current TDE key, its key generation is kept/,
	'the failing index is named in a WARNING');
is(sql($GENS), '2,3', 'generation 2, which enc_norm uses, is kept');
# fixed by its owner: a later run of the worker finishes
safe_tls($node, 'app', <<'EOS');
SET ROLE alice;
CREATE OR REPLACE FUNCTION norm(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF current_user <> 'alice' AND (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()) <> 'client backend' THEN
        RAISE EXCEPTION 'norm() evaluated as % by the worker', current_user;
    END IF;
    RETURN lower(t);
END $$;
EOS
$node->poll_query_until('app', $GENS, '3') or die 'generation 2 was not destroyed after the fix';
is(sql($KEYED), 'enc_code=generation=3,enc_email=generation=3,enc_norm=generation=3,enc_phone_excl=generation=3',
	'once fixed, the index is rebuilt under generation 3 and generation 2 destroyed');
is(answers($node, 'enc'), $want, 'the answers are the same');

# --- crash in the middle of the rebuild ---------------------------------------------------------
# (the exclusion constraint's plain REINDEX would wait for the writer first: only the
# concurrent rebuilds here)
safe_tls($node, 'app', 'ALTER TABLE enc DROP CONSTRAINT enc_phone_excl');
$node->append_conf('postgresql.conf', 'fieldcrypt.test_reencrypt_pause_before_rekey = on');
$node->reload;
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '4', 'rotate_tde_key: generation 4');
$node->poll_query_until('app', q{SELECT phase FROM fieldcrypt.rotation_progress WHERE to_generation = 4}, 'paused for testing')
  or die 'the worker did not pause before the rebuild';
($w_in, $w_out, $w_err) = ('', '', '');
$writer = IPC::Run::start([ 'psql', '-X', '-d', FcNode::tls_connstr($node, 'app') ],
	'<', \$w_in, '>', \$w_out, '2>', \$w_err);
$w_in .= "BEGIN; INSERT INTO enc VALUES (-2, 'uncommitted', 'uncommitted2', -2);\n";
$writer->pump until $w_out =~ /INSERT/ || $w_err ne '';
$node->append_conf('postgresql.conf', 'fieldcrypt.test_reencrypt_pause_before_rekey = off');
$node->reload;
# the worker's REINDEX CONCURRENTLY made its copy and waits for the writer
$node->poll_query_until('app', q{SELECT count(*) > 0 FROM pg_class WHERE relname LIKE 'enc%ccnew%'}, 't')
  or die 'the rebuild did not start';
$node->poll_query_until('app', q{SELECT count(*) > 0 FROM pg_locks WHERE NOT granted}, 't')
  or die 'the rebuild did not wait for the writer';
# the worker commits asynchronously (synchronous_commit = off): a synchronous commit
# flushes the WAL up to here, so the crash below keeps the copy's catalog entry
$node->safe_psql('postgres', 'SELECT txid_current()');
$node->stop('immediate');
$writer->kill_kill;
$node->start;
is(answers($node, 'enc'), $want, 'after the crash during the rebuild the answers are the same');
$node->poll_query_until('app', $GENS, '4') or die 'generation 3 was not destroyed after the restart';
is(sql($KEYED), 'enc_code=generation=4,enc_email=generation=4,enc_norm=generation=4',
	'after the restart the worker rebuilt every keyed index under generation 4');
my $left = sql(q{SELECT string_agg(c.relname || ':' || i.indisvalid || ':' || a.attoptions[1], ',')
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = 1
 WHERE i.indrelid = 'enc'::regclass AND (NOT i.indisvalid OR c.relname LIKE '%ccnew%')});
like($left, qr/^enc_\w+_ccnew:false:generation=4$/,
	'what the crash left is one invalid _ccnew copy keyed with the current generation (the failed rebuilds left none)');
is(answers($node, 'enc'), $want, 'the answers are the same under generation 4');
$node->wait_for_catchup($standby);
is(answers($standby, 'enc'), $want, 'the standby answers with the rebuilt indexes');
$standby->stop;

# --- pg_dump, and a restore into another cluster ----------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
my ($out, $err) = ('', '');
IPC::Run::run([ 'pg_dump', '-Fc', '-f', "$dir/app.dump", '-d', FcNode::tls_connstr($node, 'app') ],
	'>', \$out, '2>', \$err);
is($? >> 8, 0, 'pg_dump') or diag($err);
IPC::Run::run([ 'pg_restore', '-f', '-', "$dir/app.dump" ], '>', \$out, '2>', \$err);
like($out, qr/CREATE INDEX enc_email ON public\.enc USING hash \(email fieldcrypt\.text_keyed_ops \(generation='4'\)\)/,
	'the dump names the operator class and the generation');
my $other = FcNode::new_node('keyed_other');
$other->start;
$other->safe_psql('postgres', 'CREATE DATABASE app');
$other->safe_psql('postgres', 'CREATE ROLE alice LOGIN');
IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', FcNode::tls_connstr($other, 'app'), "$dir/app.dump" ],
	'>', \$out, '2>', \$err);
is($? >> 8, 0, 'pg_restore into another cluster') or diag($err);
is(answers($other, 'enc'), $want, 'the restored database answers through its keyed indexes');
is(safe_tls($other, 'app', q{SELECT a.attoptions[1] FROM pg_attribute a WHERE a.attrelid = 'enc_email'::regclass}),
	'generation=1', 'the restored index is keyed with the restored database\'s generation 1');
$other->stop;

# --- a transaction that holds the rebuild up does not block rotate_tde_key ------------------------
# alice keeps enc locked for writing in an open transaction (that has written nothing: one
# that has, the worker waits for before its rebuilds, run.c): REINDEX CONCURRENTLY waits for
# it as long as it lasts (and before it, the DROP INDEX of the copy the crash above left)
($w_in, $w_out, $w_err) = ('', '', '');
$writer = IPC::Run::start([ 'psql', '-X', '-d', FcNode::tls_connstr($node, 'app') ],
	'<', \$w_in, '>', \$w_out, '2>', \$w_err);
$w_in .= "SET ROLE alice;\nBEGIN;\nLOCK TABLE enc IN ROW EXCLUSIVE MODE;\n";
$writer->pump until $w_out =~ /LOCK TABLE/ || $w_err ne '';
my $held_offset = -s $node->logfile;
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '5', 'rotate_tde_key: generation 5 while alice keeps enc locked for writing');
ok($node->poll_query_until('app', q{SELECT problem ~ '^rebuilding keyed hash index(es \(they wait for any transaction using their tables\)| public\.enc_\w+ \(it waits for any transaction using its table\))$' FROM fieldcrypt.rotation_progress}),
	'rotation_progress.problem says the worker waits in a rebuild');
$node->poll_query_until('app', q{SELECT count(*) > 0 FROM pg_locks WHERE NOT granted}, 't')
  or die 'the rebuild did not wait for the writer';
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '6',
	'a rebuild held up by another transaction does not block rotate_tde_key (generation 6)');
sql_is($node, 'app', q{SELECT to_generation || ':' || phase || ':' || (pid IS NOT NULL) FROM fieldcrypt.rotation_progress},
	'6:re-encrypting:true', 'rotation_progress shows the running worker, which goes on to generation 6 (not "waiting to start")');
$w_in .= "ROLLBACK;\n";
$writer->finish;
$node->poll_query_until('app', $GENS, '6') or die 'generations 4 and 5 were not destroyed';
my $held_log = log_since($node, $held_offset);
like($held_log, qr/re-encryption of the encrypted_heap tables of database "app" goes on to TDE key generation 6, rotated to while it ran/,
	'the running worker went on to generation 6');
is(scalar(() = $held_log =~ /re-encryption of the encrypted_heap tables of database "app" from TDE key generation \d+ to \d+ started/g),
	1, 'one worker did both generations (none started over after a retry)');
is(sql($KEYED), 'enc_code=generation=6,enc_email=generation=6,enc_norm=generation=6',
	'once the transaction ended the worker rebuilt every keyed index under generation 6');
is(answers($node, 'enc'), $want, 'the answers are the same under generation 6');

# --- a leftover copy on a table another session keeps locked ------------------------------------
# alice keeps enc locked; her own REINDEX CONCURRENTLY times out waiting for that lock and leaves
# an invalid copy keyed with generation 6. After rotate_tde_key the worker must not wait for the
# table's lock to drop it: it holds a snapshot meanwhile, which a REINDEX CONCURRENTLY of that
# index in another session would wait for (a deadlock), and the copy may be gone or made valid
# by the time the lock comes (it then failed with "does not exist"). It leaves the copy for a
# later attempt, and drops it once the lock is gone: no error, no retry.
($w_in, $w_out, $w_err) = ('', '', '');
$writer = IPC::Run::start([ 'psql', '-X', '-d', FcNode::tls_connstr($node, 'app') ],
	'<', \$w_in, '>', \$w_out, '2>', \$w_err);
$w_in .= "SET ROLE alice;\nBEGIN;\nLOCK TABLE enc IN ROW EXCLUSIVE MODE;\n";
$writer->pump until $w_out =~ /LOCK TABLE/ || $w_err ne '';
my ($rc, $stdout, $stderr) = $node->psql('app',
	"SET ROLE alice; SET statement_timeout = '2s'; REINDEX INDEX CONCURRENTLY enc_email");
like($stderr, qr/canceling statement due to statement timeout/, 'alice\'s REINDEX CONCURRENTLY times out');
is(sql(q{SELECT c.relname || ':' || i.indisvalid || ':' || a.attoptions[1]
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = 1
 WHERE i.indrelid = 'enc'::regclass AND NOT i.indisvalid}),
	'enc_email_ccnew:false:generation=6', 'it left an invalid copy keyed with generation 6');
my $offset = -s $node->logfile;
sql_is($node, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '7', 'rotate_tde_key: generation 7');
ok($node->poll_query_until('app', q{SELECT problem ~ '^rebuilding keyed hash index public\.enc_\w+ \(it waits for any transaction using its table\)$' FROM fieldcrypt.rotation_progress}),
	'the worker went on to rebuild the keyed indexes, which wait for alice\'s transaction');
is(sql(q{SELECT count(*) FROM pg_locks WHERE relation = 'enc'::regclass AND mode = 'AccessExclusiveLock'}), '0',
	'it did not wait for (nor take) the lock that dropping the copy needs');
$w_in .= "ROLLBACK;\n";
$writer->finish;
$node->poll_query_until('app', $GENS, '7') or die 'generation 6 was not destroyed';
$log = log_since($node, $offset);
unlike($log, qr/ERROR|WARNING|exited with exit code/, 'no error, no exit, no retry');
like($log, qr/fieldcrypt: DROP INDEX public\.enc_email_ccnew \(left invalid by an interrupted rebuild\)/,
	'once alice\'s transaction ended, a later attempt dropped the copy');
is(sql(q{SELECT count(*) FROM pg_index WHERE indrelid = 'enc'::regclass AND NOT indisvalid}), '0', 'no invalid copy is left');
is(sql($KEYED), 'enc_code=generation=7,enc_email=generation=7,enc_norm=generation=7',
	'every keyed index is keyed with generation 7');
is(answers($node, 'enc'), $want, 'the answers are the same under generation 7');
$node->stop;
done_testing();
