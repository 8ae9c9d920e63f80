# fieldcrypt.keep_on_null_update: an ORM that writes every field back (Django's save(),
# Hibernate without @DynamicUpdate) sends the NULL it was shown for an encrypted column.
# Asserted: off by default (the NULL clears the value, as before); only a superuser may change
# it; with it on, an UPDATE assigning a NULL constant, a bind parameter that is NULL (DBD::Pg,
# server-side prepared like pgJDBC or psycopg 3), a PREPAREd parameter, a domain over an
# encrypted type, an UPDATE inside a CTE, a SQL and a PL/pgSQL function, INSERT ... ON CONFLICT
# DO UPDATE SET col = EXCLUDED.col and MERGE ... UPDATE keep the stored value while the other
# columns change; a non-NULL value is written; SET col = DEFAULT clears it; a role with UPDATE
# but no SELECT privilege can still write; statements on tables without encrypted columns keep
# their plan (no COALESCE).
use strict;
use warnings;
use DBI;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('nullguard');
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
sub sql { return safe_tls($node, 'app', @_); }

sql(<<'EOS');
CREATE EXTENSION fieldcrypt;
CREATE DOMAIN pin_t AS fieldcrypt.encrypted_text;
CREATE TABLE acct (id int PRIMARY KEY, name text, secret fieldcrypt.encrypted_text,
                   blob fieldcrypt.encrypted_bytea, pin pin_t);
CREATE TABLE plain (id int PRIMARY KEY, v text);
CREATE FUNCTION sql_save(i int, s text) RETURNS void LANGUAGE sql
  AS 'UPDATE acct SET name = name || ''+f'', secret = s WHERE id = i';
CREATE FUNCTION pl_save(i int, s text) RETURNS void LANGUAGE plpgsql
  AS $$ BEGIN UPDATE acct SET name = name || '+p', secret = s WHERE id = i; END $$;
CREATE ROLE app_writer LOGIN;
GRANT USAGE ON SCHEMA fieldcrypt TO app_writer;
GRANT UPDATE (name, secret) ON acct TO app_writer;
EOS

sub reset_rows
{
	sql(q{TRUNCATE acct; INSERT INTO acct SELECT g, 'n' || g, 'S-' || g, decode(lpad(to_hex(g), 2, '0'), 'hex'), 'P-' || g FROM generate_series(1, 12) g});
}
sub row_of
{
	my ($id) = @_;
	return sql("SELECT name || '|' || coalesce(fieldcrypt.decrypt(secret), '<null>') || '|' || coalesce(encode(fieldcrypt.decrypt(blob), 'hex'), '<null>') || '|' || coalesce(fieldcrypt.decrypt(pin), '<null>') FROM acct WHERE id = $id");
}

# default: off, and a NULL clears the value
is(sql('SHOW fieldcrypt.keep_on_null_update'), 'off', 'off by default');
reset_rows();
sql(q{UPDATE acct SET name = 'x', secret = NULL WHERE id = 1});
is(row_of(1), 'x|<null>|01|P-1', 'setting off: UPDATE ... SET secret = NULL clears the value');
sql_fails($node, 'app', "SET ROLE app_writer;\nSET fieldcrypt.keep_on_null_update = on;",
	'42501', 'permission denied to set parameter "fieldcrypt.keep_on_null_update"',
	'only a superuser changes the setting');

$node->append_conf('postgresql.conf', 'fieldcrypt.keep_on_null_update = on');
$node->reload;
is(sql('SHOW fieldcrypt.keep_on_null_update'), 'on', 'set in postgresql.conf');
reset_rows();

# a NULL literal (what psycopg2 and Django send), every encrypted type and a domain
sql(q{UPDATE acct SET name = 'lit', secret = NULL, blob = NULL, pin = NULL WHERE id = 1});
is(row_of(1), 'lit|S-1|01|P-1', 'NULL literals keep the stored values, other columns change');
sql(q{UPDATE acct SET name = 'new', secret = 'S-1b', pin = 'P-1b' WHERE id = 1});
is(row_of(1), 'new|S-1b|01|P-1b', 'a non-NULL value is written');
sql(q{UPDATE acct SET secret = DEFAULT, blob = DEFAULT WHERE id = 1});
is(row_of(1), 'new|<null>|<null>|P-1b', 'SET col = DEFAULT clears the value');

# bind parameters over the extended protocol (server-side prepared)
my $dbh = DBI->connect('dbi:Pg:' . FcNode::tls_connstr($node, 'app'),
	undef, undef, { RaiseError => 1, AutoCommit => 1, PrintError => 0 });
$dbh->{pg_server_prepare} = 1;
my $sth = $dbh->prepare('UPDATE acct SET name = $1, secret = $2 WHERE id = $3');
$sth->execute('bound', undef, 2);
is(row_of(2), 'bound|S-2|02|P-2', 'a bind parameter that is NULL keeps the value');
$sth->execute('bound2', 'S-2b', 2);
is(row_of(2), 'bound2|S-2b|02|P-2', 'the same prepared statement writes a non-NULL value');
$dbh->do('UPDATE acct SET name = $1, secret = $2::varchar WHERE id = $3', undef, 'cast', undef, 3);
is(row_of(3), 'cast|S-3|03|P-3', 'a NULL parameter under a cast keeps the value');
$dbh->disconnect;

sql(q{PREPARE u(text, text, int) AS UPDATE acct SET name = $1, secret = $2 WHERE id = $3;
      EXECUTE u('prep', NULL, 4);});
is(row_of(4), 'prep|S-4|04|P-4', 'PREPARE / EXECUTE with a NULL parameter keeps the value');

sql(q{WITH w AS (UPDATE acct SET name = 'cte', secret = NULL WHERE id = 5 RETURNING id) SELECT count(*) FROM w});
is(row_of(5), 'cte|S-5|05|P-5', 'an UPDATE in a WITH clause keeps the value');
sql(q{SELECT sql_save(6, NULL); SELECT pl_save(7, NULL);});
is(row_of(6) . ' ' . row_of(7), 'n6+f|S-6|06|P-6 n7+p|S-7|07|P-7', 'SQL and PL/pgSQL functions keep the value');

sql(q{INSERT INTO acct (id, name, secret) VALUES (8, 'upsert', NULL)
      ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, secret = EXCLUDED.secret, pin = NULL});
is(row_of(8), 'upsert|S-8|08|P-8', 'INSERT ... ON CONFLICT DO UPDATE keeps the values');
sql(q{INSERT INTO acct (id, name, secret) VALUES (8, 'upsert2', 'S-8b')
      ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, secret = EXCLUDED.secret});
is(row_of(8), 'upsert2|S-8b|08|P-8', 'ON CONFLICT writes a non-NULL EXCLUDED value');
sql(q{MERGE INTO acct a USING (VALUES (9, NULL::text)) v(id, s) ON a.id = v.id
      WHEN MATCHED THEN UPDATE SET name = 'merged', secret = v.s, pin = NULL});
is(row_of(9), 'merged|<null>|09|P-9', 'MERGE: a NULL constant keeps the value, a column of the source is written');
sql(q{MERGE INTO acct a USING (VALUES (10)) v(id) ON a.id = v.id
      WHEN MATCHED THEN UPDATE SET name = 'merged', secret = NULL});
is(row_of(10), 'merged|S-10|0a|P-10', 'MERGE ... UPDATE SET secret = NULL keeps the value');

sql(q{CREATE VIEW acct_v AS SELECT id, name, secret FROM acct;
      UPDATE acct_v SET name = 'view', secret = NULL WHERE id = 12});
is(row_of(12), 'view|S-12|0c|P-12', 'an UPDATE through an updatable view keeps the value');

# a role that may update but not read the column
sql(q{SET ROLE app_writer; UPDATE acct SET name = 'writer', secret = NULL; RESET ROLE});
is(row_of(11), 'writer|S-11|0b|P-11', 'a role without SELECT privilege updates, the value stays');

# untouched: statements on tables without encrypted columns, and columns that are not encrypted
is(sql(q{EXPLAIN (VERBOSE, COSTS OFF) UPDATE plain SET v = NULL WHERE id = 1}) =~ /COALESCE/ ? 1 : 0, 0,
	'a table without encrypted columns keeps its plan');
is(sql(q{EXPLAIN (VERBOSE, COSTS OFF) UPDATE acct SET name = NULL WHERE id = 1}) =~ /COALESCE/ ? 1 : 0, 0,
	'a column that is not encrypted is not guarded');
sql(q{UPDATE acct SET name = NULL WHERE id = 12});
is(sql(q{SELECT name IS NULL FROM acct WHERE id = 12}), 't', 'NULL is written to a column that is not encrypted');

$node->stop;
done_testing();
