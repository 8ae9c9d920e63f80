# fieldcrypt on Citus (issue 15): a coordinator and two workers, shared_preload_libraries =
# 'citus,fieldcrypt', TLS between nodes (citus.node_conninfo sslmode=require). Skipped, and
# listed as not run by run-tests.sh, where Citus is not installed (test/deps.sh builds it).
#   - database "app", set up as a new user would (each node auto-activates a key of its
#     own): the findings of the issue. Encrypted columns of a distributed table take
#     INSERTs and read as NULL; every node holds an unrelated generation 1, so a worker
#     refuses what the coordinator sealed (INSERT ... SELECT through the coordinator) and a
#     pushed-down decrypt fails there; encrypted_heap distributed tables get encrypted_heap
#     shards that read and write;
#   - database "shared": the coordinator's generations imported on every worker
#     (export_key_generations / import_key_generations). decrypt returns the plaintext
#     for superusers and members of fieldcrypt_reader wherever Citus evaluates it (router,
#     multi-shard pushed down, on the coordinator over rows it pulled: before this issue
#     the worker sent NULL there and decrypt returned NULL silently), and refuses others
#     with 42501 on each of those paths; reading the column is NULL on every path;
#   - fieldcrypt.cluster_key_status() on the coordinator lists every node with its
#     generations and whether they are the coordinator's (fieldcrypt_admin, TLS; 55000
#     without Citus);
#   - the attacker: a plain login connecting straight to a worker with application_name
#     "citus_internal gpid=..." gets envelopes, never plaintext, and exactly the envelopes
#     COPY (query) TO STDOUT gives it on that node anyway; without that name it gets NULL;
#     decrypt is refused to it there; in a database without Citus the name changes nothing.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my $K1 = 'Citus-Cluster-K1-7x!';
my $PEER = 'citus_internal gpid=10000000001';
my $c = FcCitus::new_cluster(workers => 2);
my $co = $c->{coord};
my @w = @{ $c->{workers} };

# ---------------------------------------------------------------------------------------
# database "app": the three findings of the issue
# ---------------------------------------------------------------------------------------
is($co->safe_psql('app', 'SELECT count(*) FROM citus_get_active_worker_nodes()'), '2',
	'app: two workers joined the coordinator');
safe_tls($co, 'app', <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox', 'id');
INSERT INTO mailbox VALUES (1, 'pw-1', 'pw-1'), (2, 'pw-2', 'pw-2'), (3, 'pw-3', 'pw-3');
EOS
is($co->safe_psql('app', 'SELECT count(*), count(password) FROM mailbox'), '3|3',
	'app finding 1: the distributed table took the INSERTs, every value stored');
sql_is($co, 'app', "SELECT string_agg(id || ':' || (password IS NULL), ',' ORDER BY id) FROM mailbox",
	'1:false,2:false,3:false', 'app finding 1: inside the server the values are there');
sql_is($co, 'app', 'SELECT password FROM mailbox ORDER BY id', "\n\n",
	'app finding 1: reading the column gives NULL on the coordinator');

my @salts = map { $_->safe_psql('app', "SELECT encode(salt, 'hex') FROM fieldcrypt.key_generations WHERE generation = 1") }
  ($co, @w);
ok($salts[0] ne $salts[1] && $salts[0] ne $salts[2] && $salts[1] ne $salts[2],
	'app finding 2: each node auto-activated an unrelated generation 1');
sql_fails($co, 'app', "INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(10, 20) i",
	'XX000', 'encrypted value of key generation 1 cannot be decrypted in this database',
	'app finding 2 (Citus relays COPY errors as XX000): a worker refuses the envelopes the coordinator sealed (INSERT ... SELECT through the coordinator)');
sql_fails($co, 'app', 'SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 1',
	'XX001', 'encrypted value could not be authenticated',
	'app finding 2: decrypt pushed down to the worker cannot open the coordinator\'s envelope');

# cluster_key_status on the coordinator: every node, and that the workers' keys are their own
sql_is($co, 'app', 'SELECT nodeport, is_coordinator, generations, current_generation, matches_coordinator, error '
	  . 'FROM fieldcrypt.cluster_key_status()',
	join("\n", $co->port . '|t|{1}|1|t|', map { $_->port . '|f|{1}|1|f|' } @w),
	'app: cluster_key_status lists every node, the workers\' generation 1 is not the coordinator\'s');

safe_tls($co, 'app', <<'EOS');
CREATE TABLE ledger (id int, note text) USING encrypted_heap;
SELECT create_distributed_table('ledger', 'id');
INSERT INTO ledger SELECT i, 'note-' || i FROM generate_series(1, 50) i;
UPDATE ledger SET note = note || '+' WHERE id % 2 = 0;
EOS
is($co->safe_psql('app', "SELECT count(*), count(*) FILTER (WHERE note LIKE '%+') FROM ledger"), '50|25',
	'app finding 3: an encrypted_heap distributed table reads and writes');
is($co->safe_psql('app', q{SELECT string_agg(DISTINCT result, ',') FROM run_command_on_shards('ledger',
	$$SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = '%s'::regclass$$)}),
	'encrypted_heap', 'app finding 3: every shard of it is an encrypted_heap table');

# ---------------------------------------------------------------------------------------
# database "shared": one key for the cluster (imported by hand here), decrypt everywhere
# ---------------------------------------------------------------------------------------
FcCitus::add_database($c, 'shared', db_pre => 'SET fieldcrypt.auto_activate = off; ',
	worker_pre => 'SET fieldcrypt.auto_activate = off; ');
safe_tls($co, 'shared', "SELECT fieldcrypt.set_data_encryption_key('$K1')");
my $doc = safe_tls($co, 'shared', 'SELECT fieldcrypt.export_key_generations()');
(my $docq = $doc) =~ s/\n/\\n/g;
safe_tls($_, 'shared', "SELECT fieldcrypt.import_key_generations(E'$docq', '$K1')") for @w;
is(join(',', map { $_->safe_psql('shared', "SELECT encode(salt, 'hex') FROM fieldcrypt.key_generations") } @w),
	join(',', ($co->safe_psql('shared', "SELECT encode(salt, 'hex') FROM fieldcrypt.key_generations")) x 2),
	'shared: every worker holds the coordinator\'s generation');

sql_is($co, 'shared', 'SELECT count(*), bool_and(matches_coordinator), min(current_generation), '
	  . 'count(error) FROM fieldcrypt.cluster_key_status()', '3|t|1|0',
	'shared: cluster_key_status says every node holds the coordinator\'s generations');
safe_tls($co, 'shared', 'CREATE ROLE keyadmin LOGIN; GRANT fieldcrypt_admin TO keyadmin');
sql_is($co, 'shared', "\\set QUIET on\nSET ROLE keyadmin;\nSELECT count(*) FILTER (WHERE matches_coordinator) FROM fieldcrypt.cluster_key_status()",
	'3', 'shared: a member of fieldcrypt_admin may call it');
sql_fails($co, 'shared', 'SELECT * FROM fieldcrypt.cluster_key_status()', '28000',
	'fieldcrypt.export_key_generations requires an SSL connection', 'cluster_key_status: refused without TLS', via => 'plain');
sql_fails($w[0], 'postgres', 'CREATE EXTENSION IF NOT EXISTS fieldcrypt; SELECT * FROM fieldcrypt.cluster_key_status()', '55000',
	'the citus extension is not installed in this database', 'cluster_key_status: refused where Citus is not installed');

safe_tls($co, 'shared', <<'EOS');
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox', 'id');
INSERT INTO mailbox VALUES (1, 'pw-1', 'pw-1'), (2, 'pw-2', 'pw-2');
INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(3, 40) i;
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
GRANT fieldcrypt_reader TO alice;
GRANT SELECT ON mailbox TO alice, bob;
EOS
my $COPY = "COPY mailbox (id, password, mirror) FROM STDIN;\n"
  . join('', map { "$_\tpw-$_\tpw-$_\n" } 41 .. 60) . "\\.\n";
safe_tls($co, 'shared', $COPY);
is($co->safe_psql('shared', 'SELECT count(*), count(password) FROM mailbox'), '60|60',
	'shared: VALUES, INSERT ... SELECT and COPY stored 60 values across the shards');
is($co->safe_psql('shared', q{SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = 'mailbox'::regclass}),
	'2', 'shared: the shards lie on both workers');

my %paths = (
	'router' => 'SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 7',
	'multi-shard, pushed down' => "SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE mirror = 'pw-7'",
	'on the coordinator over pulled rows' =>
	  'SELECT fieldcrypt.decrypt(password) FROM (SELECT id, password FROM mailbox ORDER BY id LIMIT 10) s WHERE id = 7',
	'a CTE pulled to the coordinator' =>
	  'WITH m AS MATERIALIZED (SELECT id, password FROM mailbox) SELECT fieldcrypt.decrypt(password) FROM m WHERE id = 7',
);

# Where does Citus evaluate decrypt? The worker queries it logs say.
my ($rc, $out, $err) = FcNode::psql_tls($co, 'shared', "\\set QUIET on\nSET citus.log_remote_commands = on;\n"
	  . $paths{'on the coordinator over pulled rows'});
is($out, 'pw-7', 'coordinator path: decrypt of a row pulled from a worker is the plaintext (was NULL)');
ok($err =~ /issuing SELECT .*password/ && $err !~ /issuing [^\n]*decrypt/,
	'coordinator path: the workers were sent no decrypt, the coordinator evaluated it')
  or diag($err);
($rc, $out, $err) = FcNode::psql_tls($co, 'shared', "\\set QUIET on\nSET citus.log_remote_commands = on;\n"
	  . $paths{'multi-shard, pushed down'});
like($err, qr/issuing SELECT [^\n]*fieldcrypt\.decrypt\(password\)/, 'multi-shard path: decrypt went down to the workers');

for my $p (sort keys %paths)
{
	sql_is($co, 'shared', $paths{$p}, 'pw-7', "superuser: decrypt $p gives the plaintext");
	sql_is($co, 'shared', "\\set QUIET on\nSET ROLE alice; $paths{$p}", 'pw-7', "fieldcrypt_reader: decrypt $p gives the plaintext");
	sql_fails($co, 'shared', "SET ROLE bob; $paths{$p}", '42501', 'permission denied to decrypt encrypted values',
		"plain login: decrypt $p is refused");
	(my $read = $paths{$p}) =~ s/fieldcrypt\.decrypt\(password\)/password/;
	sql_is($co, 'shared', "\\set QUIET on\nSET ROLE bob; $read", '', "plain login: the column $p reads NULL");
}
is($co->safe_psql('shared', 'SELECT count(*) FILTER (WHERE fieldcrypt.decrypt(password) IS DISTINCT FROM mirror) FROM mailbox'),
	'0', 'every one of the 60 values decrypts to its mirror across the shards');
is($co->safe_psql('shared', 'WITH m AS MATERIALIZED (SELECT * FROM mailbox) '
	  . 'SELECT count(*) FILTER (WHERE fieldcrypt.decrypt(password) IS DISTINCT FROM mirror) FROM m'),
	'0', 'and so do all 60 pulled to the coordinator');

# ---------------------------------------------------------------------------------------
# the attacker: a plain login on a worker that claims to be Citus
# ---------------------------------------------------------------------------------------
my ($wk, $shard) = FcCitus::shard_of($c, 'shared', 'mailbox', 7);
my $as_bob = sub {
	my ($appname, $sql) = @_;
	my $connstr = FcNode::tls_connstr($wk, 'shared') =~ s/user=\S+/user=bob/r;
	$connstr .= " application_name='$appname'" if $appname;
	return FcNode::psql_connstr($connstr, "\\set QUIET on\nSET citus.override_table_visibility = off;\n$sql");
};
($rc, $out, $err) = $as_bob->('', "SELECT id, password FROM $shard WHERE id = 7");
is("$rc:$out", '0:7|', 'worker, plain login: the shard\'s column reads NULL') or diag($err);
my ($rc2, $env, $err2) = $as_bob->($PEER, "SELECT password FROM $shard WHERE id = 7");
like("$rc2:$env", qr/\A0:fcenc:v1:[A-Za-z0-9+\/=]+\z/,
	'worker, plain login claiming to be Citus: an envelope, never the plaintext') or diag($err2);
my ($rc3, $copied) = $as_bob->('', "COPY (SELECT password FROM $shard WHERE id = 7) TO STDOUT");
is("$rc3:$copied", "0:$env", 'worker: it is the envelope COPY (query) TO STDOUT gives that login on a single node');
unlike($env . $err2, qr/pw-7/, 'worker: no plaintext in what the claimed peer got');
($rc, $out, $err) = $as_bob->($PEER, "\\set VERBOSITY verbose\nSELECT fieldcrypt.decrypt(password) FROM $shard WHERE id = 7");
like("$rc:$err", qr/\A[1-9]\d*:.*ERROR:  42501: permission denied to decrypt encrypted values/s,
	'worker, plain login claiming to be Citus: decrypt is refused');
$wk->safe_psql('postgres', 'CREATE EXTENSION IF NOT EXISTS fieldcrypt; CREATE TABLE loc (s fieldcrypt.encrypted_text); '
	  . "INSERT INTO loc VALUES ('x'); GRANT SELECT ON loc TO bob");
my $connstr = FcNode::tls_connstr($wk, 'postgres') =~ s/user=\S+/user=bob/r;
($rc, $out) = FcNode::psql_connstr("$connstr application_name='$PEER'", 'SELECT 1, s FROM loc');
is("$rc:$out", '0:1|', 'worker, a database without Citus: the claimed name changes nothing (NULL)');

FcCitus::stop_all($c);
done_testing();
