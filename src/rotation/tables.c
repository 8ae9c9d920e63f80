/*-------------------------------------------------------------------------
 *
 * tables.c
 *	  Re-encryption of encrypted_heap tables after fieldcrypt.rotate_tde_key().
 *
 * Same batches, throttle and EvalPlanQual protection as for columns, but
 * the statement rewrites whole rows: UPDATE ... SET c = c of the rows whose
 * version is under an older TDE generation (the access method seals every
 * new version under the current one; the plaintext does not change, so the
 * update is HOT where it can be).  Materialized views, and tables without a
 * column that can be assigned, are rewritten with reencrypt_table (a short
 * ACCESS EXCLUSIVE lock).  The pass is idempotent, so a restart just runs
 * it again.  Then VACUUM removes the old row versions, keyed hash indexes
 * are rebuilt under the current generation (keyed_rebuild.c), and the
 * generations no row version or keyed index uses any more are destroyed
 * (on a Citus cluster once every node is done, clusterwide.c).
 *
 * src/rotation/tables.c
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

#include "access/relation.h"
#include "catalog/pg_class.h"
#include "commands/vacuum.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "keys/keystore.h"
#include "rotation/rotation.h"
#include "tde/tam.h"
#include "tde/tam_crypt.h"

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

/* FcRewriteTuple of the TDE pass: a row under an older generation, sealed anew in place. */
static int
reseal_row(Relation rel, HeapTupleHeader td, uint32 len, ItemPointer tid, bool write, void *arg)
{
	return fc_tam_reseal(rel, td, len, tid, write, true, NULL, NULL);
}

/*
 * FcBuildRow of the TDE pass: the same values; the access method seals the
 * new version (and new blobs for its out-of-line values) under the current
 * generation.
 */
static bool
same_row(Relation rel, TupleTableSlot *oldslot, TupleTableSlot *newslot, void *arg)
{
	int			natts = RelationGetDescr(rel)->natts;

	memcpy(newslot->tts_values, oldslot->tts_values, natts * sizeof(Datum));
	memcpy(newslot->tts_isnull, oldslot->tts_isnull, natts * sizeof(bool));
	return true;
}

/* Whether the TDE pass concerns rel. */
static bool
is_tde_table(Relation rel)
{
	return fc_is_encrypted_heap(rel);
}

/*
 * Blocks added to a table after the pass started (stop) hold only new
 * versions, under the current generation already: never chase them.
 */
static const FcBatchOps tde_ops = {is_tde_table, reseal_row, same_row, false};

/* All batches of table r->relid up to block stop; a failure is logged and noted in r. */
static void
run_tde_table(Run *r, BlockNumber stop)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		for (;;)
		{
			fc_rot_test_pause(r, false);
			fc_rot_check_postponed();
			if (!fc_rot_batch(r, r->relid, stop, &tde_ops))
				break;
		}
	}
	PG_CATCH();
	{
		fc_rot_table_failed(r, r->relid, cxt);
	}
	PG_END_TRY();
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
	params.options = VACOPT_VACUUM | VACOPT_PROCESS_TOAST | VACOPT_SKIP_LOCKED;
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

/*
 * fc_tde_used_generations, which opens every table and so waits for a lock
 * another session keeps on one: meanwhile the worker counts as held up
 * (fc_rot_set_held), which lets rotate_tde_key through.
 */
static void
used_generations(bool *used, bool *others_temp)
{
	char		before[FC_ROT_PROBLEM_LEN];

	fc_rot_get_problem(before);
	fc_rot_set_held("looking for the TDE key generations in use (it waits for tables other sessions keep locked)");
	fc_tde_used_generations(used, others_temp);
	fc_rot_set_problem(before);
}

/* Generations other than current that some row version still uses. */
static int
tde_old_in_use(uint32 current, bool *others_temp)
{
	bool	   *used = palloc0(65536 * sizeof(bool));
	int			n = 0;

	fc_rot_begin_xact();
	used_generations(used, others_temp);
	fc_rot_end_xact();
	for (int g = 1; g < 65536; g++)
		if (used[g] && (uint32) g != current)
			n++;
	pfree(used);
	return n;
}

/*
 * Old TDE generations stay because of other sessions (their temporary
 * tables, which no other backend can read; row versions their snapshots
 * still see): say so in rotation_progress.problem, and exit as a failed
 * worker, so the launcher retries after a back-off.  The slot, held with a
 * problem, does not refuse the next rotate_tde_key (rotstate.c): nobody
 * blocks key management by keeping a session open.
 */
static void
kept_by_other_sessions(bool others_temp)
{
	char		problem[FC_ROT_PROBLEM_LEN];

	fc_rot_tde_retry = true;
	fc_rot_get_problem(problem);
	if (problem[0] != '\0')
		return;					/* a table failed: that is the problem to show */
	fc_rot_set_problem(others_temp
					   ? "other sessions' temporary encrypted_heap tables may still use older TDE key generations"
					   : "row versions that other sessions still see or keep locked use older TDE key generations");
}

/*
 * A rotate_tde_key accepted while this worker ran (it was held up, so the
 * rotation was let through): go on to the new current generation, which
 * every row it rewrites gets anyway, instead of counting that generation as
 * old until the attempts run out and a new worker starts over.  True if it
 * did: the caller lists the tables again.
 */
static bool
follow_current(Run *r, const char *dbname)
{
	uint32		current;
	uint32		old;

	if (fc_rot_tde_generations(MyDatabaseId, &current, &old) == 0 || current == r->to_gen)
		return false;
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of the encrypted_heap tables of database \"%s\" "
					"goes on to TDE key generation %u, rotated to while it ran",
					dbname, current)));
	r->from_gen = r->to_gen;
	r->to_gen = current;
	fc_rot_publish(r, PHASE_REENCRYPTING);
	return true;
}

/*
 * A retry after other sessions kept old generations (kept_by_other_sessions):
 * when no row version of this database's own tables, nor a keyed index,
 * uses one any more and only other sessions' temporary tables may, passes
 * over every table would find nothing to do, and would refuse
 * rotate_tde_key while they ran (the look-up below lets it through).  Say
 * so and try again later.  Not on a first run: the look-up reads every
 * table once more.
 */
static bool
retry_in_vain(Run *r, const char *dbname)
{
	bool		retry;
	bool		others_temp = false;
	uint32		current;
	uint32		old;

	LWLockAcquire(fc_rotstate->lock, LW_SHARED);
	retry = fc_rot_my_slot->failures > 0;
	LWLockRelease(fc_rotstate->lock);
	if (!retry || tde_old_in_use(r->to_gen, &others_temp) > 0 || !others_temp)
		return false;
	(void) fc_rot_tde_generations(MyDatabaseId, &current, &old);
	if (current != r->to_gen)
		return false;			/* rotated during the look-up: a real run */
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of the encrypted_heap tables of database \"%s\" "
					"to TDE key generation %u has nothing left to rewrite; other sessions' temporary "
					"encrypted_heap tables may still use older generations, tried again later",
					dbname, r->to_gen)));
	kept_by_other_sessions(true);
	return true;
}

/* Re-encrypt the encrypted_heap tables of this database, then drop old TDE keys. */
void
fc_reencrypt_tde_tables(void)
{
	Run			r;
	List	   *tables;
	ListCell   *lc;
	char	   *dbname;
	bool		others_temp = false;
	int			dropped = 0;

	memset(&r, 0, sizeof(r));
	if (fc_rot_tde_generations(MyDatabaseId, &r.to_gen, &r.from_gen) <= 1)
		return;
	r.tde = true;
	r.pass = 1;
	r.started_at = GetCurrentTimestamp();

	fc_rot_begin_xact();
	if (fc_rot_extension_schema() == NULL)
	{
		fc_rot_end_xact();
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
	fc_rot_end_xact();
	if (retry_in_vain(&r, dbname))
	{
		list_free(tables);
		pfree(dbname);
		return;
	}
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of the encrypted_heap tables of database \"%s\" "
					"from TDE key generation %u to %u started: %d tables, about %lld rows",
					dbname, r.from_gen, r.to_gen, r.tables_total, (long long) r.rows_total)));
	fc_rot_publish(&r, PHASE_REENCRYPTING);
	r.throttle_base = GetCurrentTimestamp();

	/* rewrite, wait for snapshots that may copy old versions, vacuum, retry */
	for (int attempt = 0; attempt < 3; attempt++)
	{
		if (follow_current(&r, dbname))
		{
			/* tables created before that rotation may hold rows of the old target */
			list_free(tables);
			fc_rot_begin_xact();
			tables = list_tde_tables();
			fc_rot_end_xact();
			r.tables_total = list_length(tables);
		}
		r.tables_done = 0;
		foreach(lc, tables)
		{
			BlockNumber stop;

			r.relid = lfirst_oid(lc);
			r.next_block = 0;
			fc_rot_begin_xact();
			{
				Relation	rel = NULL;

				/* a table somebody keeps locked is done in a later attempt */
				if (ConditionalLockRelationOid(r.relid, AccessShareLock))
					rel = try_relation_open(r.relid, NoLock);
				stop = rel ? RelationGetNumberOfBlocks(rel) : 0;
				if (rel)
					relation_close(rel, AccessShareLock);
			}
			fc_rot_end_xact();
			run_tde_table(&r, stop);
			r.tables_done++;
			fc_rot_publish(&r, PHASE_REENCRYPTING);
		}
		fc_rot_wait_older_transactions(&r);
		fc_rot_publish(&r, PHASE_REENCRYPTING);
		foreach(lc, tables)
			vacuum_table(lfirst_oid(lc));
		(void) fc_rekey_keyed_indexes(&r, r.to_gen);
		if (tde_old_in_use(r.to_gen, &others_temp) == 0 && !others_temp)
			break;
		fc_rot_sleep(1000L << Min(attempt, 5));
		r.pass++;
	}

	fc_rot_test_pause(&r, true);
	/* on a Citus cluster, only once every node is done (clusterwide.c) */
	if (fc_rot_cluster_role() != FC_CLUSTER_NONE)
	{
		if (tde_old_in_use(r.to_gen, &others_temp) > 0 || others_temp)
		{
			/* not done here: try again later, without waiting for the others */
			kept_by_other_sessions(others_temp);
			list_free(tables);
			return;
		}
		if (fc_rot_cluster_wait(&r, FC_CLUSTER_STAGE_TDE) == FC_WAIT_STOP)
		{
			list_free(tables);
			return;
		}
	}
	fc_rot_publish(&r, PHASE_DESTROYING);
	fc_rot_begin_xact();
	if (!others_temp)
	{
		bool	   *used = palloc0(65536 * sizeof(bool));


		used_generations(used, &others_temp);
		if (!others_temp)
			dropped = fc_db_tde_drop_generations(MyDatabaseId, used, r.to_gen);
		pfree(used);
	}
	fc_rot_end_xact();
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of the encrypted_heap tables of database \"%s\" "
					"to TDE key generation %u finished: %lld rows rewritten; %d old generation(s) destroyed",
					dbname, r.to_gen, (long long) r.rows_done, dropped),
			 dropped == 0 && r.from_gen != 0 ?
			 errdetail("Some row versions still use an older generation (long-running transactions, "
					   "or other sessions' temporary tables); the worker tries again later, and "
					   "fieldcrypt.drop_unused_tde_keys() destroys it once they are gone.") : 0));
	list_free(tables);
	if (tde_old_in_use(r.to_gen, &others_temp) > 0 || others_temp)
		kept_by_other_sessions(others_temp);
}
