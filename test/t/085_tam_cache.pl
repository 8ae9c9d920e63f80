# encrypted_heap's decrypted-row cache (src/tde/tam_cache.c) and lazy slot (tam_slot.c).
#  1. The cache never returns bytes that were not authenticated.  While the server runs, the
#     page of two cached rows is evicted from shared buffers (index scans of another table
#     through 1 MB of shared buffers, until pg_buffercache no longer lists it) and the data
#     file changed under it:
#     - a content byte of row 7: a read through the cache (a scan, or an index scan reading a
#       second row of the page) returns the values authenticated before (the stored trailer is
#       unchanged: its nonce names exactly the ciphertext that was authenticated), while
#       pageinspect shows the changed byte is what the buffer now holds; a single-row index
#       lookup, which does not use the cache, fails with XX001;
#     - a tag byte of row 8: the trailer differs from the cached one, the cache is not used,
#       and the read fails with XX001.
#     After a restart (the cache is empty), row 7 fails with XX001 too.
#  2. Reads that use no column decrypt nothing: with row 7 unauthentic, count(*), EXISTS, a
#     ctid-only scan, a TID scan and a semi-join without columns succeed (with the cache on
#     and with fieldcrypt.tde_cache_size = 0), while reading a column of row 7 fails.
#  3. The re-encryption worker reseals cached rows in place after rotate_tde_key: reads give
#     the same values, under the new generation, all decrypted again (no hit).
#  4. The cache's data area is kept out of core dumps: /proc/PID/smaps of the postmaster and
#     of a forked child shows a mapping with the MADV_DONTDUMP flag ("dd") at least as large
#     as the cache's data area (cores cannot be produced on this machine: core size limit 0).
#     With huge_pages = try (the default), that range starts and ends on a huge page boundary
#     (Hugepagesize of /proc/meminfo): the kernel refuses MADV_DONTDUMP on part of a huge
#     page, so a server that got huge pages would otherwise dump the cache; so do the key
#     store's and the tenant key store's ranges.
#  5. tde_cache_stats(): counts hits of second reads; with the size 0, no entries and no hits.
#  6. At rest: after CHECKPOINT, neither the data files nor WAL hold the marker of a cached
#     row; the same grep finds the marker of a heap control table.
use strict;
use warnings;
use File::Find;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('tamcache', reencrypt => 'on');
$node->append_conf('postgresql.conf', <<'EOC');
autovacuum = off
shared_buffers = 1MB
fieldcrypt.tde_cache_size = 16MB
fieldcrypt.reencrypt_rows_per_second = 0
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return safe_tls($node, 'app', $_[0]); }
sub cstat { return sql("SELECT $_[0] FROM fieldcrypt.tde_cache_stats()"); }

sql(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE EXTENSION pageinspect;
CREATE EXTENSION pg_buffercache;
CREATE TABLE t (id int PRIMARY KEY, v text) USING encrypted_heap;
INSERT INTO t SELECT g, 'cachedmarker-' || g FROM generate_series(1, 40) g;
CREATE TABLE f (id int PRIMARY KEY, pad text) USING heap;
INSERT INTO f SELECT g, repeat('x', 400) FROM generate_series(1, 6000) g;
CREATE TABLE hctl (v text) USING heap;
INSERT INTO hctl VALUES ('heapcontrolmarker');
VACUUM t; VACUUM f;
CHECKPOINT;
EOS

# 5. second reads are hits
my $h0 = cstat('hits');
is(sql('SELECT sum(length(v)) FROM t'), '591', 'first read of t');
my $m1 = cstat('misses');
is(sql('SELECT sum(length(v)) FROM t'), '591', 'second read of t');
cmp_ok(cstat('hits') - $h0, '>=', 40, 'the second read is served from the cache');
is(cstat('misses'), $m1, 'and decrypts nothing');
is(cstat('entries_used > 0 AND size_bytes >= 16 * 1024 * 1024 * 0.9'), 't', 'the cache has its size and entries');

# 1. change the file under a cached page
my $datadir = $node->data_dir;
my $relpath = "$datadir/" . sql(q{SELECT pg_relation_filepath('t')});
my $relfilenode = sql(q{SELECT relfilenode FROM pg_class WHERE relname = 't'});
my %item;
for my $id (7, 8)
{
	my ($blk, $off) = sql("SELECT ctid FROM t WHERE id = $id") =~ /^\((\d+),(\d+)\)$/;
	is($blk, '0', "row $id is on page 0");
	my ($lp_off, $lp_len, $t_hoff) = split /\|/,
	  sql("SELECT lp_off, lp_len, t_hoff FROM heap_page_items(get_raw_page('t', 0)) WHERE lp = $off");
	$item{$id} = { at => $lp_off, len => $lp_len, hoff => $t_hoff };
}
sql('CHECKPOINT');

my $EVICT = 'SET enable_seqscan = off; SET enable_bitmapscan = off; '
  . 'SELECT count(pad) FROM f WHERE id > 0';
my $resident = "SELECT count(*) FROM pg_buffercache WHERE relfilenode = $relfilenode "
  . 'AND relforknumber = 0 AND relblocknumber = 0';
my $evicted = 0;
for (1 .. 20)
{
	sql($EVICT);
	if (sql($resident) eq '0') { $evicted = 1; last; }
}
ok($evicted, 'page 0 of t is no longer in shared buffers');

my $file = read_bytes($relpath);
my $content = $item{7}{at} + $item{7}{hoff} + 1;	# a byte of id's content
my $tag = $item{8}{at} + $item{8}{len} - 1;		# last byte of the GCM tag
my $new_content = chr(ord(substr($file, $content, 1)) ^ 0x01);
substr($file, $content, 1) = $new_content;
substr($file, $tag, 1) = chr(ord(substr($file, $tag, 1)) ^ 0x80);
write_bytes($relpath, $file);

is(sql("SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT id || ' ' || v FROM t WHERE id BETWEEN 6 AND 7 ORDER BY id"),
	"6 cachedmarker-6\n7 cachedmarker-7",
	'row 7, changed on disk after it was cached, reads as authenticated before (index scan reading a second row of the page)');
sql_fails($node, 'app', 'SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT v FROM t WHERE id = 7', 'XX001',
	'encrypted tuple (0,7) in table "t" failed authentication',
	'an index lookup of row 7 alone decrypts the stored row, not the cache: XX001 (088 covers the policy)');
is(sql("SELECT id || ' ' || v FROM t WHERE ctid >= '(0,7)' AND ctid < '(0,8)'"), '7 cachedmarker-7',
	'and through a TID range scan');
is(sql("SELECT get_byte(get_raw_page('t', 0), $content)"), ord($new_content),
	'the buffer holds the changed byte');
sql_fails($node, 'app', 'SET enable_seqscan = off; SELECT v FROM t WHERE id = 8', 'XX001',
	'encrypted tuple (0,8) in table "t" failed authentication',
	'row 8, whose tag changed on disk after it was cached, fails with XX001');

# 2. after a restart the cache is empty: row 7 fails; reads without columns decrypt nothing
my @nocol = (
	[ 'SELECT count(*) FROM t', '40', 'count(*)' ],
	[ 'SELECT EXISTS (SELECT FROM t WHERE ctid = \'(0,7)\')', 't', 'EXISTS over a TID scan' ],
	[ 'SELECT count(ctid) FROM t', '40', 'a ctid-only scan' ],
	[ 'SELECT count(*) FROM generate_series(1, 3) x WHERE EXISTS (SELECT 1 FROM t)', '3',
		'a semi-join that reads no column' ],
);
for my $size ('16MB', '0')
{
	$node->append_conf('postgresql.conf', "fieldcrypt.tde_cache_size = $size\n");
	$node->restart;
	is(cstat('entries > 0'), $size eq '0' ? 'f' : 't', "tde_cache_size = $size: a cache exists or not");
	for my $q (@nocol)
	{
		is(sql($q->[0]), $q->[1], "$q->[2] succeeds with row 7 unauthentic (cache $size)");
	}
	sql_fails($node, 'app', 'SET enable_seqscan = off; SELECT v FROM t WHERE id = 7', 'XX001',
		'encrypted tuple (0,7) in table "t" failed authentication',
		"after a restart, row 7 fails with XX001 (cache $size)");
	sql_fails($node, 'app', 'SELECT sum(length(v)) FROM t', 'XX001',
		'encrypted tuple (0,7) in table "t" failed authentication',
		"a scan reading a column fails with XX001 (cache $size)");
}
is(cstat('entries || \'/\' || hits || \'/\' || misses || \'/\' || size_bytes'), '0/0/0/0',
	'with tde_cache_size = 0 there is no cache and nothing is counted');
$node->append_conf('postgresql.conf', "fieldcrypt.tde_cache_size = 16MB\n");
$node->restart;
sql('TRUNCATE t');
sql(q{INSERT INTO t SELECT g, 'cachedmarker-' || g FROM generate_series(1, 40) g});

# 3. re-encryption in place by the worker, after the rows were cached
sql(<<'EOS');
CREATE TABLE r (id int PRIMARY KEY, v text) USING encrypted_heap;
INSERT INTO r SELECT g, 'resealed-' || g FROM generate_series(1, 300) g;
EOS
my $before = sql('SELECT md5(string_agg(v, \',\' ORDER BY id)) FROM r');
sql('SELECT count(v) FROM r');
my $ctids = sql(q{SELECT string_agg(ctid::text, ',' ORDER BY id) FROM r});
# wait for the worker's log line; nothing reads r meanwhile (a read would cache resealed rows)
my $logpos = -s $node->logfile;
my $newgen = sql('SELECT fieldcrypt.rotate_tde_key()');
ok($node->wait_for_log(qr/encrypted_heap tables of database "app" to TDE key generation $newgen finished/,
		$logpos), 'the worker re-encrypted the encrypted_heap tables');
# right away, before anything else reads r: all its rows miss the cache
my ($h2, $m2) = split / /, cstat("hits || ' ' || misses");
is(sql('SELECT md5(string_agg(v, \',\' ORDER BY id)) FROM r'), $before, 'the values read the same');
is(cstat("(hits - $h2) || ' ' || (misses - $m2)"), '0 300',
	'they were all decrypted again: resealed rows do not match the cache');
is(sql('SELECT count(*) FROM fieldcrypt.tde_key_status'), '1', 'the old generation was destroyed');
is(sql(q{SELECT string_agg(ctid::text, ',' ORDER BY id) FROM r}), $ctids,
	'the rows were resealed in place (same TIDs)');
is(sql("SELECT count(*) FROM r WHERE fieldcrypt._tde_tuple_generation('r', ctid) = $newgen"), '300',
	'every row is under the new generation');

# 4. MADV_DONTDUMP on the data area, in the postmaster and a forked child
my $data_bytes = sql(q{SELECT entries::bigint * 12288 FROM fieldcrypt.tde_cache_stats()});
sub dontdump_bytes
{
	my ($pid) = @_;
	my ($size, $max) = (0, 0);
	no warnings 'portable';	# 64-bit addresses
	open my $fh, '<', "/proc/$pid/smaps" or return -1;
	while (my $l = <$fh>)
	{
		$size = hex($2) - hex($1) if $l =~ /^([0-9a-f]+)-([0-9a-f]+) /;
		$max = $size if $l =~ /^VmFlags:.*\bdd\b/ && $size > $max;
	}
	close $fh;
	return $max;
}
my ($pm_pid) = split /\n/, read_bytes("$datadir/postmaster.pid");
my $ckpt = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'});
cmp_ok(dontdump_bytes($pm_pid), '>=', $data_bytes, "postmaster: the cache's $data_bytes bytes are MADV_DONTDUMP");
cmp_ok(dontdump_bytes($ckpt), '>=', $data_bytes, 'a forked child inherits it');
is(sql('SHOW huge_pages'), 'try', 'huge_pages is try (the default)');
my $huge = 4096;
for (split /\n/, read_bytes('/proc/meminfo'))
{
	$huge = $1 * 1024 if /^Hugepagesize:\s+(\d+) kB/;
}
sub dontdump_range
{
	my ($pid) = @_;
	my ($start, $size, $best, $max) = (0, 0, -1, 0);
	no warnings 'portable';
	open my $fh, '<', "/proc/$pid/smaps" or return (-1, -1);
	while (my $l = <$fh>)
	{
		($start, $size) = (hex($1), hex($2) - hex($1)) if $l =~ /^([0-9a-f]+)-([0-9a-f]+) /;
		($best, $max) = ($start, $size) if $l =~ /^VmFlags:.*\bdd\b/ && $size > $max;
	}
	close $fh;
	return ($best, $max);
}
my ($dd_start, $dd_size) = dontdump_range($pm_pid);
is($dd_start % $huge, 0, "the cache's excluded range starts on a $huge-byte boundary");
is($dd_size % $huge, 0, "and is a multiple of $huge bytes long");
# the same for every shared range excluded from dumps: the cache, the key store and the
# tenant key store (keys/keystate.c, keys/tenant.c)
my @shared_dd;
{
	no warnings 'portable';
	my ($start, $end);
	for (split /\n/, read_bytes("/proc/$pm_pid/smaps"))
	{
		($start, $end) = (hex($1), hex($2)) if /^([0-9a-f]+)-([0-9a-f]+) /;
		push @shared_dd, [ $start, $end ] if /^VmFlags:.*\bsh\b.*\bdd\b/;
	}
}
cmp_ok(scalar(@shared_dd), '>=', 3, 'the postmaster has at least 3 shared ranges excluded from dumps');
is(join(' ', grep { $_->[0] % $huge || $_->[1] % $huge } @shared_dd), '',
	"each starts and ends on a $huge-byte boundary");

# 6. at rest
sql('SELECT count(v) FROM t; SELECT count(v) FROM t; CHECKPOINT');
my ($found_enc, $found_heap) = (0, 0);
find(sub {
	return unless -f $_;
	my $d = read_bytes($_);
	$found_enc++ if index($d, 'cachedmarker-') >= 0;
	$found_heap++ if index($d, 'heapcontrolmarker') >= 0;
}, "$datadir/base", "$datadir/pg_wal");
is($found_enc, 0, 'no data file or WAL segment holds a cached row in clear');
ok($found_heap > 0, 'the same search finds the heap control row');

$node->stop;
done_testing();
