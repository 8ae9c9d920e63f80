# fieldcrypt.crypto_library: AES-256-GCM through GNU Nettle for short messages and OpenSSL for
# the others ("auto", the default), or OpenSSL only ("openssl", for FIPS deployments).
# Asserted: both implementations pass the NIST GCM known-answer vectors (seal, open, a modified
# tag refused), under either setting; under "auto" a short envelope and a short encrypted_heap
# row are sealed by Nettle and long ones (and TOAST segments) by OpenSSL, counted exactly per
# message by fieldcrypt.gcm_usage(); under "openssl" Nettle seals and opens nothing; values and
# rows written under one setting read back identically under the other, both ways; the setting
# needs a restart (55P02); Nettle's key schedules are in memory excluded from core dumps; an unknown value at start gives a WARNING and the default.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('cryptolib');
# Every read here must reach AES-GCM: the decrypted-row cache (tested in 085) would serve
# rows read again without opening them, so it is off.
$node->append_conf('postgresql.conf', "fieldcrypt.tde_cache_size = 0");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
sub sql { return safe_tls($node, 'app', @_); }

my $all_pass = join("\n", map { my $l = $_; map { "$l|test case $_|t" } 13 .. 16 } qw(openssl nettle));
my $enabled_sql = q{SELECT string_agg(library || ' ' || enabled, ',' ORDER BY library) FROM fieldcrypt.gcm_usage()};
my $self_test = 'SELECT library, vector, passed FROM fieldcrypt.gcm_self_test()';

sql(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE vals (id int PRIMARY KEY, v fieldcrypt.encrypted_text, b fieldcrypt.encrypted_bytea);
CREATE TABLE rows (id int PRIMARY KEY, v text) USING encrypted_heap;
ALTER TABLE rows ALTER COLUMN v SET STORAGE EXTERNAL;
INSERT INTO rows VALUES (0, 'makes the TDE key');
EOS

# Seals and opens per library caused by $stmt, in one session: "openssl seals/opens, nettle seals/opens".
sub usage_of
{
	my ($stmt) = @_;
	return sql(<<"EOS");
CREATE TEMP TABLE u0 AS SELECT * FROM fieldcrypt.gcm_usage();
\\o /dev/null
$stmt;
\\o
SELECT string_agg(u.library || ' ' || (u.seals - u0.seals) || '/' || (u.opens - u0.opens), ', ' ORDER BY u.library DESC)
  FROM fieldcrypt.gcm_usage() u JOIN u0 USING (library);
EOS
}

# A digest of every plaintext of both tables.
my $digest_sql = q{SELECT md5(string_agg(id || ':' || fieldcrypt.decrypt(v) || ':' || encode(fieldcrypt.decrypt(b), 'hex'), ',' ORDER BY id)) FROM vals
  UNION ALL SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM rows};

# write 5 short and 5 long values and rows under the current setting, starting at id $base
sub write_batch
{
	my ($base) = @_;
	my $s = $base + 1;
	my $e = $base + 5;
	my $l1 = $base + 6;
	my $l2 = $base + 10;
	return (
		usage_of("INSERT INTO vals SELECT g, 'short-' || g, NULL FROM generate_series($s, $e) g"),
		usage_of("INSERT INTO vals SELECT g, repeat(md5(g::text), 20), NULL FROM generate_series($l1, $l2) g"),
		usage_of("INSERT INTO rows SELECT g, 'row-' || g FROM generate_series($s, $e) g"),
		usage_of("INSERT INTO rows SELECT g, repeat(md5(g::text), 20) FROM generate_series($l1, $l2) g"),
		usage_of("UPDATE vals SET b = decode(md5(id::text), 'hex') WHERE id BETWEEN $s AND $l2"));
}


# kB of this backend's memory excluded from core dumps (VmFlags "dd" in /proc/self/smaps)
# before and after sealing one short column value and one short encrypted_heap row, in one
# fresh session: Nettle's contexts add one 8 kB region each (4.4 kB of key schedule and
# hash table, page-rounded); OpenSSL's are in its heap.
sub dontdump_growth
{
	my ($id) = @_;
	my $smaps = q{SELECT pg_read_file('/proc/self/smaps')};
	my $out = sql("$smaps;\nSELECT '--8<--';\nINSERT INTO vals VALUES ($id, 'dd-$id', NULL);\n"
		  . "INSERT INTO rows VALUES ($id, 'dd-$id');\n$smaps;");
	my @parts = split /^--8<--$/m, $out;
	die "unexpected output" unless @parts == 2;
	my @kb = map {
		my $sum = 0;
		for my $vma (split /^(?=[0-9a-f]+-[0-9a-f]+ )/m, $_)
		{
			my ($size) = $vma =~ /^Size:\s+(\d+) kB/m;
			$sum += $size if defined $size && $vma =~ /^VmFlags:.*\bdd\b/m;
		}
		$sum;
	} @parts;
	return $kb[1] - $kb[0];
}

# --- auto ---
is(sql('SHOW fieldcrypt.crypto_library'), 'auto', 'auto by default');
is(sql($enabled_sql),
	'nettle true,openssl true', 'auto: both implementations in use');
is(sql($self_test), $all_pass, 'auto: both implementations pass the NIST GCM vectors');
my @auto = write_batch(0);
is($auto[0], 'openssl 0/0, nettle 5/0', 'auto: 5 short envelopes sealed by Nettle');
is($auto[1], 'openssl 5/0, nettle 0/0', 'auto: 5 envelopes of 640 bytes sealed by OpenSSL');
is($auto[2], 'openssl 0/0, nettle 5/0', 'auto: 5 short encrypted_heap rows sealed by Nettle');
is($auto[3], 'openssl 5/0, nettle 0/0', 'auto: 5 encrypted_heap rows of 640 bytes sealed by OpenSSL');
like($auto[4], qr{^openssl 0/\d+, nettle 10/\d+$}, 'auto: 10 short bytea envelopes sealed by Nettle');
is(usage_of('SELECT count(fieldcrypt.decrypt(v)) FROM vals WHERE id BETWEEN 1 AND 10'),
	'openssl 0/5, nettle 0/5', 'auto: the short ones opened by Nettle, the long ones by OpenSSL');
my $dd_auto = dontdump_growth(1001);
my $digest_auto = sql($digest_sql);

# --- openssl ---
$node->append_conf('postgresql.conf', "fieldcrypt.crypto_library = openssl");
$node->restart;
is(sql('SHOW fieldcrypt.crypto_library'), 'openssl', 'openssl after restart');
is(sql($enabled_sql),
	'nettle false,openssl true', 'openssl: Nettle not in use');
is(sql($self_test), $all_pass, 'openssl: the self test still checks both implementations');
is(sql($digest_sql), $digest_auto, 'openssl: everything written under auto reads back identically');
like(usage_of('SELECT count(fieldcrypt.decrypt(v)) FROM vals; SELECT count(v) FROM rows'),
	qr{^openssl 0/([2-9]\d|\d{3,}), nettle 0/0$}, 'openssl: every value and row opened by OpenSSL, none by Nettle');
my @ossl = write_batch(100);
is($ossl[0], 'openssl 5/0, nettle 0/0', 'openssl: short envelopes sealed by OpenSSL');
is($ossl[2], 'openssl 5/0, nettle 0/0', 'openssl: short rows sealed by OpenSSL');
like($ossl[4], qr{^openssl 10/\d+, nettle 0/0$}, 'openssl: bytea envelopes sealed by OpenSSL');
my $dd_ossl = dontdump_growth(1002);
is($dd_auto - $dd_ossl, 16,
	"Nettle's two key schedules (column value, encrypted_heap row) are in memory excluded from core dumps");
my $digest_ossl = sql($digest_sql);
sql_fails($node, 'app', 'SET fieldcrypt.crypto_library = auto', '55P02',
	'parameter "fieldcrypt.crypto_library" cannot be changed without restarting the server',
	'the setting needs a restart');

# --- back to auto ---
$node->append_conf('postgresql.conf', "fieldcrypt.crypto_library = auto");
$node->restart;
is(sql($digest_sql), $digest_ossl, 'auto: everything written under openssl reads back identically');
is(usage_of('SELECT count(fieldcrypt.decrypt(v)) FROM vals WHERE id BETWEEN 101 AND 110'),
	'openssl 0/5, nettle 0/5', 'auto: short values OpenSSL sealed are opened by Nettle');
is(usage_of('SELECT count(v) FROM rows WHERE id BETWEEN 101 AND 105'),
	'openssl 0/0, nettle 0/5', 'auto: short rows OpenSSL sealed are opened by Nettle');

# an unknown value: PostgreSQL's rule for extension settings, a WARNING and the default
$node->append_conf('postgresql.conf', "fieldcrypt.crypto_library = nettle");
my $log_offset = -s $node->logfile;
$node->restart;
like(log_since($node, $log_offset),
	qr/WARNING:  invalid value for parameter "fieldcrypt\.crypto_library": "nettle"/,
	'an unknown value is named in a WARNING at start');
is(sql('SHOW fieldcrypt.crypto_library'), 'auto', 'and the default applies');
is(sql($digest_sql), $digest_ossl, 'everything still reads back');

$node->stop;
done_testing();
