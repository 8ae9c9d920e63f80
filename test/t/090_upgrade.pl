# Version 1.0 is what users run: a database made with fieldcrypt 1.0 is updated
# with ALTER EXTENSION fieldcrypt UPDATE and keeps every value, and ends up with
# the same objects (and the same function definitions) as a database made with
# the current version.
#
# The 1.0 database holds encrypted_text/encrypted_bytea values written under an
# administrator key and an encrypted_heap table with inline and out-of-line
# rows. After the update (and after a restart) every value decrypts and every
# row reads back as written; the objects of the extension, described with
# pg_describe_object and, for functions, pg_get_functiondef, equal those of a
# fresh CREATE EXTENSION fieldcrypt.
# Also: a schema "fieldcrypt" that a plain login owns, or that holds its objects, is refused by
# CREATE EXTENSION and by the update from 1.0.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $KEY = 'Upgrade-Key#2026-One';
my $node = FcNode::new_node('upgrade');
$node->start;

my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'fieldcrypt'");
isnt($current, '1.0', "the default version ($current) is newer than 1.0");

# --- a database made with 1.0 -------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE old10');
safe_tls($node, 'old10', qq{
CREATE EXTENSION fieldcrypt VERSION '1.0';
SELECT fieldcrypt.set_data_encryption_key('$KEY');
CREATE TABLE mailbox (id int PRIMARY KEY, pw fieldcrypt.encrypted_text,
                      blob fieldcrypt.encrypted_bytea);
INSERT INTO mailbox SELECT g, 'secret-' || g, decode(md5(g::text), 'hex')
  FROM generate_series(1, 200) g;
CREATE TABLE ledger (id int PRIMARY KEY, note text) USING encrypted_heap;
INSERT INTO ledger SELECT g, repeat(md5(g::text), CASE WHEN g % 10 = 0 THEN 400 ELSE 1 END)
  FROM generate_series(1, 300) g;
});
sql_is($node, 'old10', "SELECT extversion FROM pg_extension WHERE extname = 'fieldcrypt'",
	'1.0', 'the old database runs version 1.0');

my $values_sql = q{SELECT md5(string_agg(id || ':' || fieldcrypt.decrypt(pw) || ':' ||
                          encode(fieldcrypt.decrypt(blob), 'hex'), ',' ORDER BY id)) FROM mailbox};
my $rows_sql = q{SELECT count(*) || ':' || md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM ledger};
my $values_before = safe_tls($node, 'old10', $values_sql);
my $rows_before = safe_tls($node, 'old10', $rows_sql);
my $values_expected = $node->safe_psql('postgres', q{SELECT md5(string_agg(g || ':secret-' || g || ':' ||
                          md5(g::text), ',' ORDER BY g)) FROM generate_series(1, 200) g});
is($values_before, $values_expected, 'values written under 1.0 decrypt under 1.0');

# --- update ---------------------------------------------------------------------
safe_tls($node, 'old10', 'ALTER EXTENSION fieldcrypt UPDATE');
sql_is($node, 'old10', "SELECT extversion FROM pg_extension WHERE extname = 'fieldcrypt'",
	$current, "ALTER EXTENSION fieldcrypt UPDATE reaches $current");
is(safe_tls($node, 'old10', $values_sql), $values_before, 'encrypted column values survive the update');
is(safe_tls($node, 'old10', $rows_sql), $rows_before, 'encrypted_heap rows survive the update');

$node->restart;
is(safe_tls($node, 'old10', $values_sql), $values_before, 'and a restart');
is(safe_tls($node, 'old10', $rows_sql), $rows_before, 'encrypted_heap rows after the restart');
safe_tls($node, 'old10', q{INSERT INTO mailbox VALUES (201, 'after-update', '\x00ff');
                            INSERT INTO ledger VALUES (301, 'after-update')});
sql_is($node, 'old10', q{SELECT fieldcrypt.decrypt(pw) FROM mailbox WHERE id = 201},
	'after-update', 'new values are written and read after the update');

# --- same objects as a fresh database -------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE new11');
safe_tls($node, 'new11', 'CREATE EXTENSION fieldcrypt');
my $objects_sql = q{
SELECT string_agg(d, E'\n' ORDER BY d) FROM (
  SELECT pg_describe_object(classid, objid, 0) ||
         CASE WHEN classid = 'pg_proc'::regclass
              THEN ' ' || md5(pg_get_functiondef(objid)) || ' ' ||
                   (SELECT coalesce(array_to_string(proacl, ','), '') FROM pg_proc WHERE oid = objid)
              ELSE '' END AS d
    FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'fieldcrypt')) s};
my $upgraded = safe_tls($node, 'old10', $objects_sql);
my $fresh = safe_tls($node, 'new11', $objects_sql);
ok(length($fresh) > 1000, 'the object list of a fresh database is not empty');
is($upgraded, $fresh, 'an updated database has the objects of a fresh one');

my $acl_sql = q{SELECT string_agg(c.relname || ' ' || coalesce(array_to_string(c.relacl, ','), ''), E'\n' ORDER BY c.relname)
                  FROM pg_class c WHERE c.relnamespace = 'fieldcrypt'::regnamespace};
is(safe_tls($node, 'old10', $acl_sql), safe_tls($node, 'new11', $acl_sql),
	'and the same relations with the same privileges');

# --- the schema must be the extension's own ------------------------------------------------
# CREATE EXTENSION reuses an existing schema "fieldcrypt" whoever owns it; its owner could rename
# fieldcrypt's objects and put its own in their place. A plain login who may create schemas in
# a database (CREATE on it) prepares one: the install, and the update of a 1.0 database made in
# such a schema, are refused before anything is created.
$node->safe_psql('postgres', q{CREATE ROLE mallory LOGIN; CREATE DATABASE trap; GRANT CREATE ON DATABASE trap TO mallory;
  CREATE DATABASE trap10; GRANT CREATE ON DATABASE trap10 TO mallory; CREATE DATABASE trapfn});
$node->safe_psql('trap', 'SET ROLE mallory; CREATE SCHEMA fieldcrypt');
my ($rc, $out, $err) = $node->psql('trap', 'CREATE EXTENSION fieldcrypt', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: schema "fieldcrypt" is owned by role "mallory", which is not a superuser/,
	'CREATE EXTENSION refuses a schema "fieldcrypt" owned by a plain login (42501)');
is($node->safe_psql('trap', q{SELECT count(*) FROM pg_extension WHERE extname = 'fieldcrypt'}), '0',
	'and creates nothing');
$node->safe_psql('trap10', 'SET ROLE mallory; CREATE SCHEMA fieldcrypt');
$node->safe_psql('trap10', q{CREATE EXTENSION fieldcrypt VERSION '1.0'});
($rc, $out, $err) = $node->psql('trap10', 'ALTER EXTENSION fieldcrypt UPDATE', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: schema "fieldcrypt" is owned by role "mallory", which is not a superuser/,
	'ALTER EXTENSION UPDATE refuses a 1.0 database whose schema a plain login owns');
is($node->safe_psql('trap10', q{SELECT extversion FROM pg_extension WHERE extname = 'fieldcrypt'}), '1.0',
	'and leaves it at 1.0');
# a superuser's schema holding a plain login's object
$node->safe_psql('trapfn', q{CREATE SCHEMA fieldcrypt; GRANT CREATE ON SCHEMA fieldcrypt TO mallory;
  SET ROLE mallory; CREATE FUNCTION fieldcrypt.decoy() RETURNS int LANGUAGE sql AS 'SELECT 1'});
($rc, $out, $err) = $node->psql('trapfn', 'CREATE EXTENSION fieldcrypt', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: schema "fieldcrypt" holds objects owned by role "mallory", which is not a superuser/,
	'CREATE EXTENSION refuses a schema holding a plain login\'s object');
$node->safe_psql('trapfn', 'DROP FUNCTION fieldcrypt.decoy()');
($rc, $out, $err) = $node->psql('trapfn', 'CREATE EXTENSION fieldcrypt', extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  42501: role "mallory" may create objects in schema "fieldcrypt", and is not a superuser/,
	'CREATE EXTENSION refuses a schema where a plain login may create objects');
$node->safe_psql('trapfn', 'REVOKE CREATE ON SCHEMA fieldcrypt FROM mallory');
$node->safe_psql('trapfn', 'CREATE EXTENSION fieldcrypt');
is($node->safe_psql('trapfn', q{SELECT extversion FROM pg_extension WHERE extname = 'fieldcrypt'}), $current,
	'a superuser\'s empty schema "fieldcrypt" is used');

$node->stop;
done_testing();
