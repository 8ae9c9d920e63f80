# pgBackRest (the Debian package) backs up and restores a cluster with encrypted
# columns and encrypted_heap tables, with the cluster key kept outside the data
# directory as README's first page recommends:
#   - the repository (backup and WAL archive) holds neither the key nor any
#     plaintext of an encrypted column or an encrypted_heap row, while a heap
#     control table's marker is found there (the grep can fail);
#   - a server restored from the repository alone cannot decrypt anything
#     (58000, nothing created);
#   - restored together with the key file, every value and row reads back as
#     written, including rows written after the backup (replayed from the
#     archive).
use strict;
use warnings;
use File::Find;
use File::Path qw(make_path remove_tree);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $base = PostgreSQL::Test::Utils::tempdir();
my $repo = "$base/repo";
my $keydir = "$base/keys";
make_path($repo, $keydir, "$base/log", "$base/lock");
chmod 0700, $keydir;
my $conf = "$base/pgbackrest.conf";

my $node = FcNode::new_node('primary', allows_streaming => 1);
$node->append_conf('postgresql.conf', <<"EOC");
fieldcrypt.key_file = '$keydir/cluster.key'
archive_mode = on
archive_command = 'pgbackrest --config=$conf --stanza=main archive-push %p'
log_statement = none
EOC
$node->start;

open my $fh, '>', $conf or die "$conf: $!";
print $fh <<"EOC";
[global]
repo1-path=$repo
log-path=$base/log
lock-path=$base/lock
log-level-console=warn
start-fast=y
compress-type=none

[main]
pg1-path=@{[ $node->data_dir ]}
pg1-port=@{[ $node->port ]}
pg1-socket-path=@{[ $node->host ]}
EOC
close $fh;

sub pgbackrest
{
	my @cmd = ('pgbackrest', "--config=$conf", '--stanza=main', @_);
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(\@cmd, '>', \$stdout, '2>', \$stderr);
	ok($ok, "pgbackrest @_") or diag("stdout: $stdout\nstderr: $stderr");
	return $ok;
}

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', <<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE mailbox (id int PRIMARY KEY, password fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea);
INSERT INTO mailbox SELECT g, 'BRColumnMarker-' || g, convert_to('BRBlobMarker-' || g, 'UTF8')
  FROM generate_series(1, 300) g;
CREATE TABLE ledger (id int PRIMARY KEY, note text) USING encrypted_heap;
INSERT INTO ledger SELECT g, 'BRHeapMarker-' || g || repeat('z', g % 7 * 500) FROM generate_series(1, 300) g;
CREATE TABLE control (id int, note text);
INSERT INTO control VALUES (1, 'BRControlMarker');
CHECKPOINT;
EOS
my $VALUES = q{SELECT md5(string_agg(id || fieldcrypt.decrypt(password) || encode(fieldcrypt.decrypt(blob), 'escape'), ',' ORDER BY id)) FROM mailbox};
my $ROWS = q{SELECT count(*) || ':' || md5(string_agg(id || note, ',' ORDER BY id)) FROM ledger};

pgbackrest('stanza-create');
pgbackrest('check');
pgbackrest('backup', '--type=full');

# rows after the backup reach the restore through the WAL archive
$node->safe_psql('shop', q{INSERT INTO mailbox VALUES (301, 'BRColumnMarker-after', '\x00');
                           INSERT INTO ledger VALUES (301, 'BRHeapMarker-after');
                           SELECT pg_switch_wal()});
$node->poll_query_until('postgres', q{SELECT last_archived_wal IS NOT NULL AND last_failed_wal IS NULL
                                      FROM pg_stat_archiver}) or die 'WAL was not archived';
my $values = $node->safe_psql('shop', $VALUES);
my $rows = $node->safe_psql('shop', $ROWS);
$node->safe_psql('postgres', 'SELECT pg_switch_wal()');
sleep 1;
$node->stop;

# --- the repository holds no key and no plaintext ------------------------------------------
my $key_hex = lc(read_bytes("$keydir/cluster.key") =~ s/\s+//gr);
like($key_hex, qr/\A[0-9a-f]{64}\z/, 'the key file holds the 64 hex digits of the cluster key');
my $key_bin = pack('H*', $key_hex);
my ($files, %found) = (0);
find({ no_chdir => 1, wanted => sub {
	return unless -f $_;
	$files++;
	my $data = read_bytes($_);
	for my $m ('BRColumnMarker', 'BRBlobMarker', 'BRHeapMarker', 'BRControlMarker')
	{
		$found{$m}++ if index($data, $m) >= 0;
	}
	$found{key}++ if index(lc($data), $key_hex) >= 0 || index($data, $key_bin) >= 0;
} }, $repo);
ok($files > 100, "the repository holds the backup and the archive ($files files)");
ok($found{BRControlMarker}, 'control: the heap table\'s marker is in the repository');
ok(!$found{$_}, "no $_ in the repository") for qw(BRColumnMarker BRBlobMarker BRHeapMarker);
ok(!$found{key}, 'the cluster key is not in the repository');

# --- restore without the key -------------------------------------------------------------------
my $restored = PostgreSQL::Test::Cluster->new('restored');
my $rdir = $restored->data_dir;
make_path($rdir);
chmod 0700, $rdir;
pgbackrest('restore', "--pg1-path=$rdir");
sub restored_conf
{
	my ($keyfile) = @_;
	$restored->append_conf('postgresql.conf', <<"EOC");
port = @{[ $restored->port ]}
unix_socket_directories = '@{[ $restored->host ]}'
archive_mode = off
fieldcrypt.key_file = '$keyfile'
EOC
	return;
}
restored_conf("$base/elsewhere/cluster.key");
$restored->start;
$restored->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die 'recovery did not end';
sql_fails($restored, 'shop', 'SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 1',
	'58000', 'fieldcrypt keyring is not available', 'restored without the key: nothing decrypts');
sql_fails($restored, 'shop', 'SELECT count(*) FROM ledger',
	'58000', 'fieldcrypt keyring is not available', 'restored without the key: encrypted_heap unreadable');
ok(!-e "$base/elsewhere/cluster.key", 'no key was created where it was expected');
$restored->stop;

# --- restore with the key ---------------------------------------------------------------------
restored_conf("$keydir/cluster.key");
$restored->start;
is($restored->safe_psql('shop', $VALUES), $values, 'with the key file: every encrypted value decrypts');
is($restored->safe_psql('shop', $ROWS), $rows, 'with the key file: every encrypted_heap row reads back');
is($restored->safe_psql('shop', q{SELECT fieldcrypt.decrypt(password) FROM mailbox WHERE id = 301}),
	'BRColumnMarker-after', 'a value written after the backup came back through the archive');
$restored->stop;
done_testing();
