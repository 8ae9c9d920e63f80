# A backup of the data directory must not carry the key that opens it.
#   - initdb layout (postgresql.conf in the data directory): there is no place outside
#     that fieldcrypt may choose alone, so the key stays in pg_fieldcrypt/cluster.key and
#     every start says so with a WARNING; key_status shows where the key is (to those
#     who may read fieldcrypt.key_file) and that it is inside; a base backup carries it;
#   - Debian layout (postgresql.conf outside, server started with -c config_file): the
#     key is made beside postgresql.conf; a base backup (plain and tar) holds neither a
#     key file nor the key's bytes; a server started from the backup alone loads no
#     keyring and decrypts nothing; the backup plus the key file (fieldcrypt.key_file)
#     decrypts every value and every encrypted_heap row;
#   - a cluster made with 1.0 (key in the data directory) moved to the Debian layout
#     keeps using its key where it is, makes no second key, warns; a key in both places
#     is refused at start, touching neither; once the administrator deletes the one
#     inside, the key beside postgresql.conf is used; a key file left inside while
#     fieldcrypt.key_file names another one is warned about.
use strict;
use warnings;
use File::Copy;
use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $KEY = 'Backup-Key-Outside#2026';
my $UNAVAILABLE = 'fieldcrypt keyring is not available';
my $NOT_LOADED = 'fieldcrypt: keyring not loaded, encrypted data is inaccessible';
my $INSIDE = 'fieldcrypt: the cluster key is stored inside the data directory, in "pg_fieldcrypt/cluster.key"';
my $INSIDE_RE = qr/WARNING:  \Q$INSIDE\E\n[^\n]*DETAIL:  Every base backup or copy of the data directory carries this key next to the keyring it unseals: whoever obtains one can read all encrypted data\.\n[^\n]*HINT:  Move the file to a directory outside the data directory that its backups do not include and set fieldcrypt\.key_file to its new path, or use fieldcrypt\.key_provider = command; then restart the server\.\n/;
my $LOCATION = 'SELECT cluster_key, cluster_key_in_data_directory FROM fieldcrypt.key_status';
my $VALUES_SQL = q{SELECT string_agg(id || '=' || fieldcrypt.decrypt(pw) || '/' ||
                     encode(fieldcrypt.decrypt(blob), 'escape'), ',' ORDER BY id) FROM secrets};
my $ROWS_SQL = q{SELECT count(*) || ':' || md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM ledger};

# psql over TLS as another role: (exit code, stdout, stderr)
sub psql_as
{
	my ($node, $role, $sql) = @_;
	my $connstr = FcNode::tls_connstr($node, 'postgres') =~ s/ user=\S+/ user=$role/r;
	return FcNode::psql_connstr($connstr, $sql);
}

# Move postgresql.conf out of the data directory (Debian layout); returns its new path.
sub move_conf_out
{
	my ($node) = @_;
	my $confdir = PostgreSQL::Test::Utils::tempdir;
	move($node->data_dir . '/postgresql.conf', "$confdir/postgresql.conf")
	  or die "move postgresql.conf: $!";
	return "$confdir/postgresql.conf";
}

# Start a node whose postgresql.conf is $conf (outside its data directory), as Debian's
# pg_ctlcluster does; pg_ctl restart keeps the option (postmaster.opts).
sub start_with_conf
{
	my ($node, $conf) = @_;
	PostgreSQL::Test::Utils::system_or_bail('pg_ctl', '-w', '-D', $node->data_dir,
		'-l', $node->logfile, '-o', '--cluster-name=' . $node->name . " -c config_file=$conf",
		'start');
	$node->_update_pid(1);
	return;
}

sub append_file
{
	my ($path, $text) = @_;
	open my $fh, '>>', $path or die "$path: $!";
	print $fh "$text\n";
	close $fh;
	return;
}

# Files under $dir whose name or bytes hold one of @needles: "relpath: what" lines.
sub key_traces
{
	my ($dir, $names_re, @needles) = @_;
	my @hits;
	my $nfiles = 0;
	find({ no_chdir => 1, wanted => sub {
		return unless -f $_;
		my $rel = substr($_, length($dir) + 1);
		$nfiles++;
		push @hits, "$rel: file name" if $rel =~ $names_re;
		my $data = read_bytes($_);
		for my $i (0 .. $#needles)
		{
			push @hits, "$rel: needle $i" if index($data, $needles[$i]) >= 0;
		}
	} }, $dir);
	return ($nfiles, @hits);
}

# Encrypted columns and an encrypted_heap table (inline and out-of-line rows).
sub fill
{
	my ($node) = @_;
	safe_tls($node, 'postgres', qq{
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.set_data_encryption_key('$KEY');
CREATE TABLE secrets (id int PRIMARY KEY, pw fieldcrypt.encrypted_text, blob fieldcrypt.encrypted_bytea);
INSERT INTO secrets SELECT g, 'secret-' || g, convert_to('blob-' || g, 'UTF8') FROM generate_series(1, 50) g;
CREATE TABLE ledger (id int PRIMARY KEY, note text) USING encrypted_heap;
INSERT INTO ledger SELECT g, repeat(md5(g::text), CASE WHEN g % 10 = 0 THEN 400 ELSE 1 END)
  FROM generate_series(1, 100) g;
});
	return;
}
my $VALUES = join ',', map { "$_=secret-$_/blob-$_" } 1 .. 50;

# ---------------------------------------------------------------------------------------
# 1. initdb layout: the key stays inside, loudly
my $in = FcNode::new_node('inside', allows_streaming => 1);
$in->start;
like(slurp_file($in->logfile), $INSIDE_RE,
	'initdb layout: the start logs a WARNING that the cluster key is inside the data directory');
fill($in);
sql_is($in, 'postgres', $LOCATION, 'pg_fieldcrypt/cluster.key|t',
	'initdb layout: key_status names the key file and says it is inside the data directory');
sql_is($in, 'postgres',
	q{SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
	   WHERE attrelid = 'fieldcrypt.key_status'::regclass AND attnum > 0},
	'active,key_loaded,generation,key_source,set_at,key_age,rotation_recommended,generations_kept,keyring,'
	  . 'cluster_key,cluster_key_in_data_directory',
	'key_status keeps its columns in order, the new ones last');
$in->safe_psql('postgres', q{CREATE ROLE mallory LOGIN; CREATE ROLE keeper LOGIN IN ROLE fieldcrypt_admin;
                             CREATE ROLE watcher LOGIN IN ROLE pg_read_all_settings});
my ($rc, $out, $err) = psql_as($in, 'mallory', "$LOCATION;\nSELECT keyring FROM fieldcrypt.key_status");
is("$rc:$out", "0:|\nloaded", 'an ordinary role reads key_status, without the key location') or diag($err);
($rc, $out, $err) = psql_as($in, 'keeper', $LOCATION);
is("$rc:$out", '0:pg_fieldcrypt/cluster.key|t', 'a fieldcrypt_admin member sees the key location') or diag($err);
($rc, $out, $err) = psql_as($in, 'watcher', $LOCATION);
is("$rc:$out", '0:pg_fieldcrypt/cluster.key|t', 'a pg_read_all_settings member sees it too') or diag($err);
my $offset = -s $in->logfile;
$in->restart;
like(log_since($in, $offset), $INSIDE_RE, 'initdb layout: and again at every start');
# the threat, shown: a base backup of this layout carries the key
my $in_kek = read_bytes($in->data_dir . '/pg_fieldcrypt/cluster.key');
chomp(my $in_hex = $in_kek);
$in->backup('inb');
my ($n, @hits) = key_traces($in->backup_dir . '/inb', qr/cluster\.key/, $in_hex);
ok(scalar(grep { /^pg_fieldcrypt\/cluster\.key: / } @hits) == 2,
	'initdb layout: the base backup holds the key file with the key (the search finds it)')
  or diag(join "\n", @hits);
$in->stop;

# ---------------------------------------------------------------------------------------
# 2. Debian layout: the key is made beside postgresql.conf
my $node = FcNode::new_node('debian', allows_streaming => 1);
my $conf = move_conf_out($node);
(my $confdir = $conf) =~ s{/postgresql\.conf$}{};
my $keyfile = "$confdir/fieldcrypt_cluster.key";
start_with_conf($node, $conf);
my $pgdata = $node->data_dir;
ok(-e $keyfile, 'Debian layout: the cluster key is made beside postgresql.conf');
is((stat $keyfile)[2] & 07777, 0600, 'it has mode 0600');
my $kek = read_bytes($keyfile);
like($kek, qr/\A[0-9a-f]{64}\n\z/, 'it holds 64 hex digits');
ok(!-e "$pgdata/pg_fieldcrypt/cluster.key", 'no key file in the data directory');
my $log = slurp_file($node->logfile);
like($log, qr/LOG:  fieldcrypt: created a new cluster key in "\Q$keyfile\E"\n/, 'the log names it');
unlike($log, qr/stored inside the data directory|cluster key file/, 'and does not warn');
fill($node);
sql_is($node, 'postgres', $LOCATION, "$keyfile|f", 'key_status: the key file, outside the data directory');
is(safe_tls($node, 'postgres', $VALUES_SQL), $VALUES, 'values decrypt');
my $rows = safe_tls($node, 'postgres', $ROWS_SQL);
like($rows, qr/^100:[0-9a-f]{32}$/, 'encrypted_heap rows read back');

chomp(my $hex = $kek);
my @needles = ($hex, uc $hex, pack('H*', $hex));
my $names_re = qr/cluster\.key|cluster_key/;
$node->backup('plain');
$node->backup('tar', backup_options => [ '-Ft' ]);
my $plain = $node->backup_dir . '/plain';
ok(-e "$plain/pg_fieldcrypt/keyring", 'the plain base backup holds the sealed keyring');
($n, @hits) = key_traces($plain, $names_re, @needles);
ok($n > 100, "the plain base backup was searched ($n files)");
is(join("\n", @hits), '', 'the plain base backup holds no key file and no key bytes');
($n, @hits) = key_traces($node->backup_dir . '/tar', $names_re, @needles);
ok($n >= 2, "the tar base backup was searched ($n files)");
is(join("\n", @hits), '', 'the tar base backup holds no key file and no key bytes');

# A server started from the backup alone (configured as a thief would)
my $thief = PostgreSQL::Test::Cluster->new('thief');
$thief->init_from_backup($node, 'plain');
# (the copy made the TLS key group-readable, which PostgreSQL refuses)
chmod 0600, $thief->data_dir . '/server.key';
$thief->append_conf('postgresql.conf', "ssl = on\nshared_preload_libraries = 'fieldcrypt'\n"
	  . "fieldcrypt.reencrypt = off");
$thief->start;
like(slurp_file($thief->logfile),
	qr/WARNING:  \Q$NOT_LOADED\E\n[^\n]*DETAIL:  key file "pg_fieldcrypt\/cluster\.key" is missing but a keyring exists; refusing to create a new key over existing data\n/,
	'backup alone: the keyring is not loaded, the key is missing');
sql_is($thief, 'postgres', 'SELECT key_loaded, keyring FROM fieldcrypt.key_status', 'f|unavailable',
	'backup alone: key_status says the keyring is unavailable');
sql_fails($thief, 'postgres', 'SELECT fieldcrypt.decrypt(pw) FROM secrets WHERE id = 1', '58000',
	$UNAVAILABLE, 'backup alone: decrypt fails');
sql_fails($thief, 'postgres', 'SELECT fieldcrypt.retrieve_data_encryption_key()', '58000',
	$UNAVAILABLE, 'backup alone: the data encryption key cannot be retrieved');
sql_fails($thief, 'postgres', 'SELECT note FROM ledger WHERE id = 1', '58000',
	$UNAVAILABLE, 'backup alone: encrypted_heap rows cannot be read');
ok(!-e $thief->data_dir . '/pg_fieldcrypt/cluster.key', 'backup alone: no key was made');
$thief->stop;

# The backup plus the key file
my $keep = PostgreSQL::Test::Utils::tempdir;
copy($keyfile, "$keep/restored.key") or die "copy: $!";
chmod 0600, "$keep/restored.key";
$thief->append_conf('postgresql.conf', "fieldcrypt.key_file = '$keep/restored.key'");
$offset = -s $thief->logfile;
$thief->start;
$log = log_since($thief, $offset);
like($log, qr/fieldcrypt: keyring loaded with keys of 1 database\(s\)/, 'backup plus key file: the keyring loads');
unlike($log, qr/WARNING:  fieldcrypt/, 'backup plus key file: no fieldcrypt warning');
is(safe_tls($thief, 'postgres', $VALUES_SQL), $VALUES, 'backup plus key file: every value decrypts');
is(safe_tls($thief, 'postgres', $ROWS_SQL), $rows, 'backup plus key file: every encrypted_heap row reads back');
sql_is($thief, 'postgres', 'SELECT fieldcrypt.retrieve_data_encryption_key()', $KEY,
	'backup plus key file: the data encryption key is the one set');
sql_is($thief, 'postgres', $LOCATION, "$keep/restored.key|f", 'backup plus key file: key_status names it');
$thief->stop;
$node->stop;

# ---------------------------------------------------------------------------------------
# 3. A cluster made with 1.0 (key in the data directory), moved to the Debian layout
my $old = FcNode::new_node('legacy');
$old->start;
fill($old);
$old->stop;
my $oldkek = read_bytes($old->data_dir . '/pg_fieldcrypt/cluster.key');
my $oldconf = move_conf_out($old);
(my $oldconfdir = $oldconf) =~ s{/postgresql\.conf$}{};
my $outside = "$oldconfdir/fieldcrypt_cluster.key";
my $legacy = $old->data_dir . '/pg_fieldcrypt/cluster.key';
$offset = -s $old->logfile;
start_with_conf($old, $oldconf);
$log = log_since($old, $offset);
like($log, $INSIDE_RE, '1.0 key, Debian layout: used where it is, with the WARNING');
unlike($log, qr/created a new cluster key/, '1.0 key, Debian layout: no second key is made');
ok(!-e $outside, '1.0 key, Debian layout: nothing beside postgresql.conf');
is(read_bytes($legacy), $oldkek, '1.0 key, Debian layout: the key file is left as it was');
is(safe_tls($old, 'postgres', $VALUES_SQL), $VALUES, '1.0 key, Debian layout: values decrypt');
sql_is($old, 'postgres', $LOCATION, 'pg_fieldcrypt/cluster.key|t', '1.0 key, Debian layout: key_status says inside');

# The administrator copies the key out but leaves the old one: refused, nothing touched
copy($legacy, $outside) or die "copy: $!";
chmod 0600, $outside;
$offset = -s $old->logfile;
$old->restart;
like(log_since($old, $offset),
	qr/WARNING:  \Q$NOT_LOADED\E\n[^\n]*DETAIL:  cluster key files exist in two places, "\Q$outside\E" and "pg_fieldcrypt\/cluster\.key": keep only the one that unseals the keyring\n/,
	'key in both places: the keyring is not loaded, the log names both files');
sql_fails($old, 'postgres', 'SELECT fieldcrypt.decrypt(pw) FROM secrets WHERE id = 1', '58000',
	$UNAVAILABLE, 'key in both places: decrypt fails');
sql_is($old, 'postgres', "$LOCATION;\nSELECT keyring FROM fieldcrypt.key_status", "|\nunavailable",
	'key in both places: key_status names no key file');
is(read_bytes($legacy), $oldkek, 'key in both places: the file inside is untouched');
is(read_bytes($outside), $oldkek, 'key in both places: the file outside is untouched');

# ... and deletes the one inside: the key beside postgresql.conf is used
unlink $legacy or die "unlink: $!";
$offset = -s $old->logfile;
$old->restart;
$log = log_since($old, $offset);
like($log, qr/fieldcrypt: keyring loaded with keys of 1 database\(s\)/, 'key moved out: the keyring loads');
unlike($log, qr/WARNING:  fieldcrypt/, 'key moved out: no fieldcrypt warning');
is(safe_tls($old, 'postgres', $VALUES_SQL), $VALUES, 'key moved out: values decrypt');
sql_is($old, 'postgres', $LOCATION, "$outside|f", 'key moved out: key_status says outside');

# fieldcrypt.key_file set while a key file stays in the data directory: warned about
write_bytes($legacy, $oldkek);
chmod 0600, $legacy;
append_file($oldconf, "fieldcrypt.key_file = '$outside'");
$offset = -s $old->logfile;
$old->restart;
$log = log_since($old, $offset);
like($log, qr/WARNING:  fieldcrypt: an unused cluster key file remains in the data directory, "pg_fieldcrypt\/cluster\.key"\n[^\n]*DETAIL:  The cluster key is taken from "\Q$outside\E", but every backup of the data directory still carries this file\.\n[^\n]*HINT:  Delete "pg_fieldcrypt\/cluster\.key" once the keyring loads with the key from its new place\.\n/,
	'a key file left in the data directory is warned about');
unlike($log, qr/\Q$INSIDE\E/, 'but not as the key in use');
is(safe_tls($old, 'postgres', $VALUES_SQL), $VALUES, 'with fieldcrypt.key_file: values decrypt');
is(read_bytes($legacy), $oldkek, 'the file left inside is not touched');
$old->stop;

done_testing();
