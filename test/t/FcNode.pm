# FcNode: PostgreSQL::Test::Cluster nodes set up for fieldcrypt TAP tests.
#
#   my $node = FcNode::new_node('primary', preload => 'pgaudit,fieldcrypt',
#                               allows_streaming => 1);
#   $node->start;
#   my ($ret, $out, $err) = FcNode::psql_tls($node, 'postgres', 'SELECT 1');
#
# new_node returns an initialized, not yet started node: shared_preload_libraries
# (default 'fieldcrypt'; preload => '' for none), fieldcrypt.reencrypt (default 'off',
# reencrypt => 'on' for the re-encryption tests), a TCP listener on 127.0.0.1 next
# to the Unix socket, ssl = on with a self-signed certificate, trust auth for local,
# hostssl and hostnossl (127.0.0.1). Other options go to PostgreSQL::Test::Cluster::init.
package FcNode;

use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

sub new_node
{
	my ($name, %opts) = @_;
	my $preload = exists $opts{preload} ? delete $opts{preload} : 'fieldcrypt';
	# tests written before re-encryption expect older generations to stay after a key
	# change: re-encryption is postponed unless a test asks for it (reencrypt => 'on')
	my $reencrypt = delete $opts{reencrypt} // 'off';
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%opts);

	my $pgdata = $node->data_dir;
	my $err = '';
	IPC::Run::run([ 'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
			'-days', '2', '-subj', '/CN=localhost',
			'-keyout', "$pgdata/server.key", '-out', "$pgdata/server.crt" ],
		'>&', \$err)
	  or BAIL_OUT("openssl certificate generation failed: $err");
	chmod 0600, "$pgdata/server.key", "$pgdata/server.crt";

	$node->append_conf('postgresql.conf', <<"EOC");
listen_addresses = '127.0.0.1'
ssl = on
shared_preload_libraries = '$preload'
fieldcrypt.reencrypt = $reencrypt
EOC
	open my $hba, '>', "$pgdata/pg_hba.conf" or die "pg_hba.conf: $!";
	print $hba <<'EOH';
local     all         all              trust
local     replication all              trust
hostssl   all         all 127.0.0.1/32 trust
hostnossl all         all 127.0.0.1/32 trust
hostssl   replication all 127.0.0.1/32 trust
hostnossl replication all 127.0.0.1/32 trust
EOH
	close $hba;
	return $node;
}

# The node's superuser is the OS user that ran initdb (the one running the test).
sub _connstr
{
	my ($node, $db, $sslmode) = @_;
	my $user = getpwuid($>);
	return 'host=127.0.0.1 port=' . $node->port
	  . ' dbname=' . ($db // 'postgres') . " sslmode=$sslmode user=$user";
}

sub tls_connstr   { my ($node, $db) = @_; return _connstr($node, $db, 'require'); }
sub plain_connstr { my ($node, $db) = @_; return _connstr($node, $db, 'disable'); }

# Run $sql through psql over the given connection string: (exit code, stdout, stderr).
sub psql_connstr
{
	my ($connstr, $sql) = @_;
	my ($stdout, $stderr) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $connstr ],
		'<', \$sql, '>', \$stdout, '2>', \$stderr);
	chomp($stdout, $stderr);
	return ($? >> 8, $stdout, $stderr);
}

sub psql_tls   { my ($node, $db, $sql) = @_; return psql_connstr(tls_connstr($node, $db), $sql); }
sub psql_plain { my ($node, $db, $sql) = @_; return psql_connstr(plain_connstr($node, $db), $sql); }

1;
