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
 *	  other indexes go on, and only its generation is kept.  An interrupted
 *	  REINDEX CONCURRENTLY (crash, cancel) leaves an invalid copy named
 *	  <index>_ccnew, as in PostgreSQL: the old index keeps answering, and
 *	  the copy is to be dropped (docs/operations.md).
 *
 * src/rotation/keyed_rebuild.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "rotation/rotation.h"
#include "tde/keyed.h"

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

/* A WARNING naming the index that could not be rebuilt; the transaction is aborted. */
static void
rekey_failed(Oid indexoid, MemoryContext cxt)
{
	ErrorData  *edata;
	char		name[NAMEDATALEN * 2 + 8] = "";
	char		problem[192];

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	StartTransactionCommand();
	{
		char	   *rel = get_rel_name(indexoid);
		char	   *nsp = rel ? get_namespace_name(get_rel_namespace(indexoid)) : NULL;

		if (rel && nsp)
			strlcpy(name, quote_qualified_identifier(nsp, rel), sizeof(name));
		else
			snprintf(name, sizeof(name), "with OID %u", indexoid);
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	snprintf(problem, sizeof(problem), "keyed hash index %s could not be rebuilt (SQLSTATE %s)",
			 name, unpack_sql_state(edata->sqlerrcode));
	fc_rot_set_problem(problem);
	ereport(WARNING,
			(errmsg("fieldcrypt: could not rebuild keyed hash index %s under the current TDE key, "
					"its key generation is kept", name),
			 errdetail("%s (SQLSTATE %s)", edata->message, unpack_sql_state(edata->sqlerrcode))));
	FreeErrorData(edata);
}

/* rekey_one, false (and a WARNING) if it failed. */
static bool
try_rekey(const FcKeyedIndex *k, uint32 current, MemoryContext cxt)
{
	volatile bool ok = true;

	PG_TRY();
	{
		rekey_one(k, current);
	}
	PG_CATCH();
	{
		rekey_failed(k->indexoid, cxt);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Rebuild under generation current every keyed hash index of this database
 * keyed with another generation (other sessions' temporary indexes cannot
 * be reached: theirs is kept until they end).  Returns how many failed.
 */
int
fc_rekey_keyed_indexes(uint32 current)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *todo = NIL;
	List	   *all;
	ListCell   *lc;
	int			failed = 0;
	char	   *dbname;

	fc_rot_begin_xact();
	dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	all = fc_keyed_indexes();
	foreach(lc, all)
	{
		FcKeyedIndex *k = lfirst(lc);

		if (k->generation != current && !k->other_temp)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
			FcKeyedIndex *copy = palloc(sizeof(FcKeyedIndex));

			*copy = *k;
			todo = lappend(todo, copy);
			MemoryContextSwitchTo(old);
		}
	}
	fc_rot_end_xact();
	MemoryContextSwitchTo(cxt);

	foreach(lc, todo)
	{
		if (!try_rekey(lfirst(lc), current, cxt))
			failed++;
		MemoryContextSwitchTo(cxt);
	}
	if (todo != NIL)
		ereport(LOG,
				(errmsg("fieldcrypt: %d keyed hash index(es) of database \"%s\" rebuilt under TDE key generation %u, %d failed",
						list_length(todo) - failed, dbname, current, failed)));
	list_free_deep(todo);
	pfree(dbname);
	return failed;
}
