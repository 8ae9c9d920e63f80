--
-- key_admin: what ordinary roles may do. Members of fieldcrypt_admin manage the
-- key without being superusers; everyone may read fieldcrypt.key_status (granted
-- to PUBLIC) and call fieldcrypt.is_data_encryption_active().
--
\set regress_db :DBNAME
SET client_min_messages = warning;
DROP DATABASE IF EXISTS fc_key_admin;
DROP DATABASE IF EXISTS fc_key_admin_copy;
DROP ROLE IF EXISTS regress_fc_keyadmin;
DROP ROLE IF EXISTS regress_fc_nobody;
RESET client_min_messages;
CREATE DATABASE fc_key_admin TEMPLATE template0;
CREATE ROLE regress_fc_keyadmin LOGIN;
CREATE ROLE regress_fc_nobody LOGIN;
\c fc_key_admin
CREATE EXTENSION fieldcrypt;
SELECT fieldcrypt.set_data_encryption_key('Admin-Key-0001');

-- not a member yet
SET ROLE regress_fc_keyadmin;
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- a member of fieldcrypt_admin may retrieve and change the key
GRANT fieldcrypt_admin TO regress_fc_keyadmin;
SET ROLE regress_fc_keyadmin;
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT fieldcrypt.set_data_encryption_key('Admin-Key-0002');
SELECT fieldcrypt.retrieve_data_encryption_key();
SELECT generation, key_source, generations_kept FROM fieldcrypt.key_status;
-- membership does not open the metadata for writing
UPDATE fieldcrypt.key_generations SET iterations = iterations;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT fieldcrypt.retrieve_data_encryption_key();

-- a role without membership may read the status and ask whether encryption is active
SET ROLE regress_fc_nobody;
SELECT fieldcrypt.is_data_encryption_active();
SELECT active, key_loaded, generation, key_source, rotation_recommended,
       generations_kept, keyring
  FROM fieldcrypt.key_status;
-- but not the metadata table itself
SELECT count(*) FROM fieldcrypt.key_generations;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- in a copy whose key is not loaded, the answers come from the metadata
\c :regress_db
CREATE DATABASE fc_key_admin_copy TEMPLATE fc_key_admin;
\c fc_key_admin_copy
SET ROLE regress_fc_nobody;
SELECT fieldcrypt.is_data_encryption_active();
SELECT active, key_loaded, generation, key_source, generations_kept FROM fieldcrypt.key_status;
RESET ROLE;
-- and a member of fieldcrypt_admin may restore the key
SET ROLE regress_fc_keyadmin;
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.set_data_encryption_key('Wrong-But-Strong-1');
\echo :LAST_ERROR_SQLSTATE
SELECT fieldcrypt.set_data_encryption_key('Admin-Key-0002');
SELECT fieldcrypt.retrieve_data_encryption_key();
RESET ROLE;

-- membership can be taken away again
REVOKE fieldcrypt_admin FROM regress_fc_keyadmin;
SET ROLE regress_fc_keyadmin;
SELECT fieldcrypt.retrieve_data_encryption_key();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

\c :regress_db
DROP DATABASE fc_key_admin_copy;
DROP DATABASE fc_key_admin;
DROP ROLE regress_fc_keyadmin;
DROP ROLE regress_fc_nobody;
