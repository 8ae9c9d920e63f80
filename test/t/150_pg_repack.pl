# pg_repack on an encrypted_heap table.  pg_repack builds the new table with CREATE TABLE
# repack.table_<oid> ... AS SELECT (the default access method), logs concurrent changes in
# repack.log_<oid>, copies with INSERT ... SELECT and swaps the relation files; the table keeps
# its access method in pg_class.  fieldcrypt creates both work tables USING encrypted_heap, so
# the rebuilt file is encrypted under the current generation.  Asserted: pg_repack exits 0, every
# row (inline and out of line) reads back the same, the table is still encrypted_heap and got a
# new file, neither its data file nor its TOAST file holds a marker in clear, it can be written
# to, and the same holds when rows are written while pg_repack runs (its log table).
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $K1 = 'Repack-Key-2026!';
my $repack = (grep { -x "$_/pg_repack" } split(/:/, $ENV{PATH}), '/usr/lib/postgresql/15/bin')[0];
BAIL_OUT('pg_repack is not installed (test/deps.sh installs postgresql-15-repack)')
  unless defined $repack;
$repack .= '/pg_repack';

my $node = FcNode::new_node('repack');
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE shop');
sub sql { return safe_tls($node, 'shop', @_); }

sql(<<"EOS");
CREATE EXTENSION fieldcrypt;
CREATE EXTENSION pg_repack;
SELECT fieldcrypt.set_data_encryption_key('$K1');
CREATE TABLE ledger (id int PRIMARY KEY, note text, big text) USING encrypted_heap;
CREATE INDEX ledger_note ON ledger (note);
INSERT INTO ledger SELECT g, 'REPACKMARK-' || g,
       CASE WHEN g % 50 = 0 THEN repeat('REPACKBIG-' || g || '-', 400) END
  FROM generate_series(1, 2000) g;
DELETE FROM ledger WHERE id % 3 = 0;
-- which access method pg_repack's work tables get
CREATE TABLE repack_seen (relname text, amname text);
CREATE FUNCTION note_repack_tables() RETURNS event_trigger LANGUAGE plpgsql AS \$\$
BEGIN
  INSERT INTO repack_seen
  SELECT regexp_replace(c.relname, '[0-9]+\$', 'N'), a.amname
    FROM pg_event_trigger_ddl_commands() d JOIN pg_class c ON c.oid = d.objid
    JOIN pg_am a ON a.oid = c.relam
   WHERE d.classid = 'pg_class'::regclass AND d.schema_name = 'repack' AND c.relkind = 'r';
END \$\$;
CREATE EVENT TRIGGER note_repack ON ddl_command_end EXECUTE FUNCTION note_repack_tables();
UPDATE ledger SET note = note || '-u' WHERE id % 7 = 0;
EOS

my $digest = q{SELECT count(*) || ':' || md5(string_agg(id || '/' || note || '/' || coalesce(md5(big), '-'), ',' ORDER BY id)) FROM ledger};
my $before = sql($digest);
my $file_before = sql(q{SELECT pg_relation_filepath('ledger')});

sub run_repack
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $repack, '-h', '127.0.0.1', '-p', $node->port, '-d', 'shop', '-t', 'ledger' ],
		'>', \$out, '2>', \$err);
	return ($? >> 8, "$out$err");
}

my ($rc, $msg) = run_repack();
is($rc, 0, 'pg_repack exits 0 on an encrypted_heap table') or diag($msg);
is(sql($digest), $before, 'every row reads back the same after pg_repack');
is(sql(q{SELECT string_agg(DISTINCT relname || ':' || amname, ',') FROM repack_seen}),
	'log_N:encrypted_heap,table_N:encrypted_heap', 'pg_repack built its log and new table with encrypted_heap');
isnt(sql(q{SELECT pg_relation_filepath('ledger')}), $file_before, 'the table got a new data file');
is(sql(q{SELECT fieldcrypt.is_encrypted('ledger')::text || '/' || a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = 'ledger'::regclass}),
	'true/encrypted_heap', 'the table is still encrypted_heap');
is(sql(q{SELECT count(*) FROM ledger WHERE note = 'REPACKMARK-10'}), '1', 'the index finds rows');

# nothing in clear on disk: the table's data file and its TOAST file
sub files_hold
{
	my ($marker) = @_;
	sql('CHECKPOINT');
	my ($rel, $toast) = split /\|/,
	  sql(q{SELECT pg_relation_filepath(c.oid), pg_relation_filepath(c.reltoastrelid) FROM pg_class c WHERE c.oid = 'ledger'::regclass});
	my $data = '';
	for my $p ($rel, $toast)
	{
		next unless $p;
		my $path = $node->data_dir . "/$p";
		$data .= read_bytes($path) if -e $path;
	}
	return index($data, $marker) >= 0 ? 1 : 0;
}
is(files_hold('REPACKMARK-'), 0, 'the data file holds no row in clear');
is(files_hold('REPACKBIG-'), 0, 'the TOAST file holds no value in clear');
is(sql(q{SELECT count(*) FROM pg_tables WHERE schemaname = 'repack'}), '0', 'pg_repack cleaned up');

# writes after the repack
sql(q{INSERT INTO ledger VALUES (100000, 'REPACKMARK-after', NULL)});
is(sql(q{SELECT note FROM ledger WHERE id = 100000}), 'REPACKMARK-after', 'the table takes new rows');

# rows written while pg_repack runs go through repack.log_<oid>: a writer runs during the repack
sql(q{INSERT INTO ledger SELECT g, 'REPACKMARK-' || g, NULL FROM generate_series(200001, 260000) g});
my $writer = $node->background_psql('shop', on_error_stop => 1);
my $before_conc = sql(q{SELECT count(*) FROM ledger});
my $h = IPC::Run::start([ $repack, '-h', '127.0.0.1', '-p', $node->port, '-d', 'shop', '-t', 'ledger' ],
	'>', \my $rout, '2>', \my $rerr);
my $written = 0;
for my $i (1 .. 200)
{
	$writer->query_safe("INSERT INTO ledger VALUES (" . (300000 + $i) . ", 'REPACKMARK-conc-$i', NULL)");
	$written++;
	last unless $h->pumpable;
}
$h->finish;
note("$written rows written while pg_repack ran");
cmp_ok($written, '>', 1, 'rows were written while pg_repack ran');
is($? >> 8, 0, 'pg_repack with a concurrent writer exits 0') or diag("$rout$rerr");
$writer->quit;
is(sql(q{SELECT count(*) FROM ledger}), $before_conc + $written, 'every row written during the repack is there');
is(sql(q{SELECT count(*) FROM ledger WHERE id > 300000 AND note = 'REPACKMARK-conc-' || (id - 300000)}),
	$written, 'rows written during the repack read back');
is(files_hold('REPACKMARK-conc-'), 0, 'no row written during the repack is in clear on disk');
is(sql(q{SELECT fieldcrypt.is_encrypted('ledger')}), 't', 'still encrypted after the second repack');

$node->stop;
done_testing();
