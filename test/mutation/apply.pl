#!/usr/bin/perl
# test/mutation/apply.pl: reads test/mutation/mutants.txt (format in its header) for run.sh.
#
#   apply.pl list MUTANTS                 one line per mutant: id TAB file TAB tests TAB check
#   apply.pl apply MUTANTS ID FROM TO     write TO/file: FROM/file with the mutant's code replaced
#   apply.pl check MUTANTS FROM           does every mutant's code occur exactly once in FROM?
#
# A mutant applies only when its code occurs exactly once in its file (whitespace included):
# otherwise it prints "does not apply: ..." and exits 3, so that code that moved or changed
# under a mutant is reported, never silently skipped.
use strict;
use warnings;

sub parse
{
	my ($path) = @_;
	open my $fh, '<', $path or die "cannot read $path: $!\n";
	my (@m, $cur, $block);
	while (my $line = <$fh>)
	{
		chomp $line;
		if ($line =~ /^== (\S+)\s+(\S+)\s*$/)
		{
			$cur = { id => $1, name => $2, code => [], mutant => [] };
			push @m, $cur;
			$block = undef;
		}
		elsif ($line =~ /^--- (code|mutant)\s*$/)
		{
			die "$path:$.: block outside a mutant\n" unless $cur;
			$block = $1;
		}
		elsif (defined $block)
		{
			push @{ $cur->{$block} }, $line;
		}
		elsif ($line =~ /^\s*(#.*)?$/)
		{
			next;
		}
		elsif ($cur && $line =~ /^(check|file|tests):\s*(.*?)\s*$/)
		{
			$cur->{$1} = $2;
		}
		else
		{
			die "$path:$.: cannot parse: $line\n";
		}
	}
	my %seen;
	for my $x (@m)
	{
		for my $b ('code', 'mutant')
		{
			pop @{ $x->{$b} } while @{ $x->{$b} } && $x->{$b}[-1] =~ /^\s*$/;
			$x->{$b} = join "\n", @{ $x->{$b} };
		}
		for my $k (qw(check file tests code))
		{
			die "$path: mutant $x->{id} has no $k\n" unless length($x->{$k} // '');
		}
		die "$path: mutant $x->{id}: code and mutant are the same\n" if $x->{code} eq $x->{mutant};
		die "$path: mutant id $x->{id} used twice\n" if $seen{ $x->{id} }++;
	}
	return @m;
}

sub slurp
{
	my ($p) = @_;
	open my $fh, '<', $p or return undef;
	local $/;
	return scalar <$fh>;
}

# number of occurrences of $code in $text (non-overlapping)
sub count
{
	my ($text, $code) = @_;
	my ($n, $pos) = (0, 0);
	while ((my $i = index($text, $code, $pos)) >= 0) { $n++; $pos = $i + length $code; }
	return $n;
}

my ($cmd, $file, @args) = @ARGV;
die "usage: apply.pl list|apply|check MUTANTS ...\n" unless $cmd && $file;
my @m = parse($file);
if ($cmd eq 'list')
{
	print join("\t", $_->{id}, $_->{file}, $_->{tests}, "$_->{name}: $_->{check}"), "\n" for @m;
	exit 0;
}
if ($cmd eq 'check')
{
	my ($from) = @args;
	my $bad = 0;
	for my $x (@m)
	{
		my $text = slurp("$from/$x->{file}");
		my $n = defined $text ? count($text, $x->{code}) : -1;
		next if $n == 1;
		$bad++;
		printf "%s %s: does not apply: %s\n", $x->{id}, $x->{name},
		  $n < 0 ? "$x->{file} not found" : "its code occurs $n times in $x->{file} (want 1)";
	}
	print scalar(@m) . " mutants, $bad do not apply\n";
	exit($bad ? 3 : 0);
}
if ($cmd eq 'apply')
{
	my ($id, $from, $to) = @args;
	my ($x) = grep { $_->{id} eq $id } @m or die "no mutant $id\n";
	my $text = slurp("$from/$x->{file}");
	if (!defined $text) { print "does not apply: $x->{file} not found\n"; exit 3; }
	my $n = count($text, $x->{code});
	if ($n != 1) { print "does not apply: its code occurs $n times in $x->{file} (want 1)\n"; exit 3; }
	my $i = index($text, $x->{code});
	substr($text, $i, length $x->{code}) = $x->{mutant};
	open my $fh, '>', "$to/$x->{file}" or die "cannot write $to/$x->{file}: $!\n";
	print $fh $text;
	close $fh or die "cannot write $to/$x->{file}: $!\n";
	exit 0;
}
die "unknown command $cmd\n";
