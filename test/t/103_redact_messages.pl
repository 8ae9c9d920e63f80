# Remembered secrets (src/keys/redact.c): a passphrase given to set_data_encryption_key and
# a plaintext written to an encrypted column are remembered for the rest of their top-level
# statement, and any later message of that statement that quotes them (here a RAISE of a DO
# block) reaches the server log with "[redacted]" in their place, while the client gets the
# message as PostgreSQL made it. (The literal masking of statement texts is tested in
# 120_redact_literals.pl; this is the other mechanism.)
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FcNode;
use FcKeyTest;

my $PASS = 'Tap103-Pass-Phrase-9!';
my $PLAIN = 'Tap103-Plaintext-Value-7';

my $node = FcNode::new_node('redact');
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE r');
safe_tls($node, 'r', 'CREATE EXTENSION fieldcrypt; CREATE TABLE s (v fieldcrypt.encrypted_text)');

my $offset = -s $node->logfile;
my ($rc, $out, $err) = FcNode::psql_tls($node, 'r', <<"EOS");
DO \$\$
DECLARE k text := concat('Tap103-Pass', '-Phrase-9!');
BEGIN
  PERFORM fieldcrypt.set_data_encryption_key(k);
  RAISE EXCEPTION 'refusing key %', k;
END \$\$;
EOS
isnt($rc, 0, 'the DO block fails');
like($err, qr/ERROR:  refusing key \Q$PASS\E$/m, 'the client gets the message as it was raised');

my ($rc2, undef, $err2) = FcNode::psql_tls($node, 'r', <<"EOS");
DO \$\$
DECLARE v text := concat('Tap103-Plaintext', '-Value-7');
BEGIN
  INSERT INTO s VALUES (v::fieldcrypt.encrypted_text);
  RAISE EXCEPTION 'wrote %', v;
END \$\$;
EOS
like($err2, qr/ERROR:  wrote \Q$PLAIN\E$/m, 'the client gets the second message as it was raised');

my $log = log_since($node, $offset);
like($log, qr/ERROR:  refusing key \[redacted\]$/m, 'the server log has the passphrase masked in the message');
like($log, qr/ERROR:  wrote \[redacted\]$/m, 'the server log has the plaintext masked in the message');
unlike($log, qr/\Q$PASS\E/, 'the passphrase is nowhere in the server log');
unlike($log, qr/\Q$PLAIN\E/, 'the plaintext is nowhere in the server log');
sql_is($node, 'r', 'SELECT generation FROM fieldcrypt.key_status', '1', 'the failed DO block changed no key');

$node->stop;
done_testing();
