/*-------------------------------------------------------------------------
 *
 * rotstate.c
 *	  Re-encryption state in shared memory (see rotstate.h): slots under
 *	  the LWLock of tranche "fieldcrypt reencrypt", the launcher's latch;
 *	  and what the worker and drop_unused_tde_keys share below src/rotation/:
 *	  the worker's sleep, and which transactions a re-encryption waits for.
 *
 * src/keys/rotstate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/sinvaladt.h"
#include "utils/guc.h"

#include "keys/rotstate.h"

FcRotState *fc_rotstate = NULL;
bool		fc_reencrypt_enabled = true;

const char *const fc_rot_phase_names[] = {
	"starting", "counting", "re-encrypting", "waiting for older transactions",
	"destroying old generations", "paused for testing", "waiting for the cluster"
};

static Size rotstate_shmem_size(void);

/* Bytes of shared memory of the slots. */
static Size
rotstate_shmem_size(void)
{
	return add_size(offsetof(FcRotState, slots),
					mul_size(sizeof(FcRotSlot), fc_max_databases));
}

/* Called from the shmem_request_hook. */
void
fc_rotstate_request(void)
{
	RequestAddinShmemSpace(rotstate_shmem_size());
	RequestNamedLWLockTranche("fieldcrypt reencrypt", 1);
}

/* Called from the shmem_startup_hook. */
void
fc_rotstate_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	fc_rotstate = ShmemInitStruct("fieldcrypt reencrypt", rotstate_shmem_size(), &found);
	if (!found)
	{
		memset(fc_rotstate, 0, rotstate_shmem_size());
		fc_rotstate->lock = &(GetNamedLWLockTranche("fieldcrypt reencrypt"))->lock;
		fc_rotstate->nslots = fc_max_databases;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The slot of dboid (optionally a new one); caller holds fc_rotstate->lock. */
FcRotSlot *
fc_rotstate_find_slot(Oid dboid, bool create)
{
	FcRotSlot  *free_slot = NULL;

	for (int i = 0; i < fc_rotstate->nslots; i++)
	{
		if (fc_rotstate->slots[i].dboid == dboid)
			return &fc_rotstate->slots[i];
		if (!OidIsValid(fc_rotstate->slots[i].dboid) && free_slot == NULL)
			free_slot = &fc_rotstate->slots[i];
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(FcRotSlot));
	free_slot->dboid = dboid;
	return free_slot;
}

/* Copy the slot of dboid into *out (zeroed when it has none). */
void
fc_rotstate_slot_copy(Oid dboid, FcRotSlot *out)
{
	FcRotSlot  *slot;

	memset(out, 0, sizeof(FcRotSlot));
	LWLockAcquire(fc_rotstate->lock, LW_SHARED);
	slot = fc_rotstate_find_slot(dboid, false);
	if (slot)
		memcpy(out, slot, sizeof(FcRotSlot));
	LWLockRelease(fc_rotstate->lock);
}

/* The launcher announces its latch (NULL when it exits). */
void
fc_rotstate_set_launcher(Latch *latch)
{
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rotstate->launcher_latch = latch;
	LWLockRelease(fc_rotstate->lock);
}

/* Wake the launcher: a key change committed. */
void
fc_rotstate_wake(void)
{
	Latch	   *latch;

	if (fc_rotstate == NULL)
		return;
	LWLockAcquire(fc_rotstate->lock, LW_SHARED);
	latch = fc_rotstate->launcher_latch;
	LWLockRelease(fc_rotstate->lock);
	if (latch)
		SetLatch(latch);
}

/*
 * ERROR 55P03 if this database still re-encrypts after an earlier key
 * change (called by set_data_encryption_key, change lock held), with a
 * detail that says where it is.  A blocked re-encryption, or one that
 * failed on a table (slot->problem), does not refuse: it cannot finish by
 * itself, and nobody may stop key management by making a table fail.  Nor
 * does one that another session holds up (slot->held: a table it keeps
 * locked, a snapshot it keeps open).
 */
void
fc_rotstate_check_idle(const FcDbKeys *cur)
{
	FcRotSlot	copy;
	uint32		old = 0;

	if (cur->ngens <= 1)
		return;
	for (int g = 0; g < cur->ngens; g++)
		if (cur->gens[g].gen != cur->current_gen && cur->gens[g].gen > old)
			old = cur->gens[g].gen;
	fc_rotstate_slot_copy(MyDatabaseId, &copy);
	if (copy.state == SLOT_BLOCKED && copy.blocked_gen == cur->current_gen)
		return;
	if (copy.state == SLOT_HELD && copy.problem[0] != '\0' &&
		(copy.tde || copy.to_gen == cur->current_gen))
		return;					/* a table fails (a TDE one: whatever its generation) */
	if (copy.state == SLOT_RUNNING && copy.held)
		return;					/* held up by another session: not by it either */
	if (copy.state != SLOT_RUNNING && !fc_reencrypt_enabled)
		return;					/* postponed: old generations are kept */
	if (copy.state == SLOT_RUNNING && !copy.tde && copy.to_gen == cur->current_gen)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a data encryption key change is already in progress"),
				 errdetail("Re-encryption from generation %u to generation %u is running: "
						   "%lld of %lld rows, %d of %d tables.",
						   copy.from_gen, copy.to_gen,
						   (long long) copy.rows_done, (long long) copy.rows_total,
						   copy.tables_done, copy.tables_total),
				 errhint("Retry when fieldcrypt.rotation_progress shows no row for this database.")));
	if (copy.state == SLOT_HELD && !copy.tde && copy.to_gen == cur->current_gen)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a data encryption key change is already in progress"),
				 errdetail("Re-encryption from generation %u to generation %u was interrupted after "
						   "%lld of %lld rows and resumes shortly.",
						   old, cur->current_gen,
						   (long long) copy.rows_done, (long long) copy.rows_total),
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
fc_rotstate_check_tde_idle(const FcTdeKeys *tde)
{
	FcRotSlot	copy;

	if (tde->ngens <= 1)
		return;
	fc_rotstate_slot_copy(MyDatabaseId, &copy);
	if (copy.state == SLOT_HELD && copy.problem[0] != '\0')
		return;					/* a table fails: never block key management */
	if (copy.state == SLOT_RUNNING && copy.held)
		return;					/* nor a session that holds the worker up */
	if (copy.state != SLOT_RUNNING && !fc_reencrypt_enabled)
		return;
	if (copy.state == SLOT_RUNNING && copy.tde && copy.to_gen == tde->current)
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
fc_rotstate_stop(Oid dboid)
{
	FcRotSlot  *slot;
	int			pid = 0;

	if (fc_rotstate == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	slot = fc_rotstate_find_slot(dboid, false);
	if (slot && slot->state == SLOT_RUNNING)
		pid = slot->pid;
	if (slot && slot->state == SLOT_STARTING)
		slot->state = SLOT_HELD;	/* the worker exits when it sees this */
	if (slot)
		slot->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 30000);
	LWLockRelease(fc_rotstate->lock);
	if (pid == 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 500; i++)
	{
		bool		gone;

		LWLockAcquire(fc_rotstate->lock, LW_SHARED);
		gone = slot->pid != pid;
		LWLockRelease(fc_rotstate->lock);
		if (gone)
			break;
		pg_usleep(10000L);
	}

	/*
	 * The DROP DATABASE may still fail (another session connected, ...):
	 * until it commits, a key change of that database is accepted (a held
	 * slot with a problem), and fc_rotstate_resume lets the worker go on.
	 */
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	if (slot->dboid == dboid && slot->state == SLOT_HELD)
		strlcpy(slot->problem, "stopped for a DROP DATABASE of this database", sizeof(slot->problem));
	LWLockRelease(fc_rotstate->lock);
}

/*
 * The DROP DATABASE that stopped dboid's worker failed: start it again
 * without waiting out the hold.
 */
void
fc_rotstate_resume(Oid dboid)
{
	FcRotSlot  *slot;

	if (fc_rotstate == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	slot = fc_rotstate_find_slot(dboid, false);
	if (slot && slot->state == SLOT_HELD)
	{
		slot->hold_until = GetCurrentTimestamp();
		slot->failures = 0;
	}
	LWLockRelease(fc_rotstate->lock);
	fc_rotstate_wake();
}

/* Sleep ms milliseconds, answering SIGTERM and SIGHUP (the worker's sleep). */
void
fc_rot_sleep(long ms)
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
 * Whether destroying an old key generation must wait for the transaction
 * vxid (from GetCurrentVirtualXIDs): it holds a snapshot (it may copy row
 * versions it sees), or has written (maybe under the old generation, into a
 * table nobody else sees before it commits; a session idle in it holds no
 * snapshot), or is prepared.  *pid is its process, 0 for a prepared one (or
 * one that ended: VirtualXactLock then returns at once); *snapshot whether
 * it holds a snapshot.
 *
 * Read without ProcArrayLock.  A proc that no longer runs that virtual
 * transaction has ended it, or it is a prepared transaction, whose entry
 * keeps the preparing session's ids (or none after a restart).
 */
bool
fc_xact_to_wait_for(VirtualTransactionId vxid, int *pid, bool *snapshot)
{
	PGPROC	   *proc = BackendIdGetProc(vxid.backendId);

	*pid = 0;
	*snapshot = false;
	if (proc == NULL ||
		*(volatile LocalTransactionId *) &proc->lxid != vxid.localTransactionId)
		return true;
	*snapshot = TransactionIdIsValid(*(volatile TransactionId *) &proc->xmin);
	if (!*snapshot && !TransactionIdIsValid(*(volatile TransactionId *) &proc->xid))
		return false;			/* no snapshot, nothing written */
	*pid = proc->pid;
	return true;
}
