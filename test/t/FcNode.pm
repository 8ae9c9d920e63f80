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
#
# Waits fail fast: loading FcNode makes every $node->poll_query_until (and wait_for_catchup,
# which uses it) give up after $FcNode::POLL_TIMEOUT seconds of wall-clock time (60, or
# FC_POLL_TIMEOUT), not after PostgreSQL::Test's 10 x 180 attempts (5 minutes and more on a
# loaded machine). The test's log notes how long each wait took; a wait that times out says
# what it polled, what it expected and what it last got, and the caller's "or die '...'"
# says what was being waited for. psql_tls / psql_plain (and so sql_is, sql_fails) give up
# on a statement after the same time. The longest waits measured (re-encryptions in 070,
# 074) took 5 s on the 2-core test machine under a load of 10: a twelvefold margin.
package FcNode;

use strict;
use warnings;
use IPC::Run;
use Test::More ();
use Time::HiRes ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our $POLL_TIMEOUT = $ENV{FC_POLL_TIMEOUT} // 60;

{
	no warnings 'redefine';
	*PostgreSQL::Test::Cluster::poll_query_until = \&poll_query_until;
}

# poll_query_until with a time limit: run $query until it prints $expected (default 't')
# with nothing on stderr; true on success, false (with a diagnostic) after $POLL_TIMEOUT s.
sub poll_query_until
{
	my ($self, $dbname, $query, $expected) = @_;
	local %ENV = $self->_get_env();
	$expected = 't' unless defined $expected;
	my $cmd = [ $self->installed_command('psql'), '-XAt', '-d', $self->connstr($dbname) ];
	my ($stdout, $stderr) = ('', '');
	my $start = Time::HiRes::time();
	while (1)
	{
		IPC::Run::run($cmd, '<', \$query, '>', \$stdout, '2>', \$stderr);
		chomp($stdout, $stderr);
		my $waited = Time::HiRes::time() - $start;
		if ($stdout eq $expected && $stderr eq '')
		{
			Test::More::note(sprintf('waited %.1f s for: %s', $waited, $query // '(connection)'));
			return 1;
		}
		if ($waited >= $POLL_TIMEOUT)
		{
			Test::More::diag(sprintf("timed out after %.0f s (FcNode::POLL_TIMEOUT) waiting for this query:\n%s\n"
				  . "to print: %s\nlast output: %s\nlast stderr: %s",
				$waited, $query // '(connection)', $expected, $stdout, $stderr));
			return 0;
		}
		Time::HiRes::usleep(100_000);
	}
}

# A node made from backup $backup of $primary (a streaming standby unless
# streaming => 0).  pg_basebackup writes private files (0600), but init_from_backup
# copies the backup with File::Copy under the process umask: copy under 0077 so that
# server.key and pg_fieldcrypt stay private (PostgreSQL refuses a server.key, fieldcrypt
# a cluster.key, with group/world access).
sub standby_from_backup
{
	my ($name, $primary, $backup, %opts) = @_;
	my $streaming = exists $opts{streaming} ? $opts{streaming} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	my $old = umask 0077;
	$node->init_from_backup($primary, $backup, $streaming ? (has_streaming => 1) : ());
	umask $old;
	return $node;
}

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
# psql is killed after $POLL_TIMEOUT seconds (a statement that blocks on a lock it should
# refuse at once): exit code 124 and a stderr that says so.
sub psql_connstr
{
	my ($connstr, $sql) = @_;
	my ($stdout, $stderr) = ('', '');
	my $rc;
	my $h = IPC::Run::start([ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $connstr ],
		'<', \$sql, '>', \$stdout, '2>', \$stderr, IPC::Run::timeout($POLL_TIMEOUT));
	if (eval { $h->finish; 1 })
	{
		$rc = $? >> 8;
	}
	else
	{
		$h->kill_kill;
		$rc = 124;
		$stderr .= "\nfc: psql timed out after $POLL_TIMEOUT s (FcNode::POLL_TIMEOUT) running: "
		  . substr($sql, 0, 200);
	}
	chomp($stdout, $stderr);
	return ($rc, $stdout, $stderr);
}

sub psql_tls   { my ($node, $db, $sql) = @_; return psql_connstr(tls_connstr($node, $db), $sql); }
sub psql_plain { my ($node, $db, $sql) = @_; return psql_connstr(plain_connstr($node, $db), $sql); }

1;
