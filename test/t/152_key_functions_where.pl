# Where key functions run.  On a streaming standby, set_data_encryption_key, rotate_tde_key and
# drop_unused_tde_keys fail with SQLSTATE 25006 and say to run them on the primary (they used to
# fail with "cannot execute INSERT in a read-only transaction"); retrieve_data_encryption_key
# still works there.  On a server with ssl = off, the key functions say that the server has TLS
# off and how to turn it on (they used to tell the client to use sslmode=require, which cannot
# work); with ssl = on, a plain connection still gets the sslmode hint.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $K1 = 'Where-Key-2026!';
my $primary = FcNode::new_node('primary', allows_streaming => 1);
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');
safe_tls($primary, 'app', <<"EOS");
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.set_data_encryption_key('$K1');
CREATE TABLE t (id int, v text) USING encrypted_heap;
INSERT INTO t VALUES (1, 'one');
EOS

$primary->backup('b1');
my $standby = FcNode::standby_from_backup('standby', $primary, 'b1');
$standby->start;
$primary->wait_for_catchup($standby);
is(safe_tls($standby, 'app', 'SELECT pg_is_in_recovery()'), 't', 'standby: in recovery');

for my $call ("set_data_encryption_key('Other-Key-2026!')", 'rotate_tde_key()', 'drop_unused_tde_keys()')
{
	(my $fn = $call) =~ s/\(.*//;
	sql_fails($standby, 'app', "SELECT fieldcrypt.$call", '25006',
		"fieldcrypt.$fn cannot run during recovery", "standby: $fn is refused with 25006");
	my ($rc, $out, $err) = FcNode::psql_tls($standby, 'app', "SELECT fieldcrypt.$call");
	like($err, qr/HINT:  Run fieldcrypt\.\Q$fn\E on the primary; standbys follow every key change through WAL\./,
		"standby: $fn says to run it on the primary");
}
sql_is($standby, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $K1,
	'standby: retrieve_data_encryption_key still works');
sql_is($primary, 'app', 'SELECT fieldcrypt.rotate_tde_key()', '2', 'primary: rotate_tde_key works');

# ssl = on, plain TCP connection: the client is told to use TLS
my ($rc, $out, $err) = FcNode::psql_plain($primary, 'app', 'SELECT fieldcrypt.retrieve_data_encryption_key()');
like($err, qr/HINT:  Connect over TCP with sslmode=require or stronger\./, 'ssl on: the sslmode hint');

# ssl = off on the server
$primary->append_conf('postgresql.conf', 'ssl = off');
$primary->restart;
for my $call ("set_data_encryption_key('Other-Key-2026!')", 'retrieve_data_encryption_key()', 'rotate_tde_key()')
{
	(my $fn = $call) =~ s/\(.*//;
	sql_fails($primary, 'app', "SELECT fieldcrypt.$call", '28000',
		"fieldcrypt.$fn requires an SSL connection", "ssl off: $fn refused with 28000", via => 'plain');
	($rc, $out, $err) = FcNode::psql_plain($primary, 'app', "\\set VERBOSITY verbose\nSELECT fieldcrypt.$call");
	like($err, qr/DETAIL:  The server has TLS turned off \(ssl = off\), so no connection can use it\./,
		"ssl off: $fn says that the server has TLS off");
	like($err, qr/HINT:  Turn TLS on: set ssl = on, ssl_cert_file and ssl_key_file in postgresql\.conf and reload the server/,
		"ssl off: $fn says how to turn TLS on");
	unlike($err, qr/This connection is not encrypted with TLS/, "ssl off: $fn does not blame the connection");
}

$standby->stop;
$primary->stop;
done_testing();
