/*-------------------------------------------------------------------------
 *
 * fieldcrypt.c
 *	  Module entry point: refuses to load outside shared_preload_libraries,
 *	  defines the parameters, requests shared memory and installs hooks.
 *
 * src/fieldcrypt.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"

#include "columns/enctypes.h"
#include "columns/hints.h"
#include "guc.h"
#include "hooks.h"
#include "keys/keyapi.h"
#include "keys/keystore.h"
#include "keys/prepared.h"
#include "keys/rotstate.h"
#include "keys/redact.h"
#include "rotation/reencrypt.h"
#include "tde/tam_cache.h"
#include "keys/wal.h"
#include "columns/writeonly.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool loaded = false;

/* shmem_request_hook: reserve the key store and its lock. */
static void
fc_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	fc_keystore_request();
	fc_rotstate_request();
	fc_tam_cache_request();
}

/* shmem_startup_hook: create the key store and load the keyring. */
static void
fc_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	fc_keystore_startup();
	fc_rotstate_startup();
	fc_tam_cache_startup();
}

/* Module load. */
void
_PG_init(void)
{
	if (loaded)
		return;
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("fieldcrypt must be loaded via shared_preload_libraries"),
				 errhint("Add fieldcrypt to shared_preload_libraries in postgresql.conf "
						 "and restart the server.")));
	loaded = true;

	fc_define_gucs();
	fc_wal_init(fc_keystore_redo_image);	/* wal.c knows nothing of the store */
	fc_wal_set_prepared_redo(fc_prepared_redo);

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = fc_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = fc_shmem_startup;

	fc_reencrypt_register_launcher();
	fc_prepared_register_worker();
	fc_keyapi_init();
	fc_tam_cache_init();
	fc_enctypes_init();
	fc_redact_init();
	fc_hints_init();			/* after redaction: its hint is what redaction sees */
	fc_writeonly_init();
	fc_hooks_init();
}
