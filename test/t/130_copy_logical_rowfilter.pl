# Logical replication with a row filter carries encrypted values whole.
#
# The initial copy of a table published with a row filter (CREATE PUBLICATION
# ... FOR TABLE acct WHERE (id > 0)) is a query on the publisher:
# COPY (SELECT ... WHERE (id > 0)) TO STDOUT.  COPY (query) TO writes
# envelopes exactly as COPY table TO does, so every value arrives and
# decrypts on the subscriber; before, each one arrived NULL.  A second table,
# published without a filter, goes through COPY table TO.  Streamed inserts,
# updates and deletes follow.
#
# The subscriber is another cluster.  It gets the publisher's key
# generations the way that works today: a dump of the publisher database
# without the table rows (schema and the key metadata of the extension's
# configuration table), restored there, then set_data_encryption_key with
# the publisher's key.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $K = 'Logical-Key#2026-Pub';

my $pub = FcNode::new_node('lr_pub', allows_streaming => 'logical');
$pub->start;
my $sub = FcNode::new_node('lr_sub');
$sub->start;

$pub->safe_psql('postgres', 'CREATE DATABASE shop');
safe_tls($pub, 'shop', 'CREATE EXTENSION fieldcrypt');
safe_tls($pub, 'shop', "SELECT fieldcrypt.set_data_encryption_key('$K')");
safe_tls($pub, 'shop', <<'EOS');
CREATE TABLE acct (id integer PRIMARY KEY, name text, secret fieldcrypt.encrypted_text,
                   blob fieldcrypt.encrypted_bytea, mirror text);
CREATE TABLE note (id integer PRIMARY KEY, secret fieldcrypt.encrypted_text, mirror text);
-- 1,100 rows the filter keeps, 10 it leaves out
INSERT INTO acct SELECT g, 'a' || g, 'Acct-Secret-' || g, convert_to('Acct-Blob-' || g, 'UTF8'),
                        'Acct-Secret-' || g
  FROM generate_series(-9, 1100) g;
INSERT INTO note SELECT g, 'Note-Secret-' || g, 'Note-Secret-' || g FROM generate_series(1, 300) g;
CREATE PUBLICATION p FOR TABLE acct WHERE (id > 0), note;
EOS

# the subscriber database: schema and key metadata, then the publisher's key
my $dump = PostgreSQL::Test::Utils::tempdir . '/shop.sql';
my ($out, $err) = ('', '');
IPC::Run::run([ 'pg_dump', '--exclude-table-data=public.*', '--no-publications',
		'-f', $dump, '-d', $pub->connstr('shop') ], '>', \$out, '2>', \$err)
  or die "pg_dump failed: $err";
$sub->safe_psql('postgres', 'CREATE DATABASE shop');
IPC::Run::run([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $sub->connstr('shop'),
		'-f', $dump ], '>', \$out, '2>', \$err)
  or die "restore failed: $err";
safe_tls($sub, 'shop', "SELECT fieldcrypt.set_data_encryption_key('$K')");
is(safe_tls($sub, 'shop', 'SELECT count(*) FROM acct'), '0', 'subscriber starts with no rows');

my $pubconn = 'host=127.0.0.1 port=' . $pub->port . ' dbname=shop';
safe_tls($sub, 'shop', "CREATE SUBSCRIPTION s CONNECTION '$pubconn' PUBLICATION p");
$sub->wait_for_subscription_sync($pub, 's', 'shop');

# every row the filter keeps, every value there and equal to its mirror
my $check_acct = <<'EOQ';
SELECT count(*), count(secret), count(blob),
       count(*) FILTER (WHERE fieldcrypt.decrypt(secret) = mirror
                        AND convert_from(fieldcrypt.decrypt(blob), 'UTF8') = replace(mirror, 'Secret', 'Blob')),
       min(id)
  FROM acct
EOQ
my $check_note = 'SELECT count(*), count(secret), '
  . 'count(*) FILTER (WHERE fieldcrypt.decrypt(secret) = mirror) FROM note';
is(safe_tls($sub, 'shop', $check_acct), '1100|1100|1100|1100|1',
	'row filter: the initial copy carries all 1,100 encrypted values, each decrypts on the subscriber');
is(safe_tls($sub, 'shop', $check_note), '300|300|300',
	'no filter: the initial copy carries all 300 encrypted values');
is(safe_tls($sub, 'shop', 'SELECT id, secret, blob FROM acct WHERE id <= 2 ORDER BY id'),
	"1||\n2||", 'a query on the subscriber still returns NULL for the encrypted columns');

# streamed changes: inserts, updates of the encrypted values, deletes
safe_tls($pub, 'shop', <<'EOS');
INSERT INTO acct SELECT g, 'a' || g, 'Acct-Secret-' || g, convert_to('Acct-Blob-' || g, 'UTF8'),
                        'Acct-Secret-' || g
  FROM generate_series(1101, 1200) g;
UPDATE acct SET secret = 'Acct-Secret-new-' || id, blob = convert_to('Acct-Blob-new-' || id, 'UTF8'),
                mirror = 'Acct-Secret-new-' || id
  WHERE id % 10 = 0;
DELETE FROM acct WHERE id BETWEEN 1 AND 5;
UPDATE note SET secret = 'Note-Secret-new-' || id, mirror = 'Note-Secret-new-' || id WHERE id <= 50;
EOS
$pub->wait_for_catchup('s');
is(safe_tls($sub, 'shop', $check_acct), '1195|1195|1195|1195|6',
	'streamed inserts, updates and deletes arrive and decrypt');
is(safe_tls($sub, 'shop', "SELECT count(*) FROM acct WHERE fieldcrypt.decrypt(secret) LIKE 'Acct-Secret-new-%'"),
	'120', 'updated values arrive as the new values');
is(safe_tls($sub, 'shop', $check_note), '300|300|300', 'streamed updates of the unfiltered table decrypt');

# the same copy by hand on the publisher: COPY (query) TO gives envelopes
my $copy = safe_tls($pub, 'shop', 'COPY (SELECT secret FROM acct WHERE id > 0 ORDER BY id LIMIT 3) TO STDOUT');
like($copy, qr/\Afcenc:v1:[A-Za-z0-9+\/=]+\nfcenc:v1:[A-Za-z0-9+\/=]+\nfcenc:v1:[A-Za-z0-9+\/=]+\z/,
	'COPY (query) TO STDOUT writes envelopes');

safe_tls($sub, 'shop', 'DROP SUBSCRIPTION s');
$sub->stop;
$pub->stop;
done_testing();
