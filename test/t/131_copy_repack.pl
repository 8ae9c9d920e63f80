# pg_repack on a heap table with encrypted columns while the application
# writes: every value written survives.
#
# pg_repack copies the table with INSERT ... SELECT, records concurrent
# changes with a trigger into a log table whose "row" column is the table's
# row type, and replays the log in repack_apply() through SPI: it reads the
# logged rows (SELECT * FROM repack.log_N) and inserts them into the new
# table.  Rows read through SPI stay in the server and carry their
# ciphertext; before, they came back with the encrypted fields NULL, so
# every row written during the repack lost its encrypted values.
#
# pgbench (a custom script: inserts and updates, each writing the same
# string into an encrypted column and a plain mirror column) runs during
# the real pg_repack (Debian package postgresql-15-repack).
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('repack');
$node->append_conf('postgresql.conf', "max_connections = 50\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE shop');
safe_tls($node, 'shop', 'CREATE EXTENSION fieldcrypt');
my ($rc, $out, $err) = FcNode::psql_tls($node, 'shop', 'CREATE EXTENSION pg_repack');
plan skip_all => "pg_repack is not installed (Debian package postgresql-15-repack): $err"
  if $rc != 0;

safe_tls($node, 'shop', <<'EOS');
CREATE TABLE ledger (id bigserial PRIMARY KEY, note text,
                     secret fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea,
                     mirror text);
INSERT INTO ledger (note, secret, blob, mirror)
  SELECT 'n' || g, 'Ledger-Secret-' || g, convert_to('Ledger-Secret-' || g, 'UTF8'), 'Ledger-Secret-' || g
    FROM generate_series(1, 200000) g;
EOS
my $before = safe_tls($node, 'shop', 'SELECT count(*) FROM ledger');
my $relfile = safe_tls($node, 'shop', "SELECT pg_relation_filenode('ledger')");

my $script = PostgreSQL::Test::Utils::tempdir . '/write.sql';
open my $fh, '>', $script or die "$script: $!";
print $fh <<'EOS';
\set k random(1, 200000)
INSERT INTO ledger (note, secret, blob, mirror)
  SELECT 'bench', v, convert_to(v, 'UTF8'), v FROM (SELECT 'Bench-' || :client_id || '-' || random() AS v) s;
UPDATE ledger SET secret = v, blob = convert_to(v, 'UTF8'), mirror = v
  FROM (SELECT 'Upd-' || :client_id || '-' || random() AS v) s WHERE id = :k;
EOS
close $fh;

my $conn = 'host=127.0.0.1 port=' . $node->port . ' dbname=shop sslmode=require';
my ($bout, $berr) = ('', '');
my $bench = IPC::Run::start([ 'pgbench', '-n', '-c', '4', '-T', '20', '-f', $script, $conn ],
	'>', \$bout, '2>', \$berr);
sleep 2;    # the application is writing before the repack starts
my ($rout, $rerr) = ('', '');
my $ok = IPC::Run::run([ 'pg_repack', '--no-order', '-h', '127.0.0.1', '-p', $node->port,
		'-d', 'shop', '-t', 'ledger' ], '>', \$rout, '2>', \$rerr);
$bench->finish;
ok($ok, 'pg_repack succeeds while pgbench writes') or diag("$rout\n$rerr");
is($? >> 8, 0, 'pgbench finishes without error') or diag("$bout\n$berr");
like($bout, qr/number of transactions actually processed: [1-9]/, 'pgbench wrote rows')
  or diag($bout);

isnt(safe_tls($node, 'shop', "SELECT pg_relation_filenode('ledger')"), $relfile,
	'the table was rebuilt (new data file)');
my ($n, $nsecret, $nblob, $equal, $bench_rows, $updated) = split /\|/, safe_tls($node, 'shop', <<'EOQ');
SELECT count(*), count(secret), count(blob),
       count(*) FILTER (WHERE fieldcrypt.decrypt(secret) = mirror
                        AND convert_from(fieldcrypt.decrypt(blob), 'UTF8') = mirror),
       count(*) FILTER (WHERE note = 'bench'),
       count(*) FILTER (WHERE mirror LIKE 'Upd-%')
  FROM ledger
EOQ
cmp_ok($bench_rows, '>', 0, "rows were inserted during the repack ($bench_rows)");
cmp_ok($updated, '>', 0, "rows were updated during the repack ($updated)");
is($n - $bench_rows, $before, 'every original row is still there');
is($n - $nsecret, 0, 'no encrypted_text value became NULL');
is($n - $nblob, 0, 'no encrypted_bytea value became NULL');
is($equal, $n, 'every encrypted value decrypts to its plain mirror');

$node->stop;
done_testing();
