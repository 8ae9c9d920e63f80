/*-------------------------------------------------------------------------
 *
 * values.c
 *	  Re-encryption of encrypted column values: the SQL helpers the batches
 *	  call (_reencrypt, _stale), passes over every table with an encrypted
 *	  column, and the destruction of the old generations at the end.
 *
 * src/rotation/values.c
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
#include "fmgr.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/rel.h"

#include "columns/enctypes.h"
#include "columns/restamp.h"
#include "keys/keyapi.h"
#include "keys/keystore.h"
#include "keys/policy.h"
#include "rotation/rotation.h"
#include "tde/tam.h"

PG_FUNCTION_INFO_V1(fieldcrypt_reencrypt_text);
PG_FUNCTION_INFO_V1(fieldcrypt_reencrypt_bytea);
PG_FUNCTION_INFO_V1(fieldcrypt_reencrypt_stale);

static int64 values_reencrypted = 0;	/* by _reencrypt in this process */

/* True if v is under an older generation this database still holds. */
static bool
value_is_stale(Datum v)
{
	return fc_generation_is_stale(fc_envelope_generation(v));
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

/* True if rel has a column whose values can hold an envelope (at any depth). */
static bool
may_hold_values(Relation rel)
{
	TupleDesc	td = RelationGetDescr(rel);

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped && fc_type_holds_encrypted(att->atttypid))
			return true;
	}
	return false;
}

/* FcTamPatch: the envelopes of a decrypted encrypted_heap row. */
static int
patch_plain(TupleDesc desc, HeapTupleHeader plain, bool write, void *arg)
{
	return fc_restamp_tuple(desc, plain, write);
}

/*
 * FcRewriteTuple of the column pass: the stale envelopes of a stored
 * tuple, in place (inside the row's encryption for encrypted_heap).
 */
static int
rewrite_values(Relation rel, HeapTupleHeader td, uint32 len, ItemPointer tid, bool write,
			   void *arg)
{
	if (fc_is_encrypted_heap(rel))
		return fc_tam_reseal(rel, td, len, tid, write, false, patch_plain, NULL);
	return fc_restamp_tuple(RelationGetDescr(rel), td, write);
}

/* FcBuildRow of the column pass: the row with its stale envelopes re-encrypted. */
static bool
build_values(Relation rel, TupleTableSlot *oldslot, TupleTableSlot *newslot, void *arg)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool		changed = false;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		c = false;

		newslot->tts_values[i] = oldslot->tts_values[i];
		newslot->tts_isnull[i] = oldslot->tts_isnull[i];
		if (oldslot->tts_isnull[i] || att->attisdropped || att->attlen != -1 ||
			!fc_type_holds_encrypted(att->atttypid))
			continue;
		newslot->tts_values[i] = fc_restamp_datum(att->atttypid, oldslot->tts_values[i], &c);
		changed |= c;
	}
	return changed;
}

/*
 * OIDs (ascending) of the tables and materialized views that may hold
 * encrypted values, in TopMemoryContext (the caller frees the list); in a
 * transaction.
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
		Relation	rel = NULL;
		bool		keep = true;	/* a table kept locked: look at it in the pass */

		if (ConditionalLockRelationOid(relid, AccessShareLock))
		{
			rel = try_relation_open(relid, NoLock);
			keep = rel != NULL && may_hold_values(rel);
			if (rel)
				relation_close(rel, NoLock);
			UnlockRelationOid(relid, AccessShareLock);
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

/*
 * Row versions holding a stale value in relid, looked at page by page
 * (stop: after the first one found, or -1 for all); in a transaction.
 */
static int64
count_table(Oid relid, int64 stop)
{
	Relation	rel;
	BufferAccessStrategy strategy;
	int64		total = 0;

	/* a table somebody keeps locked counts as having work (see fc_rot_open_table) */
	if (!ConditionalLockRelationOid(relid, AccessShareLock))
		return stop >= 0 ? 1 : 0;
	rel = try_relation_open(relid, NoLock);
	if (rel == NULL)
		return 0;
	strategy = GetAccessStrategy(BAS_BULKREAD);
	for (BlockNumber blk = 0; blk < RelationGetNumberOfBlocks(rel); blk++)
	{
		total += fc_count_block(rel, blk, rewrite_values, NULL, strategy);
		if (stop >= 0 && total > stop)
			break;
	}
	relation_close(rel, AccessShareLock);
	FreeAccessStrategy(strategy);
	return total;
}

/* Row versions holding a stale value in the tables; in a transaction. */
static int64
count_stale(List *tables)
{
	ListCell   *lc;
	int64		total = 0;

	foreach(lc, tables)
		total += count_table(lfirst_oid(lc), -1);
	return total;
}

static const FcBatchOps value_ops = {may_hold_values, rewrite_values, build_values, true};

/* The generations this database holds now, into r (destroy_old_generations). */
static void
note_pass_generations(Run *r)
{
	FcDbKeys   *entry;

	StaticAssertStmt(lengthof(r->pass_gens) == FC_MAX_GENERATIONS, "Run.pass_gens holds every generation");
	fc_secure_region_alloc((void **) &entry, sizeof(FcDbKeys));
	r->npass_gens = 0;
	if (fc_db_lookup(MyDatabaseId, entry))
		for (int i = 0; i < entry->ngens && i < (int) lengthof(r->pass_gens); i++)
			r->pass_gens[r->npass_gens++] = entry->gens[i].gen;
	fc_secure_region_free(entry, sizeof(FcDbKeys));
}

/* the pace of passes held back by a table somebody keeps locked (values loop) */
#define HELD_MIN_MS		1000L
#define HELD_MAX_MS		30000L

/*
 * After a pass that rewrote nothing and was held back only by a table in
 * use (locked, or a page kept pinned): wait before the next, longer each
 * time, and say why in rotation_progress.problem; key changes are accepted
 * meanwhile (fc_rot_set_held).  A session that keeps a table locked in an
 * idle transaction holds no snapshot, so the wait for older transactions
 * does not wait for it: without this the worker would run pass after
 * pass, writing its position each time.
 */
static long
wait_held_back(Run *r, long held_ms)
{
	char		name[FC_ROT_NAME_LEN];
	char		problem[FC_ROT_PROBLEM_LEN];

	held_ms = held_ms == 0 ? HELD_MIN_MS : Min(held_ms * 2, HELD_MAX_MS);
	fc_rot_begin_xact();
	fc_rot_table_name(r->held_relid, name);
	fc_rot_end_xact();
	snprintf(problem, sizeof(problem),
			 "table %s is in use by another session (it or a row of it locked, or a page pinned); next try in %ld s",
			 name, held_ms / 1000);
	fc_rot_set_held(problem);
	fc_rot_sleep(held_ms);
	return held_ms;
}

/* One batch of the column pass over relid; false when the table is finished. */
static bool
run_batch(Run *r, Oid relid)
{
	return fc_rot_batch(r, relid, MaxBlockNumber, &value_ops);
}

/*
 * A check pass (one that started after the wait) first looks for a stale
 * value in the whole table, and rewrites the table in batches only if it
 * finds one.  Records the position.
 */
static bool
table_has_stale(Run *r, Oid relid)
{
	bool		found;

	fc_rot_begin_xact();
	found = count_table(relid, 0) > 0;
	r->relid = relid;
	r->next_block = 0;
	fc_rot_save_state(r, "running");
	fc_rot_end_xact();
	return found;
}

/*
 * Rewrite one table in batches (a check pass looks first).  A table that
 * fails is logged with its name and left for the next run; the other
 * tables go on.
 */
static void
run_table(Run *r, Oid relid)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		if (!(r->pass_clean && r->next_block == 0 && !table_has_stale(r, relid)))
			for (;;)
			{
				fc_rot_test_pause(r, false);
				fc_rot_check_postponed();
				if (!run_batch(r, relid))
					break;
			}
	}
	PG_CATCH();
	{
		fc_rot_table_failed(r, relid, cxt);
	}
	PG_END_TRY();
}

/* One pass over every table, from where r says; the tables in OID order. */
static void
run_pass(Run *r)
{
	List	   *tables;
	ListCell   *lc;

	fc_rot_begin_xact();
	tables = list_tables();
	r->tables_total = list_length(tables);
	fc_rot_end_xact();
	fc_rot_publish(r, PHASE_REENCRYPTING);

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
		fc_rot_check_postponed();
		run_table(r, relid);
		r->tables_done++;
		fc_rot_publish(r, PHASE_REENCRYPTING);
	}
	r->tables_done = Min(r->tables_done, r->tables_total);
	list_free(tables);
}

/* Destroy every generation but the current one; r->to_gen must be current. */
static void
destroy_old_generations(Run *r)
{
	FcDbKeys   *entry;
	StringInfoData gone;
	char	   *dbname;

	fc_rot_publish(r, PHASE_DESTROYING);
	fc_rot_begin_xact();
	while (!fc_try_change_lock())
	{
		/* a key change (or a dropped database's cleanup) is committing */
		fc_rot_sleep(100);
	}
	dbname = get_database_name(MyDatabaseId);
	fc_secure_region_alloc((void **) &entry, sizeof(FcDbKeys));
	if (!fc_db_lookup(MyDatabaseId, entry) || entry->current_gen != r->to_gen)
	{
		fc_secure_region_free(entry, sizeof(FcDbKeys));
		fc_rot_end_xact();
		return;
	}
	initStringInfo(&gone);
	{
		int			kept = 0;

		for (int i = 0; i < entry->ngens; i++)
		{
			bool		covered = false;

			/*
			 * Only generations the clean pass knew of: one that came in since
			 * (an import accepted while the worker was held up) may still be
			 * used by values that pass did not take for stale.
			 */
			for (int j = 0; j < r->npass_gens; j++)
				covered |= r->pass_gens[j] == entry->gens[i].gen;
			if (entry->gens[i].gen == entry->current_gen || !covered)
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
	fc_rot_save_state(r, "done");
	fc_db_stage(MyDatabaseId, entry);	/* keyring written and WAL-logged */
	fc_rot_end_xact();
	/* logged before it is published: whoever sees the old generations gone finds the line */
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of database \"%s\" to generation %u finished: "
					"%lld rows rewritten in %d pass(es); generation(s) %s destroyed",
					dbname, r->to_gen, (long long) r->rows_done, r->pass, gone.data)));
	fc_db_publish(MyDatabaseId, entry);
	fc_secure_region_free(entry, sizeof(FcDbKeys));
}

void
fc_reencrypt_values(void)
{
	Run			r;
	char		state[32] = "";
	bool		ring_ok;
	int			ngens;
	char	   *dbname;
	bool		resumed;
	bool		cluster_done = false;	/* every node of the Citus cluster is done */
	long		held_ms = 0;	/* the last wait_held_back, 0 after progress */

	memset(&r, 0, sizeof(r));
	fc_rot_check_postponed();
	ngens = fc_rot_db_generations(MyDatabaseId, &r.to_gen, &r.from_gen, &ring_ok);
	if (ngens <= 1 || !ring_ok)
		return;

	fc_rot_begin_xact();
	if (fc_rot_extension_schema() == NULL)
	{
		/* keys without the extension: nothing here can hold values */
		fc_rot_end_xact();
		fc_rot_blocked = true;
		fc_rot_blocked_gen = r.to_gen;
		return;
	}
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	resumed = fc_rot_load_state(&r, state, sizeof(state));
	if (resumed && strcmp(state, "running") != 0)
		resumed = false;		/* an older run was blocked: start again */
	if (!resumed)
	{
		List	   *tables;

		fc_rot_publish(&r, PHASE_COUNTING);
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
		if (SPI_execute(psprintf("DELETE FROM %s.%s", fc_rot_extension_schema(), STATE_TABLE),
						false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not reset re-encryption progress");
		fc_rot_save_state(&r, "running");
	}
	else if (OidIsValid(r.relid) || r.tables_done > 0)
		r.pass_clean = false;	/* part of this pass ran before the restart */
	fc_rot_end_xact();

	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rot_my_slot->rows_at_attach = r.rows_done;
	fc_rot_my_slot->attached_at = GetCurrentTimestamp();
	LWLockRelease(fc_rotstate->lock);
	fc_rot_publish(&r, PHASE_REENCRYPTING);
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
		int64		rows_before = r.rows_done;
		bool		held_back;

		note_pass_generations(&r);
		r.held_relid = InvalidOid;
		run_pass(&r);
		if (r.failed > 0)
		{
			/* older generations stay; the launcher starts a worker again later */
			fc_rot_failed = true;
			return;
		}
		/* rewrote nothing, and only because a table was in use (never a clean pass) */
		held_back = r.rows_done == rows_before && OidIsValid(r.held_relid);
		if (held_ms > 0 && !held_back)
		{
			/* nothing holds it up any more: key changes wait again */
			held_ms = 0;
			fc_rot_set_problem("");
		}
		if (r.pass_clean && r.pass_reencrypted == 0)
		{
			int			w;

			if (cluster_done)
				break;
			fc_rot_test_pause(&r, true);
			fc_rot_check_postponed();
			/* on a Citus cluster, only once every node is done (clusterwide.c) */
			w = fc_rot_cluster_wait(&r, FC_CLUSTER_STAGE_VALUES);
			if (w == FC_WAIT_STOP)
				return;
			if (w == FC_WAIT_ALONE)
				break;
			/* one more check pass: a shard moved here meanwhile may hold old values */
			cluster_done = true;
		}
		fc_rot_wait_older_transactions(&r);
		if (held_back)
			held_ms = wait_held_back(&r, held_ms);
		r.pass++;
		r.pass_clean = true;
		r.pass_reencrypted = 0;
		r.relid = InvalidOid;
		r.next_block = 0;
		r.tables_done = 0;
		fc_rot_begin_xact();
		fc_rot_save_state(&r, "running");
		fc_rot_end_xact();
		fc_rot_publish(&r, PHASE_REENCRYPTING);
		r.throttle_base = GetCurrentTimestamp();
		r.throttle_rows = 0;
	}

	fc_rot_check_postponed();
	destroy_old_generations(&r);
}
