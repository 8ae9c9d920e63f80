/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The re-encryption launcher: a static background worker (no database)
 *	  that starts one worker per database whose keys hold an older
 *	  generation, and restarts failed ones after a back-off.  Key changes
 *	  wake it through the latch in keys/rotstate.c.
 *
 * src/rotation/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "keys/keystore.h"
#include "rotation/rotation.h"

#define LAUNCHER_NAPTIME_MS		5000
#define START_TIMEOUT_MS		60000

PGDLLEXPORT void fieldcrypt_reencrypt_launcher_main(Datum arg);

/* Register the launcher; called from _PG_init. */
void
fc_reencrypt_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "fieldcrypt");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "fieldcrypt_reencrypt_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "fieldcrypt re-encryption launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "fieldcrypt launcher");
	RegisterBackgroundWorker(&bgw);
}

/* Register a worker for dboid; false if no background worker slot is free. */
static bool
start_worker(Oid dboid)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "fieldcrypt");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "fieldcrypt_reencrypt_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "fieldcrypt re-encryption of database %u", dboid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "fieldcrypt re-encryption");
	bgw.bgw_main_arg = ObjectIdGetDatum(dboid);
	return RegisterDynamicBackgroundWorker(&bgw, NULL);
}

/* One round of the launcher: start a worker where one is needed. */
static void
launch_pending(void)
{
	Oid		   *dbs = palloc(sizeof(Oid) * fc_shared->max_dbs);
	uint32	   *gens = palloc(sizeof(uint32) * fc_shared->max_dbs);
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(fc_shared->lock, LW_SHARED);
	if (fc_shared->ring_state == FC_RING_OK && fc_reencrypt_enabled)
		for (int i = 0; i < fc_shared->max_dbs; i++)
			if (OidIsValid(fc_shared->dbs[i].dboid) &&
				(fc_shared->dbs[i].ngens > 1 || fc_shared->dbs[i].tde.ngens > 1))
			{
				dbs[n] = fc_shared->dbs[i].dboid;
				gens[n++] = fc_shared->dbs[i].current_gen;
			}
	LWLockRelease(fc_shared->lock);

	for (int i = 0; i < n; i++)
	{
		FcRotSlot  *slot;
		bool		launch = false;

		LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
		slot = fc_rotstate_find_slot(dbs[i], true);
		if (slot == NULL)
		{
			LWLockRelease(fc_rotstate->lock);
			break;
		}
		switch ((SlotState) slot->state)
		{
			case SLOT_FREE:
				launch = true;
				break;
			case SLOT_STARTING:
				launch = TimestampDifferenceExceeds(slot->since, now, START_TIMEOUT_MS);
				break;
			case SLOT_RUNNING:
				break;
			case SLOT_BLOCKED:
				launch = slot->blocked_gen != gens[i];
				break;
			case SLOT_HELD:
				launch = now >= slot->hold_until;
				break;
		}
		if (launch)
		{
			slot->state = SLOT_STARTING;
			slot->since = now;
		}
		LWLockRelease(fc_rotstate->lock);
		if (launch && !start_worker(dbs[i]))
		{
			LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
			slot->state = SLOT_HELD;
			slot->hold_until = TimestampTzPlusMilliseconds(now, BACKOFF_MIN_MS);
			LWLockRelease(fc_rotstate->lock);
			ereport(LOG,
					(errmsg("fieldcrypt: could not start a re-encryption worker for database %u", dbs[i]),
					 errhint("Raise max_worker_processes.")));
		}
	}

	/* forget idle slots of databases that have nothing left to do */
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	for (int s = 0; s < fc_rotstate->nslots; s++)
	{
		FcRotSlot  *slot = &fc_rotstate->slots[s];
		bool		pending = false;

		if (!OidIsValid(slot->dboid) || slot->state == SLOT_RUNNING ||
			slot->state == SLOT_STARTING)
			continue;
		for (int i = 0; i < n && !pending; i++)
			pending = dbs[i] == slot->dboid;
		if (!pending)
			memset(slot, 0, sizeof(FcRotSlot));
	}
	LWLockRelease(fc_rotstate->lock);
	pfree(dbs);
	pfree(gens);
}

static void
launcher_exit(int code, Datum arg)
{
	fc_rotstate_set_launcher(NULL);
}

/* Main loop of the launcher. */
void
fieldcrypt_reencrypt_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	fc_rotstate_set_launcher(&MyProc->procLatch);
	before_shmem_exit(launcher_exit, (Datum) 0);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		launch_pending();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAPTIME_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
