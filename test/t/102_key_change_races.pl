# What a key change that is not committed yet shuts out, in other sessions and databases:
#   - DROP DATABASE of another database does not touch the keyring: it warns that the
#     dropped database's keys stay, the key change then commits, and after a restart the
#     keyring holds the changed key and the dropped database's entry; a later DROP DATABASE
#     with no change running removes its database's keys;
#   - rotate_tde_key in another database and a tenant key change fail at once with 55P03
#     (the change lock tested apart from set_data_encryption_key and the isolation specs);
#   - the tenant key functions refuse an ordinary role even when it was granted EXECUTE.
# And every keyring image written (activation, key changes, TDE rotation, a dropped
# database) is sealed under its own random nonce.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $BUSY = 'a data encryption key change is already in progress';
my $node = FcNode::new_node('races');
$node->start;
my $ringfile = $node->data_dir . '/pg_fieldcrypt/keyring';

# Each keyring image (read after each of the 7 writes below): "FCKR" | format u32 | payload length u32 | nonce[12] | tag[16] | ct
my @nonces;
sub keep_nonce
{
	my $img = read_bytes($ringfile);
	push @nonces, unpack('H*', substr($img, 12, 12)) if substr($img, 0, 4) eq 'FCKR';
	return;
}

for my $db (qw(k1 k2 k3))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION fieldcrypt');
	keep_nonce();
}
safe_tls($node, 'k1', "SELECT fieldcrypt.set_data_encryption_key('Tap-Race-K1-Key-1')");
keep_nonce();
safe_tls($node, 'k3', 'CREATE TABLE t (v text) USING encrypted_heap; SELECT fieldcrypt.rotate_tde_key()');
keep_nonce();
my $k2_key = safe_tls($node, 'k2', 'SELECT fieldcrypt.retrieve_data_encryption_key()');

# --- A key change of k1, uncommitted -------------------------------------------------
my $bg = $node->background_psql('k1', on_error_stop => 0,
	extra_params => [ '-d', FcNode::tls_connstr($node, 'k1') ]);
$bg->query_safe('BEGIN');
$bg->query_safe("SELECT fieldcrypt.set_data_encryption_key('Tap-Race-K1-Key-2')");

sql_fails($node, 'k3', 'SELECT fieldcrypt.rotate_tde_key()', '55P03', $BUSY,
	'rotate_tde_key in another database is refused while a key change is uncommitted');
sql_fails($node, 'k3', 'SELECT fieldcrypt.generate_tenant_key()', '55P03', $BUSY,
	'a tenant key change is refused while a key change is uncommitted');

my ($ret, $out, $err) = FcNode::psql_tls($node, 'postgres', 'DROP DATABASE k2');
is($ret, 0, 'DROP DATABASE of another database succeeds during the uncommitted key change');
like($err, qr/^WARNING:  fieldcrypt: the keys of the dropped database stay in the keyring$/m,
	'DROP DATABASE warns that the dropped database\'s keys stay in the keyring');
like($err, qr/^DETAIL:  A key change was in progress\.$/m, 'the warning says why');

$bg->query_safe('COMMIT');
$bg->quit;
keep_nonce();
sql_is($node, 'k1', 'SELECT fieldcrypt.retrieve_data_encryption_key()', 'Tap-Race-K1-Key-2',
	'the key change committed after the DROP DATABASE');

my $offset = -s $node->logfile;
$node->restart;
like(log_since($node, $offset), qr/fieldcrypt: keyring loaded with keys of 3 database\(s\)/,
	'after a restart the keyring holds k1, k3 and the dropped k2');
sql_is($node, 'k1', 'SELECT fieldcrypt.retrieve_data_encryption_key()', 'Tap-Race-K1-Key-2',
	'after a restart k1 has the key changed during the DROP DATABASE');
sql_is($node, 'k1', 'SELECT generation FROM fieldcrypt.key_status', '3',
	'after a restart k1 is at generation 3');
sql_is($node, 'k3', 'SELECT count(*) FROM fieldcrypt.tde_key_status', '2',
	'after a restart k3 keeps its two TDE key generations');

# --- With no key change running, DROP DATABASE removes the database's keys ------------
($ret, $out, $err) = FcNode::psql_tls($node, 'postgres', 'DROP DATABASE k3');
is("$ret:$err", '0:', 'DROP DATABASE with no key change running: no warning');
keep_nonce();
$offset = -s $node->logfile;
$node->restart;
like(log_since($node, $offset), qr/fieldcrypt: keyring loaded with keys of 2 database\(s\)/,
	'after a restart the keyring holds k1 and the stale entry of k2, not k3');
sql_is($node, 'k1', 'SELECT fieldcrypt.retrieve_data_encryption_key()', 'Tap-Race-K1-Key-2',
	'k1 keeps its key');
isnt($k2_key, '', 'k2 had a key');

# --- The tenant key functions check fieldcrypt_admin themselves -------------------------
# EXECUTE is revoked from PUBLIC; granted to an ordinary role anyway, the function still
# refuses it (42501) before anything else, over TLS.
$node->safe_psql('k1', 'CREATE ROLE fc_plain LOGIN; '
	  . 'GRANT EXECUTE ON FUNCTION fieldcrypt.generate_tenant_key(), fieldcrypt.revert_tenant_key() TO fc_plain');
for my $f ('generate_tenant_key', 'revert_tenant_key')
{
	my ($rc, undef, $e) = FcNode::psql_connstr(FcNode::tls_connstr($node, 'k1') . ' user=fc_plain',
		"\\set VERBOSITY verbose\nSELECT fieldcrypt.$f()");
	ok($rc != 0 && $e =~ /^(?:psql:[^\n]*: )?ERROR:  42501: permission denied to change the tenant key$/m,
		"$f granted to an ordinary role still refuses it with 42501") or diag("rc $rc: $e");
}

# --- Keyring nonces --------------------------------------------------------------------
my %seen;
my @reused = grep { $seen{$_}++ } @nonces;
is(scalar(@nonces), 7, 'seven keyring images were read');
is(scalar(@reused), 0, 'every keyring image has its own nonce') or diag("nonces: @nonces");
ok(!grep({ $_ eq '0' x 24 } @nonces), 'no keyring nonce is all zero');

$node->stop;
done_testing();
