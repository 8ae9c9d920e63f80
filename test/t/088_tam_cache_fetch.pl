# Which reads of encrypted_heap use the decrypted-row cache (src/tde/tam_scan.c, tam_slot.c).
# Scans (sequential, TID range, bitmap, sample, ANALYZE) probe the cache and fill it; a
# single-row fetch decrypts the stored row itself and neither probes nor fills it: an index
# lookup, a TID scan, the fetch of the old row by UPDATE and DELETE, SELECT FOR UPDATE. An
# index scan that reads a second row of the page it read last uses the cache for it, as a
# scan does. Counted with fieldcrypt.tde_cache_stats() (hits, misses, entries_used);
# autovacuum is off, so nothing else reads the table.
#  1. Single-row fetches of rows not in the cache: no hit, no miss, no entry.
#  2. The same fetches after a sequential scan cached every row: still no hit and no miss
#     (they do not probe), and the values read are right.
#  3. An index range scan over rows of one page: the first row decrypted directly, the others
#     through the cache (misses on a fresh page, one entry made; hits when read again).
#  4. A bitmap heap scan is a scan: it is served from the cache.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('tamfetch');
$node->append_conf('postgresql.conf', <<'EOC');
autovacuum = off
fieldcrypt.tde_cache_size = 16MB
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return safe_tls($node, 'app', $_[0]); }
sub counts { return sql(q{SELECT hits || '/' || misses || '/' || entries_used FROM fieldcrypt.tde_cache_stats()}); }

my $IDX = 'SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_tidscan = on; ';

sql(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE p (id int PRIMARY KEY, v text) USING encrypted_heap;
INSERT INTO p SELECT g, 'fetchrow-' || g FROM generate_series(1, 2000) g;
VACUUM p;
EOS
my $pages = sql(q{SELECT count(DISTINCT (ctid::text::point)[0]) FROM p});
cmp_ok($pages, '>=', 10, "p has $pages pages");
is(sql(q{SELECT count(*) FROM p WHERE id <= 30 AND (ctid::text::point)[0] = 0}), '30',
	'rows 1 to 30 are on page 0');
# rows spread over the pages: one per page
my @ids = split /\n/, sql(q{SELECT min(id) FROM p GROUP BY (ctid::text::point)[0] ORDER BY 1});
my $lookups = join ' ', map { "SELECT v FROM p WHERE id = $_;" } @ids;
my $expect = join "\n", map { "fetchrow-$_" } @ids;

# The single-row fetches, as one script: index lookups, a TID scan, SELECT FOR UPDATE,
# UPDATE and DELETE (by index), all in a transaction rolled back.
sub fetches
{
	return sql($IDX . $lookups
		  . " SELECT v FROM p WHERE ctid = '(1,2)';"
		  . ' BEGIN; SELECT v FROM p WHERE id = 50 FOR UPDATE;'
		  . " UPDATE p SET v = v || '+' WHERE id = 51;"
		  . ' DELETE FROM p WHERE id = 52 RETURNING v; ROLLBACK;');
}
my $tidrow = sql(q{SELECT v FROM p WHERE ctid = '(1,2)'});
my $out_expect = "$expect\n$tidrow\nfetchrow-50\nfetchrow-52";

# 1. nothing cached yet: the queries above read through the cache, a restart empties it
$node->restart;
my $c0 = counts();
like($c0, qr{^0/0/0$}, 'nothing read from or put into the cache yet');
is(fetches(), $out_expect, 'single-row fetches read the right values');
is(counts(), $c0, 'single-row fetches of uncached rows neither count a miss nor fill the cache');
is(sql(q{EXPLAIN (COSTS OFF) SELECT v FROM p WHERE ctid = '(1,2)'}), "Tid Scan on p\n  TID Cond: (ctid = '(1,2)'::tid)",
	'the TID read is a TID scan (a single-row fetch)');

# 2. after a sequential scan cached every row
is(sql('SELECT count(v) FROM p'), '2000', 'a sequential scan reads every row');
my ($h1, $m1, $e1) = split m{/}, counts();
is("$h1/$m1", '0/2000', 'the scan decrypted every row (misses) and cached them');
is($e1, $pages, 'one entry per page');
is(sql('SELECT count(v) FROM p'), '2000', 'a second scan');
my ($h2, $m2, $e2) = split m{/}, counts();
is(($h2 - $h1) . '/' . ($m2 - $m1), '2000/0', 'the second scan is served from the cache');
is(fetches(), $out_expect, 'single-row fetches of cached rows read the right values');
is(counts(), "$h2/$m2/$e2", 'they do not probe the cache: no hit, no miss');

# 3. an index range scan over rows of one page; on a table not read since its rows changed
sql('TRUNCATE p');
sql(q{INSERT INTO p SELECT g, 'fetchrow-' || g FROM generate_series(1, 2000) g});
my $c3 = counts();
my ($h3, $m3, $e3) = split m{/}, $c3;
is(sql($IDX . 'SELECT count(v) FROM p WHERE id BETWEEN 1 AND 30'), '30', 'an index range scan over page 0');
like(sql($IDX . 'EXPLAIN (COSTS OFF) SELECT count(v) FROM p WHERE id BETWEEN 1 AND 30'), qr/Index Scan using p_pkey/,
	'(an index scan)');
my ($h4, $m4, $e4) = split m{/}, counts();
is(($h4 - $h3) . '/' . ($m4 - $m3) . '/' . ($e4 - $e3), '0/29/1',
	'its first row is decrypted directly, the 29 others through the cache (one entry)');
is(sql($IDX . 'SELECT count(v) FROM p WHERE id BETWEEN 1 AND 30'), '30', 'the same range again');
my ($h5, $m5, $e5) = split m{/}, counts();
is(($h5 - $h4) . '/' . ($m5 - $m4) . '/' . ($e5 - $e4), '29/0/0', 'the 29 are hits the second time');

# 4. a bitmap heap scan reads through the cache
is(sql('SET enable_seqscan = off; SET enable_indexscan = off; SELECT count(v) FROM p WHERE id BETWEEN 1 AND 30'),
	'30', 'a bitmap heap scan over page 0');
like(sql('SET enable_seqscan = off; SET enable_indexscan = off; EXPLAIN (COSTS OFF) SELECT count(v) FROM p WHERE id BETWEEN 1 AND 30'),
	qr/Bitmap Heap Scan on p/, '(a bitmap heap scan)');
my ($h6, $m6, $e6) = split m{/}, counts();
is(($h6 - $h5) . '/' . ($m6 - $m5), '29/1', 'it is served from the cache (row 1 was never cached)');

$node->stop;
done_testing();
