# Two-phase key changes on Citus that a stalled worker cannot freeze (issue 15;
# src/keys/node_conn.c under src/keys/cluster_2pc.c):
#   - a worker whose import waits (a lock on its fieldcrypt.key_generations): the coordinator
#     backend waits interruptibly (wait event "Extension"); pg_cancel_backend returns it with
#     57014 within seconds; nothing changed on any node, nothing prepared; the session goes on
#     and holds no connection to any worker (pg_stat_activity of the workers, application_name
#     'fieldcrypt key change', while the session is still open);
#   - the same with statement_timeout (57014, "canceling statement due to statement timeout");
#   - the same with fieldcrypt.cluster_command_timeout: 08006 naming the node, detail says the
#     wait timed out;
#   - a worker whose postmaster is stopped (SIGSTOP): connecting waits interruptibly too;
#     pg_cancel_backend returns 57014; nothing changed;
#   - a worker backend stopped after PREPARE: COMMIT on the coordinator returns after about
#     fieldcrypt.cluster_command_timeout with a WARNING (the bounded wait of the COMMIT
#     callback), the coordinator and the other worker have the new generation, the stopped one
#     keeps its prepared transaction; once it runs again recover_cluster_key_changes() leaves
#     every node on the same generation, nothing prepared, no record left.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use FcNode;
use FcKeyTest;
use FcCitus;

FcCitus::skip_unless_citus();

my @K = map { "Citus-Robust-Marker-K$_-3z!" } 0 .. 6;
my $c = FcCitus::new_cluster(workers => 2);
my $co = $c->{coord};
my ($w1, $w2) = @{ $c->{workers} };
my $DB = 'k3';
FcCitus::add_database($c, $DB, db_pre => 'SET fieldcrypt.auto_activate = off; ',
	worker_pre => 'SET fieldcrypt.auto_activate = off; ');
my $GENS = "SELECT string_agg(generation || ':' || encode(kcv, 'hex'), ',' ORDER BY generation) FROM fieldcrypt.key_generations";
my $PREPARED = 'SELECT count(*) FROM pg_prepared_xacts';
my $CONNS = q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fieldcrypt key change'};
my @stopped;	# pids under SIGSTOP, continued on every exit path

END { kill 'CONT', @stopped if @stopped; }

sub gens_of_nodes { return join('|', map { $_->safe_psql($DB, $GENS) } FcCitus::nodes($c)); }
sub prepared_of_workers { return join(',', map { $_->safe_psql($DB, $PREPARED) } ($w1, $w2)); }

safe_tls($co, $DB, "SELECT fieldcrypt.set_data_encryption_key('$K[0]')");
my $before = gens_of_nodes();
my $RECORDS = 'SELECT string_agg(gid, \',\' ORDER BY gid) FROM fieldcrypt.cluster_transactions';
safe_tls($co, $DB, 'SELECT fieldcrypt.recover_cluster_key_changes()');	# the set-up's records go
my $records = $co->safe_psql($DB, $RECORDS);
is($records, '', 'set-up: no record of a two-phase key change');
my $g1 = $co->safe_psql($DB, $GENS);
is($before, join('|', ($g1) x 3), 'set-up: every node holds generation 1 of the coordinator');

# A coordinator session that stays open across the errors (TLS: key functions need it).
my $bg = $co->background_psql($DB, on_error_stop => 0,
	extra_params => [ '-d', FcNode::tls_connstr($co, $DB) ]);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe('\set VERBOSITY verbose');

# Start $sql in the background session, wait until the backend waits on a worker
# (wait event Extension), run $interrupt (code), then collect: (seconds from the
# interrupt to the answer, stderr).
sub stall_and_interrupt
{
	my ($sql, $interrupt) = @_;
	$bg->{stderr} = '';
	$bg->{stdin} .= "$sql\n\\echo 'STALL-DONE'\n";
	$bg->{run}->pump_nb;
	ok($co->poll_query_until($DB, "SELECT wait_event_type = 'Extension' AND wait_event = 'Extension' "
			  . "FROM pg_stat_activity WHERE pid = $pid"), 'the coordinator backend waits on a worker (wait event Extension)')
	  or return (999, '');
	my $t0 = Time::HiRes::time();
	$interrupt->() if $interrupt;
	$bg->{run}->pump until $bg->{stdout} =~ /STALL-DONE/ || $bg->{timeout}->is_expired;
	my $took = Time::HiRes::time() - $t0;
	note(sprintf('answered %.2f s after the interrupt', $took));
	$bg->{stdout} = '';
	my $err = $bg->{stderr};
	$bg->{stderr} = '';
	return ($took, $err);
}

# A session on worker2 that holds its key metadata table: the import waits for it.
sub lock_worker2
{
	my $h = $w2->background_psql($DB, on_error_stop => 1);
	$h->query_safe('BEGIN; LOCK TABLE fieldcrypt.key_generations IN ACCESS EXCLUSIVE MODE');
	return $h;
}

sub nothing_changed
{
	my ($what) = @_;
	is(gens_of_nodes(), $before, "$what: no node changed");
	is(prepared_of_workers(), '0,0', "$what: nothing prepared on the workers");
	is($co->safe_psql($DB, $RECORDS), $records, "$what: no record added");
	return;
}

sub no_connections_left
{
	my ($what) = @_;
	ok($w1->poll_query_until($DB, $CONNS, '0') && $w2->poll_query_until($DB, $CONNS, '0'),
		"$what: no key change connection left on any worker while the coordinator session is open");
	is($bg->query_safe('SELECT 1'), '1', "$what: the coordinator session goes on");
	return;
}

# --- pg_cancel_backend while worker2's import waits ------------------------------------------
my $lock = lock_worker2();
my ($took, $err) = stall_and_interrupt("SELECT fieldcrypt.set_data_encryption_key('$K[1]');",
	sub { $co->safe_psql('postgres', "SELECT pg_cancel_backend($pid)") });
like($err, qr/^(?:psql:[^\n]*: )?ERROR:  57014: canceling statement due to user request$/m, 'pg_cancel_backend: 57014')
  or diag($err);
cmp_ok($took, '<', 5, 'the cancelled backend answered within 5 s');
$lock->query_safe('ROLLBACK');
$lock->quit;
no_connections_left('after the cancel');
nothing_changed('after the cancel');

# --- statement_timeout ---------------------------------------------------------------------------
# (3 s: the backend must first connect to both workers and prepare on worker1, and the
# poll must see it wait, on a loaded 2-CPU machine)
$lock = lock_worker2();
($took, $err) = stall_and_interrupt("SET statement_timeout = '3s';\nSELECT fieldcrypt.set_data_encryption_key('$K[2]');\nRESET statement_timeout;");
like($err, qr/^(?:psql:[^\n]*: )?ERROR:  57014: canceling statement due to statement timeout$/m, 'statement_timeout: 57014')
  or diag($err);
$lock->query_safe('ROLLBACK');
$lock->quit;
no_connections_left('after statement_timeout');
nothing_changed('after statement_timeout');

# --- fieldcrypt.cluster_command_timeout -------------------------------------------------------------
$lock = lock_worker2();
($took, $err) = stall_and_interrupt("SET fieldcrypt.cluster_command_timeout = '3s';\nSELECT fieldcrypt.set_data_encryption_key('$K[3]');\nRESET fieldcrypt.cluster_command_timeout;");
my $w2addr = '127.0.0.1:' . $w2->port;
like($err, qr/^(?:psql:[^\n]*: )?ERROR:  08006: could not change the data encryption key on node \Q$w2addr\E$/m,
	'cluster_command_timeout: 08006 naming worker2') or diag($err);
like($err, qr/DETAIL:  Nothing was changed on any node\. The node reported: no answer within fieldcrypt\.cluster_command_timeout \(3000 ms\)/,
	'the detail says the wait timed out');
$lock->query_safe('ROLLBACK');
$lock->quit;
no_connections_left('after cluster_command_timeout');
nothing_changed('after cluster_command_timeout');

# --- worker2's postmaster stopped: connecting waits interruptibly ----------------------------------
my $pm;
open my $pmf, '<', $w2->data_dir . '/postmaster.pid' or die "postmaster.pid: $!";
$pm = <$pmf>;
close $pmf;
chomp $pm;
kill 'STOP', $pm;
push @stopped, $pm;
($took, $err) = stall_and_interrupt("SELECT fieldcrypt.set_data_encryption_key('$K[4]');",
	sub { $co->safe_psql('postgres', "SELECT pg_cancel_backend($pid)") });
kill 'CONT', $pm;
@stopped = ();
like($err, qr/^(?:psql:[^\n]*: )?ERROR:  57014: canceling statement due to user request$/m,
	'a stopped worker postmaster: pg_cancel_backend returns 57014') or diag($err);
cmp_ok($took, '<', 5, 'within 5 s');
no_connections_left('after the cancelled connection');
nothing_changed('after the cancelled connection');

# --- a worker stalled after PREPARE: the COMMIT callback waits a bounded time ------------------------
$bg->query_safe("BEGIN;\nSET LOCAL fieldcrypt.cluster_command_timeout = '2s'");
$bg->query_safe("SELECT fieldcrypt.set_data_encryption_key('$K[5]')");
is(prepared_of_workers(), '1,1', 'the change is prepared on both workers');
my $wpid = $w1->safe_psql($DB, "SELECT pid FROM pg_stat_activity WHERE application_name = 'fieldcrypt key change'");
like($wpid, qr/^\d+$/, 'worker1 has one key change connection');
kill 'STOP', $wpid;
push @stopped, $wpid;
my $t0 = Time::HiRes::time();
$bg->{stderr} = '';
my $out = $bg->query('COMMIT');
$took = Time::HiRes::time() - $t0;
note(sprintf('COMMIT took %.2f s', $took));
my $w1addr = '127.0.0.1:' . $w1->port;
like($bg->{stderr}, qr/WARNING:  01000: could not commit the key change on node \Q$w1addr\E/,
	'COMMIT warns that worker1 could not be committed') or diag($bg->{stderr});
like($bg->{stderr}, qr/no answer within fieldcrypt\.cluster_command_timeout \(2000 ms\)/, 'because the bounded wait ran out');
cmp_ok($took, '<', 10, 'COMMIT returned after the bounded wait, not a hang');
my $g2 = $co->safe_psql($DB, $GENS);
isnt($g2, $g1, 'the coordinator committed the new generation');
is($w2->safe_psql($DB, $GENS), $g2, 'worker2 committed it too');
kill 'CONT', $wpid;
@stopped = ();
$bg->{stderr} = '';
my ($n) = $bg->query('SELECT fieldcrypt.recover_cluster_key_changes() BETWEEN 0 AND 1');
is($n, 't', 'recover_cluster_key_changes() finishes what is left (worker1 may have run the COMMIT PREPARED it read after SIGCONT)');
is(gens_of_nodes(), join('|', ($g2) x 3), 'every node holds the new generation');
is(prepared_of_workers(), '0,0', 'nothing stays prepared');
is($co->safe_psql($DB, 'SELECT count(*) FROM fieldcrypt.cluster_transactions'), '0', 'no record left');
no_connections_left('after the bounded COMMIT');

$bg->quit;
my @logs = map { slurp_file($_->logfile) } FcCitus::nodes($c);
is(scalar(grep { /Citus-Robust-Marker/ } @logs), 0, 'no passphrase in the log of any node');
FcCitus::stop_all($c);
done_testing();
