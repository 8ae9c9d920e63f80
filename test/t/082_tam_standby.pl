# encrypted_heap on a streaming standby (made with pg_basebackup, so it has the primary's
# cluster key): it reads the encrypted tables (inline and out-of-line values, index scans),
# follows new rows, a rotate_tde_key on the primary (rows of both generations read, the
# key status follows), a reencrypt_table and a VACUUM FULL; it keeps reading after a restart;
# once promoted it writes to the existing tables and to a table created after promotion, and
# those read back, also after a restart of the promoted server; its rows are sealed under a new
# instance id, and no nonce of a stored row version or out-of-line value is used twice.  Two
# servers started from the same base backup write rows and out-of-line values whose nonces never
# collide, with each other or within one server.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $primary = FcNode::new_node('primary', allows_streaming => 1);
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return safe_tls($_[0], 'app', $_[1]); }

# Same plaintext on both sides: "rows|md5 of all rows", and an index lookup.
my $DIGEST = q{SELECT count(*) || '|' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t};
my $LOOKUP = q{SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT v FROM t WHERE id = 4321};
# (fieldcrypt.tde_statistic, the encrypted planner statistics, has rows only once autovacuum
# analyzed a table: left out)
my $STATUS = q{SELECT string_agg(generation || ':' || is_current || ':'
                   || array_to_string(ARRAY(SELECT x::text FROM unnest(tables) x
                                            WHERE x <> 'fieldcrypt.tde_statistic'::regclass ORDER BY 1), ' '), ',' ORDER BY generation)
                 FROM fieldcrypt.tde_key_status};

sql($primary, <<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE TABLE t (id int PRIMARY KEY, v text, big text) USING encrypted_heap;
INSERT INTO t SELECT g, 'gen1-' || g,
       CASE WHEN g % 1000 = 0 THEN (SELECT string_agg(md5(g || ':' || i), '') FROM generate_series(1, 300) i) END
  FROM generate_series(1, 10000) g;
CREATE TABLE u (id int, v text) USING encrypted_heap;
INSERT INTO u SELECT g, 'u' || g FROM generate_series(1, 100) g;
EOS
my $digest = sql($primary, $DIGEST);

# A streaming standby from a base backup.
$primary->backup('b1');
my $standby = FcNode::standby_from_backup('standby', $primary, 'b1');
$standby->start;
is(sql($standby, 'SELECT pg_is_in_recovery()'), 't', 'standby: in recovery');
is(sql($standby, $DIGEST), $digest, 'standby: the encrypted table reads as on the primary');
is(sql($standby, $LOOKUP), 'gen1-4321', 'standby: an index scan finds the row');
is(sql($standby, q{SELECT fieldcrypt.is_encrypted('t')}), 't', 'standby: t is an encrypted_heap table');

# New rows on the primary reach the standby.
sql($primary, q{INSERT INTO t SELECT g, 'more-' || g, NULL FROM generate_series(10001, 11000) g;
                UPDATE t SET v = v || '+' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0});
$primary->wait_for_catchup($standby);
$digest = sql($primary, $DIGEST);
is(sql($standby, $DIGEST), $digest, 'standby: inserts, updates and deletes are replayed and read');

# rotate_tde_key on the primary: the standby reads rows of both generations.
my $gen = sql($primary, 'SELECT fieldcrypt.rotate_tde_key()');
is($gen, '2', 'primary: rotate_tde_key returns generation 2');
sql($primary, q{INSERT INTO t VALUES (20000, 'gen2-20000', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 500) i));
                UPDATE t SET v = 'gen2-' || id WHERE id BETWEEN 4000 AND 4500});
$primary->wait_for_catchup($standby);
$digest = sql($primary, $DIGEST);
is(sql($standby, $DIGEST), $digest, 'standby: rows of generations 1 and 2 read after the rotation');
is(sql($standby, $LOOKUP), 'gen2-4321', 'standby: index scan on a row rewritten under generation 2');
is(sql($standby, $STATUS), sql($primary, $STATUS), 'standby: the key status is the primary\'s');
is(sql($primary, $STATUS), '1:false:t u,2:true:t', 'primary: t holds rows of both generations, u of the first');

# A session on the standby opened before the rotation reads the new rows too.
my $bg = $standby->background_psql('app', on_error_stop => 1,
	extra_params => [ '-d', FcNode::tls_connstr($standby, 'app') ]);
is($bg->query_safe($DIGEST), $digest, 'standby session: reads before the next rotation');
is(sql($primary, 'SELECT fieldcrypt.rotate_tde_key()'), '3', 'primary: rotate again (generation 3)');
sql($primary, q{INSERT INTO t VALUES (20001, 'gen3-20001', NULL)});
$primary->wait_for_catchup($standby);
$digest = sql($primary, $DIGEST);
is($bg->query_safe($DIGEST), $digest, 'standby session: the same session reads rows of generation 3');
$bg->quit;

# reencrypt_table and VACUUM FULL on the primary are replayed.
sql($primary, q{SELECT fieldcrypt.reencrypt_table('t'); VACUUM FULL u});
$primary->wait_for_catchup($standby);
is(sql($primary, $STATUS), '1:false:,2:false:,3:true:t u',
	'primary: after reencrypt_table and VACUUM FULL only generation 3 holds rows');
is(sql($standby, $STATUS), sql($primary, $STATUS), 'standby: the same key status');
is(sql($standby, $DIGEST), $digest, 'standby: t reads after reencrypt_table');
is(sql($standby, q{SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM u}),
	sql($primary, q{SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM u}), 'standby: u reads after VACUUM FULL');

# A table created on the primary after the standby started.
sql($primary, q{CREATE TABLE w USING encrypted_heap AS SELECT g AS id, 'w' || g AS v FROM generate_series(1, 500) g});
$primary->wait_for_catchup($standby);
is(sql($standby, q{SELECT count(*), sum(length(v)) FROM w}), '500|1892', 'standby: a new encrypted table reads');

# The standby restarts (its keys come from its own disk) and still reads.
$standby->restart;
is(sql($standby, $DIGEST), $digest, 'standby restart: t still reads');

# Writes are refused on a standby, as always.
my ($rc, $out, $err) = FcNode::psql_tls($standby, 'app', q{INSERT INTO t VALUES (1, 'x', NULL)});
like($err, qr/cannot execute INSERT in a read-only transaction/, 'standby: read-only');

# --- Promotion --------------------------------------------------------------------------------
$primary->stop;
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
is(sql($standby, $DIGEST), $digest, 'promoted: t reads');
sql($standby, q{INSERT INTO t VALUES (30000, 'promoted-30000', repeat('P', 20000));
                UPDATE t SET v = 'promoted-' || id WHERE id BETWEEN 1 AND 50;
                DELETE FROM t WHERE id BETWEEN 51 AND 60});
is(sql($standby, q{SELECT v, length(big) FROM t WHERE id = 30000}), 'promoted-30000|20000',
	'promoted: a row written after promotion reads back');
is(sql($standby, q{SELECT count(*) FROM t WHERE v LIKE 'promoted-%'}), '47',
	'promoted: rows updated after promotion read back');
sql($standby, q{CREATE TABLE after_promotion (id int PRIMARY KEY, v text) USING encrypted_heap;
                INSERT INTO after_promotion SELECT g, 'ap-' || g FROM generate_series(1, 1000) g});
is(sql($standby, q{SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) = md5(string_agg('ap-' || id, ',' ORDER BY id))
                   FROM after_promotion}), '1000|t', 'promoted: a table created after promotion reads back');
is(sql($standby, 'SELECT fieldcrypt.rotate_tde_key()'), '4', 'promoted: rotate_tde_key works (generation 4)');
sql($standby, q{INSERT INTO after_promotion VALUES (1001, 'ap-1001')});
my $promoted_digest = sql($standby, $DIGEST);
my $ap = sql($standby, q{SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM after_promotion});
$standby->restart;
is(sql($standby, $DIGEST), $promoted_digest, 'promoted, restarted: t reads');
is(sql($standby, q{SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM after_promotion}), $ap,
	'promoted, restarted: the table created after promotion reads');
ok(!$standby->log_contains(qr/failed authentication/), 'no authentication failure in the standby log');

# Nonces: the promoted server writes under a new instance id; no (instance id, counter) pair of
# any stored row version of t is used twice (trailer: ... instance id(8) counter(8) tag(16)).
sql($standby, 'CREATE EXTENSION pageinspect');
my ($n, $distinct, $instances) = split /\|/, sql($standby, q{
SELECT count(*), count(DISTINCT nonce), count(DISTINCT substr(nonce, 1, 8))
  FROM (SELECT substr(t_data, length(t_data) - 31, 16) AS nonce
          FROM generate_series(0, pg_relation_size('t') / 8192 - 1) b,
               heap_page_items(get_raw_page('t', b::int))
         WHERE lp_flags = 1 AND t_data IS NOT NULL) s});
is($distinct, $n, "promoted: $n stored row versions of t, no nonce used twice");
cmp_ok($instances, '>=', 2, "promoted: rows of t come from $instances server lifetimes (primary and promoted)");
# Out-of-line values carry their own (instance id, counter) in the blob header of their first
# TOAST chunk (version(1) gen(2) instance(8) counter(8)): none is used twice either.
my $TOAST = sql($standby, q{SELECT reltoastrelid::regclass FROM pg_class WHERE relname = 't'});
my $BLOBS = qq{SELECT encode(substr(chunk_data, 4, 16), 'hex') FROM $TOAST WHERE chunk_seq = 0};
my @blobs = split /\n/, sql($standby, $BLOBS);
my %bseen;
cmp_ok(scalar(@blobs), '>=', 10, 'promoted: ' . scalar(@blobs) . ' out-of-line values of t read');
is(scalar(grep { $bseen{$_}++ } @blobs), 0, 'promoted: no out-of-line value of t shares a nonce with another');

$standby->stop;

# --- Two servers made from the same base backup ----------------------------------------------
# Both start from the same pages and the same keys; each start draws its own instance id, and
# each server's counter gives every row and out-of-line value it writes its own nonce: no nonce
# is written twice, by the same server or by the two (counted over lists, not sets, so that a
# counter that does not advance fails here too).
my $NONCES = q{SELECT encode(substr(t_data, length(t_data) - 31, 16), 'hex')
                 FROM generate_series(0, pg_relation_size('t') / 8192 - 1) b,
                      heap_page_items(get_raw_page('t', b::int))
                WHERE lp_flags = 1 AND t_data IS NOT NULL};
my (@new, @newblobs);
for my $name ('clone1', 'clone2')
{
	my $clone = FcNode::standby_from_backup($name, $primary, 'b1', streaming => 0);
	$clone->start;
	sql($clone, 'CREATE EXTENSION IF NOT EXISTS pageinspect');
	my %before = map { $_ => 1 } split /\n/, sql($clone, $NONCES);
	my %bbefore = map { $_ => 1 } split /\n/, sql($clone, $BLOBS);
	sql($clone, q{INSERT INTO t SELECT g, 'clone-' || g,
	                CASE WHEN g % 25 = 0 THEN (SELECT string_agg(md5(g || ':' || i), '') FROM generate_series(1, 300) i) END
	                FROM generate_series(50001, 50500) g});
	is(sql($clone, q{SELECT count(*), count(big) FROM t WHERE v LIKE 'clone-%'}), '500|20',
		"$name: its new rows and out-of-line values read back");
	push @new, grep { !$before{$_} } split /\n/, sql($clone, $NONCES);
	push @newblobs, grep { !$bbefore{$_} } split /\n/, sql($clone, $BLOBS);
	$clone->stop;
}
my (%seen, %bseen2);
is(scalar(@new), 1000, 'the two servers wrote 1000 new row versions');
is(scalar(grep { $seen{$_}++ } @new), 0,
	'the two servers made from one backup never used the same nonce for a row');
is(scalar(@newblobs), 40, 'the two servers wrote 40 new out-of-line values');
is(scalar(grep { $bseen2{$_}++ } @newblobs), 0,
	'the two servers made from one backup never used the same nonce for an out-of-line value');
my %inst = map { substr($_, 0, 16) => 1 } @new, @newblobs;
is(scalar(keys %inst), 2, 'each of them wrote under its own instance id');

done_testing();
