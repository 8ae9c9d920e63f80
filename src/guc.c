/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Definition of every fieldcrypt.* configuration parameter.
 *
 *	  Parameters that decide where the cluster key comes from are
 *	  PGC_POSTMASTER: the keyring is unsealed once, at server start.
 *
 * src/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "guc.h"
#include "columns/nullguard.h"
#include "keys/cluster_2pc.h"
#include "keys/crypto.h"
#include "keys/keyapi.h"
#include "keys/keyring.h"
#include "keys/keystore.h"
#include "keys/node_conn.h"
#include "keys/pkcs11.h"
#include "keys/prepared.h"
#include "keys/rotstate.h"
#include "rotation/reencrypt.h"
#include "tde/keyed.h"
#include "tde/tam.h"
#include "tde/tam_cache.h"

static const struct config_enum_entry provider_options[] = {
	{"file", FC_PROVIDER_FILE, false},
	{"command", FC_PROVIDER_COMMAND, false},
	{NULL, 0, false}
};

static const struct config_enum_entry crypto_library_options[] = {
	{"auto", FC_CRYPTO_AUTO, false},
	{"openssl", FC_CRYPTO_OPENSSL, false},
	{NULL, 0, false}
};

static const struct config_enum_entry plain_indexes_options[] = {
	{"allow", FC_PLAIN_INDEXES_ALLOW, false},
	{"warn", FC_PLAIN_INDEXES_WARN, false},
	{"refuse", FC_PLAIN_INDEXES_REFUSE, false},
	{NULL, 0, false}
};

/* Register all parameters; called from _PG_init. */
void
fc_define_gucs(void)
{
	DefineCustomEnumVariable("fieldcrypt.key_provider",
							 "Where the cluster key-encryption key comes from.",
							 "\"file\" keeps a random key in fieldcrypt.key_file; "
							 "\"command\" runs fieldcrypt.key_command at server start.",
							 &fc_key_provider, FC_PROVIDER_FILE, provider_options,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomStringVariable("fieldcrypt.key_file",
							   "File holding the cluster key-encryption key (provider \"file\").",
							   "Empty means fieldcrypt_cluster.key beside postgresql.conf when that is "
							   "outside the data directory, else pg_fieldcrypt/cluster.key in the data "
							   "directory (where a key made by version 1.0 is also still found).",
							   &fc_key_file, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	DefineCustomStringVariable("fieldcrypt.key_command",
							   "Shell command printing the cluster key-encryption key in hex (provider \"command\").",
							   NULL,
							   &fc_key_command, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.key_command_timeout",
							"Seconds fieldcrypt.key_command may run before it is killed.",
							NULL,
							&fc_key_command_timeout, 30, 1, 3600,
							PGC_POSTMASTER, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.cluster_command_timeout",
							"Longest wait for one answer of another node during a Citus key change.",
							"Bounds connecting and each command sent to a worker. A wait cut short "
							"before the coordinator's commit fails the key change; after it, the "
							"worker is left to fieldcrypt.recover_cluster_key_changes() with a WARNING.",
							&fc_cluster_command_timeout, 30000, 100, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.max_databases",
							"Number of databases whose keys shared memory can hold.",
							NULL,
							&fc_max_databases, 64, 1, 100000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("fieldcrypt.auto_activate",
							 "CREATE EXTENSION activates encryption with a system-generated key.",
							 NULL,
							 &fc_auto_activate, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.kdf_iterations",
							"PBKDF2-HMAC-SHA256 iterations for new key generations.",
							"At least 600000; existing generations keep the count they were made with.",
							&fc_kdf_iterations, 600000, 600000, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("fieldcrypt.analyze_values",
							 "ANALYZE of encrypted_heap tables keeps their statistics in plaintext in pg_statistic.",
							 "Off: they are kept encrypted in fieldcrypt.tde_statistic, and CREATE STATISTICS on these tables is refused.",
							 &fc_analyze_values, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.tde_cache_size",
							"Shared memory for decrypted rows of encrypted_heap tables, read again without decrypting.",
							"0 turns the cache off. The cached rows are plaintext in shared memory, "
							"kept out of core dumps, never written to disk.",
							&fc_tde_cache_size_mb, 0, 0, 1024 * 1024,
							PGC_POSTMASTER, GUC_UNIT_MB, NULL, NULL, NULL);

	DefineCustomEnumVariable("fieldcrypt.tde_plain_indexes",
							 "What creating an index that stores plaintext values of an encrypted_heap table does.",
							 "allow, warn (a WARNING with a hint toward the keyed hash operator classes) or refuse (an ERROR).",
							 &fc_tde_plain_indexes, FC_PLAIN_INDEXES_WARN, plain_indexes_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomStringVariable("fieldcrypt.hsm_pin_command",
							   "Shell command printing the user PIN of the HSM that holds the tenant key.",
							   "Its standard output, without the final newline, is the PIN.",
							   &fc_hsm_pin_command, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("fieldcrypt.hsm_modules",
							   "PKCS#11 modules that fieldcrypt_admin members may name in use_hsm_tenant_key.",
							   "Comma-separated absolute paths; superusers may name any module.",
							   &fc_hsm_modules, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	/* re-encryption after a key change (reencrypt.c) */
	DefineCustomBoolVariable("fieldcrypt.reencrypt",
							 "Re-encrypt existing values in the background after a key change.",
							 "off postpones it: no worker starts, running ones stop after their "
							 "current batch, and old generations are kept.",
							 &fc_reencrypt_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.reencrypt_rows_per_second",
							"Rows per second the re-encryption worker rewrites at most after a key change.",
							"0 means no limit.",
							&fc_reencrypt_rows_per_second, FC_REENCRYPT_DEFAULT_RATE, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.reencrypt_batch_pages",
							"Heap pages of a table the re-encryption worker rewrites per transaction.",
							NULL,
							&fc_reencrypt_batch_pages, 64, 1, 131072,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("fieldcrypt.test_reencrypt_pause_after_batches",
							"Test only: the re-encryption worker pauses after this many batches.",
							"-1 (the default) never pauses; 0 pauses before the first batch.",
							&fc_test_reencrypt_pause_after_batches, -1, -1, INT_MAX,
							PGC_SIGHUP, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);

	DefineCustomBoolVariable("fieldcrypt.test_reencrypt_pause_before_destroy",
							 "Test only: the re-encryption worker pauses before destroying old generations.",
							 NULL,
							 &fc_test_reencrypt_pause_before_destroy, false,
							 PGC_SIGHUP, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);

	DefineCustomBoolVariable("fieldcrypt.test_reencrypt_pause_before_rekey",
							 "Test only: the re-encryption worker pauses before rebuilding keyed hash indexes.",
							 NULL,
							 &fc_test_reencrypt_pause_before_rekey, false,
							 PGC_SIGHUP, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);

	DefineCustomStringVariable("fieldcrypt.test_reencrypt_pause_before_update",
							   "Test only: the re-encryption worker pauses before it updates the rows of a page "
							   "of the table of this name whose stale values are out of line.",
							   "It has looked at the page already: another session's update then races it. "
							   "Empty (the default): never.",
							   &fc_test_reencrypt_pause_before_update, "",
							   PGC_SIGHUP, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);

	DefineCustomBoolVariable("fieldcrypt.test_prepared_skip_apply",
							 "Test only: COMMIT PREPARED leaves the key change it committed unapplied.",
							 "The next key change, fieldcrypt.recover_cluster_key_changes() or the next server start applies it.",
							 &fc_test_prepared_skip_apply, false,
							 PGC_SUSET, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);

	DefineCustomBoolVariable("fieldcrypt.test_cluster_skip_commit_prepared",
							 "Test only: a Citus coordinator commits a key change without committing it on its workers.",
							 "As if the coordinator stopped right after its commit; "
							 "fieldcrypt.recover_cluster_key_changes() finishes it.",
							 &fc_test_cluster_skip_commit_prepared, false,
							 PGC_SUSET, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);

	DefineCustomBoolVariable("fieldcrypt.keep_on_null_update",
							 "An UPDATE that assigns NULL to an encrypted column keeps the stored value.",
							 "Covers NULL constants, parameters that are NULL when the statement runs, "
							 "and EXCLUDED values of INSERT ... ON CONFLICT DO UPDATE; "
							 "SET column = DEFAULT still clears the value.",
							 &fc_keep_on_null_update, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomEnumVariable("fieldcrypt.crypto_library",
							 "Which implementations of AES-256-GCM encrypt and decrypt data.",
							 "\"auto\" uses GNU Nettle for short messages and OpenSSL for the others, "
							 "or OpenSSL only when OpenSSL runs in FIPS mode; \"openssl\" uses only "
							 "OpenSSL. Both write and read the same bytes.",
							 &fc_crypto_library, FC_CRYPTO_AUTO, crypto_library_options,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("fieldcrypt");
}
