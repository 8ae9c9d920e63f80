# The decrypted-row cache's pins (src/tde/tam_pins.c, tam_cache.c) when one backend holds
# more of them than its small private array (8): every entry of a 2 MB cache is pinned at once
# by cursors of one transaction, each parked on a row of its own page of t (TID range scans:
# single-row fetches such as TID scans do not use the cache).
#  1. While they are all pinned, no other page can be cached: reading table u (about half as
#     many pages as the cache has entries) twice in the same transaction hits nothing (a pin
#     lost from the overflow table would free an entry).
#  2. At COMMIT every pin is dropped, those kept in the overflow table too (the cursors'
#     executors end before the commit and unpin one by one): u read twice afterwards in the
#     same session is served from the cache the second time, every row of it (pins leaked
#     from the array or the overflow table would leave too few entries).
#  3. The same after an ERROR and ROLLBACK in the same session: there the executors do not
#     end, and the end of the transaction drops the pins still held (fc_pins_drop_all).
#  4. The cursors read the right rows while the cache is full (one value per cursor).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('tampins');
$node->append_conf('postgresql.conf', <<'EOC');
autovacuum = off
fieldcrypt.tde_cache_size = 2MB
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return safe_tls($node, 'app', $_[0]); }

sql(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE t (id int, v text) USING encrypted_heap WITH (fillfactor = 10);
INSERT INTO t SELECT g, 'pinmarker-' || g || repeat('p', 200) FROM generate_series(1, 3000) g;
VACUUM t;
EOS

my $entries = sql('SELECT entries FROM fieldcrypt.tde_cache_stats()');
cmp_ok($entries, '>', 8 * 4, "the cache has $entries entries, several times the private array");
my $urows = 3 * int($entries / 2);
sql(<<"EOS");
CREATE TABLE u (id int, v text) USING encrypted_heap WITH (fillfactor = 10);
INSERT INTO u SELECT g, 'other-' || g || repeat('o', 200) FROM generate_series(1, $urows) g;
VACUUM u;
EOS
my $upages = sql('SELECT count(DISTINCT (ctid::text::point)[0]) FROM u');
ok($upages > 16 && $upages < 0.75 * $entries, "u has $upages pages: more than the private array holds, fewer than the cache");
my @pages = split /\n/, sql('SELECT DISTINCT (ctid::text::point)[0]::int FROM t ORDER BY 1');
my $n = $entries + 5;
cmp_ok(scalar(@pages), '>=', $n, scalar(@pages) . " pages of t, more than the cache's entries");

# A script that parks one cursor on the first row of each of $n pages, then reads u twice
# and prints the hits of the two reads; $end ends the transaction, then u is read twice again.
sub pin_script
{
	my ($end) = @_;
	my $s = "BEGIN;\n";
	for my $i (0 .. $n - 1)
	{
		$s .= "DECLARE c$i CURSOR FOR SELECT v FROM t WHERE ctid >= '($pages[$i],1)' AND ctid < '($pages[$i],2)';\n"
		  . "FETCH c$i;\n";
	}
	$s .= <<"EOS";
SELECT hits AS h0 FROM fieldcrypt.tde_cache_stats() \\gset
SELECT 'inside ' || count(v) FROM u;
SELECT 'inside ' || count(v) FROM u;
SELECT 'inside hits ' || (hits - :h0) FROM fieldcrypt.tde_cache_stats();
$end
SELECT hits AS h1 FROM fieldcrypt.tde_cache_stats() \\gset
SELECT 'after ' || count(v) FROM u;
SELECT 'after ' || count(v) FROM u;
SELECT 'after hits ' || (hits - :h1) FROM fieldcrypt.tde_cache_stats();
EOS
	return $s;
}

for my $case ([ 'COMMIT', "COMMIT;\n" ],
	[ 'ERROR and ROLLBACK', "\\set ON_ERROR_STOP 0\nSELECT 1 / 0;\nROLLBACK;\n\\set ON_ERROR_STOP 1\n" ])
{
	my ($name, $end) = @$case;
	my ($rc, $out, $err) = FcNode::psql_tls($node, 'app', "\\set QUIET on\n" . pin_script($end));
	is($rc, 0, "$name: the script runs") or diag($err);
	my @fetched = grep { /^pinmarker-\d+p+$/ } split /\n/, $out;
	is(scalar(@fetched), $n, "$name: each of the $n cursors returns its row");
	my %ids = map { /^pinmarker-(\d+)/; ($1 => 1) } @fetched;
	is(scalar(keys %ids), $n, "$name: $n different rows");
	like($out, qr/^inside $urows\ninside $urows\ninside hits 0$/m,
		"$name: with every entry pinned, u is not cached (no hit on its second read)");
	like($out, qr/^after $urows\nafter $urows\nafter hits $urows$/m,
		"$name: the transaction end dropped every pin: the second read of u hits on every row");
	like($err, qr/division by zero/, "$name: the ERROR happened") if $name =~ /ERROR/;
}

$node->stop;
done_testing();
