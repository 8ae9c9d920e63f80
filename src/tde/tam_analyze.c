/*-------------------------------------------------------------------------
 *
 * tam_analyze.c
 *	  ANALYZE of encrypted_heap tables: the sample and the statistics,
 *	  computed here and stored encrypted by tde_stats.c, never in
 *	  pg_statistic.
 *
 *	  Design.  Core writes pg_statistic only from the rows that
 *	  acquire_sample_rows gets from the access method, so the ANALYZE scan
 *	  (tam_scan.c) hands core none (it still counts live and dead rows, so
 *	  reltuples and relpages stay exact) and offers each row to the
 *	  reservoir kept here instead: the same blocks core's block sampler
 *	  chose, Vitter's algorithm over the rows as core does, of the size core
 *	  would use (the largest minrows of the columns' and expression index
 *	  columns' typanalyze functions).  Only rows that enter the reservoir are
 *	  decrypted.  When the scan ends (explicit ANALYZE, VACUUM ANALYZE and
 *	  autovacuum alike end there), each column's own typanalyze /
 *	  compute_stats fill a VacAttrStats, which is formed into a pg_statistic
 *	  row and stored; so are the expression columns of the table's indexes.
 *
 *	  Inheritance.  When the scan samples a child for the statistics of an
 *	  inheritance tree (ANALYZE's progress phase says so), its rows are
 *	  converted to the parent's row type and kept until the transaction
 *	  commits (or another tree starts); then each child contributes in
 *	  proportion to its estimated rows and the parent's stainherit
 *	  statistics are computed and stored.
 *
 *	  With fieldcrypt.analyze_values = on (1.0's opt-in), rows go to core
 *	  as heap's would, and what was stored here for the table is forgotten.
 *	  While it is off, CREATE STATISTICS on encrypted_heap tables is refused:
 *	  extended statistics would be built from plaintext samples into
 *	  pg_statistic_ext_data.
 *
 *	  Memory: everything lives in a context under TopTransactionContext;
 *	  the transaction callback drops the state at commit and abort.
 *
 * src/tde/tam_analyze.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/detoast.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/heap.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_statistic.h"
#include "catalog/pg_type.h"
#include "commands/progress.h"
#include "commands/vacuum.h"
#include "executor/executor.h"
#include "nodes/nodeFuncs.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/attoptcache.h"
#include "utils/backend_status.h"
#include "utils/datum.h"
#include "common/pg_prng.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/sampling.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "tde/tam.h"
#include "tde/tde_stats.h"

/* The sample of one ANALYZE scan. */
typedef struct Sample
{
	TableScanDesc scan;
	Oid			relid;
	Oid			parent;			/* inheritance tree sampled, or InvalidOid */
	bool		plain;			/* analyze_values = on: core keeps them */
	int			targrows;
	int			numrows;
	HeapTuple  *rows;
	double		samplerows;		/* rows offered */
	double		rowstoskip;
	ReservoirStateData rstate;
	double		liverows;
	BlockNumber blocks;			/* blocks sampled */
	BlockNumber totalblocks;
} Sample;

/* The children's samples of one inheritance tree, until commit. */
typedef struct TreeSample
{
	Oid			parent;
	int			targrows;
	List	   *parts;			/* of TreePart */
} TreeSample;

typedef struct TreePart
{
	int			numrows;
	HeapTuple  *rows;			/* in the parent's row type */
	double		totalrows;
} TreePart;

bool		fc_analyze_values = false;	/* setting fieldcrypt.analyze_values */

static MemoryContext cxt = NULL;	/* under TopTransactionContext */
static Sample *cur = NULL;
static TreeSample *tree = NULL;
static bool callback_set = false;

static void xact_cb(XactEvent event, void *arg);
static MemoryContext state_cxt(void);
static VacAttrStats *examine(Relation rel, int attnum, Node *index_expr);
static int	target_rows(Relation rel, bool with_indexes);
static void compute_and_store(Relation rel, bool inherit, HeapTuple *rows,
							  int numrows, double totalrows);
static void compute_index_stats(Relation rel, Relation irel, HeapTuple *rows,
								int numrows, double totalrows, MemoryContext col);
static void store_stats(Oid relid, bool inherit, VacAttrStats *stats);
static void finish_tree(void);
static Oid	tree_being_sampled(Oid relid);
static Datum std_fetch(VacAttrStatsP stats, int rownum, bool *isNull);
static Datum ind_fetch(VacAttrStatsP stats, int rownum, bool *isNull);
static int	compare_tids(const void *a, const void *b);

/* Drop the state with its transaction; trees are finished at commit. */
static void
xact_cb(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (tree != NULL)
				finish_tree();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			cur = NULL;
			tree = NULL;
			cxt = NULL;			/* freed with TopTransactionContext */
			break;
		default:
			break;
	}
}

static MemoryContext
state_cxt(void)
{
	if (!callback_set)
	{
		RegisterXactCallback(xact_cb, NULL);
		callback_set = true;
	}
	if (cxt == NULL)
		cxt = AllocSetContextCreate(TopTransactionContext, "fieldcrypt analyze",
									ALLOCSET_DEFAULT_SIZES);
	return cxt;
}

/*
 * The parent whose inheritance tree ANALYZE is sampling, or InvalidOid.
 * ANALYZE reports it in its progress (phase "acquiring inherited sample
 * rows", target the parent); with track_activities off there is no report
 * and trees get no statistics here.
 */
static Oid
tree_being_sampled(Oid relid)
{
	volatile PgBackendStatus *be = MyBEEntry;

	if (be == NULL || be->st_progress_command != PROGRESS_COMMAND_ANALYZE)
		return InvalidOid;
	if (be->st_progress_param[PROGRESS_ANALYZE_PHASE] !=
		PROGRESS_ANALYZE_PHASE_ACQUIRE_SAMPLE_ROWS_INH)
		return InvalidOid;
	return be->st_progress_command_target;
}

/*
 * Like core's examine_attribute: a VacAttrStats for column attnum of rel
 * (of an index, with its expression), or NULL if it gets no statistics.
 */
static VacAttrStats *
examine(Relation rel, int attnum, Node *index_expr)
{
	Form_pg_attribute attr = TupleDescAttr(rel->rd_att, attnum - 1);
	VacAttrStats *stats;
	HeapTuple	typtuple;
	bool		ok;

	if (attr->attisdropped || attr->attstattarget == 0)
		return NULL;
	stats = palloc0(sizeof(VacAttrStats));
	stats->attr = palloc(ATTRIBUTE_FIXED_PART_SIZE);
	memcpy(stats->attr, attr, ATTRIBUTE_FIXED_PART_SIZE);
	if (index_expr)
	{
		stats->attrtypid = exprType(index_expr);
		stats->attrtypmod = exprTypmod(index_expr);
		stats->attrcollid = OidIsValid(rel->rd_indcollation[attnum - 1]) ?
			rel->rd_indcollation[attnum - 1] : exprCollation(index_expr);
	}
	else
	{
		stats->attrtypid = attr->atttypid;
		stats->attrtypmod = attr->atttypmod;
		stats->attrcollid = attr->attcollation;
	}
	typtuple = SearchSysCacheCopy1(TYPEOID, ObjectIdGetDatum(stats->attrtypid));
	if (!HeapTupleIsValid(typtuple))
		elog(ERROR, "cache lookup failed for type %u", stats->attrtypid);
	stats->attrtype = (Form_pg_type) GETSTRUCT(typtuple);
	stats->anl_context = CurrentMemoryContext;
	stats->tupattnum = attnum;
	for (int i = 0; i < STATISTIC_NUM_SLOTS; i++)
	{
		stats->statypid[i] = stats->attrtypid;
		stats->statyplen[i] = stats->attrtype->typlen;
		stats->statypbyval[i] = stats->attrtype->typbyval;
		stats->statypalign[i] = stats->attrtype->typalign;
	}
	if (OidIsValid(stats->attrtype->typanalyze))
		ok = DatumGetBool(OidFunctionCall1(stats->attrtype->typanalyze,
										   PointerGetDatum(stats)));
	else
		ok = std_typanalyze(stats);
	if (!ok || stats->compute_stats == NULL || stats->minrows <= 0)
		return NULL;
	return stats;
}

/* The sample size core would use for rel: the largest minrows. */
static int
target_rows(Relation rel, bool with_indexes)
{
	int			targrows = 100;
	List	   *indexes;
	ListCell   *lc;

	for (int i = 1; i <= RelationGetNumberOfAttributes(rel); i++)
	{
		VacAttrStats *s = examine(rel, i, NULL);

		if (s && s->minrows > targrows)
			targrows = s->minrows;
	}
	if (!with_indexes)
		return targrows;
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);
		IndexInfo  *ii = BuildIndexInfo(irel);
		ListCell   *expr = list_head(ii->ii_Expressions);

		for (int i = 0; i < ii->ii_NumIndexAttrs && expr != NULL; i++)
		{
			if (ii->ii_IndexAttrNumbers[i] == 0)
			{
				VacAttrStats *s = examine(irel, i + 1, lfirst(expr));

				if (s && s->minrows > targrows)
					targrows = s->minrows;
				expr = lnext(ii->ii_Expressions, expr);
			}
		}
		index_close(irel, AccessShareLock);
	}
	return targrows;
}

/* Start the sample of an ANALYZE scan (called from scan_begin). */
void
fc_analyze_begin(TableScanDesc scan)
{
	Relation	rel = scan->rs_rd;
	MemoryContext old = MemoryContextSwitchTo(state_cxt());
	Sample	   *s = palloc0(sizeof(Sample));
	bool		store;

	s->scan = scan;
	s->relid = RelationGetRelid(rel);
	store = s->relid == fc_tde_stats_table();	/* never samples of samples */
	s->plain = fc_analyze_values && !store;
	s->rowstoskip = -1;
	s->totalblocks = RelationGetNumberOfBlocks(rel);
	if (!s->plain && !store && fc_tde_stats_available())
	{
		s->parent = tree_being_sampled(s->relid);
		if (OidIsValid(s->parent))
		{
			Relation	prel = relation_open(s->parent, NoLock);

			if (tree != NULL && tree->parent != s->parent)
				finish_tree();
			if (tree == NULL)
			{
				tree = palloc0(sizeof(TreeSample));
				tree->parent = s->parent;
				tree->targrows = target_rows(prel, false);
			}
			s->targrows = tree->targrows;
			relation_close(prel, NoLock);
		}
		else
			s->targrows = target_rows(rel, true);
		s->rows = palloc(s->targrows * sizeof(HeapTuple));
		reservoir_init_selection_state(&s->rstate, s->targrows);
	}
	cur = s;
	MemoryContextSwitchTo(old);
}

/* Whether the ANALYZE scan keeps its rows here (else core gets them). */
bool
fc_analyze_wants_rows(TableScanDesc scan)
{
	return !(cur != NULL && cur->scan == scan && cur->plain);
}

/* One more block sampled. */
void
fc_analyze_block(TableScanDesc scan)
{
	if (cur != NULL && cur->scan == scan)
		cur->blocks++;
}

/*
 * A live row of the sample (stored: its stored form), or with stored NULL
 * just the live row count so far.  Vitter's algorithm, as core's
 * acquire_sample_rows: the first targrows rows, then each replaces a random
 * one with decreasing probability.
 */
void
fc_analyze_offer(TableScanDesc scan, HeapTuple stored, double liverows)
{
	Sample	   *s = cur;
	MemoryContext old;
	int			slot = -1;

	if (s == NULL || s->scan != scan)
		return;
	s->liverows = liverows;
	if (stored == NULL || s->targrows == 0)
		return;
	if (s->numrows < s->targrows)
		slot = s->numrows++;
	else
	{
		if (s->rowstoskip < 0)
			s->rowstoskip = reservoir_get_next_S(&s->rstate, s->samplerows, s->targrows);
		if (s->rowstoskip <= 0)
		{
			slot = (int) (s->targrows * sampler_random_fract(&s->rstate.randstate));
			heap_freetuple(s->rows[slot]);
		}
		s->rowstoskip -= 1;
	}
	s->samplerows += 1;
	if (slot < 0)
		return;
	old = MemoryContextSwitchTo(cxt);
	s->rows[slot] = fc_tam_decrypt(scan->rs_rd, stored);
	s->rows[slot]->t_self = stored->t_self;
	s->rows[slot]->t_tableOid = RelationGetRelid(scan->rs_rd);
	MemoryContextSwitchTo(old);
}

/* Sort the sample by physical position, as core does (correlation). */
static int
compare_tids(const void *a, const void *b)
{
	return ItemPointerCompare(&(*(HeapTuple *) a)->t_self, &(*(HeapTuple *) b)->t_self);
}

/* The ANALYZE scan ended: compute and store, or keep for the tree. */
void
fc_analyze_end(TableScanDesc scan)
{
	Sample	   *s = cur;
	Relation	rel = scan->rs_rd;
	double		totalrows;
	MemoryContext old;

	if (s == NULL || s->scan != scan)
		return;
	cur = NULL;
	if (s->plain)
	{
		fc_tde_stats_forget(s->relid, 0, -1);
		return;
	}
	if (s->rows == NULL || s->numrows == 0)
		return;
	totalrows = s->blocks > 0 ?
		floor((s->liverows / s->blocks) * s->totalblocks + 0.5) : 0;
	if (s->numrows == s->targrows)
		qsort(s->rows, s->numrows, sizeof(HeapTuple), compare_tids);
	old = MemoryContextSwitchTo(cxt);
	if (OidIsValid(s->parent))
	{
		Relation	prel = relation_open(s->parent, NoLock);
		TreePart   *p = palloc(sizeof(TreePart));
		TupleConversionMap *map = NULL;

		if (!equalTupleDescs(RelationGetDescr(rel), RelationGetDescr(prel)))
			map = convert_tuples_by_name(RelationGetDescr(rel), RelationGetDescr(prel));
		if (map != NULL)
			for (int i = 0; i < s->numrows; i++)
				s->rows[i] = execute_attr_map_tuple(s->rows[i], map);
		p->numrows = s->numrows;
		p->rows = s->rows;
		p->totalrows = totalrows;
		if (tree != NULL && tree->parent == s->parent)
			tree->parts = lappend(tree->parts, p);
		relation_close(prel, NoLock);
	}
	else
	{
		compute_and_store(rel, false, s->rows, s->numrows, totalrows);
		/* plaintext left by an earlier ANALYZE with analyze_values = on */
		RemoveStatistics(s->relid, 0);
		CommandCounterIncrement();
	}
	MemoryContextSwitchTo(old);
}

/*
 * The tree's sample: from each child a random share of its rows in
 * proportion to its estimated size, then the parent's statistics.
 */
static void
finish_tree(void)
{
	TreeSample *t = tree;
	double		total = 0;
	int			numrows = 0;
	HeapTuple  *rows;
	ListCell   *lc;
	Relation	prel;
	MemoryContext old;
	bool		snap = false;

	tree = NULL;
	if (t == NULL || t->parts == NIL)
		return;
	old = MemoryContextSwitchTo(cxt);
	foreach(lc, t->parts)
		total += ((TreePart *) lfirst(lc))->totalrows;
	rows = palloc(t->targrows * sizeof(HeapTuple));
	foreach(lc, t->parts)
	{
		TreePart   *p = lfirst(lc);
		int			want = total > 0 ? (int) rint(t->targrows * p->totalrows / total) : p->numrows;

		want = Min(Min(want, p->numrows), t->targrows - numrows);
		/* a random subset of want rows, keeping their order */
		for (int i = 0, left = p->numrows; i < p->numrows && want > 0; i++, left--)
		{
			if (pg_prng_double(&pg_global_prng_state) * left < want)
			{
				rows[numrows++] = p->rows[i];
				want--;
			}
		}
	}
	if (numrows > 0)
	{
		if (!ActiveSnapshotSet())
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			snap = true;
		}
		prel = relation_open(t->parent, NoLock);
		compute_and_store(prel, true, rows, numrows, total);
		relation_close(prel, NoLock);
		if (snap)
			PopActiveSnapshot();
	}
	MemoryContextSwitchTo(old);
}

static Datum
std_fetch(VacAttrStatsP stats, int rownum, bool *isNull)
{
	return heap_getattr(stats->rows[rownum], stats->tupattnum, stats->tupDesc, isNull);
}

static Datum
ind_fetch(VacAttrStatsP stats, int rownum, bool *isNull)
{
	int			i = rownum * stats->rowstride;

	*isNull = stats->exprnulls[i];
	return stats->exprvals[i];
}

/* Statistics of every column of rel (and of its expression indexes). */
static void
compute_and_store(Relation rel, bool inherit, HeapTuple *rows, int numrows,
				  double totalrows)
{
	MemoryContext anl = AllocSetContextCreate(CurrentMemoryContext, "fieldcrypt analyze column",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext col = AllocSetContextCreate(anl, "fieldcrypt analyze temp",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(anl);

	for (int i = 1; i <= RelationGetNumberOfAttributes(rel); i++)
	{
		VacAttrStats *stats = examine(rel, i, NULL);
		AttributeOpts *aopt;

		if (stats == NULL)
			continue;
		stats->rows = rows;
		stats->tupDesc = RelationGetDescr(rel);
		MemoryContextSwitchTo(col);
		stats->compute_stats(stats, std_fetch, numrows, totalrows);
		aopt = get_attribute_options(RelationGetRelid(rel), i);
		if (aopt != NULL)
		{
			float8		nd = inherit ? aopt->n_distinct_inherited : aopt->n_distinct;

			if (nd != 0.0)
				stats->stadistinct = nd;
		}
		store_stats(RelationGetRelid(rel), inherit, stats);
		MemoryContextSwitchTo(anl);
		MemoryContextReset(col);
		MemoryContextReset(anl);
		col = AllocSetContextCreate(anl, "fieldcrypt analyze temp", ALLOCSET_DEFAULT_SIZES);
	}
	if (!inherit && rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
	{
		List	   *indexes = RelationGetIndexList(rel);
		ListCell   *lc;

		foreach(lc, indexes)
		{
			Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);

			if (RelationGetIndexExpressions(irel) != NIL)
				compute_index_stats(rel, irel, rows, numrows, totalrows, col);
			index_close(irel, AccessShareLock);
			MemoryContextSwitchTo(anl);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(anl);
}

/*
 * Statistics of the expression columns of index irel, over the sample rows
 * its predicate accepts, as core's compute_index_stats.
 */
static void
compute_index_stats(Relation rel, Relation irel, HeapTuple *rows, int numrows,
					double totalrows, MemoryContext col)
{
	IndexInfo  *ii = BuildIndexInfo(irel);
	VacAttrStats *stats[INDEX_MAX_KEYS];
	int			nstats = 0;
	ListCell   *expr = list_head(ii->ii_Expressions);
	EState	   *estate;
	ExprContext *econtext;
	TupleTableSlot *slot;
	ExprState  *pred;
	Datum	   *vals;
	bool	   *nulls;
	int			nidx = 0;

	for (int i = 0; i < ii->ii_NumIndexAttrs; i++)
	{
		if (ii->ii_IndexAttrNumbers[i] != 0)
			continue;
		if (expr == NULL)
			elog(ERROR, "too few entries in indexprs list");
		stats[nstats] = examine(irel, i + 1, lfirst(expr));
		if (stats[nstats] != NULL)
			nstats++;
		expr = lnext(ii->ii_Expressions, expr);
	}
	if (nstats == 0)
		return;
	estate = CreateExecutorState();
	econtext = GetPerTupleExprContext(estate);
	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
	econtext->ecxt_scantuple = slot;
	pred = ExecPrepareQual(ii->ii_Predicate, estate);
	vals = palloc(numrows * nstats * sizeof(Datum));
	nulls = palloc(numrows * nstats * sizeof(bool));
	for (int r = 0; r < numrows; r++)
	{
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		ResetExprContext(econtext);
		ExecStoreHeapTuple(rows[r], slot, false);
		if (pred != NULL && !ExecQual(pred, econtext))
			continue;
		FormIndexDatum(ii, slot, estate, values, isnull);
		for (int k = 0; k < nstats; k++)
		{
			int			a = stats[k]->attr->attnum - 1;
			int			at = nidx * nstats + k;

			nulls[at] = isnull[a];
			vals[at] = isnull[a] ? (Datum) 0 :
				datumCopy(values[a], stats[k]->attrtype->typbyval, stats[k]->attrtype->typlen);
		}
		nidx++;
	}
	if (nidx > 0)
	{
		double		totalidx = ceil((double) nidx / numrows * totalrows);

		for (int k = 0; k < nstats; k++)
		{
			MemoryContext old = MemoryContextSwitchTo(col);

			stats[k]->exprvals = vals + k;
			stats[k]->exprnulls = nulls + k;
			stats[k]->rowstride = nstats;
			stats[k]->compute_stats(stats[k], ind_fetch, nidx, totalidx);
			store_stats(RelationGetRelid(irel), false, stats[k]);
			MemoryContextSwitchTo(old);
			MemoryContextReset(col);
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	FreeExecutorState(estate);
}

/* Form the pg_statistic row of stats (as core's update_attstats) and store it. */
static void
store_stats(Oid relid, bool inherit, VacAttrStats *stats)
{
	Datum		values[Natts_pg_statistic];
	bool		nulls[Natts_pg_statistic];
	Relation	sd;
	HeapTuple	tup;

	if (!stats->stats_valid)
		return;
	memset(nulls, 0, sizeof(nulls));
	values[Anum_pg_statistic_starelid - 1] = ObjectIdGetDatum(relid);
	values[Anum_pg_statistic_staattnum - 1] = Int16GetDatum(stats->attr->attnum);
	values[Anum_pg_statistic_stainherit - 1] = BoolGetDatum(inherit);
	values[Anum_pg_statistic_stanullfrac - 1] = Float4GetDatum(stats->stanullfrac);
	values[Anum_pg_statistic_stawidth - 1] = Int32GetDatum(stats->stawidth);
	values[Anum_pg_statistic_stadistinct - 1] = Float4GetDatum(stats->stadistinct);
	for (int k = 0; k < STATISTIC_NUM_SLOTS; k++)
	{
		int			nnum = stats->numnumbers[k];

		values[Anum_pg_statistic_stakind1 - 1 + k] = Int16GetDatum(stats->stakind[k]);
		values[Anum_pg_statistic_staop1 - 1 + k] = ObjectIdGetDatum(stats->staop[k]);
		values[Anum_pg_statistic_stacoll1 - 1 + k] = ObjectIdGetDatum(stats->stacoll[k]);
		if (nnum > 0)
		{
			Datum	   *nums = palloc(nnum * sizeof(Datum));

			for (int n = 0; n < nnum; n++)
				nums[n] = Float4GetDatum(stats->stanumbers[k][n]);
			values[Anum_pg_statistic_stanumbers1 - 1 + k] =
				PointerGetDatum(construct_array(nums, nnum, FLOAT4OID, sizeof(float4),
												true, TYPALIGN_INT));
		}
		else
			nulls[Anum_pg_statistic_stanumbers1 - 1 + k] = true;
		if (stats->numvalues[k] > 0)
			values[Anum_pg_statistic_stavalues1 - 1 + k] =
				PointerGetDatum(construct_array(stats->stavalues[k], stats->numvalues[k],
												stats->statypid[k], stats->statyplen[k],
												stats->statypbyval[k], stats->statypalign[k]));
		else
			nulls[Anum_pg_statistic_stavalues1 - 1 + k] = true;
	}
	sd = table_open(StatisticRelationId, AccessShareLock);
	tup = heap_form_tuple(RelationGetDescr(sd), values, nulls);
	table_close(sd, AccessShareLock);
	fc_tde_stats_store(relid, stats->attr->attnum, inherit, stats->attrtypid, tup);
	heap_freetuple(tup);
}

/*
 * CREATE STATISTICS on an encrypted_heap table is refused while ANALYZE
 * keeps its statistics encrypted: core would build extended statistics
 * from plaintext samples into pg_statistic_ext_data.
 */
void
fc_tde_stats_check_utility(Node *parsetree)
{
	CreateStatsStmt *stmt;
	ListCell   *lc;

	if (!IsA(parsetree, CreateStatsStmt) || fc_analyze_values)
		return;
	stmt = (CreateStatsStmt *) parsetree;
	foreach(lc, stmt->relations)
	{
		Node	   *n = lfirst(lc);
		Oid			relid;
		HeapTuple	ctup;
		Oid			am = InvalidOid;

		if (!IsA(n, RangeVar))
			continue;
		relid = RangeVarGetRelid((RangeVar *) n, NoLock, true);
		if (!OidIsValid(relid))
			continue;
		ctup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
		if (HeapTupleIsValid(ctup))
		{
			am = ((Form_pg_class) GETSTRUCT(ctup))->relam;
			ReleaseSysCache(ctup);
		}
		if (OidIsValid(am) && am == fc_tam_oid())
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("extended statistics are not supported on encrypted_heap table \"%s\"",
							get_rel_name(relid)),
					 errdetail("Extended statistics would keep sample values of the table in plaintext in pg_statistic_ext_data."),
					 errhint("Set fieldcrypt.analyze_values = on to keep plaintext statistics of this table, or do without extended statistics.")));
	}
}
