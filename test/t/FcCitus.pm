# FcCitus: a Citus cluster of FcNode nodes for fieldcrypt's Citus TAP tests.
#
#   FcCitus::skip_unless_citus();                  plan skip_all unless Citus is installed
#   my $c = FcCitus::new_cluster(workers => 2);    coordinator + workers, started, joined
#   $c->{coord}, @{ $c->{workers} }                 the nodes (PostgreSQL::Test::Cluster)
#   FcCitus::add_worker($c, 'worker3')             one more node, joined (a node added later)
#   FcCitus::stop_all($c)
#
# Every node: shared_preload_libraries = 'citus,fieldcrypt', TLS (FcNode), wal_level
# logical and max_prepared_transactions for Citus's two-phase commits; the database
# $FcCitus::DB with CREATE EXTENSION citus and fieldcrypt (auto-activated: each node draws
# a generation of its own, as a new user gets). Citus connects between nodes with
# citus.node_conninfo = 'sslmode=require' (its default), as the test's OS user (trust).
package FcCitus;

use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest ();

our $DB = 'app';

# Is Citus installed in the PostgreSQL whose pg_config is first on PATH?
sub have_citus
{
	my $libdir = `pg_config --pkglibdir`;
	my $sharedir = `pg_config --sharedir`;
	chomp($libdir, $sharedir);
	return -f "$libdir/citus.so" && -f "$sharedir/extension/citus.control";
}

# Without Citus the file reports itself as skipped: run-tests.sh lists it as not run.
sub skip_unless_citus
{
	plan skip_all => 'Citus is not installed (test/deps.sh builds it from ../shared/citus-*.tar.xz)'
	  unless have_citus();
	return;
}

sub _new_node
{
	my ($name, %opts) = @_;
	my $conf = delete $opts{conf} // '';
	my $node = FcNode::new_node($name, preload => 'citus,fieldcrypt', %opts);
	$node->append_conf('postgresql.conf', $conf) if $conf;
	$node->append_conf('postgresql.conf', <<'EOC');
wal_level = logical
max_prepared_transactions = 100
max_worker_processes = 24
max_wal_senders = 10
max_replication_slots = 10
citus.node_conninfo = 'sslmode=require'
log_statement = none
EOC
	$node->start;
	return $node;
}

# The database on one node: CREATE EXTENSION citus, then fieldcrypt after $pre (SQL run
# first in the same session, e.g. 'SET fieldcrypt.auto_activate = off').
sub _create_db
{
	my ($node, $db, $pre) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION citus; ${pre}CREATE EXTENSION fieldcrypt;");
	return;
}

# Coordinator and workers, every worker added with citus_add_node, in database $DB.
# Options: workers (2), db_pre / worker_pre: SQL before CREATE EXTENSION fieldcrypt on the
# coordinator / on workers; conf: more postgresql.conf lines; preload (default
# 'citus,fieldcrypt'); the rest goes to FcNode::new_node.
sub new_cluster
{
	my (%opts) = @_;
	my $n = delete $opts{workers} // 2;
	my %dbopts = map { $_ => delete $opts{$_} // '' } qw(db_pre worker_pre);
	my $c = { coord => _new_node('coordinator', %opts), workers => [], opts => \%opts, dbs => {} };
	push @{ $c->{workers} }, _new_node("worker$_", %opts) for 1 .. $n;
	add_database($c, $DB, %dbopts);
	return $c;
}

# One more database on every node, joined into a Citus cluster of its own.
sub add_database
{
	my ($c, $db, %o) = @_;
	$c->{dbs}{$db} = { db_pre => $o{db_pre} // '', worker_pre => $o{worker_pre} // '' };
	_create_db($c->{coord}, $db, $c->{dbs}{$db}{db_pre});
	$c->{coord}->safe_psql($db, "SELECT citus_set_coordinator_host('127.0.0.1', " . $c->{coord}->port . ')');
	for my $w (@{ $c->{workers} })
	{
		_create_db($w, $db, $c->{dbs}{$db}{worker_pre});
		$c->{coord}->safe_psql($db, "SELECT citus_add_node('127.0.0.1', " . $w->port . ')');
	}
	return;
}

# A node added later: started, its databases made, added to each.
sub add_worker
{
	my ($c, $name) = @_;
	my $w = _new_node($name, %{ $c->{opts} });
	for my $db (sort keys %{ $c->{dbs} })
	{
		_create_db($w, $db, $c->{dbs}{$db}{worker_pre});
		$c->{coord}->safe_psql($db, "SELECT citus_add_node('127.0.0.1', " . $w->port . ')');
	}
	push @{ $c->{workers} }, $w;
	return $w;
}

# One key for database $db on every node, by hand (docs/operations.md "Sharded layouts"):
# the database made with fieldcrypt.auto_activate = off on every node, the key set on the
# coordinator, its export imported on every worker with the passphrase.
sub add_shared_key_database
{
	my ($c, $db, $pass) = @_;
	add_database($c, $db, db_pre => 'SET fieldcrypt.auto_activate = off; ',
		worker_pre => 'SET fieldcrypt.auto_activate = off; ');
	FcKeyTest::safe_tls($c->{coord}, $db, "SELECT fieldcrypt.set_data_encryption_key('$pass')");
	my $doc = FcKeyTest::safe_tls($c->{coord}, $db, 'SELECT fieldcrypt.export_key_generations()');
	$doc =~ s/\n/\\n/g;
	FcKeyTest::safe_tls($_, $db, "SELECT fieldcrypt.import_key_generations(E'$doc', '$pass')")
	  for @{ $c->{workers} };
	return;
}

# Node name of the worker that holds the shard of $table for distribution value $value.
sub shard_of
{
	my ($c, $db, $table, $value) = @_;
	my ($name, $port) = split /\|/, $c->{coord}->safe_psql($db,
		"SELECT shard_name, nodeport FROM citus_shards WHERE shardid = "
		  . "get_shard_id_for_distribution_column('$table', $value)");
	my ($w) = grep { $_->port == $port } @{ $c->{workers} };
	return ($w, $name);
}

sub nodes { my ($c) = @_; return ($c->{coord}, @{ $c->{workers} }); }

sub stop_all
{
	my ($c) = @_;
	$_->stop('fast') for reverse nodes($c);
	return;
}

# --- re-encryption on the cluster (206-209) -------------------------------------------------
#   FcCitus::set_conf($node, 'name = value', ...)       appended to postgresql.conf, reloaded
#   FcCitus::export_doc($c, $db)                         the coordinator's export, escaped for E''
#   FcCitus::import_doc($db, $doc, $pass, @nodes)        import_key_generations on each node
#   FcCitus::add_worker_importing($c, $name, $db, $doc, [passes], conf => ...)
#       a node added later: its databases made, $doc imported with each passphrase in $db
#       before citus_add_node (docs/operations.md), then added to every database
#   FcCitus::generations($node, $db)                     '1,2': key_generations of one node
#   FcCitus::wait_coord($c, $db, $sql, $expected, $name) poll on the coordinator, as a test
sub set_conf
{
	my ($node, @lines) = @_;
	$node->append_conf('postgresql.conf', join("\n", @lines) . "\n");
	$node->reload;
	return;
}

sub export_doc
{
	my ($c, $db) = @_;
	return FcKeyTest::safe_tls($c->{coord}, $db, 'SELECT fieldcrypt.export_key_generations()') =~ s/\n/\\n/gr;
}

sub import_doc
{
	my ($db, $doc, $pass, @nodes) = @_;
	FcKeyTest::safe_tls($_, $db, "SELECT fieldcrypt.import_key_generations(E'$doc', '$pass')") for @nodes;
	return;
}

sub add_worker_importing
{
	my ($c, $name, $db, $doc, $passes, %o) = @_;
	my $w = _new_node($name, %{ $c->{opts} }, conf => ($c->{opts}{conf} // '') . "\n" . ($o{conf} // ''));
	for my $d (sort keys %{ $c->{dbs} })
	{
		_create_db($w, $d, $c->{dbs}{$d}{worker_pre});
		import_doc($d, $doc, $_, $w) for ($d eq $db ? @$passes : ());
		$c->{coord}->safe_psql($d, "SELECT citus_add_node('127.0.0.1', " . $w->port . ')');
	}
	push @{ $c->{workers} }, $w;
	return $w;
}

sub generations
{
	my ($node, $db) = @_;
	return $node->safe_psql($db,
		q{SELECT string_agg(generation::text, ',' ORDER BY generation) FROM fieldcrypt.key_generations});
}

sub wait_coord
{
	my ($c, $db, $sql, $expected, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok($c->{coord}->poll_query_until($db, $sql, $expected), $name);
	return;
}

1;
