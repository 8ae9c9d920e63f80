# encrypted_heap: a modified stored tuple or TOAST chunk is an ERROR (SQLSTATE XX001), never
# garbage.  With the server stopped, one byte of the data file is changed (found with
# pageinspect: get_raw_page + heap_page_items give each item's offset, its header size and
# length), the server is started and the row is read by a sequential scan and by an index scan:
#   - a byte of an attribute's content, of the authentication tag (end of the tuple), of a
#     varlena length header, an infomask bit and a null-bitmap bit covered by the associated
#     data;
#   - a tuple cut short (its line pointer's length reduced);
#   - a byte of a TOAST chunk of a large value; a missing chunk (line pointer unused); a TOAST
#     table cut short; the table file cut short (index lookup of a row in a lost block).
# Each error names the table, and for a tuple its TID.  After the original file is put back the
# table reads again, so the errors came from the changes.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('tamper');
$node->append_conf('postgresql.conf', "autovacuum = off\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return safe_tls($node, 'app', $_[0]); }

sql(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE EXTENSION pageinspect;
CREATE TABLE t (id int PRIMARY KEY, a int, v text, big text) USING encrypted_heap;
INSERT INTO t SELECT g, g * 10, 'value-' || g, NULL FROM generate_series(1, 60) g;
-- about 32 kB of random hex: out of line, uncompressed, 17 chunks
INSERT INTO t VALUES (100, 1000, 'the big one',
    (SELECT string_agg(md5(random()::text || i), '') FROM generate_series(1, 1000) i));
EOS
my $DIGEST = q{SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t};
my $digest = sql($DIGEST);
my $big_md5 = sql('SELECT md5(big) FROM t WHERE id = 100');
# set hint bits now, so that nothing rewrites the pages later
sql('SELECT count(*) FROM t; VACUUM t; CHECKPOINT');

my $datadir = $node->data_dir;
my $relpath = "$datadir/" . sql(q{SELECT pg_relation_filepath('t')});
my $toastname = sql(q{SELECT reltoastrelid::regclass FROM pg_class WHERE relname = 't'});
my $toastpath = "$datadir/" . sql(q{SELECT pg_relation_filepath(reltoastrelid) FROM pg_class WHERE relname = 't'});

# The stored tuple of row 5: its TID, and its item on the page.
my $tid = sql('SELECT ctid FROM t WHERE id = 5');
my ($blk, $off) = $tid =~ /^\((\d+),(\d+)\)$/ or die "tid $tid";
my ($lp_off, $lp_len, $t_hoff) = split /\|/,
  sql("SELECT lp_off, lp_len, t_hoff FROM heap_page_items(get_raw_page('t', $blk)) WHERE lp = $off");
my $tuple_at = $blk * 8192 + $lp_off;

note "row 5 at $tid: file offset $tuple_at, length $lp_len, header $t_hoff";
# the bytes of the row are not in clear on the page
my $page = substr(read_bytes($relpath), $blk * 8192, 8192);
ok(index($page, 'value-5') < 0, 'the page does not hold "value-5" in clear');

# A chunk of the large value: chunk_seq 1 (a middle chunk).
my ($chunk_tid) = sql("SELECT ctid FROM $toastname WHERE chunk_seq = 1");
my ($cblk, $coff) = $chunk_tid =~ /^\((\d+),(\d+)\)$/ or die "chunk tid $chunk_tid";
my ($c_off, $c_len, $c_hoff) = split /\|/,
  sql("SELECT lp_off, lp_len, t_hoff FROM heap_page_items(get_raw_page('$toastname', $cblk)) WHERE lp = $coff");
my $chunk_at = $cblk * 8192 + $c_off;
is(sql("SELECT count(*) FROM $toastname"), '17', 'the large value is stored in 17 chunks');

$node->stop;
my $orig_rel   = read_bytes($relpath);
my $orig_toast = read_bytes($toastpath);

sub xor_byte
{
	my ($data, $pos, $mask) = @_;
	substr($data, $pos, 1) = chr(ord(substr($data, $pos, 1)) ^ $mask);
	return $data;
}

# Start with the changed files, run each query, expect XX001; put the original files back.
sub tampered
{
	my (%o) = @_;
	write_bytes($relpath, $o{rel} // $orig_rel);
	write_bytes($toastpath, $o{toast} // $orig_toast);
	$node->start;
	for my $q (@{ $o{queries} })
	{
		my ($rc, $out, $err) = FcNode::psql_tls($node, 'app', "\\set QUIET on\n\\set VERBOSITY verbose\n$q");
		my ($msg) = $err =~ /^(?:psql:[^\n]*: )?ERROR:  XX001: ([^\n]*)$/m;
		my $ok = $rc != 0 && defined $msg && $out eq '';
		$ok &&= index($msg, '"t"') >= 0 if $o{names_table};
		$ok &&= index($msg, $o{tid}) >= 0 if $o{tid};
		ok($ok, "$o{name}: $q fails with XX001" . ($o{names_table} ? ' naming the table' : '')
			  . ($o{tid} ? " and $o{tid}" : ''))
		  or diag("rc $rc\nstdout: $out\nstderr: $err");
		note "error: " . ($msg // '');
	}
	$node->stop;
	write_bytes($relpath, $orig_rel);
	write_bytes($toastpath, $orig_toast);
	return;
}

my @row5 = ('SELECT * FROM t', 'SET enable_seqscan = off; SELECT v FROM t WHERE id = 5');

tampered(name => 'content byte', rel => xor_byte($orig_rel, $tuple_at + $t_hoff + 1, 0x01),
	queries => \@row5, names_table => 1, tid => $tid);
tampered(name => 'tag byte', rel => xor_byte($orig_rel, $tuple_at + $lp_len - 1, 0x80),
	queries => \@row5, names_table => 1, tid => $tid);
# attributes: id int4 (4), a int4 (4), then v with a 1-byte varlena header at t_hoff + 8
tampered(name => 'varlena header', rel => xor_byte($orig_rel, $tuple_at + $t_hoff + 8, 0x04),
	queries => \@row5, names_table => 1, tid => $tid);
# t_infomask is at offset 20 of the tuple header: HEAP_HASVARWIDTH is 0x0002
tampered(name => 'infomask HASVARWIDTH', rel => xor_byte($orig_rel, $tuple_at + 20, 0x02),
	queries => \@row5, names_table => 1, tid => $tid);
# the null bitmap (row 5 has big NULL: header 23 bytes, then one bitmap byte): big "not null"
tampered(name => 'null bitmap bit', rel => xor_byte($orig_rel, $tuple_at + 23, 0x08),
	queries => \@row5, names_table => 1, tid => $tid);
# the line pointer of row 5: lp_len is the top 15 bits of the little-endian uint32
{
	my $lp_pos = $blk * 8192 + 24 + 4 * ($off - 1);
	my $lp = unpack('V', substr($orig_rel, $lp_pos, 4));
	my $len = $lp >> 17;
	is($len, $lp_len, 'the line pointer of row 5 is where expected');
	my $cut = ($lp & 0x1FFFF) | (($len - 8) << 17);
	my $rel = $orig_rel;
	substr($rel, $lp_pos, 4) = pack('V', $cut);
	tampered(name => 'tuple cut short', rel => $rel, queries => \@row5, names_table => 1, tid => $tid);
}

# TOAST: a chunk's data (chunk_id 4, chunk_seq 4, then chunk_data: 4-byte header and data)
my @big = ('SELECT md5(big) FROM t WHERE id = 100', 'SELECT big FROM t',
	'SELECT substr(big, 2500, 10) FROM t WHERE id = 100');
tampered(name => 'TOAST chunk byte', toast => xor_byte($orig_toast, $chunk_at + $c_hoff + 100, 0x01),
	queries => \@big, names_table => 1);
# a missing chunk: its line pointer set to unused
{
	my $lp_pos = $cblk * 8192 + 24 + 4 * ($coff - 1);
	my $toast = $orig_toast;
	substr($toast, $lp_pos, 4) = pack('V', 0);
	tampered(name => 'missing TOAST chunk', toast => $toast, queries => [ $big[0] ]);
}
# the TOAST table cut short to its first block
tampered(name => 'TOAST table cut short', toast => substr($orig_toast, 0, 8192), queries => [ $big[0] ]);
# the table cut short: an index lookup of a row in the lost block
{
	my $nblocks = length($orig_rel) / 8192;
	my $last = sql_after_start(q{SELECT max(id) FROM t WHERE (ctid::text::point)[0] = } . ($nblocks - 1));
	tampered(name => 'table cut short', rel => substr($orig_rel, 0, ($nblocks - 1) * 8192),
		queries => [ "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT v FROM t WHERE id = $last" ]);
}
sub sql_after_start
{
	my ($q) = @_;
	$node->start;
	my $r = sql($q);
	$node->stop;
	return $r;
}

# The original files read as before.
$node->start;
is(sql($DIGEST), $digest, 'with the original files back, the table reads as before');
is(sql('SELECT md5(big) FROM t WHERE id = 100'), $big_md5, 'and so does the large value');
$node->stop;
done_testing();
