# Self-test of the TAP harness: FcNode gives TLS and non-TLS TCP connections.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;

my $node = FcNode::new_node('harness', preload => '');
$node->start;

my $q = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';
my ($ret, $out, $err) = FcNode::psql_tls($node, 'postgres', $q);
is("$ret:$out", '0:t', 'sslmode=require connection uses TLS') or diag($err);

($ret, $out, $err) = FcNode::psql_plain($node, 'postgres', $q);
is("$ret:$out", '0:f', 'sslmode=disable connection does not use TLS') or diag($err);

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'), '',
	'preload option overrides shared_preload_libraries');

$node->stop;
done_testing();
