#!/usr/bin/env perl
# Checks the shape of src/ from the built objects (run after `make`):
#  1. no cycle between C files: file A "uses" file B when an undefined symbol of A.o is
#     defined by B.o (nm), or when A.c includes B's header (B.h beside B.c);
#  2. each folder is a layer that uses only itself and the layers below it:
#     src/keys < src/columns < src/tde < src/rotation < src (top);
#  3. no C file over 800 lines unless its header comment says why ("longer than 800 lines").
# Prints the file graph with -v. Exit status 1 on any violation.
use strict;
use warnings;
use File::Find;
use File::Basename;

my $verbose = grep { $_ eq '-v' } @ARGV;
my %rank = ('src/keys' => 0, 'src/columns' => 1, 'src/tde' => 2, 'src/rotation' => 3, 'src' => 4);
my (@c, %def, %uses, @bad);
find(sub { push @c, $File::Find::name if /\.c$/ }, 'src');
@c = sort @c;
for my $c (@c) {
    my $d = dirname($c);
    exists $rank{$d} or push @bad, "$c: folder $d is not a known layer";
    (my $o = $c) =~ s/\.c$/.o/;
    -f $o or die "check-layers: $o missing; run make first\n";
    for (`nm -g --defined-only $o`) { $def{$1} = $c if /^\S+ [A-Z] (\S+)$/ }
}
my %hdr;   # header path -> C file beside it
for my $c (@c) { (my $h = $c) =~ s/\.c$/.h/; $hdr{$h} = $c if -f $h }
for my $c (@c) {
    (my $o = $c) =~ s/\.c$/.o/;
    for (`nm -u $o`) {
        next unless /^\s+U (\S+)$/;
        my $t = $def{$1};
        $uses{$c}{$t} = "calls $1" if $t && $t ne $c && !$uses{$c}{$t};
    }
}
# layering
for my $a (@c) {
    for my $b (sort keys %{ $uses{$a} || {} }) {
        my ($ra, $rb) = ($rank{dirname($a)}, $rank{dirname($b)});
        next unless defined $ra && defined $rb;
        push @bad, "$a uses $b ($uses{$a}{$b}): a lower layer may not use a higher one" if $rb > $ra;
    }
}
# cycles: a file that reaches itself
for my $start (@c) {
    my %seen; my @stack = map { [$_, [$start, $_]] } keys %{ $uses{$start} || {} };
    while (my $e = pop @stack) {
        my ($n, $path) = @$e;
        if ($n eq $start) { push @bad, "cycle: " . join(' -> ', @$path); last }
        next if $seen{$n}++;
        push @stack, [$_, [@$path, $_]] for keys %{ $uses{$n} || {} };
    }
}
# file size
for my $c (@c) {
    open my $fh, '<', $c or die; my @l = <$fh>;
    next if @l <= 800;
    my $head = '';
    for (@l) { $head .= $_; last if m{^\s*\*/} }
    push @bad, "$c: " . scalar(@l) . " lines, and its header gives no reason" unless $head =~ /longer than 800 lines/i;
}
if ($verbose) {
    for my $a (@c) { printf "%-28s -> %s\n", $a, join(', ', sort keys %{ $uses{$a} || {} }) }
}
my %once; @bad = grep { !$once{$_}++ } @bad;
print "check-layers: $_\n" for @bad;
printf "check-layers: %d files, %d violations\n", scalar @c, scalar @bad;
exit(@bad ? 1 : 0);
