/*-------------------------------------------------------------------------
 *
 * tde_stats.c
 *	  Where the planner statistics of encrypted_heap tables live, and how the
 *	  planner gets them: fieldcrypt.tde_statistic (an encrypted_heap
 *	  materialized view, so that no publication includes it, written only
 *	  here: each row holds a pg_statistic-shaped tuple as bytea, keyed by
 *	  starelid, staattnum, stainherit), the planner's get_relation_stats_hook,
 *	  get_index_stats_hook and get_attavgwidth_hook (row widths), the
 *	  superuser view fieldcrypt.pg_stats, and the cleanup when a table,
 *	  column or index is dropped.
 *
 *	  The hooks read the table directly (index scan, no SQL, no privilege
 *	  check of the planning role: it works the same for every role and on a
 *	  hot standby) and keep what they read in a backend-local cache by
 *	  relation OID.  A relcache invalidation of that OID (sent at commit by
 *	  whoever stores or drops its statistics, replayed on standbys) drops the
 *	  entry.  A relation without rows here costs the hook one hash lookup.
 *
 *	  The hooks then decide, like core's examine_variable, whether the
 *	  planning role may see every row of the column (acl_ok): SELECT on the
 *	  table or the column of the relation named in the query (the root
 *	  parent of an inheritance child), and no security quals (RLS, security
 *	  barrier views).  Without it, only leakproof operators are given the
 *	  statistics' values.
 *
 * src/tde/tde_stats.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/heap.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_statistic.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "keys/keystore.h"
#include "tde/tam.h"
#include "tde/tde_stats.h"

PG_FUNCTION_INFO_V1(fieldcrypt_tde_statistic);

#define STATS_TABLE		"tde_statistic"
#define STATS_INDEX		"tde_statistic_key"
#define Natts_store		5		/* starelid, staattnum, stainherit, statype, stadata */

typedef struct CachedStat
{
	int16		attnum;
	bool		inherit;
	HeapTuple	tup;			/* pg_statistic-shaped, in stats_cxt */
} CachedStat;

typedef struct RelStats
{
	Oid			relid;			/* hash key */
	int			n;
	CachedStat *stats;			/* in stats_cxt, NULL if n == 0 */
} RelStats;

static get_relation_stats_hook_type prev_relation_stats_hook = NULL;
static get_index_stats_hook_type prev_index_stats_hook = NULL;
static get_attavgwidth_hook_type prev_attavgwidth_hook = NULL;
static HTAB *stats_cache = NULL;
static MemoryContext stats_cxt = NULL;
static Oid	table_oid = InvalidOid;	/* fieldcrypt.tde_statistic */
static bool table_known = false;
static uint64 inval_count = 0;

static RelStats *lookup(Oid relid);
static HeapTuple find_stat(Oid relid, int16 attnum, bool inherit);
static void load(Oid relid, RelStats *out);
static Oid	stats_index(Relation rel);
static HeapTuple decode(Datum data, TupleDesc stadesc);
static bool rows_selectable(PlannerInfo *root, Index varno, AttrNumber attnum,
							bool whole_table);
static Index rte_varno(PlannerInfo *root, RangeTblEntry *rte);
static void free_stats_tuple(HeapTuple tup);
static bool fc_relation_stats(PlannerInfo *root, RangeTblEntry *rte,
							  AttrNumber attnum, VariableStatData *vardata);
static bool fc_index_stats(PlannerInfo *root, Oid indexOid, AttrNumber indexattnum,
						   VariableStatData *vardata);
static int32 fc_attavgwidth(Oid relid, AttrNumber attnum);
static void relcache_cb(Datum arg, Oid relid);
static void syscache_cb(Datum arg, int cacheid, uint32 hashvalue);

/* Install the planner's hooks and the invalidation callbacks. */
void
fc_tde_stats_init(void)
{
	prev_relation_stats_hook = get_relation_stats_hook;
	get_relation_stats_hook = fc_relation_stats;
	prev_index_stats_hook = get_index_stats_hook;
	get_index_stats_hook = fc_index_stats;
	prev_attavgwidth_hook = get_attavgwidth_hook;
	get_attavgwidth_hook = fc_attavgwidth;
	CacheRegisterRelcacheCallback(relcache_cb, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, syscache_cb, (Datum) 0);
	CacheRegisterSyscacheCallback(RELNAMENSP, syscache_cb, (Datum) 0);
}

/* Drop the cached statistics of relid (every relation: InvalidOid). */
static void
relcache_cb(Datum arg, Oid relid)
{
	inval_count++;
	if (!OidIsValid(relid) || relid == table_oid)
		table_known = false;
	if (stats_cache == NULL)
		return;
	if (OidIsValid(relid))
	{
		RelStats   *e = hash_search(stats_cache, &relid, HASH_FIND, NULL);

		if (e != NULL)
		{
			for (int i = 0; i < e->n; i++)
				pfree(e->stats[i].tup);
			if (e->stats)
				pfree(e->stats);
			hash_search(stats_cache, &relid, HASH_REMOVE, NULL);
		}
	}
	else
	{
		hash_destroy(stats_cache);
		stats_cache = NULL;
		MemoryContextReset(stats_cxt);
	}
}

/* A schema or a relation name changed: look the table up again. */
static void
syscache_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	table_known = false;
}

/* OID of fieldcrypt.tde_statistic, InvalidOid where the extension is absent. */
Oid
fc_tde_stats_table(void)
{
	if (!table_known)
	{
		Oid			nsp = get_namespace_oid("fieldcrypt", true);

		table_oid = OidIsValid(nsp) ? get_relname_relid(STATS_TABLE, nsp) : InvalidOid;
		table_known = true;
	}
	return table_oid;
}

/*
 * Whether statistics can be read and written here: the table exists and
 * the database's TDE key is loaded (without it nothing is used or stored,
 * and planning falls back to core's estimates instead of failing).
 */
bool
fc_tde_stats_available(void)
{
	return OidIsValid(fc_tde_stats_table()) && fc_local_tde_generation(0, true) != NULL;
}

/* OID of the index of fieldcrypt.tde_statistic (InvalidOid while it is being made). */
static Oid
stats_index(Relation rel)
{
	return get_relname_relid(STATS_INDEX, RelationGetNamespace(rel));
}

/* Make a HeapTuple of pg_statistic's shape from a stored bytea. */
static HeapTuple
decode(Datum data, TupleDesc stadesc)
{
	bytea	   *b = DatumGetByteaPP(data);
	uint32		len = VARSIZE_ANY_EXHDR(b);
	HeapTuple	tup;

	if (len < SizeofHeapTupleHeader)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("statistics row of fieldcrypt.%s is malformed", STATS_TABLE)));
	tup = (HeapTuple) palloc(HEAPTUPLESIZE + len);
	tup->t_len = len;
	ItemPointerSetInvalid(&tup->t_self);
	tup->t_tableOid = StatisticRelationId;
	tup->t_data = (HeapTupleHeader) ((char *) tup + HEAPTUPLESIZE);
	memcpy(tup->t_data, VARDATA_ANY(b), len);
	if (HeapTupleHeaderGetNatts(tup->t_data) != stadesc->natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("statistics row of fieldcrypt.%s is malformed", STATS_TABLE)));
	return tup;
}

/*
 * Read the statistics of relid into out (in stats_cxt).  Rows of a table
 * that no longer uses encrypted_heap, and rows of a column whose type
 * changed since, are not used.
 */
static void
load(Oid relid, RelStats *out)
{
	Relation	rel;
	Relation	sd;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	t;
	Snapshot	snap;
	HeapTuple	ctup;
	char		relkind;
	Oid			relam;
	int			cap = 0;

	out->n = 0;
	out->stats = NULL;
	ctup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(ctup))
		return;
	relkind = ((Form_pg_class) GETSTRUCT(ctup))->relkind;
	relam = ((Form_pg_class) GETSTRUCT(ctup))->relam;
	ReleaseSysCache(ctup);
	if ((relkind == RELKIND_RELATION || relkind == RELKIND_MATVIEW) &&
		relam != fc_tam_oid())
		return;

	rel = table_open(fc_tde_stats_table(), AccessShareLock);
	if (!OidIsValid(stats_index(rel)))
	{
		table_close(rel, AccessShareLock);
		return;
	}
	sd = table_open(StatisticRelationId, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, stats_index(rel), true, snap, 1, &key);
	while (HeapTupleIsValid(t = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		isnull[Natts_store];
		Datum		values[Natts_store];
		MemoryContext old;
		int16		attnum;

		heap_deform_tuple(t, desc, values, isnull);
		if (isnull[0] || isnull[1] || isnull[2] || isnull[3] || isnull[4])
			continue;
		attnum = DatumGetInt16(values[1]);
		if (relkind != RELKIND_INDEX)
		{
			HeapTuple	atup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid),
											   Int16GetDatum(attnum));
			bool		ok = false;

			if (HeapTupleIsValid(atup))
			{
				Form_pg_attribute att = (Form_pg_attribute) GETSTRUCT(atup);

				ok = !att->attisdropped && att->atttypid == DatumGetObjectId(values[3]);
				ReleaseSysCache(atup);
			}
			if (!ok)
				continue;
		}
		old = MemoryContextSwitchTo(stats_cxt);
		if (out->n == cap)
		{
			cap = cap ? cap * 2 : 8;
			out->stats = out->stats ? repalloc(out->stats, cap * sizeof(CachedStat))
				: palloc(cap * sizeof(CachedStat));
		}
		out->stats[out->n].attnum = attnum;
		out->stats[out->n].inherit = DatumGetBool(values[2]);
		out->stats[out->n].tup = decode(values[4], RelationGetDescr(sd));
		out->n++;
		MemoryContextSwitchTo(old);
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(sd, AccessShareLock);
	table_close(rel, AccessShareLock);
}

/* The cached statistics of relid, read on first use; NULL if unavailable. */
static RelStats *
lookup(Oid relid)
{
	RelStats   *e;
	RelStats	loaded;
	bool		found;
	uint64		before;

	if (stats_cache != NULL)
	{
		e = hash_search(stats_cache, &relid, HASH_FIND, NULL);
		if (e != NULL)
			return e;
	}
	/* never statistics of the statistics (and no read of an index being built) */
	if (!fc_tde_stats_available() || relid == fc_tde_stats_table())
		return NULL;
	if (stats_cxt == NULL)
		stats_cxt = AllocSetContextCreate(CacheMemoryContext, "fieldcrypt statistics",
										  ALLOCSET_DEFAULT_SIZES);
	if (stats_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(RelStats);
		ctl.hcxt = stats_cxt;
		stats_cache = hash_create("fieldcrypt statistics", 256, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	before = inval_count;
	load(relid, &loaded);
	if (stats_cache == NULL || inval_count != before)
	{
		/* invalidated while reading: use it once, keep nothing */
		static RelStats once;

		once = loaded;
		once.relid = relid;
		return &once;
	}
	e = hash_search(stats_cache, &relid, HASH_ENTER, &found);
	e->n = loaded.n;
	e->stats = loaded.stats;
	return e;
}

/* A copy of the statistics tuple of (relid, attnum, inherit), or NULL. */
static HeapTuple
find_stat(Oid relid, int16 attnum, bool inherit)
{
	RelStats   *e = lookup(relid);

	if (e == NULL)
		return NULL;
	for (int i = 0; i < e->n; i++)
		if (e->stats[i].attnum == attnum && e->stats[i].inherit == inherit)
			return heap_copytuple(e->stats[i].tup);
	return NULL;
}

/* freefunc of the tuples the hooks hand out. */
static void
free_stats_tuple(HeapTuple tup)
{
	heap_freetuple(tup);
}

/* Range table index of rte in root, 0 if it is not there. */
static Index
rte_varno(PlannerInfo *root, RangeTblEntry *rte)
{
	for (int i = 1; i < root->simple_rel_array_size; i++)
		if (root->simple_rte_array[i] == rte)
			return i;
	return 0;
}

/*
 * Whether the planning role may read every row of column attnum (of the
 * whole table if whole_table) of range table entry varno: the check is made
 * on the relation the query named, i.e. an inheritance child is mapped up
 * to its root parent (a column local to a child fails); then no security
 * quals, and SELECT on the table or on the column, for the role the query
 * runs as (a view's owner for a table reached through a view).
 */
static bool
rows_selectable(PlannerInfo *root, Index varno, AttrNumber attnum, bool whole_table)
{
	RangeTblEntry *rte;
	Oid			userid;

	if (root->append_rel_array != NULL)
	{
		AppendRelInfo *app = root->append_rel_array[varno];

		while (app != NULL &&
			   planner_rt_fetch(app->parent_relid, root)->rtekind == RTE_RELATION)
		{
			if (!whole_table && attnum > 0)
			{
				if (attnum > app->num_child_cols)
					return false;
				attnum = app->parent_colnos[attnum - 1];
				if (attnum == 0)
					return false;	/* a column of the child only */
			}
			varno = app->parent_relid;
			app = root->append_rel_array[varno];
		}
	}
	rte = planner_rt_fetch(varno, root);
	if (rte->rtekind != RTE_RELATION || rte->securityQuals != NIL)
		return false;
	userid = OidIsValid(rte->checkAsUser) ? rte->checkAsUser : GetUserId();
	if (pg_class_aclcheck(rte->relid, userid, ACL_SELECT) == ACLCHECK_OK)
		return true;
	if (whole_table)
		return false;
	if (attnum == InvalidAttrNumber)
		return pg_attribute_aclcheck_all(rte->relid, userid, ACL_SELECT,
										 ACLMASK_ALL) == ACLCHECK_OK;
	return pg_attribute_aclcheck(rte->relid, attnum, userid, ACL_SELECT) == ACLCHECK_OK;
}

/* get_relation_stats_hook: a column of a table, or of an inheritance tree. */
static bool
fc_relation_stats(PlannerInfo *root, RangeTblEntry *rte, AttrNumber attnum,
				  VariableStatData *vardata)
{
	HeapTuple	tup;
	Index		varno;

	if (prev_relation_stats_hook &&
		prev_relation_stats_hook(root, rte, attnum, vardata))
		return true;
	if (rte->rtekind != RTE_RELATION)
		return false;
	tup = find_stat(rte->relid, attnum, rte->inh);
	if (tup == NULL)
		return false;			/* core looks in pg_statistic */
	vardata->statsTuple = tup;
	vardata->freefunc = free_stats_tuple;
	varno = rte_varno(root, rte);
	vardata->acl_ok = varno > 0 && rows_selectable(root, varno, attnum, false);
	return true;
}

/*
 * get_index_stats_hook: an expression column of an index.  Like core, the
 * estimation of expressions (examine_variable, which sets vardata->rel)
 * does not use the statistics of a partial index; cost estimates
 * (correlation) do.  Access needs the whole table to be selectable.
 */
static bool
fc_index_stats(PlannerInfo *root, Oid indexOid, AttrNumber indexattnum,
			   VariableStatData *vardata)
{
	HeapTuple	tup;
	Index		varno = 0;
	ListCell   *lc;

	if (prev_index_stats_hook &&
		prev_index_stats_hook(root, indexOid, indexattnum, vardata))
		return true;
	if (vardata->rel != NULL)
	{
		foreach(lc, vardata->rel->indexlist)
		{
			IndexOptInfo *index = lfirst(lc);

			if (index->indexoid == indexOid)
			{
				if (index->indpred != NIL)
					return false;
				varno = vardata->rel->relid;
			}
		}
	}
	else
	{
		for (int i = 1; i < root->simple_rel_array_size && varno == 0; i++)
		{
			RelOptInfo *rel = root->simple_rel_array[i];

			if (rel == NULL)
				continue;
			foreach(lc, rel->indexlist)
				if (((IndexOptInfo *) lfirst(lc))->indexoid == indexOid)
					varno = rel->relid;
		}
	}
	tup = find_stat(indexOid, indexattnum, false);
	if (tup == NULL)
		return false;
	vardata->statsTuple = tup;
	vardata->freefunc = free_stats_tuple;
	vardata->acl_ok = varno > 0 && rows_selectable(root, varno, 0, true);
	return true;
}

/*
 * get_attavgwidth_hook: the average width of a column (row width
 * estimates), as core's get_attavgwidth reads it from pg_statistic.
 */
static int32
fc_attavgwidth(Oid relid, AttrNumber attnum)
{
	RelStats   *e;

	if (prev_attavgwidth_hook)
	{
		int32		w = prev_attavgwidth_hook(relid, attnum);

		if (w > 0)
			return w;
	}
	e = lookup(relid);
	if (e == NULL)
		return 0;
	for (int i = 0; i < e->n; i++)
		if (e->stats[i].attnum == attnum && !e->stats[i].inherit)
		{
			int32		w = ((Form_pg_statistic) GETSTRUCT(e->stats[i].tup))->stawidth;

			return w > 0 ? w : 0;
		}
	return 0;
}

/* Index scan of the statistics of relid (attnum 0: every column). */
static SysScanDesc
scan_of(Relation rel, Oid relid, int16 attnum, Snapshot snap)
{
	ScanKeyData keys[2];
	int			nkeys = 1;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	if (attnum != 0)
		ScanKeyInit(&keys[nkeys++], 2, BTEqualStrategyNumber, F_INT2EQ,
					Int16GetDatum(attnum));
	return systable_beginscan(rel, stats_index(rel), true, snap, nkeys, keys);
}

/* Delete the rows of relid (attnum 0: all; inherit -1: both) from rel. */
static int
delete_rows(Relation rel, Oid relid, int16 attnum, int inherit)
{
	SysScanDesc scan;
	HeapTuple	t;
	Snapshot	snap;
	int			n = 0;

	if (!OidIsValid(stats_index(rel)))
		return 0;				/* CREATE / ALTER EXTENSION is making it */
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = scan_of(rel, relid, attnum, snap);
	while (HeapTupleIsValid(t = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		inh = heap_getattr(t, 3, RelationGetDescr(rel), &isnull);

		if (inherit >= 0 && !isnull && DatumGetBool(inh) != (inherit != 0))
			continue;
		simple_table_tuple_delete(rel, &t->t_self, snap);
		n++;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	return n;
}

/*
 * Store the statistics tuple stat (formed like a pg_statistic row) of
 * (relid, attnum, inherit), replacing what was there.  The planners of
 * every backend re-read relid's statistics after commit.
 */
void
fc_tde_stats_store(Oid relid, int16 attnum, bool inherit, Oid atttypid, HeapTuple stat)
{
	Relation	rel;
	TupleTableSlot *slot;
	bytea	   *b;
	List	   *indexes;
	ListCell   *lc;

	rel = table_open(fc_tde_stats_table(), RowExclusiveLock);
	delete_rows(rel, relid, attnum, inherit ? 1 : 0);

	b = palloc(VARHDRSZ + stat->t_len);
	SET_VARSIZE(b, VARHDRSZ + stat->t_len);
	memcpy(VARDATA(b), stat->t_data, stat->t_len);
	slot = table_slot_create(rel, NULL);
	ExecClearTuple(slot);
	slot->tts_values[0] = ObjectIdGetDatum(relid);
	slot->tts_values[1] = Int16GetDatum(attnum);
	slot->tts_values[2] = BoolGetDatum(inherit);
	slot->tts_values[3] = ObjectIdGetDatum(atttypid);
	slot->tts_values[4] = PointerGetDatum(b);
	memset(slot->tts_isnull, 0, Natts_store * sizeof(bool));
	ExecStoreVirtualTuple(slot);
	table_tuple_insert(rel, slot, GetCurrentCommandId(true), 0, NULL);

	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *ii = BuildIndexInfo(irel);
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		FormIndexDatum(ii, slot, NULL, values, isnull);
		index_insert(irel, values, isnull, &slot->tts_tid, rel, UNIQUE_CHECK_NO,
					 false, ii);
		index_close(irel, RowExclusiveLock);
	}
	ExecDropSingleTupleTableSlot(slot);
	pfree(b);
	table_close(rel, RowExclusiveLock);
	CacheInvalidateRelcacheByRelid(relid);
}

/*
 * Forget the statistics of relid (attnum 0: every column; inherit -1: both
 * kinds).  Called when a relation or column is dropped, and when ANALYZE
 * keeps plaintext statistics in pg_statistic instead.
 */
void
fc_tde_stats_forget(Oid relid, int16 attnum, int inherit)
{
	Relation	rel;
	Oid			t = fc_tde_stats_table();

	if (!OidIsValid(t) || relid == t || !fc_tde_stats_available())
		return;
	rel = table_open(t, RowExclusiveLock);
	if (delete_rows(rel, relid, attnum, inherit) > 0 &&
		SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		CacheInvalidateRelcacheByRelid(relid);
	table_close(rel, RowExclusiveLock);
}

/*
 * fieldcrypt._tde_statistic(): every stored statistics row, decrypted and
 * in pg_statistic's shape (backs the view fieldcrypt.pg_stats).  Superusers
 * only: the rows hold sample values.
 */
Datum
fieldcrypt_tde_statistic(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Relation	rel;
	Relation	sd;
	SysScanDesc scan;
	HeapTuple	t;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read the statistics of encrypted_heap tables"),
				 errdetail("They hold sample values of the tables."),
				 errhint("Only superusers may read fieldcrypt.pg_stats.")));
	InitMaterializedSRF(fcinfo, 0);
	if (!OidIsValid(fc_tde_stats_table()))
		PG_RETURN_VOID();
	rel = table_open(fc_tde_stats_table(), AccessShareLock);
	sd = table_open(StatisticRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(t = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(t, 5, RelationGetDescr(rel), &isnull);

		if (!isnull)
			tuplestore_puttuple(rsinfo->setResult, decode(d, RelationGetDescr(sd)));
	}
	systable_endscan(scan);
	table_close(sd, AccessShareLock);
	table_close(rel, AccessShareLock);
	PG_RETURN_VOID();
}
