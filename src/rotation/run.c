/*-------------------------------------------------------------------------
 *
 * run.c
 *	  What every pass of a re-encryption worker uses: its slot and progress,
 *	  sleeping and throttling, transactions, the resumable state row in
 *	  fieldcrypt.reencryption, and the wait for older snapshots.
 *
 * src/rotation/run.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lmgr.h"
#include "access/relation.h"
#include "storage/bufmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/sinvaladt.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

#include "keys/keyapi.h"
#include "keys/keystore.h"
#include "rotation/rotation.h"

int			fc_reencrypt_rows_per_second = FC_REENCRYPT_DEFAULT_RATE;
int			fc_reencrypt_batch_pages = 64;
int			fc_test_reencrypt_pause_after_batches = -1;
bool		fc_test_reencrypt_pause_before_destroy = false;

FcRotSlot  *fc_rot_my_slot = NULL;
bool		fc_rot_clean_exit = false;
bool		fc_rot_blocked = false;
uint32		fc_rot_blocked_gen = 0;
bool		fc_rot_tde_retry = false;	/* old TDE generations still in use at exit */
bool		fc_rot_failed = false;	/* a table could not be re-encrypted */
static char *ext_schema = NULL; /* quoted, in TopMemoryContext */

/* The generations of dboid: current one and the highest older one. */
int
fc_rot_db_generations(Oid dboid, uint32 *current, uint32 *highest_old, bool *ring_ok)
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
int
fc_rot_tde_generations(Oid dboid, uint32 *current, uint32 *highest_old)
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

/* Copy the progress of r into this worker's slot. */
void
fc_rot_publish(const Run *r, Phase phase)
{
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rot_my_slot->phase = phase;
	fc_rot_my_slot->tde = r->tde;
	fc_rot_my_slot->from_gen = r->from_gen;
	fc_rot_my_slot->to_gen = r->to_gen;
	fc_rot_my_slot->pass = r->pass;
	fc_rot_my_slot->tables_done = r->tables_done;
	fc_rot_my_slot->tables_total = r->tables_total;
	fc_rot_my_slot->rows_done = r->rows_done;
	fc_rot_my_slot->rows_total = Max(r->rows_total, r->rows_done);
	fc_rot_my_slot->started_at = r->started_at;
	LWLockRelease(fc_rotstate->lock);
}

/* before_shmem_exit of a worker: free its slot, or hold it after a failure. */
void
fc_rot_worker_exit(int code, Datum arg)
{
	TimestampTz now = GetCurrentTimestamp();

	if (fc_rot_my_slot == NULL)
		return;
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rot_my_slot->pid = 0;
	if (fc_rot_clean_exit)
	{
		fc_rot_my_slot->failures = 0;
		fc_rot_my_slot->state = fc_rot_blocked ? SLOT_BLOCKED : SLOT_FREE;
		fc_rot_my_slot->blocked_gen = fc_rot_blocked_gen;
	}
	else
	{
		int64		ms = BACKOFF_MIN_MS;

		for (int i = 0; i < fc_rot_my_slot->failures && ms < BACKOFF_MAX_MS; i++)
			ms *= 2;
		fc_rot_my_slot->failures++;
		fc_rot_my_slot->state = SLOT_HELD;
		fc_rot_my_slot->hold_until = Max(fc_rot_my_slot->hold_until,
								  TimestampTzPlusMilliseconds(now, Min(ms, BACKOFF_MAX_MS)));
	}
	LWLockRelease(fc_rotstate->lock);
	fc_rot_my_slot = NULL;
}

/*
 * Between batches: reload the configuration if asked, and stop (cleanly,
 * to be started again later) if fieldcrypt.reencrypt was turned off.
 */
void
fc_rot_check_postponed(void)
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
	fc_rot_clean_exit = true;
	proc_exit(0);
}

/* Test only: stay here while the pause GUCs ask for it. */
void
fc_rot_test_pause(Run *r, bool before_destroy)
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
			fc_rot_publish(r, PHASE_PAUSED);
			ereport(LOG,
					(errmsg("fieldcrypt: re-encryption paused for testing %s",
							before_destroy ? "before destroying old generations" :
							psprintf("after %lld batches", (long long) r->batches))));
			logged = true;
		}
		fc_rot_sleep(100);
	}
	if (logged)
		fc_rot_publish(r, before_destroy ? PHASE_DESTROYING : PHASE_REENCRYPTING);
}

/* Sleep as long as needed to stay under fieldcrypt.reencrypt_rows_per_second. */
void
fc_rot_throttle(Run *r, int64 rows)
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
		fc_rot_sleep((long) (due_ms - elapsed_ms));
}

/* Quoted schema of the extension, or NULL if it is not installed here. */
const char *
fc_rot_extension_schema(void)
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

void
fc_rot_begin_xact(void)
{
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
fc_rot_end_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Write r into fieldcrypt.reencryption; in the caller's transaction. */
void
fc_rot_save_state(const Run *r, const char *state)
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
									   fc_rot_extension_schema(), STATE_TABLE),
							  13, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record re-encryption progress");
}

/*
 * Load the saved state of the re-encryption to r->to_gen; false if there
 * is none (or it is for another generation).  *state gets its state.
 */
bool
fc_rot_load_state(Run *r, char *state, Size statelen)
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
									   fc_rot_extension_schema(), STATE_TABLE),
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
 * Wait until every transaction of this database that holds a snapshot now,
 * or has written, has ended: old row versions it can see may still be
 * copied elsewhere, and what it wrote under an older generation may be in
 * a relation the worker cannot see yet (a table it created, a TRUNCATE's
 * new file).  A session idle in such a transaction holds no snapshot, so
 * it is found by its transaction id.  A wait longer than HELD_AFTER_MS
 * holds the worker up (fc_rot_set_held): key changes are accepted until it
 * ends.
 */
void
fc_rot_wait_older_transactions(Run *r)
{
	VirtualTransactionId *vxids;
	int			n;
	bool		held = false;
	char		before[FC_ROT_PROBLEM_LEN];
	TimestampTz start = GetCurrentTimestamp();

	fc_rot_publish(r, PHASE_WAITING);
	StartTransactionCommand();
	vxids = GetCurrentVirtualXIDs(InvalidTransactionId, false, false,
								  PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
	for (int i = 0; i < n; i++)
	{
		long		step = 10;
		int			pid;
		bool		snapshot;

		if (!fc_xact_to_wait_for(vxids[i], &pid, &snapshot))
			continue;
		while (!VirtualXactLock(vxids[i], false))
		{
			if (!held && TimestampDifferenceExceeds(start, GetCurrentTimestamp(), HELD_AFTER_MS))
			{
				char		problem[FC_ROT_PROBLEM_LEN];

				if (pid == 0)
					strlcpy(problem, "waiting for a prepared transaction (COMMIT PREPARED or "
							"ROLLBACK PREPARED ends it)", sizeof(problem));
				else
					snprintf(problem, sizeof(problem),
							 snapshot ? "waiting for the transaction of process %d, which keeps an older snapshot"
							 : "waiting for the transaction of process %d, which has written and not ended",
							 pid);
				fc_rot_get_problem(before);
				fc_rot_set_held(problem);
				held = true;
			}
			fc_rot_sleep(step);
			step = Min(step * 2, 1000);
		}
	}
	CommitTransactionCommand();
	if (held)
		fc_rot_set_problem(before);
}

/* Show problem (or "" for none) in this worker's slot: rotation_progress, 55P03. */
void
fc_rot_set_problem(const char *problem)
{
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	strlcpy(fc_rot_my_slot->problem, problem, sizeof(fc_rot_my_slot->problem));
	fc_rot_my_slot->held = false;
	LWLockRelease(fc_rotstate->lock);
}

/* This worker's problem ("" for none) into out (sizeof FcRotSlot.problem). */
void
fc_rot_get_problem(char *out)
{
	LWLockAcquire(fc_rotstate->lock, LW_SHARED);
	memcpy(out, fc_rot_my_slot->problem, sizeof(fc_rot_my_slot->problem));
	LWLockRelease(fc_rotstate->lock);
}

/*
 * The running worker is held up by another session (problem says how):
 * until the next fc_rot_set_problem, a key change is not refused with 55P03
 * (rotstate.c), so that no session can block key management by keeping a
 * table locked or a snapshot open.
 */
void
fc_rot_set_held(const char *problem)
{
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	strlcpy(fc_rot_my_slot->problem, problem, sizeof(fc_rot_my_slot->problem));
	fc_rot_my_slot->held = true;
	LWLockRelease(fc_rotstate->lock);
}

/*
 * In a PG_CATCH of the worker: keep the error (in cxt), abort the failed
 * transaction, and write relid's qualified name (or "with OID n", if it is
 * gone) into name, for the WARNING and rotation_progress.problem.
 */
ErrorData *
fc_rot_catch_error(Oid relid, MemoryContext cxt, char *name)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();

	StartTransactionCommand();
	fc_rot_table_name(relid, name);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return edata;
}

/*
 * relid's qualified name (or "with OID n", if it is gone) into name
 * (FC_ROT_NAME_LEN bytes); in a transaction.
 */
void
fc_rot_table_name(Oid relid, char *name)
{
	char	   *rel = get_rel_name(relid);
	char	   *nsp = rel ? get_namespace_name(get_rel_namespace(relid)) : NULL;

	if (rel && nsp)
		strlcpy(name, quote_qualified_identifier(nsp, rel), FC_ROT_NAME_LEN);
	else
		snprintf(name, FC_ROT_NAME_LEN, "with OID %u", relid);
}

/*
 * In the PG_CATCH of a table's batches: log the error with the table's name
 * as a WARNING, abort the transaction, and note the failure in r and in the
 * slot, so that the other tables go on and the run ends unfinished.
 */
void
fc_rot_table_failed(Run *r, Oid relid, MemoryContext cxt)
{
	char		name[FC_ROT_NAME_LEN];
	char		problem[FC_ROT_PROBLEM_LEN];
	ErrorData  *edata = fc_rot_catch_error(relid, cxt, name);

	r->failed++;
	snprintf(problem, sizeof(problem), "table %s could not be re-encrypted (SQLSTATE %s)",
			 name, unpack_sql_state(edata->sqlerrcode));
	ereport(WARNING,
			(errmsg("fieldcrypt: could not re-encrypt table %s, older key generations are kept", name),
			 errdetail("%s (SQLSTATE %s)", edata->message, unpack_sql_state(edata->sqlerrcode)),
			 errhint("The other tables go on; the worker tries this one again after a back-off. "
					 "fieldcrypt.rotation_progress shows the problem until it is solved.")));
	/* published after the WARNING: whoever sees the problem finds it in the log */
	fc_rot_set_problem(problem);
	FreeErrorData(edata);
}

/*
 * Open relid for a batch (RowExclusiveLock, in a transaction) without
 * waiting: a table somebody keeps locked (LOCK TABLE in an open
 * transaction) is left to the next pass, which is then not clean, so that
 * it does not hold back the other tables.  NULL if locked or gone.
 */
Relation
fc_rot_open_table(Run *r, Oid relid)
{
	if (!ConditionalLockRelationOid(relid, RowExclusiveLock))
	{
		r->pass_reencrypted++;
		r->held_relid = relid;
		return NULL;
	}
	return try_relation_open(relid, NoLock);
}

/*
 * One batch of a pass: blocks [r->next_block, + fieldcrypt.reencrypt_batch_pages)
 * of relid (never at or past stop), rewritten through ops, in one
 * transaction that also records the position when ops->save_state.  A page
 * left pinned or a locked table makes the pass not clean.  False when the
 * table is finished, gone, locked or not eligible.
 */
bool
fc_rot_batch(Run *r, Oid relid, BlockNumber stop, const FcBatchOps *ops)
{
	Relation	rel;
	BlockNumber nblocks;
	int64		start = r->next_block;
	int64		end;
	int64		rows = 0;
	BufferAccessStrategy strategy;

	fc_rot_begin_xact();
	rel = fc_rot_open_table(r, relid);
	if (rel == NULL)
	{
		fc_rot_end_xact();
		return false;
	}
	nblocks = Min(RelationGetNumberOfBlocks(rel), stop);
	if (start >= nblocks || !ops->eligible(rel))
	{
		relation_close(rel, NoLock);
		fc_rot_end_xact();
		return false;
	}
	end = Min(start + fc_reencrypt_batch_pages, (int64) nblocks);
	strategy = GetAccessStrategy(BAS_VACUUM);
	for (int64 blk = start; blk < end; blk++)
	{
		bool		left = false;

		rows += fc_rewrite_block(rel, (BlockNumber) blk, ops->rewrite, ops->build,
								 NULL, r->pass > 1, strategy, &left);
		if (left)
		{
			/* a pinned page, a locked row: the pass is not clean */
			r->pass_reencrypted++;
			r->held_relid = relid;
		}
	}
	FreeAccessStrategy(strategy);
	relation_close(rel, NoLock);	/* keep the lock until commit */

	r->rows_done += rows;
	r->pass_reencrypted += rows;
	r->next_block = end;
	r->batches++;
	if (ops->save_state)
		fc_rot_save_state(r, "running");
	fc_rot_end_xact();

	fc_rot_publish(r, PHASE_REENCRYPTING);
	fc_rot_throttle(r, rows);
	return true;
}
