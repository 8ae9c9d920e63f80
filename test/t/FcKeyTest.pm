# FcKeyTest: assertions shared by fieldcrypt's key TAP tests (on top of FcNode).
#
#   sql_is($node, $db, $sql, $expected, $name)       over TLS: exit 0 and this output
#   safe_tls($node, $db, $sql)                        over TLS, quiet: the output; dies on failure
#   sql_fails($node, $db, $sql, $sqlstate, $message, $name, via => 'tls'|'plain'|'socket')
#                                                     fails with this SQLSTATE and primary message
#   read_bytes($path) / write_bytes($path, $bytes)    whole files, binary
#   log_since($node, $offset)                          server log from byte $offset on
package FcKeyTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;

our @EXPORT = qw(sql_is safe_tls sql_fails read_bytes write_bytes log_since wal_range);

sub sql_is
{
	my ($node, $db, $sql, $expected, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ret, $out, $err) = FcNode::psql_tls($node, $db, $sql);
	is("$ret:$out", "0:$expected", $name) or diag("stderr: $err");
	return;
}

sub safe_tls
{
	my ($node, $db, $sql) = @_;
	my ($rc, $out, $err) = FcNode::psql_tls($node, $db, "\\set QUIET on\n$sql");
	die $node->name . "/$db: SQL failed (rc $rc): $err\nSQL: " . substr($sql, 0, 500) . "\n"
	  if $rc != 0;
	return $out;
}

# psql's verbose error format is "ERROR:  SQLSTATE: message".
sub sql_fails
{
	my ($node, $db, $sql, $sqlstate, $message, $name, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $via = $opts{via} // 'tls';
	my $script = "\\set VERBOSITY verbose\n$sql";
	my ($ret, $out, $err);
	if ($via eq 'socket')
	{
		$ret = $node->psql($db, $script, stdout => \$out, stderr => \$err,
			on_error_stop => 1);
	}
	else
	{
		($ret, $out, $err) = $via eq 'plain'
		  ? FcNode::psql_plain($node, $db, $script)
		  : FcNode::psql_tls($node, $db, $script);
	}
	ok($ret != 0 && $err =~ /^(?:psql:[^\n]*: )?ERROR:  \Q$sqlstate\E: \Q$message\E$/m, $name)
	  or diag("exit code $ret, want SQLSTATE $sqlstate \"$message\"; stderr:\n$err");
	return;
}

sub read_bytes
{
	my ($path) = @_;
	open my $fh, '<:raw', $path or die "could not read $path: $!";
	local $/;
	my $data = <$fh>;
	close $fh;
	return $data // '';
}

sub write_bytes
{
	my ($path, $data) = @_;
	open my $fh, '>:raw', $path or die "could not write $path: $!";
	print $fh $data;
	close $fh or die "could not write $path: $!";
	return;
}

# The WAL record bytes of node between two LSNs [start, end), read from its segment files
# (page headers left out).
sub wal_range
{
	my ($node, $start, $end) = @_;
	my ($f1, $o1) = split /\|/, $node->safe_psql('postgres',
		"SELECT file_name, file_offset FROM pg_walfile_name_offset('$start')");
	my ($f2, $o2) = split /\|/, $node->safe_psql('postgres',
		"SELECT file_name, file_offset FROM pg_walfile_name_offset('$end')");
	my $dir = $node->data_dir . '/pg_wal';
	opendir my $dh, $dir or die "opendir $dir: $!";
	my @segs = sort grep { /^[0-9A-F]{24}$/ && $_ ge $f1 && $_ le $f2 } readdir $dh;
	closedir $dh;
	my $bytes = '';
	for my $seg (@segs)
	{
		my $data = read_bytes("$dir/$seg");
		my $from = $seg eq $f1 ? $o1 : 0;
		my $to = $seg eq $f2 ? $o2 : length $data;
		# record bytes only: without the header of each 8 kB WAL page (40 bytes on a
		# segment's first page, 24 on the others), a value that a page boundary splits is
		# contiguous again, so that whether a grep finds it does not depend on where it fell
		for (my $page = $from - $from % 8192; $page < $to; $page += 8192)
		{
			my $start = $page + ($page == 0 ? 40 : 24);
			$start = $from if $from > $start;
			my $end = $page + 8192 < $to ? $page + 8192 : $to;
			$bytes .= substr($data, $start, $end - $start) if $end > $start;
		}
	}
	return $bytes;
}

sub log_since
{
	my ($node, $offset) = @_;
	return slurp_file($node->logfile, $offset);
}

1;
