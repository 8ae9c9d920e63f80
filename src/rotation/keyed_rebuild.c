/*-------------------------------------------------------------------------
 *
 * keyed_rebuild.c
 *	  After rotate_tde_key: the keyed hash indexes keyed with an older TDE
 *	  generation are rebuilt under the current one, before that generation
 *	  can be destroyed (fc_tde_used_generations counts the generations of
 *	  keyed indexes, so destruction waits for this).
 *
 *	  Each index is rebuilt by REINDEX INDEX CONCURRENTLY, whose copy takes
 *	  the current generation (index_guard.c), so reads and writes go on
 *	  meanwhile.  An index backing an exclusion constraint cannot be
 *	  rebuilt concurrently (PostgreSQL refuses): it gets the current
 *	  generation and a plain REINDEX INDEX in one transaction (writes to
 *	  the table wait for it, reads of the index too).
 *
 *	  Privileges: the rebuild runs as the table's owner under
 *	  SECURITY_RESTRICTED_OPERATION, the rule of every piece of the worker
 *	  that may evaluate user code (index expressions and predicates).  An
 *	  index that fails (its expression now raises an error, a lock is held
 *	  for ever, ...) is named in a WARNING and in rotation_progress; the
 *	  other indexes go on, and only its generation is kept.  The invalid
 *	  copy "<index>_ccnew" a failed REINDEX CONCURRENTLY leaves is dropped
 *	  at once; one left by a crash (the old index keeps answering) is keyed
 *	  with the current generation, harmless, and dropped by the first run
 *	  after the next key change.  Other invalid keyed indexes are not
 *	  rebuilt (that would make them valid) and keep their generation until
 *	  their owner drops or rebuilds them.
 *
 * src/rotation/keyed_rebuild.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "access/xlog.h"
#include "rotation/reencrypt.h"
#include "rotation/rotation.h"
#include "tde/keyed.h"

bool		fc_test_reencrypt_pause_before_rekey = false;	/* setting */

/* Test only: stay here while fieldcrypt.test_reencrypt_pause_before_rekey is on. */
static void
test_pause(Run *r)
{
	bool		logged = false;

	while (fc_test_reencrypt_pause_before_rekey)
	{
		if (!logged)
		{
			XLogFlush(XactLastCommitEnd);
			fc_rot_publish(r, PHASE_PAUSED);
			ereport(LOG,
					(errmsg("fieldcrypt: re-encryption paused for testing before rebuilding keyed hash indexes")));
			logged = true;
		}
		fc_rot_sleep(100);
	}
	if (logged)
		fc_rot_publish(r, PHASE_REENCRYPTING);
}

/* Rebuild one index under generation current, as its table's owner. */
static void
rekey_one(const FcKeyedIndex *k, uint32 current)
{
	char	   *name;
	char	   *nsp;
	HeapTuple	tup;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	bool		saved;
	ReindexStmt *stmt;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	name = get_rel_name(k->indexoid);
	nsp = name ? get_namespace_name(get_rel_namespace(k->indexoid)) : NULL;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(k->tableoid));
	if (name == NULL || nsp == NULL || !HeapTupleIsValid(tup))
	{
		if (HeapTupleIsValid(tup))
			ReleaseSysCache(tup);
		PopActiveSnapshot();
		CommitTransactionCommand();
		return;
	}
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	stmt = makeNode(ReindexStmt);
	stmt->kind = REINDEX_OBJECT_INDEX;
	stmt->relation = makeRangeVar(nsp, name, -1);
	stmt->params = k->exclusion ? NIL : list_make1(makeDefElem("concurrently", NULL, -1));

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_RESTRICTED_OPERATION);
	fc_index_rebuild_begin(&saved);
	PG_TRY();
	{
		if (k->exclusion)
		{
			LockRelationOid(k->tableoid, ShareLock);
			LockRelationOid(k->indexoid, AccessExclusiveLock);
			fc_keyed_index_set_generation(k->indexoid, current);
		}
		ExecReindex(make_parsestate(NULL), stmt, true);
	}
	PG_FINALLY();
	{
		fc_index_rebuild_end(saved);
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	if (ActiveSnapshotSet())
		PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * The invalid copies "<index>_ccnew*" of indexoid on its table, except
 * those keyed with generation keep (and, unless only is InvalidOid, only
 * the copy with that OID): their OIDs in *oids, their names as the result.
 */
static List *
leftovers(Oid indexoid, Oid tableoid, int64 keep, Oid only, List **oids)
{
	Oid			types[4] = {OIDOID, OIDOID, INT8OID, OIDOID};
	Datum		values[4] = {ObjectIdGetDatum(indexoid), ObjectIdGetDatum(tableoid),
	Int64GetDatum(keep), ObjectIdGetDatum(only)};
	List	   *drops = NIL;

	*oids = NIL;
	if (SPI_execute_with_args("SELECT c.oid, c.oid::pg_catalog.regclass::pg_catalog.text "
							  "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
							  "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = 1 "
							  "WHERE i.indrelid = $2 AND NOT i.indisvalid "
							  "AND c.relname LIKE pg_catalog.replace(pg_catalog.replace("
							  "(SELECT relname FROM pg_catalog.pg_class WHERE oid = $1), '\\', '\\\\'), '_', '\\_') "
							  "|| '\\_ccnew%' "
							  "AND a.attoptions IS DISTINCT FROM ARRAY['generation=' || $3] "
							  "AND ($4 = 0 OR c.oid = $4)",
							  4, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not look for leftovers of REINDEX CONCURRENTLY");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			oid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		*oids = lappend_oid(*oids, oid);
		drops = lappend(drops, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
	}
	return drops;
}

/*
 * Drop the invalid copies "<index>_ccnew*" that a REINDEX CONCURRENTLY of
 * indexoid left on its table (interrupted or failed), except those keyed
 * with generation keep (an interrupted one of this run is still current:
 * it is harmless, and may be another session's REINDEX in progress).
 * In the caller's transaction; returns how many were dropped.
 *
 * Never waits: the worker holds a snapshot here, which another session's
 * REINDEX CONCURRENTLY of the index would wait for while the worker waited
 * for its lock.  A copy whose table or itself another session has locked
 * is left, with its generation, for a later run (the next attempt or
 * retry).  Once both are locked, as DROP INDEX locks them, the copy is
 * looked for again by OID: the table's owner may have dropped it, or a
 * REINDEX CONCURRENTLY that finished made it the valid index.
 */
static int
drop_leftovers(Oid indexoid, Oid tableoid, int64 keep)
{
	List	   *oids;
	List	   *unused;
	ListCell   *lc;
	int			dropped = 0;

	(void) leftovers(indexoid, tableoid, keep, InvalidOid, &oids);
	foreach(lc, oids)
	{
		Oid			copy = lfirst_oid(lc);
		List	   *again;
		ObjectAddress obj;

		if (!ConditionalLockRelationOid(tableoid, AccessExclusiveLock))
			break;
		if (!ConditionalLockRelationOid(copy, AccessExclusiveLock))
		{
			/* nothing to do here now: readers of the table go on */
			UnlockRelationOid(tableoid, AccessExclusiveLock);
			continue;
		}
		again = leftovers(indexoid, tableoid, keep, copy, &unused);
		if (again == NIL)
		{
			UnlockRelationOid(copy, AccessExclusiveLock);
			UnlockRelationOid(tableoid, AccessExclusiveLock);
			continue;
		}
		ObjectAddressSet(obj, RelationRelationId, copy);
		performDeletion(&obj, DROP_RESTRICT, 0);
		ereport(LOG, (errmsg("fieldcrypt: DROP INDEX %s (left invalid by an interrupted rebuild)",
							 (char *) linitial(again))));
		dropped++;
	}
	return dropped;
}

/* A WARNING naming the index that could not be rebuilt; the transaction is aborted. */
static void
rekey_failed(Oid indexoid, Oid tableoid, MemoryContext cxt)
{
	char		name[FC_ROT_NAME_LEN];
	char		problem[FC_ROT_PROBLEM_LEN];
	ErrorData  *edata = fc_rot_catch_error(indexoid, cxt, name);

	/* the copy the failed REINDEX CONCURRENTLY made: every retry would add one */
	PG_TRY();
	{
		fc_rot_begin_xact();
		(void) drop_leftovers(indexoid, tableoid, -1);
		fc_rot_end_xact();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	snprintf(problem, sizeof(problem), "keyed hash index %s could not be rebuilt (SQLSTATE %s)",
			 name, unpack_sql_state(edata->sqlerrcode));
	ereport(WARNING,
			(errmsg("fieldcrypt: could not rebuild keyed hash index %s under the current TDE key, "
					"its key generation is kept", name),
			 errdetail("%s (SQLSTATE %s)", edata->message, unpack_sql_state(edata->sqlerrcode))));
	/* published after the WARNING: whoever sees the problem finds it in the log */
	fc_rot_set_problem(problem);
	FreeErrorData(edata);
}

/* rekey_one, false (and a WARNING, and the problem in failure) if it failed. */
static bool
try_rekey(const FcKeyedIndex *k, uint32 current, MemoryContext cxt, char *failure)
{
	volatile bool ok = true;
	char		name[FC_ROT_NAME_LEN];
	char		status[FC_ROT_PROBLEM_LEN];

	StartTransactionCommand();
	fc_rot_table_name(k->indexoid, name);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	snprintf(status, sizeof(status),
			 "rebuilding keyed hash index %s (it waits for any transaction using its table)",
			 name);
	fc_rot_set_held(status);
	PG_TRY();
	{
		rekey_one(k, current);
	}
	PG_CATCH();
	{
		rekey_failed(k->indexoid, k->tableoid, cxt);
		fc_rot_get_problem(failure);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Rebuild under generation current every keyed hash index of this database
 * keyed with another generation (other sessions' temporary indexes cannot
 * be reached: theirs is kept until they end).  Returns how many failed.
 *
 * A rebuild, and the drop of a copy an interrupted one left, wait for the
 * transactions that use the table (REINDEX CONCURRENTLY, the ShareLock of
 * a plain REINDEX, DROP INDEX) as long as they last: meanwhile the worker
 * counts as held up by them (fc_rot_set_held), so that they cannot block
 * rotate_tde_key.  Afterwards the problem is the last failure, or what it
 * was before.
 */
int
fc_rekey_keyed_indexes(Run *r, uint32 current)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *todo = NIL;
	List	   *all;
	ListCell   *lc;
	int			failed = 0;
	char	   *dbname;
	char		before[FC_ROT_PROBLEM_LEN];
	char		failure[FC_ROT_PROBLEM_LEN] = "";

	fc_rot_get_problem(before);
	fc_rot_set_held("rebuilding keyed hash indexes (they wait for any transaction using their tables)");
	fc_rot_begin_xact();
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	all = fc_keyed_indexes();
	foreach(lc, all)
	{
		FcKeyedIndex *k = lfirst(lc);

		/*
		 * An invalid index is not rebuilt (that would make a leftover valid):
		 * copies left by an interrupted rebuild of an earlier generation are
		 * dropped below; any other keeps its generation until its owner
		 * drops or rebuilds it.
		 */
		if (k->generation != current && !k->other_temp && k->valid)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
			FcKeyedIndex *copy = palloc(sizeof(FcKeyedIndex));

			*copy = *k;
			todo = lappend(todo, copy);
			MemoryContextSwitchTo(old);
		}
	}
	/* copies of keyed indexes left invalid by a rebuild under an older generation */
	foreach(lc, all)
	{
		FcKeyedIndex *k = lfirst(lc);

		if (k->valid && !k->other_temp)
			(void) drop_leftovers(k->indexoid, k->tableoid, current);
	}
	fc_rot_end_xact();
	MemoryContextSwitchTo(cxt);
	if (todo != NIL)
		test_pause(r);

	foreach(lc, todo)
	{
		if (!try_rekey(lfirst(lc), current, cxt, failure))
			failed++;
		MemoryContextSwitchTo(cxt);
	}
	if (todo != NIL)
		ereport(LOG,
				(errmsg("fieldcrypt: %d keyed hash index(es) of database \"%s\" rebuilt under TDE key generation %u, %d failed",
						list_length(todo) - failed, dbname, current, failed)));
	fc_rot_set_problem(failure[0] ? failure : before);
	list_free_deep(todo);
	pfree(dbname);
	return failed;
}
