/*-------------------------------------------------------------------------
 *
 * reencrypt.c
 *	  Online re-encryption of every encrypted column value of a database
 *	  after a key change, then destruction of the old key generations.
 *
 *	  Processes.  A launcher (static background worker, no database, started
 *	  once recovery has finished, so also after a promotion) looks every few
 *	  seconds, and at once when a key change commits (fc_reencrypt_wake), for
 *	  databases whose keys in shared memory hold more than one generation:
 *	  such a database has values to re-encrypt.  The keyring is therefore the
 *	  durable record of "work to do" and survives any crash; nothing else
 *	  has to be persisted to find the work again.  For each one it starts a
 *	  dynamic worker connected to that database, unless one runs already.
 *	  A worker that fails is started again after a back-off (5 s doubling,
 *	  at most 5 minutes).
 *
 *	  Algorithm of a worker (one database):
 *	  1. Passes.  A pass visits every table with a column of an encrypted
 *		 type (or a domain over one), in OID order, and rewrites it in
 *		 batches of fieldcrypt.reencrypt_batch_pages heap pages:
 *
 *			UPDATE ONLY t SET c = fieldcrypt._reencrypt(c), ...
 *			 WHERE ctid >= '(b,0)' AND ctid < '(b+n,0)'
 *			   AND (fieldcrypt._stale(c) OR ...)
 *
 *		 Each batch is one transaction that also records where the pass is
 *		 (table, next block, counters) in fieldcrypt.reencryption, so a
 *		 crash at any point resumes at the last committed batch.  The worker
 *		 runs in READ COMMITTED: when a concurrent transaction updated a row
 *		 first, EvalPlanQual re-evaluates the WHERE clause on the newest row
 *		 version, whose value is already under the new generation, so the
 *		 worker never overwrites a newer value; a row whose other columns
 *		 changed gets its own newest value re-encrypted.
 *	  2. A pass that re-encrypted anything is followed by a wait for every
 *		 transaction of this database that holds a snapshot (they may still
 *		 copy old row versions elsewhere, e.g. INSERT ... SELECT), and by
 *		 another pass.  A pass that started after such a wait (a check pass)
 *		 first looks for a stale value in each table with one read-only
 *		 statement and rewrites only tables where it finds one; a check pass
 *		 that re-encrypted nothing ends the loop.
 *	  3. The old generations are destroyed, under the cluster-wide key change
 *		 lock: their metadata rows go, the keyring is rewritten without them
 *		 (fc_db_stage: written, fsynced and WAL-logged) before the commit,
 *		 and shared memory follows after it.
 *
 *	  _stale(v) is true when v is under a generation that is not current and
 *	  that this database still holds; values under a generation it no longer
 *	  has, and values that cannot be authenticated, are left as they are
 *	  (they were unreadable before and stay so).  Values inside arrays or
 *	  composite columns, and in materialized views, cannot be rewritten in
 *	  place: the worker re-encrypts everything else, keeps the old
 *	  generations and says why (the re-encryption is "blocked"; a later key
 *	  change is allowed).  Temporary tables of other sessions are invisible
 *	  to it.
 *
 *	  Foreground traffic: the worker sleeps between batches so that it
 *	  rewrites at most fieldcrypt.reencrypt_rows_per_second rows per second,
 *	  and it runs with session_replication_role = replica, so ordinary
 *	  user triggers and rules do not fire for its updates (ENABLE ALWAYS
 *	  ones still do).  Its statements hold no value, only OIDs and block
 *	  numbers, so nothing it runs can log a secret.
 *
 *	  Shared memory: one slot per database (fieldcrypt.max_databases), under
 *	  the LWLock of tranche "fieldcrypt reencrypt"; it tells the launcher
 *	  whether a worker runs and feeds fieldcrypt.rotation_progress.
 *
 *	  TDE plug-in point (not implemented here; the encrypted_heap engine is
 *	  another branch).  Re-encryption of encrypted_heap tables after
 *	  fieldcrypt.rotate_tde_key() fits this worker as a second kind of table
 *	  in run_pass(): for a relation whose access method is encrypted_heap,
 *	  run_batch() would run
 *
 *			UPDATE ONLY t SET c1 = c1
 *			 WHERE ctid >= '(b,0)' AND ctid < '(b+n,0)'
 *			   AND fieldcrypt._tde_tuple_generation(t.tableoid, ctid) <> <current>
 *
 *	  (the access method writes every new row version under the current TDE
 *	  generation), with the same batches, progress row, throttle, resume,
 *	  EvalPlanQual protection and check passes as for columns; the launcher
 *	  would also start a worker for a database holding more than one TDE
 *	  generation, and destroy_old_generations() would end with the TDE
 *	  engine's destruction of unused generations (drop_unused_tde_keys).
 *	  Entry point to add: a function fc_reencrypt_tde_pending(Oid dboid) in
 *	  the TDE key store for the launcher, and relkind/relam tests in
 *	  list_tables() and run_batch().
 *
 * src/rotation/reencrypt.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/relation.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/vacuum.h"
#include "nodes/makefuncs.h"
#include "utils/syscache.h"
#include "tde/tam_crypt.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"

#include "columns/enctypes.h"
#include "guc.h"
#include "keys/keyapi.h"
#include "keys/keystore.h"
#include "rotation/reencrypt.h"

#define LAUNCHER_NAPTIME_MS		5000
#define START_TIMEOUT_MS		60000
#define BACKOFF_MIN_MS			5000
#define BACKOFF_MAX_MS			300000
#define STATE_TABLE				"reencryption"

PG_FUNCTION_INFO_V1(fieldcrypt_reencrypt_text);
PG_FUNCTION_INFO_V1(fieldcrypt_reencrypt_bytea);
PG_FUNCTION_INFO_V1(fieldcrypt_reencrypt_stale);
PG_FUNCTION_INFO_V1(fieldcrypt_rotation_progress);

PGDLLEXPORT void fieldcrypt_reencrypt_launcher_main(Datum arg);
PGDLLEXPORT void fieldcrypt_reencrypt_worker_main(Datum arg);

typedef enum SlotState
{
	SLOT_FREE = 0,				/* no worker */
	SLOT_STARTING,				/* launcher registered a worker */
	SLOT_RUNNING,				/* worker attached (pid) */
	SLOT_BLOCKED,				/* finished, old generations kept (blocked_gen) */
	SLOT_HELD					/* failed or stopped: not before hold_until */
} SlotState;

typedef enum Phase
{
	PHASE_STARTING = 0,
	PHASE_COUNTING,
	PHASE_REENCRYPTING,
	PHASE_WAITING,
	PHASE_DESTROYING,
	PHASE_PAUSED
} Phase;

static const char *const phase_names[] = {
	"starting", "counting", "re-encrypting", "waiting for older transactions",
	"destroying old generations", "paused for testing"
};

typedef struct ReencSlot
{
	Oid			dboid;			/* InvalidOid: unused */
	int32		state;			/* SlotState */
	int32		pid;
	TimestampTz since;			/* STARTING: launched at */
	TimestampTz hold_until;		/* HELD */
	uint32		blocked_gen;	/* BLOCKED: current generation then */
	int32		failures;
	/* progress, while RUNNING */
	int32		phase;
	uint32		from_gen;
	uint32		to_gen;
	int32		pass;
	int32		tables_done;
	int32		tables_total;
	int64		rows_done;
	int64		rows_total;
	int64		rows_at_attach; /* rows_done when this process attached */
	TimestampTz started_at;		/* of the whole re-encryption */
	TimestampTz attached_at;	/* of this process */
} ReencSlot;

typedef struct ReencShared
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	int32		nslots;
	ReencSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} ReencShared;

static ReencShared *rs = NULL;

/* Where a worker is; mirrors the row of fieldcrypt.reencryption. */
typedef struct Run
{
	uint32		from_gen;		/* highest old generation */
	uint32		to_gen;
	int32		pass;
	bool		pass_clean;		/* this pass started after the wait */
	int64		pass_reencrypted;	/* values rewritten in this pass */
	Oid			relid;			/* table being processed; Invalid = none yet */
	int64		next_block;
	int32		tables_done;
	int32		tables_total;
	int64		rows_done;
	int64		rows_total;
	TimestampTz started_at;
	/* not persisted */
	int64		batches;		/* of this process */
	bool		blocked;
	char		blocked_why[NAMEDATALEN * 3 + 64];
	TimestampTz throttle_base;
	int64		throttle_rows;
} Run;

/* Worker process state. */
static ReencSlot *my_slot = NULL;
static bool worker_clean_exit = false;
static bool worker_blocked = false;
static uint32 worker_blocked_gen = 0;
static int64 values_reencrypted = 0;	/* by _reencrypt in this process */
static bool tde_retry = false;	/* old TDE generations still in use at exit */
static char *ext_schema = NULL;		/* quoted, in TopMemoryContext */

static Size reencrypt_shmem_size(void);
static ReencSlot *find_slot(Oid dboid, bool create);
static void slot_copy(Oid dboid, ReencSlot *out);
static void publish(const Run *r, Phase phase);
static void worker_exit(int code, Datum arg);

/* ------------------------------------------------------------------------
 * Shared memory
 * ------------------------------------------------------------------------
 */

static Size
reencrypt_shmem_size(void)
{
	return add_size(offsetof(ReencShared, slots),
					mul_size(sizeof(ReencSlot), fc_max_databases));
}

/* Called from the shmem_request_hook. */
void
fc_reencrypt_request(void)
{
	RequestAddinShmemSpace(reencrypt_shmem_size());
	RequestNamedLWLockTranche("fieldcrypt reencrypt", 1);
}

/* Called from the shmem_startup_hook. */
void
fc_reencrypt_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rs = ShmemInitStruct("fieldcrypt reencrypt", reencrypt_shmem_size(), &found);
	if (!found)
	{
		memset(rs, 0, reencrypt_shmem_size());
		rs->lock = &(GetNamedLWLockTranche("fieldcrypt reencrypt"))->lock;
		rs->nslots = fc_max_databases;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The slot of dboid (optionally a new one); caller holds rs->lock. */
static ReencSlot *
find_slot(Oid dboid, bool create)
{
	ReencSlot  *free_slot = NULL;

	for (int i = 0; i < rs->nslots; i++)
	{
		if (rs->slots[i].dboid == dboid)
			return &rs->slots[i];
		if (!OidIsValid(rs->slots[i].dboid) && free_slot == NULL)
			free_slot = &rs->slots[i];
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(ReencSlot));
	free_slot->dboid = dboid;
	return free_slot;
}

/* Copy the slot of dboid into *out (zeroed when it has none). */
static void
slot_copy(Oid dboid, ReencSlot *out)
{
	ReencSlot  *slot;

	memset(out, 0, sizeof(ReencSlot));
	LWLockAcquire(rs->lock, LW_SHARED);
	slot = find_slot(dboid, false);
	if (slot)
		memcpy(out, slot, sizeof(ReencSlot));
	LWLockRelease(rs->lock);
}

/* Wake the launcher: a key change committed. */
void
fc_reencrypt_wake(void)
{
	Latch	   *latch;

	if (rs == NULL)
		return;
	LWLockAcquire(rs->lock, LW_SHARED);
	latch = rs->launcher_latch;
	LWLockRelease(rs->lock);
	if (latch)
		SetLatch(latch);
}

/* The generations of dboid: current one and the highest older one. */
static int
db_generations(Oid dboid, uint32 *current, uint32 *highest_old, bool *ring_ok)
{
	int			ngens = 0;

	*current = *highest_old = 0;
	LWLockAcquire(fc_shared->lock, LW_SHARED);
	*ring_ok = fc_shared->ring_state == FC_RING_OK;
	for (int i = 0; i < fc_shared->max_dbs; i++)
	{
		FcDbKeys   *e = &fc_shared->dbs[i];

		if (e->dboid != dboid || !OidIsValid(dboid))
			continue;
		*current = e->current_gen;
		ngens = e->ngens;
		for (int g = 0; g < e->ngens; g++)
			if (e->gens[g].gen != e->current_gen && e->gens[g].gen > *highest_old)
				*highest_old = e->gens[g].gen;
		break;
	}
	LWLockRelease(fc_shared->lock);
	return ngens;
}

/* TDE key generations of dboid (count), the current one and the newest older one. */
static int
tde_generations(Oid dboid, uint32 *current, uint32 *highest_old)
{
	FcTdeKeys	tde;
	int			n;

	*current = *highest_old = 0;
	if (!fc_db_lookup_tde(dboid, &tde))
		return 0;
	*current = tde.current;
	for (int g = 0; g < tde.ngens; g++)
		if (tde.gens[g].gen != tde.current && tde.gens[g].gen > *highest_old)
			*highest_old = tde.gens[g].gen;
	n = tde.ngens;
	explicit_bzero(&tde, sizeof(tde));
	return n;
}

/*
 * ERROR 55P03 if this database still re-encrypts after an earlier key
 * change (called by set_data_encryption_key, change lock held).  A blocked
 * re-encryption does not refuse: it cannot finish by itself.
 */
void
fc_reencrypt_check_idle(const FcDbKeys *cur)
{
	ReencSlot	copy;
	uint32		old = 0;

	if (cur->ngens <= 1)
		return;
	for (int g = 0; g < cur->ngens; g++)
		if (cur->gens[g].gen != cur->current_gen && cur->gens[g].gen > old)
			old = cur->gens[g].gen;
	slot_copy(MyDatabaseId, &copy);
	if (copy.state == SLOT_BLOCKED && copy.blocked_gen == cur->current_gen)
		return;
	if (copy.state != SLOT_RUNNING && !fc_reencrypt_enabled)
		return;					/* postponed: old generations are kept */
	if (copy.state == SLOT_RUNNING && copy.to_gen == cur->current_gen)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a data encryption key change is already in progress"),
				 errdetail("Re-encryption from generation %u to generation %u is running: "
						   "%lld of %lld rows, %d of %d tables.",
						   copy.from_gen, copy.to_gen,
						   (long long) copy.rows_done, (long long) copy.rows_total,
						   copy.tables_done, copy.tables_total),
				 errhint("Retry when fieldcrypt.rotation_progress shows no row for this database.")));
	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg("a data encryption key change is already in progress"),
			 errdetail("Re-encryption from generation %u to generation %u has not started yet.",
					   old, cur->current_gen),
			 errhint("Retry when fieldcrypt.rotation_progress shows no row for this database.")));
}

/*
 * rotate_tde_key: ERROR 55P03 while rows of an older TDE generation are
 * still being re-encrypted (unless re-encryption is postponed).
 */
void
fc_reencrypt_check_tde_idle(const FcTdeKeys *tde)
{
	ReencSlot	copy;

	if (tde->ngens <= 1)
		return;
	slot_copy(MyDatabaseId, &copy);
	if (copy.state != SLOT_RUNNING && !fc_reencrypt_enabled)
		return;
	if (copy.state == SLOT_RUNNING && copy.to_gen == tde->current)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a TDE key change is already in progress"),
				 errdetail("Re-encryption of encrypted_heap tables from TDE key generation %u to %u is running: "
						   "%lld of about %lld rows, %d of %d tables.",
						   copy.from_gen, copy.to_gen,
						   (long long) copy.rows_done, (long long) copy.rows_total,
						   copy.tables_done, copy.tables_total),
				 errhint("Retry when fieldcrypt.rotation_progress shows no row for this database.")));
	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg("a TDE key change is already in progress"),
			 errdetail("Rows under an older TDE key generation than %u are still to be re-encrypted.",
					   tde->current),
			 errhint("Retry when fieldcrypt.rotation_progress shows no row for this database.")));
}

/*
 * Stop the worker of a database about to be dropped (DROP DATABASE waits
 * for no other connection); the launcher holds off for a while.
 */
void
fc_reencrypt_stop(Oid dboid)
{
	ReencSlot  *slot;
	int			pid = 0;

	if (rs == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid, false);
	if (slot && slot->state == SLOT_RUNNING)
		pid = slot->pid;
	if (slot && slot->state == SLOT_STARTING)
		slot->state = SLOT_HELD;	/* the worker exits when it sees this */
	if (slot)
		slot->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);
	LWLockRelease(rs->lock);
	if (pid == 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 500; i++)
	{
		bool		gone;

		LWLockAcquire(rs->lock, LW_SHARED);
		gone = slot->pid != pid;
		LWLockRelease(rs->lock);
		if (gone)
			break;
		pg_usleep(10000L);
	}
}

/* ------------------------------------------------------------------------
 * Launcher
 * ------------------------------------------------------------------------
 */

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
		ReencSlot  *slot;
		bool		launch = false;

		LWLockAcquire(rs->lock, LW_EXCLUSIVE);
		slot = find_slot(dbs[i], true);
		if (slot == NULL)
		{
			LWLockRelease(rs->lock);
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
		LWLockRelease(rs->lock);
		if (launch && !start_worker(dbs[i]))
		{
			LWLockAcquire(rs->lock, LW_EXCLUSIVE);
			slot->state = SLOT_HELD;
			slot->hold_until = TimestampTzPlusMilliseconds(now, BACKOFF_MIN_MS);
			LWLockRelease(rs->lock);
			ereport(LOG,
					(errmsg("fieldcrypt: could not start a re-encryption worker for database %u", dbs[i]),
					 errhint("Raise max_worker_processes.")));
		}
	}

	/* forget idle slots of databases that have nothing left to do */
	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	for (int s = 0; s < rs->nslots; s++)
	{
		ReencSlot  *slot = &rs->slots[s];
		bool		pending = false;

		if (!OidIsValid(slot->dboid) || slot->state == SLOT_RUNNING ||
			slot->state == SLOT_STARTING)
			continue;
		for (int i = 0; i < n && !pending; i++)
			pending = dbs[i] == slot->dboid;
		if (!pending)
			memset(slot, 0, sizeof(ReencSlot));
	}
	LWLockRelease(rs->lock);
	pfree(dbs);
	pfree(gens);
}

static void
launcher_exit(int code, Datum arg)
{
	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	rs->launcher_latch = NULL;
	LWLockRelease(rs->lock);
}

/* Main loop of the launcher. */
void
fieldcrypt_reencrypt_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	rs->launcher_latch = &MyProc->procLatch;
	LWLockRelease(rs->lock);
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

/* ------------------------------------------------------------------------
 * SQL helpers run by the worker's statements (not granted to PUBLIC)
 * ------------------------------------------------------------------------
 */

/* True if v is under an older generation this database still holds. */
static bool
value_is_stale(Datum v)
{
	uint32		gen = fc_envelope_generation(v);
	const FcGeneration *cur = fc_local_generation(0, true);
	uint32		cur_gen;

	if (cur == NULL || gen == 0)
		return false;
	cur_gen = cur->gen;
	return gen != cur_gen && fc_local_generation(gen, false) != NULL;
}

static Datum
reencrypt_common(FunctionCallInfo fcinfo, char kind)
{
	bytea	   *result;

	if (!value_is_stale(PG_GETARG_DATUM(0)))
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	result = fc_reencrypt_envelope(PG_GETARG_BYTEA_PP(0), kind);
	if (result == NULL)
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	values_reencrypted++;
	PG_RETURN_BYTEA_P(result);
}

/* fieldcrypt._reencrypt(encrypted_text): the value under the current generation. */
Datum
fieldcrypt_reencrypt_text(PG_FUNCTION_ARGS)
{
	return reencrypt_common(fcinfo, 't');
}

/* fieldcrypt._reencrypt(encrypted_bytea): the value under the current generation. */
Datum
fieldcrypt_reencrypt_bytea(PG_FUNCTION_ARGS)
{
	return reencrypt_common(fcinfo, 'b');
}

/* fieldcrypt._stale(value): true if _reencrypt would rewrite it. */
Datum
fieldcrypt_reencrypt_stale(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(value_is_stale(PG_GETARG_DATUM(0)));
}

/* ------------------------------------------------------------------------
 * The view fieldcrypt.rotation_progress
 * ------------------------------------------------------------------------
 */

/*
 * fieldcrypt._rotation_progress(): one row per database whose old
 * generations are not destroyed yet.  Nothing on a server in recovery (the
 * primary re-encrypts; WAL brings the result).
 */
Datum
fieldcrypt_rotation_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid		   *dbs;
	uint32	   *cur;
	uint32	   *old;
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();

	InitMaterializedSRF(fcinfo, 0);
	if (RecoveryInProgress())
		return (Datum) 0;

	dbs = palloc(sizeof(Oid) * fc_shared->max_dbs);
	cur = palloc(sizeof(uint32) * fc_shared->max_dbs);
	old = palloc(sizeof(uint32) * fc_shared->max_dbs);
	for (int i = 0; i < fc_shared->max_dbs; i++)
	{
		bool		ring_ok;
		Oid			dboid;

		LWLockAcquire(fc_shared->lock, LW_SHARED);
		dboid = fc_shared->dbs[i].dboid;
		LWLockRelease(fc_shared->lock);
		if (OidIsValid(dboid) && db_generations(dboid, &cur[n], &old[n], &ring_ok) > 1 && ring_ok)
			dbs[n++] = dboid;
		else if (OidIsValid(dboid) && ring_ok && tde_generations(dboid, &cur[n], &old[n]) > 1)
			dbs[n++] = dboid;	/* encrypted_heap rows under an older TDE generation */
	}

	for (int i = 0; i < n; i++)
	{
		Datum		values[13];
		bool		nulls[13] = {0};
		ReencSlot	s;
		char	   *dbname = get_database_name(dbs[i]);
		const char *phase;

		slot_copy(dbs[i], &s);

		if (s.state == SLOT_RUNNING && s.to_gen == cur[i])
			phase = phase_names[s.phase];
		else if (s.state == SLOT_BLOCKED && s.blocked_gen == cur[i])
			phase = "blocked";
		else if (!fc_reencrypt_enabled)
		{
			memset(&s, 0, sizeof(s));
			phase = "postponed";
		}
		else
		{
			memset(&s, 0, sizeof(s));
			phase = "waiting to start";
		}

		/* database, from, to, phase, tables_done, tables_total, rows_done,
		 * rows_total, rows_per_second, started_at, estimated_end, pid, dboid */
		values[0] = dbname ? DirectFunctionCall1(namein, CStringGetDatum(dbname)) : (Datum) 0;
		nulls[0] = dbname == NULL;
		values[1] = Int32GetDatum(old[i]);
		values[2] = Int32GetDatum(cur[i]);
		values[3] = CStringGetTextDatum(phase);
		values[4] = Int32GetDatum(s.tables_done);
		values[5] = Int32GetDatum(s.tables_total);
		values[6] = Int64GetDatum(s.rows_done);
		values[7] = Int64GetDatum(s.rows_total);
		nulls[8] = nulls[9] = nulls[10] = nulls[11] = true;
		if (s.state == SLOT_RUNNING)
		{
			double		secs = (double) (now - s.attached_at) / USECS_PER_SEC;
			double		rate = secs > 0 ? (double) (s.rows_done - s.rows_at_attach) / secs : 0;

			values[8] = Float8GetDatum(rate);
			values[9] = TimestampTzGetDatum(s.started_at);
			nulls[8] = nulls[9] = false;
			if (rate > 0 && s.rows_total >= s.rows_done)
			{
				values[10] = TimestampTzGetDatum(now + (TimestampTz)
												 ((double) (s.rows_total - s.rows_done) / rate * USECS_PER_SEC));
				nulls[10] = false;
			}
			values[11] = Int32GetDatum(s.pid);
			nulls[11] = false;
		}
		values[12] = ObjectIdGetDatum(dbs[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ------------------------------------------------------------------------
 * Worker
 * ------------------------------------------------------------------------
 */

/* Copy the progress of r into this worker's slot. */
static void
publish(const Run *r, Phase phase)
{
	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	my_slot->phase = phase;
	my_slot->from_gen = r->from_gen;
	my_slot->to_gen = r->to_gen;
	my_slot->pass = r->pass;
	my_slot->tables_done = r->tables_done;
	my_slot->tables_total = r->tables_total;
	my_slot->rows_done = r->rows_done;
	my_slot->rows_total = Max(r->rows_total, r->rows_done);
	my_slot->started_at = r->started_at;
	LWLockRelease(rs->lock);
}

/* before_shmem_exit of a worker: free its slot, or hold it after a failure. */
static void
worker_exit(int code, Datum arg)
{
	TimestampTz now = GetCurrentTimestamp();

	if (my_slot == NULL)
		return;
	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	my_slot->pid = 0;
	if (worker_clean_exit)
	{
		my_slot->failures = 0;
		my_slot->state = worker_blocked ? SLOT_BLOCKED : SLOT_FREE;
		my_slot->blocked_gen = worker_blocked_gen;
	}
	else
	{
		int64		ms = BACKOFF_MIN_MS;

		for (int i = 0; i < my_slot->failures && ms < BACKOFF_MAX_MS; i++)
			ms *= 2;
		my_slot->failures++;
		my_slot->state = SLOT_HELD;
		my_slot->hold_until = Max(my_slot->hold_until,
								  TimestampTzPlusMilliseconds(now, Min(ms, BACKOFF_MAX_MS)));
	}
	LWLockRelease(rs->lock);
	my_slot = NULL;
}

/* Sleep ms milliseconds, answering SIGTERM and SIGHUP. */
static void
worker_sleep(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * Between batches: reload the configuration if asked, and stop (cleanly,
 * to be started again later) if fieldcrypt.reencrypt was turned off.
 */
static void
check_postponed(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	if (fc_reencrypt_enabled)
		return;
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption postponed (fieldcrypt.reencrypt = off)")));
	worker_clean_exit = true;
	proc_exit(0);
}

/* Test only: stay here while the pause GUCs ask for it. */
static void
test_pause(Run *r, bool before_destroy)
{
	bool		logged = false;

	for (;;)
	{
		bool		pause = before_destroy
			? fc_test_reencrypt_pause_before_destroy
			: (fc_test_reencrypt_pause_after_batches >= 0 &&
			   r->batches >= fc_test_reencrypt_pause_after_batches);

		if (!pause)
			break;
		if (!logged)
		{
			/* batches commit asynchronously: make the pause point durable */
			XLogFlush(XactLastCommitEnd);
			publish(r, PHASE_PAUSED);
			ereport(LOG,
					(errmsg("fieldcrypt: re-encryption paused for testing %s",
							before_destroy ? "before destroying old generations" :
							psprintf("after %lld batches", (long long) r->batches))));
			logged = true;
		}
		worker_sleep(100);
	}
	if (logged)
		publish(r, before_destroy ? PHASE_DESTROYING : PHASE_REENCRYPTING);
}

/* Sleep as long as needed to stay under fieldcrypt.reencrypt_rows_per_second. */
static void
throttle(Run *r, int64 rows)
{
	TimestampTz now = GetCurrentTimestamp();
	double		due_ms;
	double		elapsed_ms;

	r->throttle_rows += rows;
	if (fc_reencrypt_rows_per_second <= 0)
		return;
	due_ms = (double) r->throttle_rows * 1000.0 / fc_reencrypt_rows_per_second;
	elapsed_ms = (double) (now - r->throttle_base) / 1000.0;
	if (elapsed_ms > due_ms + 1000.0)
	{
		/* no credit for idle time beyond a second */
		r->throttle_base = now;
		r->throttle_rows = 0;
		return;
	}
	if (due_ms > elapsed_ms)
		worker_sleep((long) (due_ms - elapsed_ms));
}

/* Quoted schema of the extension, or NULL if it is not installed here. */
static const char *
extension_schema(void)
{
	Oid			meta;

	if (ext_schema)
		return ext_schema;
	/* the key metadata table lives in the extension's schema */
	meta = fc_config_table_oid();
	if (!OidIsValid(meta))
		return NULL;
	ext_schema = MemoryContextStrdup(TopMemoryContext,
									 quote_identifier(get_namespace_name(get_rel_namespace(meta))));
	return ext_schema;
}

static void
begin_xact(void)
{
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
end_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * The encrypted columns of rel as a list of quoted names; notes in r why
 * the table cannot be fully re-encrypted in place (arrays, composites,
 * materialized views).
 */
static List *
encrypted_columns(Relation rel, Run *r)
{
	List	   *cols = NIL;
	TupleDesc	td = RelationGetDescr(rel);

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (att->attisdropped)
			continue;
		if (fc_is_encrypted_type(att->atttypid))
			cols = lappend(cols, pstrdup(quote_identifier(NameStr(att->attname))));
		else if (fc_type_holds_encrypted(att->atttypid) && !r->blocked)
		{
			r->blocked = true;
			snprintf(r->blocked_why, sizeof(r->blocked_why),
					 "column \"%s\" of table \"%s\" holds encrypted values inside an array or composite type",
					 NameStr(att->attname), RelationGetRelationName(rel));
		}
	}
	if (cols != NIL && rel->rd_rel->relkind == RELKIND_MATVIEW)
	{
		if (!r->blocked)
		{
			r->blocked = true;
			snprintf(r->blocked_why, sizeof(r->blocked_why),
					 "materialized view \"%s\" holds encrypted values",
					 RelationGetRelationName(rel));
		}
		return NIL;
	}
	return cols;
}

/* "_stale(a) OR _stale(b) ..." over cols. */
static char *
stale_condition(List *cols)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, cols)
		appendStringInfo(&buf, "%s%s._stale(%s)", buf.len ? " OR " : "",
						 extension_schema(), (char *) lfirst(lc));
	return buf.data;
}

/*
 * OIDs (ascending) of the tables that may hold encrypted values, in
 * TopMemoryContext (the caller frees the list); in a transaction.
 */
static List *
list_tables(void)
{
	List	   *result = NIL;

	if (SPI_execute("SELECT DISTINCT c.oid FROM pg_catalog.pg_class c "
					"JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
					"WHERE c.relkind IN ('r', 'm') AND c.relpersistence IN ('p', 'u') "
					"AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid >= 10000 "
					"ORDER BY 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list tables");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1, &isnull));
		Relation	rel = try_relation_open(relid, AccessShareLock);
		bool		keep = false;

		if (rel)
		{
			Run			dummy = {0};

			keep = encrypted_columns(rel, &dummy) != NIL || dummy.blocked;
			relation_close(rel, AccessShareLock);
		}
		if (keep)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			result = lappend_oid(result, relid);
			MemoryContextSwitchTo(old);
		}
	}
	return result;
}

/* Number of rows holding a stale value in the tables; in a transaction. */
static int64
count_stale(List *tables)
{
	ListCell   *lc;
	int64		total = 0;

	foreach(lc, tables)
	{
		Relation	rel = try_relation_open(lfirst_oid(lc), AccessShareLock);
		Run			dummy = {0};
		List	   *cols;
		char	   *sql;
		bool		isnull;

		if (rel == NULL)
			continue;
		cols = encrypted_columns(rel, &dummy);
		if (cols == NIL)
		{
			relation_close(rel, AccessShareLock);
			continue;
		}
		sql = psprintf("SELECT pg_catalog.count(*) FROM ONLY %s WHERE %s",
					   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												  RelationGetRelationName(rel)),
					   stale_condition(cols));
		relation_close(rel, AccessShareLock);
		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not count values to re-encrypt");
		total += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	return total;
}

/* Write r into fieldcrypt.reencryption; in the caller's transaction. */
static void
save_state(const Run *r, const char *state)
{
	Oid			types[13] = {INT4OID, INT4OID, INT4OID, BOOLOID, INT8OID, OIDOID, INT8OID,
	INT4OID, INT4OID, INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID};
	Datum		values[13];

	values[0] = Int32GetDatum(r->to_gen);
	values[1] = Int32GetDatum(r->from_gen);
	values[2] = Int32GetDatum(r->pass);
	values[3] = BoolGetDatum(r->pass_clean);
	values[4] = Int64GetDatum(r->pass_reencrypted);
	values[5] = ObjectIdGetDatum(r->relid);
	values[6] = Int64GetDatum(r->next_block);
	values[7] = Int32GetDatum(r->tables_done);
	values[8] = Int32GetDatum(r->tables_total);
	values[9] = Int64GetDatum(r->rows_done);
	values[10] = Int64GetDatum(r->rows_total);
	values[11] = TimestampTzGetDatum(r->started_at);
	values[12] = CStringGetTextDatum(state);
	if (SPI_execute_with_args(psprintf("INSERT INTO %s.%s AS s VALUES "
									   "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
									   "ON CONFLICT (to_generation) DO UPDATE SET "
									   "from_generation = $2, pass = $3, pass_clean = $4, "
									   "pass_reencrypted = $5, relid = $6, next_block = $7, "
									   "tables_done = $8, tables_total = $9, rows_done = $10, "
									   "rows_total = $11, started_at = $12, state = $13",
									   extension_schema(), STATE_TABLE),
							  13, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record re-encryption progress");
}

/*
 * Load the saved state of the re-encryption to r->to_gen; false if there
 * is none (or it is for another generation).  *state gets its state.
 */
static bool
load_state(Run *r, char *state, Size statelen)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(r->to_gen)};
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;

	if (SPI_execute_with_args(psprintf("SELECT pass, pass_clean, pass_reencrypted, relid, "
									   "next_block, tables_done, tables_total, rows_done, "
									   "rows_total, started_at, state FROM %s.%s "
									   "WHERE to_generation = $1",
									   extension_schema(), STATE_TABLE),
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read re-encryption progress");
	if (SPI_processed != 1)
		return false;
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	r->pass = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
	r->pass_clean = DatumGetBool(SPI_getbinval(tup, td, 2, &isnull));
	r->pass_reencrypted = DatumGetInt64(SPI_getbinval(tup, td, 3, &isnull));
	r->relid = DatumGetObjectId(SPI_getbinval(tup, td, 4, &isnull));
	r->next_block = DatumGetInt64(SPI_getbinval(tup, td, 5, &isnull));
	r->tables_done = DatumGetInt32(SPI_getbinval(tup, td, 6, &isnull));
	r->tables_total = DatumGetInt32(SPI_getbinval(tup, td, 7, &isnull));
	r->rows_done = DatumGetInt64(SPI_getbinval(tup, td, 8, &isnull));
	r->rows_total = DatumGetInt64(SPI_getbinval(tup, td, 9, &isnull));
	r->started_at = DatumGetTimestampTz(SPI_getbinval(tup, td, 10, &isnull));
	strlcpy(state, TextDatumGetCString(SPI_getbinval(tup, td, 11, &isnull)), statelen);
	return true;
}

/*
 * One batch: rewrite the stale values of blocks [block, block + n) of relid
 * and record the progress, in one transaction.  False when the table is
 * finished (or gone).
 */
static bool
run_batch(Run *r, Oid relid)
{
	Relation	rel;
	List	   *cols;
	BlockNumber nblocks;
	int64		start = r->next_block;
	int64		end;
	int64		before = values_reencrypted;
	char	   *sql;
	StringInfoData set;
	ListCell   *lc;
	uint64		rows;

	begin_xact();
	rel = try_relation_open(relid, RowExclusiveLock);
	if (rel == NULL)
	{
		end_xact();
		return false;
	}
	nblocks = RelationGetNumberOfBlocks(rel);
	cols = encrypted_columns(rel, r);
	if (start >= nblocks || cols == NIL)
	{
		relation_close(rel, NoLock);
		end_xact();
		return false;
	}
	end = Min(start + fc_reencrypt_batch_pages, (int64) MaxBlockNumber);
	initStringInfo(&set);
	foreach(lc, cols)
		appendStringInfo(&set, "%s%s = %s._reencrypt(%s)", set.len ? ", " : "",
						 (char *) lfirst(lc), extension_schema(), (char *) lfirst(lc));
	sql = psprintf("UPDATE ONLY %s SET %s WHERE ctid >= '(" INT64_FORMAT ",0)'::pg_catalog.tid "
				   "AND ctid < '(" INT64_FORMAT ",0)'::pg_catalog.tid AND (%s)",
				   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											  RelationGetRelationName(rel)),
				   set.data, start, end, stale_condition(cols));
	relation_close(rel, NoLock);	/* keep the lock until commit */

	if (SPI_execute(sql, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not re-encrypt a batch");
	rows = SPI_processed;
	r->rows_done += rows;
	r->pass_reencrypted += values_reencrypted - before;
	r->next_block = end;
	r->batches++;
	save_state(r, "running");
	end_xact();

	publish(r, PHASE_REENCRYPTING);
	throttle(r, (int64) rows);
	return true;
}

/*
 * A check pass (one that started after the wait) first looks for a stale
 * value in the whole table with one read-only statement, and rewrites the
 * table in batches only if it finds one.  Records the position.
 */
static bool
table_has_stale(Run *r, Oid relid)
{
	Relation	rel;
	List	   *cols;
	char	   *sql = NULL;
	bool		found = false;

	begin_xact();
	rel = try_relation_open(relid, AccessShareLock);
	if (rel != NULL)
	{
		cols = encrypted_columns(rel, r);
		if (cols != NIL)
			sql = psprintf("SELECT 1 FROM ONLY %s WHERE %s LIMIT 1",
						   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													  RelationGetRelationName(rel)),
						   stale_condition(cols));
		relation_close(rel, NoLock);
	}
	if (sql != NULL)
	{
		if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check for values to re-encrypt");
		found = SPI_processed > 0;
	}
	r->relid = relid;
	r->next_block = 0;
	save_state(r, "running");
	end_xact();
	return found;
}

/* One pass over every table, from where r says; the tables in OID order. */
static void
run_pass(Run *r)
{
	List	   *tables;
	ListCell   *lc;

	begin_xact();
	tables = list_tables();
	r->tables_total = list_length(tables);
	end_xact();
	publish(r, PHASE_REENCRYPTING);

	foreach(lc, tables)
	{
		Oid			relid = lfirst_oid(lc);

		if (OidIsValid(r->relid) && relid < r->relid)
			continue;			/* done before a restart */
		if (relid != r->relid)
		{
			r->relid = relid;
			r->next_block = 0;
		}
		check_postponed();
		if (r->pass_clean && r->next_block == 0 && !table_has_stale(r, relid))
		{
			r->tables_done++;
			publish(r, PHASE_REENCRYPTING);
			continue;
		}
		for (;;)
		{
			test_pause(r, false);
			check_postponed();
			if (!run_batch(r, relid))
				break;
		}
		r->tables_done++;
		publish(r, PHASE_REENCRYPTING);
	}
	r->tables_done = Min(r->tables_done, r->tables_total);
	list_free(tables);
}

/*
 * Wait until every transaction of this database that holds a snapshot now
 * has ended: old row versions it can see may still be copied elsewhere.
 */
static void
wait_older_transactions(Run *r)
{
	VirtualTransactionId *vxids;
	int			n;

	publish(r, PHASE_WAITING);
	StartTransactionCommand();
	vxids = GetCurrentVirtualXIDs(InvalidTransactionId, true, false,
								  PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
	for (int i = 0; i < n; i++)
		VirtualXactLock(vxids[i], true);
	CommitTransactionCommand();
}

/* Destroy every generation but the current one; r->to_gen must be current. */
static void
destroy_old_generations(Run *r)
{
	FcDbKeys   *entry;
	StringInfoData gone;
	char	   *dbname;

	publish(r, PHASE_DESTROYING);
	begin_xact();
	while (!fc_try_change_lock())
	{
		/* a key change (or a dropped database's cleanup) is committing */
		worker_sleep(100);
	}
	dbname = get_database_name(MyDatabaseId);
	fc_secure_region_alloc((void **) &entry, sizeof(FcDbKeys));
	if (!fc_db_lookup(MyDatabaseId, entry) || entry->current_gen != r->to_gen)
	{
		fc_secure_region_free(entry, sizeof(FcDbKeys));
		end_xact();
		return;
	}
	initStringInfo(&gone);
	{
		int			kept = 0;

		for (int i = 0; i < entry->ngens; i++)
		{
			if (entry->gens[i].gen == entry->current_gen)
			{
				if (kept != i)
					memcpy(&entry->gens[kept], &entry->gens[i], sizeof(FcGeneration));
				kept++;
			}
			else
				appendStringInfo(&gone, "%s%u", gone.len ? ", " : "", entry->gens[i].gen);
		}
		for (int i = kept; i < entry->ngens; i++)
			explicit_bzero(&entry->gens[i], sizeof(FcGeneration));
		entry->ngens = kept;
	}
	fc_meta_forget_generations(entry->current_gen);
	save_state(r, "done");
	fc_db_stage(MyDatabaseId, entry);	/* keyring written and WAL-logged */
	end_xact();
	fc_db_publish(MyDatabaseId, entry);
	fc_secure_region_free(entry, sizeof(FcDbKeys));

	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of database \"%s\" to generation %u finished: "
					"%lld rows rewritten in %d pass(es); generation(s) %s destroyed",
					dbname, r->to_gen, (long long) r->rows_done, r->pass, gone.data)));
}

/* The whole re-encryption of this database. */

/* ------------------------------------------------------------------------
 * encrypted_heap tables after fieldcrypt.rotate_tde_key()
 *
 * Same batches, throttle and EvalPlanQual protection as for columns, but
 * the statement rewrites whole rows: UPDATE ... SET c = c of the rows whose
 * version is under an older TDE generation (the access method seals every
 * new version under the current one; the plaintext does not change, so the
 * update is HOT where it can be).  Materialized views, and tables without a
 * column that can be assigned, are rewritten with reencrypt_table (a short
 * ACCESS EXCLUSIVE lock).  The pass is idempotent, so a restart just runs
 * it again.  Then VACUUM removes the old row versions, and the generations
 * no row version uses any more are destroyed.
 * ------------------------------------------------------------------------
 */

/* The encrypted_heap tables and materialized views of this database. */
static List *
list_tde_tables(void)
{
	List	   *result = NIL;

	if (SPI_execute("SELECT c.oid FROM pg_catalog.pg_class c "
					"JOIN pg_catalog.pg_am a ON a.oid = c.relam "
					"WHERE a.amname = 'encrypted_heap' AND c.relkind IN ('r', 'm') "
					"AND c.relpersistence IN ('p', 'u') ORDER BY 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list encrypted_heap tables");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		result = lappend_oid(result, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																	SPI_tuptable->tupdesc,
																	1, &isnull)));
		MemoryContextSwitchTo(old);
	}
	return result;
}

/* A column an UPDATE can assign to itself (quoted), or NULL. */
static char *
tde_update_column(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && att->attgenerated == '\0' &&
			att->attidentity != ATTRIBUTE_IDENTITY_ALWAYS)
			return pstrdup(quote_identifier(NameStr(att->attname)));
	}
	return NULL;
}

/*
 * One batch of rows of relid; false at the end.  The first pass rewrites
 * every row of the batch (after a rotation nearly all are under an older
 * generation, and testing each costs more than rewriting the few that are
 * not); later passes only those under an older generation.
 */
static bool
run_tde_batch(Run *r, Oid relid, bool all_rows, BlockNumber stop)
{
	Relation	rel;
	BlockNumber nblocks;
	int64		start = r->next_block;
	int64		end;
	char	   *col;
	char	   *name;
	uint64		rows;

	begin_xact();
	rel = try_relation_open(relid, RowExclusiveLock);
	if (rel == NULL)
	{
		end_xact();
		return false;
	}
	/*
	 * Rows updated by this pass move to new versions, often past the end the
	 * table had when the pass started: never chase them (they are under the
	 * current generation already).
	 */
	nblocks = Min(RelationGetNumberOfBlocks(rel), stop);
	if (start >= nblocks)
	{
		relation_close(rel, NoLock);
		end_xact();
		return false;
	}
	name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
	col = tde_update_column(rel);
	if (rel->rd_rel->relkind != RELKIND_RELATION || col == NULL)
	{
		relation_close(rel, NoLock);
		if (SPI_execute(psprintf("SELECT %s.reencrypt_table(%u::pg_catalog.oid::pg_catalog.regclass)",
								 extension_schema(), relid), false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not rewrite an encrypted_heap table");
		rows = 0;
		end = nblocks;
	}
	else
	{
		end = Min(start + fc_reencrypt_batch_pages, (int64) nblocks);
		relation_close(rel, NoLock);	/* keep the lock until commit */
		if (SPI_execute(psprintf("UPDATE ONLY %s SET %s = %s WHERE ctid >= '(" INT64_FORMAT ",0)'::pg_catalog.tid "
								 "AND ctid < '(" INT64_FORMAT ",0)'::pg_catalog.tid%s",
								 name, col, col, start, end,
								 all_rows ? "" :
								 psprintf(" AND %s._tde_tuple_generation(%u::pg_catalog.oid::pg_catalog.regclass, ctid) <> %u",
										  extension_schema(), relid, r->to_gen)),
						false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not re-encrypt a batch of an encrypted_heap table");
		rows = SPI_processed;
	}
	r->rows_done += rows;
	r->next_block = end;
	r->batches++;
	end_xact();

	publish(r, PHASE_REENCRYPTING);
	throttle(r, (int64) rows);
	return true;
}

/* VACUUM one table from the worker (outside any transaction block). */
static void
vacuum_table(Oid relid)
{
	VacuumParams params;
	MemoryContext old;
	List	   *rels;
	char	   *nsp;
	char	   *relname;

	StartTransactionCommand();
	relname = get_rel_name(relid);
	nsp = relname ? get_namespace_name(get_rel_namespace(relid)) : NULL;
	if (relname == NULL || nsp == NULL)
	{
		CommitTransactionCommand();
		return;
	}
	memset(&params, 0, sizeof(params));
	params.options = VACOPT_VACUUM | VACOPT_PROCESS_TOAST;
	params.freeze_min_age = -1;
	params.freeze_table_age = -1;
	params.multixact_freeze_min_age = -1;
	params.multixact_freeze_table_age = -1;
	params.is_wraparound = false;
	params.log_min_duration = -1;
	params.index_cleanup = VACOPTVALUE_UNSPECIFIED;
	params.truncate = VACOPTVALUE_UNSPECIFIED;
	params.nworkers = -1;
	old = MemoryContextSwitchTo(TopMemoryContext);
	rels = list_make1(makeVacuumRelation(makeRangeVar(pstrdup(nsp), pstrdup(relname), -1),
										 relid, NIL));
	MemoryContextSwitchTo(old);
	vacuum(rels, &params, NULL, true);
	CommitTransactionCommand();
}

/* Generations other than current that some row version still uses. */
static int
tde_old_in_use(uint32 current, bool *others_temp)
{
	bool	   *used = palloc0(65536 * sizeof(bool));
	int			n = 0;

	begin_xact();
	fc_tde_used_generations(used, others_temp);
	end_xact();
	for (int g = 1; g < 65536; g++)
		if (used[g] && (uint32) g != current)
			n++;
	pfree(used);
	return n;
}

/* Re-encrypt the encrypted_heap tables of this database, then drop old TDE keys. */
static void
reencrypt_tde(void)
{
	FcTdeKeys	tde;
	Run			r;
	List	   *tables;
	ListCell   *lc;
	char	   *dbname;
	bool		others_temp = false;
	int			dropped = 0;

	if (!fc_db_lookup_tde(MyDatabaseId, &tde) || tde.ngens <= 1)
		return;
	memset(&r, 0, sizeof(r));
	r.to_gen = tde.current;
	for (int i = 0; i < tde.ngens; i++)
		if (tde.gens[i].gen != tde.current)
			r.from_gen = Max(r.from_gen, tde.gens[i].gen);
	explicit_bzero(&tde, sizeof(tde));
	r.pass = 1;
	r.started_at = GetCurrentTimestamp();

	begin_xact();
	if (extension_schema() == NULL)
	{
		end_xact();
		return;
	}
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	tables = list_tde_tables();
	r.tables_total = list_length(tables);
	foreach(lc, tables)
	{
		double		reltuples = 0;
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(lfirst_oid(lc)));

		if (HeapTupleIsValid(tup))
		{
			reltuples = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
			ReleaseSysCache(tup);
		}
		r.rows_total += (int64) Max(reltuples, 0);
	}
	end_xact();
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of the encrypted_heap tables of database \"%s\" "
					"from TDE key generation %u to %u started: %d tables, about %lld rows",
					dbname, r.from_gen, r.to_gen, r.tables_total, (long long) r.rows_total)));
	publish(&r, PHASE_REENCRYPTING);
	r.throttle_base = GetCurrentTimestamp();

	/* rewrite, wait for snapshots that may copy old versions, vacuum, retry */
	for (int attempt = 0; attempt < 3; attempt++)
	{
		r.tables_done = 0;
		foreach(lc, tables)
		{
			BlockNumber stop;

			r.relid = lfirst_oid(lc);
			r.next_block = 0;
			begin_xact();
			{
				Relation	rel = try_relation_open(r.relid, AccessShareLock);

				stop = rel ? RelationGetNumberOfBlocks(rel) : 0;
				if (rel)
					relation_close(rel, AccessShareLock);
			}
			end_xact();
			for (;;)
			{
				test_pause(&r, false);
				check_postponed();
				if (!run_tde_batch(&r, r.relid, attempt == 0, stop))
					break;
			}
			r.tables_done++;
			publish(&r, PHASE_REENCRYPTING);
		}
		wait_older_transactions(&r);
		publish(&r, PHASE_REENCRYPTING);
		foreach(lc, tables)
			vacuum_table(lfirst_oid(lc));
		if (tde_old_in_use(r.to_gen, &others_temp) == 0 && !others_temp)
			break;
		worker_sleep(1000L << Min(attempt, 5));
		r.pass++;
	}

	test_pause(&r, true);
	publish(&r, PHASE_DESTROYING);
	begin_xact();
	if (!others_temp)
	{
		bool	   *used = palloc0(65536 * sizeof(bool));


		fc_tde_used_generations(used, &others_temp);
		if (!others_temp)
			dropped = fc_db_tde_drop_generations(MyDatabaseId, used, r.to_gen);
		pfree(used);
	}
	end_xact();
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of the encrypted_heap tables of database \"%s\" "
					"to TDE key generation %u finished: %lld rows rewritten; %d old generation(s) destroyed",
					dbname, r.to_gen, (long long) r.rows_done, dropped),
			 dropped == 0 && r.from_gen != 0 ?
			 errdetail("Some row versions still use an older generation (long-running transactions, "
					   "or other sessions' temporary tables); the worker tries again later, and "
					   "fieldcrypt.drop_unused_tde_keys() destroys it once they are gone.") : 0));
	list_free(tables);
	/* not done: exit as a failed worker, so the launcher retries after a back-off */
	tde_retry = (dropped == 0 && tde_old_in_use(r.to_gen, &others_temp) > 0);
}

static void
reencrypt_database(void)
{
	Run			r;
	char		state[32] = "";
	bool		ring_ok;
	int			ngens;
	char	   *dbname;
	bool		resumed;

	memset(&r, 0, sizeof(r));
	check_postponed();
	ngens = db_generations(MyDatabaseId, &r.to_gen, &r.from_gen, &ring_ok);
	if (ngens <= 1 || !ring_ok)
		return;

	begin_xact();
	if (extension_schema() == NULL)
	{
		/* keys without the extension: nothing here can hold values */
		end_xact();
		worker_blocked = true;
		worker_blocked_gen = r.to_gen;
		return;
	}
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	resumed = load_state(&r, state, sizeof(state));
	if (resumed && strcmp(state, "running") != 0)
		resumed = false;		/* an older run was blocked: start again */
	if (!resumed)
	{
		List	   *tables;

		publish(&r, PHASE_COUNTING);
		tables = list_tables();
		r.pass = 1;
		r.pass_clean = false;
		r.pass_reencrypted = 0;
		r.relid = InvalidOid;
		r.next_block = 0;
		r.tables_done = 0;
		r.tables_total = list_length(tables);
		r.rows_done = 0;
		r.rows_total = count_stale(tables);
		list_free(tables);
		r.started_at = GetCurrentTimestamp();
		if (SPI_execute(psprintf("DELETE FROM %s.%s", extension_schema(), STATE_TABLE),
						false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not reset re-encryption progress");
		save_state(&r, "running");
	}
	else if (OidIsValid(r.relid) || r.tables_done > 0)
		r.pass_clean = false;	/* part of this pass ran before the restart */
	end_xact();

	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	my_slot->rows_at_attach = r.rows_done;
	my_slot->attached_at = GetCurrentTimestamp();
	LWLockRelease(rs->lock);
	publish(&r, PHASE_REENCRYPTING);
	r.throttle_base = GetCurrentTimestamp();

	if (resumed)
		ereport(LOG,
				(errmsg("fieldcrypt: re-encryption of database \"%s\" from generation %u to %u resumed "
						"in pass %d at table %d of %d, block %lld: %lld of %lld rows done",
						dbname, r.from_gen, r.to_gen, r.pass, r.tables_done + 1, r.tables_total,
						(long long) r.next_block, (long long) r.rows_done, (long long) r.rows_total)));
	else
		ereport(LOG,
				(errmsg("fieldcrypt: re-encryption of database \"%s\" from generation %u to %u started: "
						"%lld rows in %d tables",
						dbname, r.from_gen, r.to_gen, (long long) r.rows_total, r.tables_total)));

	for (;;)
	{
		r.blocked = false;
		run_pass(&r);
		if (r.blocked)
		{
			begin_xact();
			save_state(&r, "blocked");
			end_xact();
			worker_blocked = true;
			worker_blocked_gen = r.to_gen;
			ereport(WARNING,
					(errmsg("fieldcrypt: re-encryption of database \"%s\" to generation %u is blocked, "
							"older generations are kept", dbname, r.to_gen),
					 errdetail("The %s.", r.blocked_why),
					 errhint("Such values cannot be re-encrypted in place. Rewrite them "
							 "(or refresh the materialized view), then restart the server "
							 "or change the key again.")));
			return;
		}
		if (r.pass_clean && r.pass_reencrypted == 0)
			break;
		wait_older_transactions(&r);
		r.pass++;
		r.pass_clean = true;
		r.pass_reencrypted = 0;
		r.relid = InvalidOid;
		r.next_block = 0;
		r.tables_done = 0;
		begin_xact();
		save_state(&r, "running");
		end_xact();
		publish(&r, PHASE_REENCRYPTING);
		r.throttle_base = GetCurrentTimestamp();
		r.throttle_rows = 0;
	}

	test_pause(&r, true);
	check_postponed();
	destroy_old_generations(&r);
}

/* Main of a worker: re-encrypt the database given as argument. */
void
fieldcrypt_reencrypt_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	ReencSlot  *slot;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(rs->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid, false);
	if (slot == NULL || slot->state != SLOT_STARTING)
	{
		LWLockRelease(rs->lock);
		proc_exit(0);			/* stopped before it started */
	}
	slot->state = SLOT_RUNNING;
	slot->pid = MyProcPid;
	slot->phase = PHASE_STARTING;
	slot->tables_done = slot->tables_total = 0;
	slot->rows_done = slot->rows_total = 0;
	my_slot = slot;
	LWLockRelease(rs->lock);
	before_shmem_exit(worker_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_OVERRIDE);
	/* a batch lost in a crash is redone: its progress row commits with it */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/* READ COMMITTED is what keeps concurrent writes (EvalPlanQual, see above) */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("fieldcrypt re-encryption");

	reencrypt_database();
	if (!worker_blocked)
		reencrypt_tde();
	worker_clean_exit = !tde_retry;
	proc_exit(0);
}
