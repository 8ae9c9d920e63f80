# fieldcrypt on Citus (issue 15), restrictions and query paths: a coordinator and two
# workers with pgaudit (pgaudit.role = auditor), one key for the cluster (imported by hand).
#   - restrictions on encrypted columns (index, UNIQUE, CHECK, audit grant) are refused with
#     0A000 on the coordinator for distributed and reference tables, and directly on a
#     worker's shard; nothing was created by them;
#   - every path Citus has keeps the write-only promise: INSERT ... SELECT pushed down,
#     repartitioned and pulled to the coordinator (which before this issue stored NULL
#     silently) copy the values, which decrypt to their mirrors; COPY TO gives envelopes as
#     on a single node; reference tables and co-located joins read NULL and decrypt for
#     readers; a plain login gets neither plaintext nor envelope from any SELECT;
#   - RETURNING of INSERT (router, multi-row, INSERT ... SELECT pushed down and pulled to
#     the coordinator), UPDATE, DELETE, on reference tables and in a data-modifying CTE
#     returns NULL for encrypted columns, and what they wrote decrypts.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my $K1 = 'Citus-Paths-K1-7x!';
my $c = FcCitus::new_cluster(workers => 2, preload => 'citus,pgaudit,fieldcrypt',
	conf => "pgaudit.role = 'auditor'\n");
my $co = $c->{coord};
my $DB = 'shared';
FcCitus::add_shared_key_database($c, $DB, $K1);

safe_tls($co, $DB, <<'EOS');
CREATE ROLE auditor;
CREATE ROLE bob LOGIN;
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox', 'id');
CREATE TABLE mailbox2 (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('mailbox2', 'id', colocate_with => 'mailbox');
CREATE TABLE by_mirror (mirror text, password fieldcrypt.encrypted_text);
SELECT create_distributed_table('by_mirror', 'mirror');
CREATE TABLE copies (id int, password fieldcrypt.encrypted_text, mirror text);
SELECT create_distributed_table('copies', 'id');
CREATE TABLE countries (code text PRIMARY KEY, secret fieldcrypt.encrypted_text, mirror text);
SELECT create_reference_table('countries');
INSERT INTO mailbox SELECT i, 'pw-' || i, 'pw-' || i FROM generate_series(1, 30) i;
INSERT INTO countries VALUES ('fr', 'pw-fr', 'pw-fr'), ('de', 'pw-de', 'pw-de');
GRANT SELECT ON mailbox, mailbox2, by_mirror, copies, countries TO bob;
EOS

# ---------------------------------------------------------------------------------------
# restrictions: on the coordinator, and on a worker's shard directly
# ---------------------------------------------------------------------------------------
my %refusals = (
	'an index' => [ 'CREATE INDEX ON %T (%C)', 'cannot be indexed' ],
	'a UNIQUE constraint' => [ 'ALTER TABLE %T ADD CONSTRAINT u UNIQUE (%C)', 'cannot be indexed' ],
	'a CHECK constraint' => [ 'ALTER TABLE %T ADD CHECK (%C IS NOT NULL)', 'cannot be used in a CHECK constraint' ],
	'an audit grant' => [ 'GRANT SELECT (%C) ON %T TO auditor', 'cannot be audited' ],
);
my ($w, $shard) = FcCitus::shard_of($c, $DB, 'mailbox', 1);
my ($refw) = @{ $c->{workers} };
my $refshard = $co->safe_psql($DB, q{SELECT shard_name FROM citus_shards WHERE table_name = 'countries'::regclass LIMIT 1});
for my $r (sort keys %refusals)
{
	my ($tmpl, $what) = @{ $refusals{$r} };
	for my $t ([ $co, 'mailbox', 'password', 'coordinator, distributed table' ],
		[ $co, 'countries', 'secret', 'coordinator, reference table' ],
		[ $w, $shard, 'password', 'worker, a shard directly' ],
		[ $refw, $refshard, 'secret', 'worker, a reference table shard directly' ])
	{
		my ($node, $table, $col, $where) = @$t;
		(my $sql = $tmpl) =~ s/%T/$table/g;
		$sql =~ s/%C/$col/g;
		sql_fails($node, $DB, $sql, '0A000', "encrypted column \"$col\" of table \"$table\" cannot be" . ($what =~ s/^cannot be//r),
			"$where: $r on an encrypted column is refused");
	}
}
is($w->safe_psql($DB, "SELECT count(*) FROM pg_index WHERE indrelid = '$shard'::regclass"), '1',
	'worker: the shard still has its primary key index only');
is($co->safe_psql($DB, q{SELECT string_agg(DISTINCT result, ',') FROM run_command_on_shards('mailbox',
	$$SELECT count(*) FROM pg_index WHERE indrelid = '%s'::regclass$$)}), '1',
	'coordinator: no shard got an index');
is($co->safe_psql($DB, q{SELECT string_agg(DISTINCT result, ',') FROM run_command_on_shards('mailbox',
	$$SELECT count(*) FROM information_schema.column_privileges WHERE table_name = '%s' AND grantee = 'auditor'$$)}),
	'0', 'no shard granted the auditor anything');

# ---------------------------------------------------------------------------------------
# INSERT ... SELECT: pushed down, repartitioned, pulled to the coordinator
# ---------------------------------------------------------------------------------------
my %isel = (
	'pushed down' => [ 'INSERT INTO mailbox2 SELECT * FROM mailbox', 'mailbox2', 30, qr/Task Count: \d+/ ],
	'repartitioned' => [ 'INSERT INTO by_mirror (mirror, password) SELECT mirror, password FROM mailbox', 'by_mirror', 30,
		qr/INSERT\/SELECT method: repartition/ ],
	'pulled to the coordinator' => [ 'INSERT INTO copies SELECT * FROM mailbox ORDER BY id LIMIT 10', 'copies', 10,
		qr/INSERT\/SELECT method: pull to coordinator/ ],
);
for my $p (sort keys %isel)
{
	my ($sql, $t, $n, $plan) = @{ $isel{$p} };
	like(safe_tls($co, $DB, "EXPLAIN $sql"), $plan, "INSERT ... SELECT $p: Citus plans it so");
	safe_tls($co, $DB, $sql);
	is($co->safe_psql($DB, "SELECT count(*), count(password), count(*) FILTER (WHERE fieldcrypt.decrypt(password) "
		  . "IS DISTINCT FROM mirror) FROM $t"), "$n|$n|0",
		"INSERT ... SELECT $p: $n values copied, none NULL, each decrypts to its mirror");
}

# ---------------------------------------------------------------------------------------
# COPY TO, reference tables, co-located joins
# ---------------------------------------------------------------------------------------
my $copy = safe_tls($co, $DB, 'COPY mailbox (id, password) TO STDOUT');
is(scalar(() = $copy =~ /^\d+\tfcenc:v1:[A-Za-z0-9+\/=]+$/mg), 30, 'COPY distributed table TO: 30 envelopes, as on one node');
unlike($copy, qr/pw-/, 'COPY distributed table TO: no plaintext');
$copy = safe_tls($co, $DB, 'COPY (SELECT id, password FROM mailbox WHERE id < 6) TO STDOUT');
is(scalar(() = $copy =~ /^\d+\tfcenc:v1:/mg), 5, 'COPY (query on a distributed table) TO: envelopes');

sql_is($co, $DB, "SELECT code, secret FROM countries ORDER BY code", "de|\nfr|", 'reference table: NULL on the coordinator');
sql_is($co, $DB, "SELECT fieldcrypt.decrypt(secret) FROM countries ORDER BY code", "pw-de\npw-fr",
	'reference table: decrypt on the coordinator');
for my $wk (@{ $c->{workers} })
{
	sql_is($wk, $DB, "SELECT code, secret FROM countries ORDER BY code", "de|\nfr|",
		'reference table, on ' . $wk->name . ' directly: NULL');
	sql_is($wk, $DB, "SELECT fieldcrypt.decrypt(secret) FROM countries WHERE code = 'fr'", 'pw-fr',
		'reference table, on ' . $wk->name . ' directly: decrypt with the cluster\'s key');
}
sql_is($co, $DB, 'SELECT a.id, a.password, b.password FROM mailbox a JOIN mailbox2 b USING (id) WHERE a.id = 5', '5||',
	'co-located join: NULL from both sides');
sql_is($co, $DB, 'SELECT count(*), count(*) FILTER (WHERE fieldcrypt.decrypt(a.password) IS DISTINCT FROM '
	  . 'fieldcrypt.decrypt(b.password)) FROM mailbox a JOIN mailbox2 b USING (id)', '30|0',
	'co-located join: decrypt on both sides agrees on all 30 rows');
sql_is($co, $DB, q{SELECT m.id, m.password, c.secret FROM mailbox m JOIN countries c ON c.code = 'fr' WHERE m.id = 3},
	'3||', 'join with a reference table: NULL');

# a plain login: no plaintext and no envelope from any SELECT
# (the mirror columns hold the plaintext on purpose: left out)
my @reads = (['SELECT id, password FROM mailbox', 30], ['SELECT code, secret FROM countries', 2],
	['SELECT password FROM by_mirror', 30],
	['SELECT a.id, a.password, b.password FROM mailbox a JOIN mailbox2 b USING (id)', 30],
	['WITH m AS MATERIALIZED (SELECT * FROM mailbox) SELECT id, password FROM m', 30],
	['SELECT id, password FROM (SELECT * FROM mailbox ORDER BY id LIMIT 10) s', 10],
	['SELECT m.id, m.password, c.secret FROM mailbox m CROSS JOIN countries c', 60],
	['SELECT ROW(id, password) FROM mailbox WHERE id < 3', 2], ['SELECT array_agg(password) FROM mailbox', 1]);
for my $r (@reads)
{
	my ($q, $n) = @$r;
	my ($rc, $out, $err) = FcNode::psql_tls($co, $DB, "\\set QUIET on\nSET ROLE bob;\n$q");
	my $lines = $out eq '' ? 1 : scalar(my @l = split /\n/, $out, -1);
	ok($rc == 0 && $lines == $n && $out !~ /pw-|fcenc/, "plain login: $q gives its $n rows without plaintext or envelope")
	  or diag("rc $rc, $lines lines: $err\n" . substr($out, 0, 300));
}

# RETURNING and data-modifying CTEs: the workers hand envelopes to the coordinator (a
# Citus peer), which nulls them before its client on every modification path
safe_tls($co, $DB, 'CREATE TABLE ret (id int PRIMARY KEY, password fieldcrypt.encrypted_text, mirror text); '
	  . "SELECT create_distributed_table('ret', 'id'); "
	  . 'CREATE TABLE ret_ref (id int PRIMARY KEY, password fieldcrypt.encrypted_text); '
	  . "SELECT create_reference_table('ret_ref')");
my @ret = (
	[ "INSERT INTO ret VALUES (1, 'pw-1', 'x') RETURNING id, password", "1|" ],
	[ "INSERT INTO ret SELECT i, 'pw-' || i, 'x' FROM generate_series(2, 4) i RETURNING id, password", "2|\n3|\n4|" ],
	[ "UPDATE ret SET mirror = 'y' WHERE id = 1 RETURNING id, password", "1|" ],
	[ "UPDATE ret SET mirror = 'y' WHERE id IN (2, 3) RETURNING id, password", "2|\n3|" ],
	[ "INSERT INTO ret SELECT id + 100, password, mirror FROM mailbox WHERE id < 3 RETURNING id, password", "101|\n102|" ],
	[ "INSERT INTO ret SELECT id + 200, password, mirror FROM mailbox ORDER BY id LIMIT 2 RETURNING id, password", "201|\n202|" ],
	[ "DELETE FROM ret WHERE id IN (101, 102) RETURNING id, password", "101|\n102|" ],
	[ "INSERT INTO ret_ref VALUES (1, 'pw-r') RETURNING id, password", "1|" ],
	[ "UPDATE ret_ref SET id = id RETURNING id, password", "1|" ],
	[ "WITH u AS (UPDATE ret SET mirror = 'w' WHERE id < 3 RETURNING *) SELECT id, password FROM u", "1|\n2|" ],
);
for my $r (@ret)
{
	my ($q, $want) = @$r;
	my ($rc, $out, $err) = FcNode::psql_tls($co, $DB, "\\set QUIET on\n$q");
	$out = join("\n", sort { $a <=> $b } split /\n/, $out);
	is("$rc:$out", "0:$want", "$q: NULL in every returned row") or diag($err);
}
is($co->safe_psql($DB, 'SELECT count(*), count(password), count(*) FILTER (WHERE fieldcrypt.decrypt(password) LIKE \'pw-%\') FROM ret'),
	'6|6|6', 'what those statements wrote is stored and decrypts');

FcCitus::stop_all($c);
done_testing();
