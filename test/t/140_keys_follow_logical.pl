# Key generations that follow the data to a logical subscriber (issue 11, section 2):
#   - a publisher and a subscriber cluster; a heap table with encrypted_text and
#     encrypted_bytea columns published whole, and another through a column list;
#   - the subscriber gets the publisher's generations with export_key_generations() there
#     and import_key_generations(document, passphrase) here; every replicated value then
#     decrypts on the subscriber, and equals its plain mirror column;
#   - two key changes on the publisher with re-encryption on: its in-place rewrites are not
#     replicated, so the subscriber keeps older envelopes and needs the old generation until
#     its own re-encryption; a new value under a generation the subscriber lacks fails with
#     "key generation N is not held by this database" and a hint; importing the new export
#     with the new passphrase follows the change, and the subscriber's own worker then
#     destroys its old generation;
#   - every refusal with its SQLSTATE and message, and nothing changed by it (metadata,
#     keyring file): malformed documents, wrong passphrase, NULLs, a colliding generation,
#     no privilege, no TLS, another key change in progress, two in one transaction.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my ($K1, $K2, $K3) = map { "Follow-Key-K$_-7x!" } 1 .. 3;
my $WRONG = 'Wrong-But-Strong-9!';
my $STATUS = 'SELECT generation, key_source, generations_kept FROM fieldcrypt.key_status';
my $META = "SELECT string_agg(generation || ':' || key_source, ',' ORDER BY generation) FROM fieldcrypt.key_generations";
my $META_MD5 = "SELECT md5(string_agg(g::text, ',' ORDER BY generation)) FROM fieldcrypt.key_generations g";
my $DOC_ERR = 'invalid key generations document';

# count and mismatches of a table: every value decrypts and equals the mirror column
sub check_sql
{
	my ($t) = @_;
	return "SELECT count(*) || ':' || count(*) FILTER (WHERE fieldcrypt.decrypt(s) IS DISTINCT FROM mirror "
	  . "OR encode(fieldcrypt.decrypt(b), 'hex') IS DISTINCT FROM md5(mirror)) FROM $t";
}

my $pub = FcNode::new_node('publisher', allows_streaming => 'logical', reencrypt => 'on');
# log_statement (on in TAP clusters) writes statements before any extension sees them
$pub->append_conf('postgresql.conf', "log_statement = none\n");
$pub->start;
my $sub = FcNode::new_node('subscriber', reencrypt => 'on');
$sub->append_conf('postgresql.conf', "log_statement = none\nmax_logical_replication_workers = 8\nmax_worker_processes = 16\n");
$sub->start;

my $TABLES = <<'EOS';
CREATE TABLE acct (id int PRIMARY KEY, s fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea, mirror text);
CREATE TABLE acct2 (id int PRIMARY KEY, s fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea, mirror text, note text);
CREATE TABLE acct3 (id int PRIMARY KEY, s fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea, mirror text);
EOS
# rows $from..$to in both tables, plain mirror kept beside the encrypted values
sub insert_rows
{
	my ($from, $to) = @_;
	safe_tls($pub, 'app', join '', map { <<"EOS" } qw(acct acct2 acct3));
INSERT INTO $_ (id, s, b, mirror)
  SELECT i, 'v-' || i, decode(md5('v-' || i), 'hex'), 'v-' || i FROM generate_series($from, $to) i;
EOS
	return;
}

# --- publisher: first key, data, publications --------------------------------------------
$pub->safe_psql('postgres', 'CREATE DATABASE app');
$pub->safe_psql('app', "SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt;\n$TABLES");
sql_is($pub, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '', 'publisher: K1 is generation 1');
insert_rows(1, 200);
safe_tls($pub, 'app', "UPDATE acct2 SET note = 'not published'");
$pub->safe_psql('app', 'CREATE PUBLICATION pub_all FOR TABLE acct; '
	  . 'CREATE PUBLICATION pub_cols FOR TABLE acct2 (id, s, b, mirror); '
	  . 'CREATE PUBLICATION pub_rf FOR TABLE acct3 WHERE (id > 0)');
is($pub->safe_psql('app', check_sql('acct')), '200:0', 'publisher: 200 values decrypt');

# --- subscriber: no key of its own, subscriptions ------------------------------------------
$sub->safe_psql('postgres', 'CREATE DATABASE app');
$sub->safe_psql('app', "SET fieldcrypt.auto_activate = off; CREATE EXTENSION fieldcrypt;\n$TABLES");
my $pubconn = $pub->connstr('app') =~ s/'//gr;
$sub->safe_psql('app', "CREATE SUBSCRIPTION sub_all CONNECTION '$pubconn' PUBLICATION pub_all");
$sub->safe_psql('app', "CREATE SUBSCRIPTION sub_cols CONNECTION '$pubconn' PUBLICATION pub_cols");
$sub->safe_psql('app', "CREATE SUBSCRIPTION sub_rf CONNECTION '$pubconn' PUBLICATION pub_rf");
$sub->wait_for_subscription_sync($pub, 'sub_all');
$sub->wait_for_subscription_sync($pub, 'sub_cols');
$sub->wait_for_subscription_sync($pub, 'sub_rf');
is($sub->safe_psql('app', 'SELECT count(*), count(s), count(b) FROM acct3'), '200|200|200',
	'subscriber: the row-filtered initial copy brought every encrypted value, none NULL');
is($sub->safe_psql('app', 'SELECT count(*), count(note) FROM acct2'), '200|0',
	'subscriber: the column list left the unpublished column out');
sql_fails($sub, 'app', check_sql('acct'), '55000', 'no data encryption key is loaded for database "app"',
	'subscriber: without the generations nothing decrypts');
my ($rc, $out, $err) = FcNode::psql_tls($sub, 'app', 'SELECT fieldcrypt.decrypt(s) FROM acct WHERE id = 1');
like($err, qr/HINT:  [^\n]*; for values replicated or copied from another database, fieldcrypt\.import_key_generations\(document, passphrase\)/,
	'subscriber: the hint names the import, not only set_data_encryption_key');

# --- export -------------------------------------------------------------------------------
my $doc1 = safe_tls($pub, 'app', 'SELECT fieldcrypt.export_key_generations()');
like($doc1, qr/\Afieldcrypt key generations 1\ngeneration 1 iterations 600000 salt [0-9a-f]{32} kcv [0-9a-f]{32}\z/,
	'export: one line per generation: number, iterations, salt, key check value');
unlike($doc1, qr/\Q$K1\E/, 'export: the document does not hold the passphrase');
my $salt1 = $pub->safe_psql('app', q{SELECT encode(salt, 'hex') FROM fieldcrypt.key_generations WHERE generation = 1});
like($doc1, qr/salt $salt1 /, 'export: the salt is the one in key_generations');

# --- refusals on the subscriber: each changes nothing --------------------------------------
# another database of the subscriber cluster, with its own generation 1 (CREATE EXTENSION)
$sub->safe_psql('postgres', 'CREATE DATABASE other');
$sub->safe_psql('other', 'CREATE EXTENSION fieldcrypt');
my $ringfile = $sub->data_dir . '/pg_fieldcrypt/keyring';
my $ring0 = read_bytes($ringfile);
my $meta0 = $sub->safe_psql('app', $META_MD5);
my $hex32 = 'ab' x 16;
my @bad = (
	[ '', 'empty document' ],
	[ 'hello', 'wrong header' ],
	[ "fieldcrypt key generations 1\n", 'no generation' ],
	[ "fieldcrypt key generations 1\ngeneration 1 iterations 600000 salt $hex32", 'no kcv' ],
	[ "fieldcrypt key generations 1\ngeneration 1 iterations 600000 salt zz${hex32} kcv $hex32", 'bad salt' ],
	[ "fieldcrypt key generations 1\ngeneration 1 iterations 600000 salt $hex32 kcv ${hex32}00", 'long kcv' ],
	[ "fieldcrypt key generations 1\ngeneration 0 iterations 600000 salt $hex32 kcv $hex32", 'generation 0' ],
	[ "fieldcrypt key generations 1\ngeneration 1 iterations 1000 salt $hex32 kcv $hex32", 'too few iterations' ],
	[ "fieldcrypt key generations 1\ngeneration 2 iterations 600000 salt $hex32 kcv $hex32\n"
		  . "generation 1 iterations 600000 salt $hex32 kcv $hex32", 'descending order' ],
	[ "$doc1\nextra", 'trailing garbage' ],
);
for my $b (@bad)
{
	(my $lit = $b->[0]) =~ s/'/''/g;
	sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations(E'" . ($lit =~ s/\n/\\n/gr) . "', '$K1')",
		'22P02', $DOC_ERR, "import refused: $b->[1]");
}
($rc, $out, $err) = FcNode::psql_tls($sub, 'app', "\\set VERBOSITY verbose\n"
	  . "SELECT fieldcrypt.import_key_generations(E'fieldcrypt key generations 1\\ngeneration 1 iterations 1000 salt $hex32 kcv $hex32', '$K1')");
like($err, qr/DETAIL:  Line 2: The iteration count is not an integer of at least 600000\./,
	'a malformed document names the line and the fault');
sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc1', '$WRONG')", '28P01',
	'passphrase does not open any key generation of the document that this database lacks',
	'import refused: wrong passphrase');
sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations(NULL, '$K1')", '22004',
	'key generations document and passphrase must not be null', 'import refused: NULL document');
sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc1', NULL)", '22004',
	'key generations document and passphrase must not be null', 'import refused: NULL passphrase');
sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc1', repeat('Ab1!', 65))", '22023',
	'data encryption key is too long', 'import refused: passphrase too long');
sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc1', '$K1')", '28000',
	'fieldcrypt.import_key_generations requires an SSL connection', 'import refused without TLS',
	via => 'plain');
sql_fails($sub, 'app', 'SELECT fieldcrypt.export_key_generations()', '55000',
	'data encryption is not active in this database', 'export refused where no key is held');
$sub->safe_psql('app', 'CREATE ROLE plain_user LOGIN');
sql_fails($sub, 'app', "SET ROLE plain_user; SELECT fieldcrypt.import_key_generations('$doc1', '$K1')",
	'42501', 'permission denied to import key generations', 'import refused to a role outside fieldcrypt_admin');
sql_fails($sub, 'app', 'SET ROLE plain_user; SELECT fieldcrypt.export_key_generations()',
	'42501', 'permission denied for function export_key_generations', 'export is not executable by PUBLIC');
$sub->safe_psql('app', 'GRANT EXECUTE ON FUNCTION fieldcrypt.export_key_generations() TO plain_user');
sql_fails($sub, 'app', 'SET ROLE plain_user; SELECT fieldcrypt.export_key_generations()',
	'42501', 'permission denied to export key generations', 'export: EXECUTE alone is not enough');

# another key change in the cluster holds the change lock
my $bg = $sub->background_psql('other', on_error_stop => 0,
	extra_params => [ '-d', FcNode::tls_connstr($sub, 'other') ]);
$bg->query_safe('BEGIN');
$bg->query_safe("SELECT fieldcrypt.set_data_encryption_key('Other-Db-Key-1x!')");
sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc1', '$K1')", '55P03',
	'a data encryption key change is already in progress', 'import refused during another key change');
$bg->query_safe('ROLLBACK');
$bg->quit;

is($sub->safe_psql('app', $META_MD5), $meta0, 'the refusals changed no key metadata');
is(read_bytes($ringfile), $ring0, 'the refusals did not touch the keyring');
sql_is($sub, 'app', 'SELECT active, key_loaded FROM fieldcrypt.key_status', 'f|f',
	'the refusals left the subscriber without a key');

# a database with its own generation 1 (made by CREATE EXTENSION) cannot take another one
my $meta_other = $sub->safe_psql('other', $META_MD5);
$ring0 = read_bytes($ringfile);
sql_fails($sub, 'other', "SELECT fieldcrypt.import_key_generations('$doc1', '$K1')", '42710',
	'this database holds a different key generation 1', 'import refused: generation 1 collides');
is($sub->safe_psql('other', $META_MD5), $meta_other, 'the collision changed no key metadata');
is(read_bytes($ringfile), $ring0, 'the collision did not touch the keyring');
# a replicated envelope of the publisher's generation 1 does not open under the local one
my ($env1) = $pub->safe_psql('app', 'COPY acct (s) TO STDOUT') =~ /^(fcenc:v1:\S+)$/m;
ok(defined $env1, 'an envelope of the publisher read with COPY TO');
$sub->safe_psql('other', "CREATE TABLE x (s fieldcrypt.encrypted_text); INSERT INTO x VALUES ('$env1')");
sql_fails($sub, 'other', 'SELECT fieldcrypt.decrypt(s) FROM x', 'XX001',
	'encrypted value could not be authenticated', 'a foreign generation 1 fails authentication');
($rc, $out, $err) = FcNode::psql_tls($sub, 'other', 'SELECT fieldcrypt.decrypt(s) FROM x');
like($err, qr/DETAIL:  It was modified, truncated, or encrypted with another key of generation 1\.\nHINT:  [^\n]*fieldcrypt\.import_key_generations/,
	'the failure names the generation and points to import_key_generations');

# more generations than a database keeps: refused before any derivation
my $many = join "\n", 'fieldcrypt key generations 1',
  map { "generation $_ iterations 600000 salt $hex32 kcv $hex32" } 2 .. 17;
$ring0 = read_bytes($ringfile);
sql_fails($sub, 'other', "SELECT fieldcrypt.import_key_generations('$many', '$K1')", '54000',
	'this database would keep more than 16 key generations', 'import refused: too many generations');
is($sub->safe_psql('other', $META_MD5), $meta_other, 'too many generations: no key metadata changed');
is(read_bytes($ringfile), $ring0, 'too many generations: the keyring is untouched');

# a database whose key metadata came with a dump and whose key was not restored
$sub->safe_psql('postgres', 'CREATE DATABASE waiting');
$sub->safe_psql('waiting', "CREATE EXTENSION fieldcrypt; INSERT INTO fieldcrypt.key_generations "
	  . "VALUES (1, '\\x$hex32', 600000, '\\x$hex32', 'administrator', now())");
sql_fails($sub, 'waiting', "SELECT fieldcrypt.import_key_generations('$doc1', '$K1')", '55000',
	'the data encryption key of this database has not been restored', 'import refused: key not restored');
sql_fails($sub, 'waiting', 'SELECT fieldcrypt.export_key_generations()', '55000',
	'the data encryption key of this database has not been restored', 'export refused: key not restored');

# --- import: generation 1 ---------------------------------------------------------------
sql_fails($sub, 'app', "BEGIN; SELECT fieldcrypt.import_key_generations('$doc1', '$K1'); "
	  . "SELECT fieldcrypt.import_key_generations('$doc1', '$K1')", '55000',
	'only one data encryption key change is allowed per transaction', 'one import per transaction');
sql_is($sub, 'app', 'SELECT active, key_loaded FROM fieldcrypt.key_status', 'f|f',
	'the transaction that failed imported nothing');
sql_is($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc1', '$K1')", '{1}',
	'subscriber: generation 1 imported with K1');
sql_is($sub, 'app', $STATUS, '1|imported|1', 'subscriber: generation 1 is current, source imported');
is($sub->safe_psql('app', $META), '1:imported', 'subscriber: key_generations records the import');
is($sub->safe_psql('app', "SELECT encode(salt, 'hex') FROM fieldcrypt.key_generations"), $salt1,
	'subscriber: the salt is the publisher\'s');
sql_is($sub, 'app', check_sql('acct'), '200:0', 'subscriber, generation 1: every value of acct decrypts');
sql_is($sub, 'app', check_sql('acct2'), '200:0', 'subscriber, generation 1: every value of acct2 decrypts');
sql_is($sub, 'app', check_sql('acct3'), '200:0', 'subscriber, generation 1: every value of the row-filtered acct3 decrypts');
sql_is($sub, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K1,
	'subscriber: the passphrase of the current generation is K1');
($rc, $out, $err) = FcNode::psql_tls($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc1\n', '$K1')");
is("$rc:$out", '0:{}', 'importing the same document again (with a final newline) adds nothing');
like($err, qr/NOTICE:  this database already holds every key generation of the document/,
	'and says so');
sql_fails($sub, 'app', "SELECT fieldcrypt.set_data_encryption_key('$K1')", '22023',
	'the new data encryption key must differ from the current one',
	'set_data_encryption_key sees the imported key as current');

# --- the publisher changes its key twice -----------------------------------------------
# wait until the database's re-encryption finished and only the current generation is kept
sub wait_rotated
{
	my ($node, $what) = @_;
	ok($node->poll_query_until('app',
			q{SELECT generations_kept = 1 AND NOT EXISTS (SELECT FROM fieldcrypt.rotation_progress WHERE database = 'app')
			  FROM fieldcrypt.key_status}),
		"$what: re-encryption finished, one generation kept");
	return;
}

sub follow
{
	my ($step, $gen, $key, $prevkey, $from, $to, $docsql) = @_;
	sql_is($pub, 'app', "SELECT fieldcrypt.set_data_encryption_key('$key')", '', "$step: publisher sets $key");
	wait_rotated($pub, "$step publisher");
	insert_rows($from, $to);
	safe_tls($pub, 'app', "UPDATE acct SET s = 'u$gen-' || id, b = decode(md5('u$gen-' || id), 'hex'), "
		  . "mirror = 'u$gen-' || id WHERE id % 10 = $gen;\n"
		  . "UPDATE acct2 SET s = 'u$gen-' || id, b = decode(md5('u$gen-' || id), 'hex'), "
		  . "mirror = 'u$gen-' || id WHERE id % 10 = $gen;\n"
		  . "UPDATE acct3 SET s = 'u$gen-' || id, b = decode(md5('u$gen-' || id), 'hex'), "
		  . "mirror = 'u$gen-' || id WHERE id % 10 = $gen;");
	$pub->wait_for_catchup('sub_all');
	$pub->wait_for_catchup('sub_cols');
	$pub->wait_for_catchup('sub_rf');
	is($pub->safe_psql('app', check_sql('acct')), "$to:0", "$step: publisher: every value decrypts");

	# the publisher rewrote its rows in place, not replicated: the subscriber still has
	# older envelopes, and the new ones are of a generation it lacks
	sql_fails($sub, 'app', "SELECT fieldcrypt.decrypt(s) FROM acct WHERE id = $to", '55000',
		"key generation $gen is not held by this database", "$step: a new value fails before the import");
	($rc, $out, $err) = FcNode::psql_tls($sub, 'app', "SELECT fieldcrypt.decrypt(s) FROM acct WHERE id = $to");
	like($err, qr/HINT:  For a value from another database, run fieldcrypt\.export_key_generations\(\) there and fieldcrypt\.import_key_generations\(document, passphrase\) here/,
		"$step: the hint says how to import the generations");
	sql_is($sub, 'app', "SELECT fieldcrypt.decrypt(s) = mirror FROM acct WHERE id = " . ($from - 1), 't',
		"$step: an older replicated value still decrypts");

	my $doc = safe_tls($pub, 'app', $docsql // 'SELECT fieldcrypt.export_key_generations()');
	my $meta_before = $sub->safe_psql('app', $META_MD5);
	sql_fails($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc', '$prevkey')", '28P01',
		'passphrase does not open any key generation of the document that this database lacks',
		"$step: the previous passphrase does not open generation $gen");
	is($sub->safe_psql('app', $META_MD5), $meta_before, "$step: the refusal changed nothing");
	sql_is($sub, 'app', "SELECT fieldcrypt.import_key_generations('$doc', '$key')", "{$gen}",
		"$step: subscriber imports generation $gen");
	sql_is($sub, 'app', check_sql('acct'), "$to:0", "$step: subscriber: every value of acct decrypts");
	sql_is($sub, 'app', check_sql('acct2'), "$to:0", "$step: subscriber: every value of acct2 decrypts");
	sql_is($sub, 'app', check_sql('acct3'), "$to:0", "$step: subscriber: every value of the row-filtered acct3 decrypts");
	wait_rotated($sub, "$step subscriber");
	sql_is($sub, 'app', $STATUS, "$gen|imported|1", "$step: subscriber: generation $gen current, alone");
	is($sub->safe_psql('app', $META), "$gen:imported", "$step: subscriber: one metadata row");
	sql_is($sub, 'app', check_sql('acct'), "$to:0", "$step: after its re-encryption every value of acct decrypts");
	sql_is($sub, 'app', check_sql('acct2'), "$to:0", "$step: after its re-encryption every value of acct2 decrypts");
	sql_is($sub, 'app', check_sql('acct3'), "$to:0", "$step: after its re-encryption every value of acct3 decrypts");
	is($sub->safe_psql('app', 'SELECT count(note) FROM acct2'), '0', "$step: the unpublished column stays empty");
	return $doc;
}

my $doc2 = follow('change 1', 2, $K2, $K1, 201, 300);
# the second document lists a generation the subscriber holds (2) beside the new one (3)
(my $line2) = $doc2 =~ /^(generation 2 .*)$/m;
follow('change 2', 3, $K3, $K2, 301, 400,
	"SELECT replace(fieldcrypt.export_key_generations(), E'generations 1\\n', E'generations 1\\n$line2\\n')");
sql_is($sub, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K3,
	'subscriber: the passphrase of the current generation is K3');

# no passphrase in either server log (STATEMENT lines of refused calls included)
for my $n ($pub, $sub)
{
	my $log = slurp_file($n->logfile);
	like($log, qr/ERROR:  passphrase does not open any key generation/, $n->name . ': the log has the refusals')
	  if $n == $sub;
	is(join("\n", grep { /\Q$K1\E|\Q$K2\E|\Q$K3\E|\Q$WRONG\E/ } split /\n/, $log), '',
		$n->name . ': no passphrase in the server log');
}

$sub->stop;
$pub->stop;
done_testing();
