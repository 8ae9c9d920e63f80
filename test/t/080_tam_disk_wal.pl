# encrypted_heap: no plaintext of an encrypted_heap table reaches its data files, its TOAST
# table or WAL.  Marker strings go into an encrypted_heap table by every write path (INSERT,
# multi-row INSERT, COPY, UPDATE, INSERT ... ON CONFLICT DO UPDATE, INSERT ... SELECT, then a
# VACUUM FULL rewrite; with wal_level = logical and REPLICA IDENTITY FULL, so that the old
# versions of updated and deleted rows go to WAL too): short text kept inline, a bigint whose
# bytes spell a marker, a text value larger than a page made of random hex around the
# markers (stored out of line uncompressed), a compressible value (stored compressed), and a
# random bytea value.  After a
# CHECKPOINT and a stop, the table's main fork, its TOAST table, the WAL of the range written
# (pg_waldump shows that range holds records of both relations) and in fact every file of the
# data directory are searched byte for byte.  The same markers, written the same way into a
# plain heap table, ARE found in each of those places: the search can fail.
use strict;
use warnings;
use File::Find;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('tamdisk');
$node->append_conf('postgresql.conf', <<'EOC');
# WAL as in production (full-page images, heap records), not "minimal"; logical, so that
# UPDATE and DELETE also log the old row (REPLICA IDENTITY FULL below)
wal_level = logical
wal_compression = off
EOC
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return safe_tls($node, 'app', $_[0]); }

sql('CREATE EXTENSION fieldcrypt');

# One set of markers per table: enc_* must never be found, ctl_* must be found.
my %m;
for my $t ('enc', 'ctl')
{
	my $T = uc $t;
	$m{$t} = {
		inline   => "FC${T}_inline_q4Zt",
		multi    => "FC${T}_multirow_q4Zt",
		copy     => "FC${T}_copy_q4Zt",
		update   => "FC${T}_update_q4Zt",
		upsert   => "FC${T}_upsert_q4Zt",
		select   => "FC${T}_insselect_q4Zt",
		big      => "FC${T}_bigvalue_q4Zt",
		zip      => "FC${T}_zipvalue_q4Zt",
		blob     => "FC${T}_blobvalue_q4Zt",
		int8     => "FC${T}I8q",    # 8 bytes: stored as a bigint
		deleted  => "FC${T}_deleted_q4Zt",    # in a row deleted: its old version is logged
		oldrow   => "FC${T}_oldrow_q4Zt",     # in a row updated: its old version is logged
	};
}
# the bigint whose little-endian bytes are the marker
sub int8_of { return unpack('q<', $_[0]); }

sql(<<'EOS');
CREATE TABLE enc (id int PRIMARY KEY, note text, n bigint, big text, blob bytea) USING encrypted_heap;
CREATE TABLE ctl (id int PRIMARY KEY, note text, n bigint, big text, blob bytea) USING heap;
ALTER TABLE enc REPLICA IDENTITY FULL;
ALTER TABLE ctl REPLICA IDENTITY FULL;
-- about 19 kB of random hex (pglz cannot compress it by 25 %), or random bytes
CREATE FUNCTION rnd_hex() RETURNS text LANGUAGE sql
  AS $$ SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 600) g $$;
CREATE FUNCTION rnd_bytes() RETURNS bytea LANGUAGE sql
  AS $$ SELECT decode(rnd_hex(), 'hex') $$;
EOS
is(sql("SELECT fieldcrypt.is_encrypted('enc'), fieldcrypt.is_encrypted('ctl')"), 't|f',
	'enc is an encrypted_heap table, ctl a heap table');

my $lsn_start = sql('SELECT pg_current_wal_insert_lsn()');
for my $t ('enc', 'ctl')
{
	my %k = %{ $m{$t} };
	my $i8 = int8_of($k{int8});
	sql(<<"EOS");
INSERT INTO $t (id, note, n) VALUES (1, '$k{inline}', $i8);
INSERT INTO $t (id, note) VALUES (2, '$k{multi}'), (3, 'plain row');
INSERT INTO $t (id, note) VALUES (4, 'before update');
UPDATE $t SET note = '$k{update}' WHERE id = 4;
INSERT INTO $t (id, note) VALUES (5, 'before upsert');
INSERT INTO $t (id, note) VALUES (5, '$k{upsert}') ON CONFLICT (id) DO UPDATE SET note = excluded.note;
INSERT INTO $t (id, note) SELECT 6, v FROM (VALUES ('$k{select}')) s(v);
-- larger than a page, random around the markers: out of line, not compressed
INSERT INTO $t (id, big) VALUES (7, '$k{big}' || rnd_hex() || '$k{big}' || rnd_hex() || '$k{big}');
-- compressible: compressed (inline or out of line), the first copy stays literal in pglz output
INSERT INTO $t (id, big) VALUES (8, repeat('$k{zip} ', 3000));
-- random bytes
INSERT INTO $t (id, blob) VALUES (9, convert_to('$k{blob}', 'UTF8') || rnd_bytes() || convert_to('$k{blob}', 'UTF8'));
EOS
	# COPY FROM STDIN: the multi-insert path
	sql("COPY $t (id, note) FROM STDIN;\n10\t$k{copy}\n11\tcopy row\n\\.\n");
	# old row versions that wal_level = logical writes to WAL with REPLICA IDENTITY FULL
	sql(<<"EOS");
INSERT INTO $t (id, note) VALUES (12, '$k{deleted}'), (13, '$k{oldrow}');
DELETE FROM $t WHERE id = 12;
UPDATE $t SET n = 13 WHERE id = 13;
EOS
}
my $lsn_end = sql('SELECT pg_current_wal_insert_lsn()');

# Everything was written and reads back (through the AM, decrypted).
for my $t ('enc', 'ctl')
{
	my %k = %{ $m{$t} };
	is( sql("SELECT string_agg(coalesce(note, '-'), ',' ORDER BY id) FROM $t WHERE id <= 6 OR id = 10"),
		"$k{inline},$k{multi},plain row,$k{update},$k{upsert},$k{select},$k{copy}",
		"$t: the short markers read back");
	is(sql("SELECT note, n FROM $t WHERE id >= 12"), "$k{oldrow}|13",
		"$t: the deleted row is gone, the updated one reads back");
	is( sql("SELECT n FROM $t WHERE id = 1"), int8_of($k{int8}), "$t: the bigint marker reads back");
	is( sql("SELECT length(big) > 38000, (length(big) - length(replace(big, '$k{big}', ''))) / length('$k{big}') "
			  . "FROM $t WHERE id = 7"), 't|3', "$t: the large value reads back with its 3 markers");
	is(sql("SELECT big = repeat('$k{zip} ', 3000) FROM $t WHERE id = 8"), 't',
		"$t: the compressible value reads back");
	is( sql("SELECT position(convert_to('$k{blob}', 'UTF8') IN blob) = 1, octet_length(blob) > 9000 "
			  . "FROM $t WHERE id = 9"), 't|t', "$t: the random bytea value reads back");
}
is(sql(q{SELECT pg_column_compression(big) FROM ctl WHERE id = 8}), 'pglz',
	'ctl: the compressible value is stored compressed');
is(sql(q{SELECT pg_column_compression(big) IS NULL FROM ctl WHERE id = 7}), 't',
	'ctl: the random value is stored uncompressed');
is(sql(q{SELECT pg_column_compression(big) FROM enc WHERE id = 8}), 'pglz',
	'enc: the compressible value is stored compressed');

my $datadir = $node->data_dir;
# a relation's main fork (1 GB segments: path, path.1, ...)
sub rel_bytes
{
	my ($relpath) = @_;
	my $data = read_bytes("$datadir/$relpath");
	for (my $i = 1; -e "$datadir/$relpath.$i"; $i++)
	{
		$data .= read_bytes("$datadir/$relpath.$i");
	}
	return $data;
}

# Where the files are, and the relfilenodes for pg_waldump.
my %rel;
for my $t ('enc', 'ctl')
{
	my ($main, $toast, $mainfn, $toastfn, $db) = split /\|/, sql(<<"EOS");
SELECT pg_relation_filepath(c.oid), pg_relation_filepath(c.reltoastrelid),
       c.relfilenode, t.relfilenode, (SELECT oid FROM pg_database WHERE datname = current_database())
  FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.relname = '$t'
EOS
	$rel{$t} = { main => $main, toast => $toast, mainfn => $mainfn, toastfn => $toastfn, db => $db };
}

# pg_waldump: the range written holds heap records of both relations of each table.
sub waldump_count
{
	my ($relfilenode, $db) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_waldump', '-p', $node->data_dir . '/pg_wal', '-s', $lsn_start,
			'-e', $lsn_end, '-R', "1663/$db/$relfilenode" ], '>', \$out, '2>', \$err);
	diag("pg_waldump: $err") if $? != 0;
	return scalar grep { /^rmgr: Heap2? / } split /\n/, $out;
}
for my $t ('enc', 'ctl')
{
	cmp_ok(waldump_count($rel{$t}{mainfn}, $rel{$t}{db}), '>=', 10,
		"pg_waldump: heap records of $t in the range written");
	cmp_ok(waldump_count($rel{$t}{toastfn}, $rel{$t}{db}), '>=', 20,
		"pg_waldump: heap records of the TOAST table of $t in the range written");
}

my $wal = wal_range($node, $lsn_start, $lsn_end);
cmp_ok(length $wal, '>', 100_000, 'the WAL range written is ' . length($wal) . ' bytes');

# The files as the checkpoint wrote them (read now: VACUUM FULL below replaces enc's files).
sql('CHECKPOINT');
my %files;
for my $t ('enc', 'ctl')
{
	$files{main}{$t}  = rel_bytes($rel{$t}{main});
	$files{toast}{$t} = rel_bytes($rel{$t}{toast});
}

# A rewrite of the encrypted table (VACUUM FULL writes new pages and full-page images).
my $lsn_rw = sql('SELECT pg_current_wal_insert_lsn()');
sql('VACUUM FULL enc');
sql('CHECKPOINT');
my $lsn_rw_end = sql('SELECT pg_current_wal_insert_lsn()');
my $wal_rewrite = wal_range($node, $lsn_rw, $lsn_rw_end);
is(sql("SELECT count(*) FROM enc WHERE note LIKE 'FCENC%' OR big LIKE 'FCENC%' "
		  . "OR position(convert_to('FCENC', 'UTF8') IN blob) = 1 OR n = " . int8_of($m{enc}{int8})),
	'10', 'enc: the markers read back after VACUUM FULL');
my %relenc_after;
@relenc_after{qw(main toast)} = split /\|/,
  sql(q{SELECT pg_relation_filepath('enc'), pg_relation_filepath(reltoastrelid) FROM pg_class WHERE relname = 'enc'});
$node->stop;

# ---------------------------------------------------------------------------
# The search.
# What to search for: the marker itself, except in compressed data.  pglz writes a control
# byte before every 8 items, so only the first 8 bytes of the compressible value's marker are
# contiguous in its output.
sub needle
{
	my ($t, $what) = @_;
	return $what eq 'zip' ? substr($m{$t}{zip}, 0, 8) : $m{$t}{$what};
}
sub needles_of
{
	my ($t) = @_;
	return map { $_ => needle($t, $_) } keys %{ $m{$t} };
}

my %places = (
	'main fork'   => $files{main},
	'TOAST table' => $files{toast},
	'WAL range'   => { enc => $wal, ctl => $wal });
cmp_ok(length $places{'main fork'}{enc}, '>=', 8192, 'enc: the main fork was written');
cmp_ok(length $places{'TOAST table'}{enc}, '>=', 5 * 8192, 'enc: the TOAST table was written (out-of-line values)');

# Where each control marker must be: inline values in the main fork, out-of-line in TOAST,
# all of them in WAL.
my %ctl_where = (
	'main fork'   => [qw(inline multi copy update upsert select zip int8)],
	'TOAST table' => [qw(big blob)],
	'WAL range'   => [qw(inline multi copy update upsert select zip int8 big blob deleted oldrow)]);
for my $place (sort keys %ctl_where)
{
	for my $what (@{ $ctl_where{$place} })
	{
		my $needle = needle('ctl', $what);
		ok(index($places{$place}{ctl}, $needle) >= 0, "control: heap marker '$what' is found in the $place of ctl");
	}
}
for my $place (sort keys %places)
{
	my %n = needles_of('enc');
	my @found = grep { index($places{$place}{enc}, $n{$_}) >= 0 } sort keys %n;
	is("@found", '', "enc: no marker in the $place of enc");
}
my %n_enc = needles_of('enc');
my @found = grep { index($wal_rewrite, $n_enc{$_}) >= 0 } sort keys %n_enc;
is("@found", '', 'enc: no marker in the WAL of VACUUM FULL');
@found = grep { index(rel_bytes($relenc_after{main}) . rel_bytes($relenc_after{toast}), $n_enc{$_}) >= 0 }
  sort keys %n_enc;
is("@found", '', 'enc: no marker in the files written by VACUUM FULL');

# Every file of the data directory (all of pg_wal, pg_statistic, the free space map, ...).
my (%hits, $nfiles);
find(
	{
		no_chdir => 1,
		wanted   => sub {
			return unless -f $File::Find::name;
			my $data = read_bytes($File::Find::name);
			$nfiles++;
			for my $what (keys %n_enc)
			{
				push @{ $hits{$what} }, substr($File::Find::name, length($datadir) + 1)
				  if index($data, $n_enc{$what}) >= 0;
			}
			$hits{control}++ if index($data, $m{ctl}{big}) >= 0;
		}
	},
	$datadir);
cmp_ok($nfiles, '>', 100, "searched the whole data directory ($nfiles files)");
ok($hits{control}, 'control: the heap table\'s large marker is found by the same search');
for my $what (sort keys %n_enc)
{
	is_deeply($hits{$what} // [], [], "enc: marker '$what' is in no file of the data directory");
}

done_testing();
