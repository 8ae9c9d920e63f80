# An extension created in single-user mode: objects created there get OIDs
# below FirstNormalObjectId, like initdb's own. Encrypted columns must still
# read as NULL, refuse indexes, and decrypt for the privileged.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FcNode;
use FcKeyTest;

my $node = FcNode::new_node('single');
my $sql = <<'EOS';
CREATE EXTENSION fieldcrypt;
CREATE TABLE m (id int, pw fieldcrypt.encrypted_text);
INSERT INTO m VALUES (1, 'Single-User-Secret-1');
EOS
my ($out, $err);
IPC::Run::run([ 'postgres', '--single', '-D', $node->data_dir, 'postgres' ],
	'<', \$sql, '>', \$out, '2>', \$err);
unlike($err, qr/ERROR/, 'single-user mode created the extension and wrote a value') or diag($err);

$node->start;
my $typoid = $node->safe_psql('postgres', q{SELECT 'fieldcrypt.encrypted_text'::regtype::oid});
cmp_ok($typoid, '<', 16384, 'the type has an OID below FirstNormalObjectId');
sql_is($node, 'postgres', 'SELECT pw IS NULL, pw FROM m', 'f|',
	'reading the column returns NULL (and IS NULL sees the stored value)');
sql_is($node, 'postgres', 'SELECT fieldcrypt.decrypt(pw) FROM m', 'Single-User-Secret-1',
	'the superuser decrypts');
sql_fails($node, 'postgres', 'CREATE INDEX ON m (pw)', '0A000',
	'encrypted column "pw" of table "m" cannot be indexed', 'the index is refused');
$node->stop;
done_testing();
