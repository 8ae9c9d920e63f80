# pgaudit's object-audit role (pgaudit.role) never holds a privilege covering
# an encrypted column, however the privilege would arrive: not only through a
# GRANT on the table (041), but through default privileges applied by CREATE
# TABLE / VIEW / MATERIALIZED VIEW / CREATE TABLE AS / SELECT INTO, a column
# added to a relation it may read (also through inheritance, a composite type,
# a table's row type used as a column type, CREATE OR REPLACE VIEW),
# membership in a role that holds such a privilege (GRANT role, ALTER GROUP,
# CREATE ROLE ... ROLE, a predefined role, ALTER ROLE INHERIT / SUPERUSER,
# renaming a role into pgaudit.role), and ownership (ALTER TABLE OWNER,
# REASSIGN OWNED, creating the table as it).
# Each route is refused with the "cannot be audited" error (0A000) and leaves
# nothing behind; the same statements pass where no encrypted column is
# concerned.  At the end, the role holds privileges on plain columns only.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('audit_routes', preload => 'pgaudit,fieldcrypt');
$node->append_conf('postgresql.conf', "pgaudit.role = 'auditor'\n");
$node->start;

my $db = 'app';
$node->safe_psql('postgres', "CREATE DATABASE $db");

sub sql { return safe_tls($node, $db, $_[0]); }

# The statement is refused: column $col of table $table cannot be audited.
sub refused
{
	my ($stmt, $col, $table, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	sql_fails($node, $db, $stmt, '0A000',
		"encrypted column \"$col\" of table \"$table\" cannot be audited", $name);
}

sql(<<'EOS');
CREATE EXTENSION pgaudit;
CREATE EXTENSION fieldcrypt;
CREATE ROLE auditor NOLOGIN;
CREATE ROLE holder NOLOGIN;
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE empty_role NOLOGIN;
GRANT CREATE ON SCHEMA public TO auditor, app_owner;
CREATE TYPE enc_pair AS (label text, s fieldcrypt.encrypted_text);
CREATE TABLE secrets (id int, pw fieldcrypt.encrypted_text);
GRANT SELECT ON secrets TO holder;
CREATE TABLE measures (id int, pw fieldcrypt.encrypted_text) PARTITION BY RANGE (id);
EOS

# ---------------------------------------------------------------------------
# 1. Default privileges, applied when a relation is created

sql('ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO auditor');
refused('CREATE TABLE adp_t (id int, s fieldcrypt.encrypted_text)', 's', 'adp_t',
	'default privileges: CREATE TABLE with an encrypted column is refused');
refused('CREATE TABLE adp_like (LIKE secrets)', 'pw', 'adp_like',
	'default privileges: CREATE TABLE (LIKE) is refused');
refused('CREATE TABLE adp_part PARTITION OF measures FOR VALUES FROM (0) TO (10)',
	'pw', 'adp_part', 'default privileges: CREATE TABLE PARTITION OF is refused');
refused('CREATE TABLE adp_comp (id int, c enc_pair)', 'c', 'adp_comp',
	'default privileges: a composite holding an encrypted type is an encrypted column');
refused('CREATE VIEW adp_v AS SELECT id, pw FROM secrets', 'pw', 'adp_v',
	'default privileges: CREATE VIEW is refused');
refused('CREATE MATERIALIZED VIEW adp_mv AS SELECT pw FROM secrets', 'pw', 'adp_mv',
	'default privileges: CREATE MATERIALIZED VIEW is refused');
refused('CREATE TABLE adp_ctas AS SELECT pw FROM secrets', 'pw', 'adp_ctas',
	'default privileges: CREATE TABLE AS is refused');
refused('SELECT pw INTO adp_into FROM secrets', 'pw', 'adp_into',
	'default privileges: SELECT INTO is refused');
refused("CREATE SCHEMA adp_schema CREATE TABLE t (s fieldcrypt.encrypted_text)", 's', 't',
	'default privileges: CREATE SCHEMA with a table element is refused');
is( sql(q{SELECT count(*) FROM pg_class WHERE relname LIKE 'adp%'
          OR relnamespace = 'public'::regnamespace AND relname = 't'}),
	'0', 'no refused relation was left behind');
sql('CREATE TABLE adp_plain (id int)');
is(sql(q{SELECT has_table_privilege('auditor', 'adp_plain', 'SELECT')}), 't',
	'control: the default privileges apply to a table without encrypted column');
sql('ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM auditor');

# The error tells why.
my ($rc, $out, $stderr) = FcNode::psql_tls($node, $db, <<'EOS');
\set VERBOSITY verbose
CREATE TABLE plain (id int);
GRANT SELECT ON plain TO auditor;
ALTER TABLE plain ADD COLUMN s fieldcrypt.encrypted_text;
EOS
like($stderr, qr/^ERROR:  0A000: encrypted column "s" of table "plain" cannot be audited$/m,
	'ADD COLUMN of an encrypted type to a table the role may read is refused');
like($stderr,
	qr/^DETAIL:  The pgaudit object-audit role "auditor" would hold a privilege covering the column\. /m,
	'the refusal names the pgaudit object-audit role');

# ---------------------------------------------------------------------------
# 2. A column arriving in a relation the role may read

is( sql(q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'plain'::regclass AND attname = 's'}),
	'0', 'the refused column was not added');
refused('ALTER TABLE plain ADD COLUMN c enc_pair', 'c', 'plain',
	'ADD COLUMN of a composite holding an encrypted type is refused');
sql(q{CREATE TABLE parent (id int); CREATE TABLE kid () INHERITS (parent);
      GRANT SELECT ON kid TO auditor});
refused('ALTER TABLE parent ADD COLUMN s fieldcrypt.encrypted_text', 's', 'kid',
	'ADD COLUMN recursing into a child the role may read is refused');
sql(q{CREATE TABLE inner_t (id int); CREATE TABLE outer_t (id int, r inner_t);
      GRANT SELECT ON outer_t TO auditor});
refused('ALTER TABLE inner_t ADD COLUMN s fieldcrypt.encrypted_text', 'r', 'outer_t',
	'ADD COLUMN to a table whose row type a readable column uses is refused');
sql(q{CREATE TYPE comp AS (x int); CREATE TABLE ct (id int, c comp);
      GRANT SELECT ON ct TO auditor});
refused('ALTER TYPE comp ADD ATTRIBUTE s fieldcrypt.encrypted_text', 'c', 'ct',
	'ALTER TYPE ADD ATTRIBUTE on a composite used by a readable table is refused');
sql(q{CREATE TYPE comp2 AS (x int); CREATE TABLE typed OF comp2;
      GRANT SELECT ON typed TO auditor});
refused('ALTER TYPE comp2 ADD ATTRIBUTE s fieldcrypt.encrypted_text CASCADE', 's', 'typed',
	'ALTER TYPE ADD ATTRIBUTE CASCADE into a readable typed table is refused');
sql(q{CREATE VIEW v_plain AS SELECT id FROM secrets; GRANT SELECT ON v_plain TO auditor});
refused('CREATE OR REPLACE VIEW v_plain AS SELECT id, pw FROM secrets', 'pw', 'v_plain',
	'CREATE OR REPLACE VIEW adding an encrypted column to a readable view is refused');
is( sql(q{SELECT count(*) FROM pg_attribute WHERE attname = 's'
          AND attrelid IN ('parent'::regclass, 'kid'::regclass, 'inner_t'::regclass,
                           'comp'::regtype::oid, 'comp2'::regtype::oid, 'typed'::regclass)}),
	'0', 'none of the refused columns or attributes was added');

# Controls: column privileges on other columns do not cover a new column,
# and a composite without encrypted type may change.
sql(q{CREATE TABLE plain2 (id int); GRANT SELECT (id) ON plain2 TO auditor;
      ALTER TABLE plain2 ADD COLUMN s fieldcrypt.encrypted_text;
      ALTER TYPE comp ADD ATTRIBUTE y int});
is(sql(q{SELECT has_column_privilege('auditor', 'plain2', 's', 'SELECT')}), 'f',
	'control: ADD COLUMN passes where the role holds privileges on other columns only');

# ---------------------------------------------------------------------------
# 3. Membership in a role that holds such a privilege

refused('GRANT holder TO auditor', 'pw', 'secrets',
	'GRANT of a role holding SELECT on an encrypted table to the audit role is refused');
sql('CREATE ROLE audit_group NOLOGIN; GRANT audit_group TO auditor');
refused('GRANT holder TO audit_group', 'pw', 'secrets',
	'GRANT of such a role to a role the audit role belongs to is refused');
refused('ALTER GROUP holder ADD USER auditor', 'pw', 'secrets',
	'ALTER GROUP ... ADD USER the audit role is refused');
refused('CREATE ROLE middle IN ROLE holder ROLE auditor', 'pw', 'secrets',
	'CREATE ROLE ... IN ROLE ... ROLE the audit role is refused');
refused('GRANT pg_read_all_data TO auditor', 'pw', 'secrets',
	'GRANT pg_read_all_data to the audit role is refused');
refused('ALTER ROLE auditor SUPERUSER', 'pw', 'secrets',
	'making the audit role a superuser is refused');
sql('ALTER ROLE auditor NOINHERIT; GRANT holder TO auditor');
refused('ALTER ROLE auditor INHERIT', 'pw', 'secrets',
	'letting the audit role inherit from a role holding such a privilege is refused');
sql('REVOKE holder FROM auditor; ALTER ROLE auditor INHERIT');
refused('BEGIN; ALTER ROLE auditor RENAME TO auditor_old; ALTER ROLE holder RENAME TO auditor; COMMIT',
	'pw', 'secrets', 'renaming a role holding such a privilege into pgaudit.role is refused');
is( sql(q{SELECT pg_has_role('auditor', 'holder', 'MEMBER') OR pg_has_role('audit_group', 'holder', 'MEMBER'),
                 pg_has_role('auditor', 'pg_read_all_data', 'MEMBER'),
                 (SELECT rolsuper OR NOT rolinherit FROM pg_roles WHERE rolname = 'auditor'),
                 (SELECT count(*) FROM pg_roles WHERE rolname IN ('middle', 'auditor_old'))}),
	'f|f|f|0', 'no refused membership, attribute or name change was left behind');
sql('GRANT empty_role TO auditor');
is(sql(q{SELECT pg_has_role('auditor', 'empty_role', 'MEMBER')}), 't',
	'control: GRANT of a role without such privileges passes');
is( sql(q{BEGIN; SET LOCAL pgaudit.role = ''; GRANT holder TO auditor;
          SELECT pg_has_role('auditor', 'holder', 'MEMBER'); ROLLBACK}),
	't', 'control: the same GRANT passes when pgaudit.role is unset');

# ---------------------------------------------------------------------------
# 4. Ownership

refused('ALTER TABLE secrets OWNER TO auditor', 'pw', 'secrets',
	'giving an encrypted table to the audit role is refused');
sql(q{SET ROLE app_owner; CREATE TABLE own_t (id int, s fieldcrypt.encrypted_text)});
refused('REASSIGN OWNED BY app_owner TO auditor', 's', 'own_t',
	'REASSIGN OWNED to the audit role is refused');
refused('SET ROLE auditor; CREATE TABLE aud_t (id int, s fieldcrypt.encrypted_text)', 's', 'aud_t',
	'the audit role cannot create a table with an encrypted column');
is( sql(q{SELECT string_agg(c.relname || ':' || r.rolname, ',' ORDER BY c.relname)
          FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
          WHERE c.relname IN ('secrets', 'own_t', 'aud_t')}),
	'own_t:app_owner,secrets:' . getpwuid($>), 'no refused ownership change was left behind');
sql('SET ROLE auditor; CREATE TABLE aud_plain (id int)');

# ---------------------------------------------------------------------------
# The invariant: the audit role holds a privilege on plain columns only.

is( sql(q{SELECT string_agg(c.relname || '.' || a.attname, ',' ORDER BY c.relname, a.attnum)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            AND a.attnum > 0 AND NOT a.attisdropped
            AND has_column_privilege('auditor', c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES')}),
	'adp_plain.id,aud_plain.id,ct.id,ct.c,kid.id,outer_t.id,outer_t.r,plain.id,plain2.id,typed.x,v_plain.id',
	'the audit role holds privileges on plain columns only');

$node->stop;
done_testing();
