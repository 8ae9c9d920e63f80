/*-------------------------------------------------------------------------
 *
 * writeonly.c
 *	  Executor hooks that make encrypted columns write-only toward the
 *	  client: every row a query hands to a receiver that sends it out of the
 *	  server (the client protocol, a portal's store that FETCH, RETURNING or
 *	  a WITH HOLD cursor read from) carries NULL in place of a value of an
 *	  encrypted type, of a domain over one, or of an array holding them;
 *	  composite values keep their other fields.
 *
 *	  The boundary is the client, not the executor.  Rows that stay in the
 *	  server carry the ciphertext unchanged, so that every server-side copy
 *	  behaves like INSERT ... SELECT: SPI (PL/pgSQL SELECT INTO, FOR loops,
 *	  cursors and FETCH inside functions, C extensions such as pg_repack's
 *	  apply step), SQL functions (RETURNS SETOF, RETURNS TABLE, one row),
 *	  PL/pgSQL RETURN QUERY (a tuplestore filled inside a running query),
 *	  CREATE TABLE AS, SELECT INTO, REFRESH MATERIALIZED VIEW and parallel
 *	  workers.  What such code returns to a query is nulled where that query
 *	  hands it to the client.  COPY (query) TO writes envelopes exactly as
 *	  COPY table TO does (logical replication's initial copy with a row
 *	  filter runs it): envelopes are ciphertext, which a login that may read
 *	  the table gets through COPY table TO and row serialization anyway
 *	  (docs/security.md, "Threat model").  pg_dump --inserts reads through
 *	  its cursor "_pg_dump_cursor" and gets envelopes, as COPY TO does.
 *
 *	  A tuplestore receiver is the client's when the query runs at executor
 *	  nesting level 0 (a portal's query: FETCH from a client cursor,
 *	  RETURNING, a WITH HOLD cursor persisted at commit), unless the portal
 *	  is pinned (a PL/pgSQL FOR loop held across COMMIT in a procedure).
 *	  RETURN QUERY only runs inside a function called by a running query.
 *
 *	  A Citus peer session (keys/cluster.c: Citus running a piece of a
 *	  distributed query from another node) is not a client: its rows go to
 *	  the coordinator's executor, whose own receiver nulls them.
 *
 *	  Cost: ExecutorRun inspects the result descriptor once; a query with
 *	  no column of a user-defined or record type is passed through as is.
 *
 *	  For log redaction, statements that write to tables with encrypted
 *	  columns, or that call user-defined volatile functions (which may write
 *	  their arguments into encrypted columns, or set a key), are marked
 *	  sensitive at parse analysis.  The string constants that flow into
 *	  encrypted columns or into such calls, and at ExecutorStart the
 *	  statement's parameters, are remembered as secrets: a typed text value
 *	  is only encrypted during execution, after pgaudit has logged the
 *	  statement.  Only in databases where the extension is installed.
 *
 *	  The file is (slightly) longer than 800 lines: the result-side nulling
 *	  and the parse-side tracing of written constants share the walk over
 *	  a value's type.
 *
 * src/columns/writeonly.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/tupdesc.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/prepare.h"
#include "nodes/nodeFuncs.h"
#include "nodes/params.h"
#include "parser/analyze.h"
#include "parser/parse_coerce.h"
#include "parser/parsetree.h"
#include "parser/parse_relation.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "columns/enctypes.h"
#include "keys/cluster.h"
#include "keys/redact.h"
#include "columns/writeonly.h"

/* What to do with one result column. */
typedef enum ColAction
{
	COL_KEEP = 0,
	COL_NULL,					/* encrypted, or an array holding encrypted */
	COL_SCRUB,					/* composite holding encrypted fields */
	COL_RECORD,					/* anonymous record: inspect each value */
	COL_RECORD_ARRAY			/* array of anonymous records: each element */
} ColAction;

typedef struct NullingReceiver
{
	DestReceiver pub;
	DestReceiver *inner;
	int			natts;
	ColAction  *action;
	TupleTableSlot *out;
	MemoryContext rowcxt;
} NullingReceiver;

static post_parse_analyze_hook_type prev_post_parse_analyze = NULL;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;

/* ExecutorRun calls in progress in this backend (nesting level). */
static int	exec_nesting = 0;

static Datum scrub_value(ColAction action, Datum value, bool *isnull, int depth);

/*
 * Does a value of this declared type need work, and which?  Anonymous
 * records (and arrays of them) are decided value by value, from the
 * record's actual row type: only what is, or holds, an encrypted value is
 * nulled; ROW(1, 2) passes unchanged.
 */
static ColAction
action_for(Oid typid)
{
	Oid			base;

	if (typid == RECORDOID)
		return COL_RECORD;
	if (typid == RECORDARRAYOID)
		return COL_RECORD_ARRAY;
	if (typid < FirstGenbkiObjectId || !fc_type_holds_encrypted(typid))
		return COL_KEEP;
	base = getBaseType(typid);
	if (get_typtype(base) == TYPTYPE_COMPOSITE)
		return COL_SCRUB;
	return COL_NULL;
}

/* What to do with each attribute of td (palloc'd), or NULL if nothing. */
static ColAction *
actions_for(TupleDesc td)
{
	ColAction  *action = palloc0(sizeof(ColAction) * td->natts);
	bool		any = false;

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped)
			action[i] = action_for(att->atttypid);
		any |= action[i] != COL_KEEP;
	}
	if (any)
		return action;
	pfree(action);
	return NULL;
}

/*
 * A composite value with its encrypted fields NULL (recursively through
 * nested records, arrays of records and composites), or the value itself
 * when no field needs it.  The row type is the value's own: for an
 * anonymous record, the blessed descriptor its typmod names.
 */
static Datum
scrub_composite(Datum value, int depth)
{
	HeapTupleHeader th = DatumGetHeapTupleHeader(value);
	Oid			typid = HeapTupleHeaderGetTypeId(th);
	int32		typmod = HeapTupleHeaderGetTypMod(th);
	TupleDesc	td;
	ColAction  *action;
	bool		any = false;
	HeapTupleData tup;
	Datum	   *values;
	bool	   *nulls;
	HeapTuple	result;

	check_stack_depth();
	if (typid != RECORDOID && !fc_type_holds_encrypted(typid))
		return value;
	td = lookup_rowtype_tupdesc(typid, typmod);
	action = actions_for(td);
	if (action == NULL)
	{
		ReleaseTupleDesc(td);
		return value;
	}
	values = palloc(sizeof(Datum) * td->natts);
	nulls = palloc(sizeof(bool) * td->natts);
	tup.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tup.t_self);
	tup.t_tableOid = InvalidOid;
	tup.t_data = th;
	heap_deform_tuple(&tup, td, values, nulls);
	any = false;
	for (int i = 0; i < td->natts; i++)
	{
		Datum		v;

		if (nulls[i] || action[i] == COL_KEEP)
			continue;
		v = scrub_value(action[i], values[i], &nulls[i], depth + 1);
		any |= nulls[i] || v != values[i];
		values[i] = v;
	}
	if (!any)
	{
		ReleaseTupleDesc(td);
		return value;
	}
	result = heap_form_tuple(td, values, nulls);
	ReleaseTupleDesc(td);
	return HeapTupleGetDatum(result);
}

/*
 * An array of records with each element scrubbed, or the array itself when
 * no element needed it.
 */
static Datum
scrub_record_array(Datum value, int depth)
{
	ArrayType  *arr = DatumGetArrayTypeP(value);
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;
	Datum	   *elems;
	bool	   *enulls;
	int			n;
	bool		any = false;
	int			dims[MAXDIM];
	int			lbs[MAXDIM];

	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &elmlen, &elmbyval, &elmalign);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), elmlen, elmbyval, elmalign,
					  &elems, &enulls, &n);
	for (int i = 0; i < n; i++)
	{
		Datum		v;

		if (enulls[i])
			continue;
		v = scrub_composite(elems[i], depth + 1);
		any |= v != elems[i];
		elems[i] = v;
	}
	if (!any)
		return value;
	memcpy(dims, ARR_DIMS(arr), sizeof(int) * ARR_NDIM(arr));
	memcpy(lbs, ARR_LBOUND(arr), sizeof(int) * ARR_NDIM(arr));
	return PointerGetDatum(construct_md_array(elems, enulls, ARR_NDIM(arr), dims, lbs,
											  ARR_ELEMTYPE(arr), elmlen, elmbyval, elmalign));
}

/* Apply one action to a non-null value; may set *isnull. */
static Datum
scrub_value(ColAction action, Datum value, bool *isnull, int depth)
{
	switch (action)
	{
		case COL_KEEP:
			break;
		case COL_NULL:
			*isnull = true;
			return (Datum) 0;
		case COL_SCRUB:
		case COL_RECORD:
			return scrub_composite(value, depth);
		case COL_RECORD_ARRAY:
			return scrub_record_array(value, depth);
	}
	return value;
}

static void
nulling_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	NullingReceiver *r = (NullingReceiver *) self;

	r->out = MakeSingleTupleTableSlot(typeinfo, &TTSOpsVirtual);
	r->rowcxt = AllocSetContextCreate(CurrentMemoryContext, "fieldcrypt nulling",
									  ALLOCSET_SMALL_SIZES);
	r->inner->rStartup(r->inner, operation, typeinfo);
}

/* Pass the row on with encrypted values replaced by NULL. */
static bool
nulling_receive(TupleTableSlot *slot, DestReceiver *self)
{
	NullingReceiver *r = (NullingReceiver *) self;
	TupleTableSlot *out = r->out;
	MemoryContext old;
	bool		ok;

	slot_getallattrs(slot);
	ExecClearTuple(out);
	MemoryContextReset(r->rowcxt);
	old = MemoryContextSwitchTo(r->rowcxt);
	for (int i = 0; i < r->natts; i++)
	{
		out->tts_values[i] = slot->tts_values[i];
		out->tts_isnull[i] = slot->tts_isnull[i];
		if (out->tts_isnull[i])
			continue;
		if (r->action[i] != COL_KEEP)
			out->tts_values[i] = scrub_value(r->action[i], slot->tts_values[i],
											 &out->tts_isnull[i], 0);
	}
	MemoryContextSwitchTo(old);
	ExecStoreVirtualTuple(out);
	ok = r->inner->receiveSlot(out, r->inner);
	return ok;
}

static void
nulling_shutdown(DestReceiver *self)
{
	NullingReceiver *r = (NullingReceiver *) self;

	r->inner->rShutdown(r->inner);
	ExecDropSingleTupleTableSlot(r->out);
	MemoryContextDelete(r->rowcxt);
}

static void
nulling_destroy(DestReceiver *self)
{
	/* the executor never destroys the receiver it was given */
}

/*
 * Does this query's receiver send its rows out of the server?  Every other
 * receiver keeps them in the server, where ciphertext moves unchanged.
 */
static bool
reaches_client(QueryDesc *qd)
{
	switch (qd->dest->mydest)
	{
		case DestRemote:
		case DestRemoteExecute:
		case DestRemoteSimple:
			/* another node of a Citus cluster: envelopes stay in the cluster */
			return !fc_citus_peer_session();
		case DestDebug:
			return true;
		case DestTuplestore:
			/* a portal's store, or RETURN QUERY / a held PL/pgSQL loop */
			return exec_nesting == 0 &&
				!(ActivePortal != NULL && ActivePortal->portalPinned);
		default:
			/* SPI, SQL functions, COPY TO, new relations, parallel workers */
			return false;
	}
}

/* A nulling receiver around dest for this result, or NULL if not needed. */
static DestReceiver *
maybe_wrap(QueryDesc *qd)
{
	TupleDesc	td = qd->tupDesc;
	NullingReceiver *r;
	ColAction  *action;
	bool		any = false;

	if (td == NULL || td->natts == 0 || !reaches_client(qd))
		return NULL;
	/* the common case: only built-in, non-record types, nothing to do */
	for (int i = 0; i < td->natts && !any; i++)
	{
		Oid			t = TupleDescAttr(td, i)->atttypid;

		any = t >= FirstGenbkiObjectId || t == RECORDOID || t == RECORDARRAYOID;
	}
	if (!any || !fc_enctypes_installed())
		return NULL;
	action = actions_for(td);
	if (action == NULL)
		return NULL;
	if (ActivePortal && ActivePortal->name &&
		strcmp(ActivePortal->name, "_pg_dump_cursor") == 0)
	{
		pfree(action);
		return NULL;
	}
	r = palloc0(sizeof(NullingReceiver));
	r->pub.receiveSlot = nulling_receive;
	r->pub.rStartup = nulling_startup;
	r->pub.rShutdown = nulling_shutdown;
	r->pub.rDestroy = nulling_destroy;
	r->pub.mydest = qd->dest->mydest;
	r->inner = qd->dest;
	r->natts = td->natts;
	r->action = action;
	return &r->pub;
}

/* ExecutorRun hook: run with the nulling receiver when the result needs it. */
static void
fc_ExecutorRun(QueryDesc *qd, ScanDirection direction, uint64 count, bool execute_once)
{
	DestReceiver *orig = qd->dest;
	DestReceiver *wrapped = NULL;

	if (qd->operation == CMD_SELECT || qd->plannedstmt->hasReturning)
	{
		MemoryContext old = MemoryContextSwitchTo(qd->estate->es_query_cxt);

		wrapped = maybe_wrap(qd);
		MemoryContextSwitchTo(old);
	}
	if (wrapped)
		qd->dest = wrapped;
	exec_nesting++;
	PG_TRY();
	{
		if (prev_ExecutorRun)
			prev_ExecutorRun(qd, direction, count, execute_once);
		else
			standard_ExecutorRun(qd, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		exec_nesting--;
		qd->dest = orig;
	}
	PG_END_TRY();
}

typedef struct TraceContext
{
	Query	   *query;			/* the query whose range table Vars refer to */
	int			depth;
	bool		any_type;		/* every constant, not only string-like ones */
} TraceContext;

static void trace_target(Query *query, AttrNumber resno, int depth);
static bool taint_consts_walker(Node *node, TraceContext *ctx);

/* Statement text being analyzed, and the top-level text it lies in. */
static const char *analyzed_text = NULL;
static int	analyzed_offset = -1;	/* where analyzed_text lies in the top text;
										 * OFFSET_UNKNOWN: not looked for yet */
#define OFFSET_UNKNOWN	(-2)

/*
 * Mask, in the top-level text, the literal that holds a nested statement's
 * literal at loc (a statement of a DO body, of CREATE FUNCTION's body, of
 * EXECUTE '...').  The nested text is looked for only when a literal of it
 * is to be masked, so that statements with nothing to mask (most of them)
 * do not search the top-level text: first as it is (a dollar-quoted body),
 * then as the decoded contents of a quoted literal ('...''...', E'...\x41').
 */
static void
taint_in_top(int loc)
{
	if (analyzed_offset == OFFSET_UNKNOWN && analyzed_text != NULL && debug_query_string != NULL)
	{
		const char *at = strstr(debug_query_string, analyzed_text);

		analyzed_offset = at ? (int) (at - debug_query_string) : -1;
		if (at == NULL)
			fc_taint_literal_holding(debug_query_string, analyzed_text);
	}
	if (analyzed_offset >= 0)
		fc_taint_literal_within(debug_query_string, analyzed_offset + loc);
}

/* The literal at loc of the analyzed text is masked there and in the top text. */
static void
taint_location(int loc)
{
	fc_taint_literal(analyzed_text, loc);
	taint_in_top(loc);
}

/* Remember the text form of a value as a secret. */
static void
register_value(Oid type, Datum value)
{
	Oid			typoutput;
	bool		varlena;
	char	   *str;

	getTypeOutputInfo(type, &typoutput, &varlena);
	str = OidOutputFunctionCall(typoutput, value);
	fc_register_secret(str, strlen(str));
	explicit_bzero(str, strlen(str));
	pfree(str);
}

/*
 * A constant that may end up where a secret goes: its literal is masked in
 * every copy of the statement text (by position, whatever its type), and
 * its value, as text, is remembered for this statement.
 */
static void
taint_const(Const *c, bool any_type)
{
	char		category;
	bool		preferred;

	if (c->constisnull || c->location < 0)
		return;
	if (!any_type)
	{
		/* arguments of a user function: numbers and the like stay visible */
		get_type_category_preferred(getBaseType(c->consttype), &category, &preferred);
		if (category == TYPCATEGORY_NUMERIC || category == TYPCATEGORY_BOOLEAN ||
			category == TYPCATEGORY_DATETIME || category == TYPCATEGORY_TIMESPAN)
			return;
	}
	taint_location(c->location);
	if (!fc_type_holds_encrypted(c->consttype) && c->consttype != UNKNOWNOID)
		register_value(c->consttype, c->constvalue);
	else if (c->consttype == UNKNOWNOID)
		fc_register_secret(DatumGetCString(c->constvalue), strlen(DatumGetCString(c->constvalue)));
}

/*
 * Walk an expression that produces a value stored in an encrypted column,
 * following Vars into VALUES lists, subqueries, CTEs, joins and functions
 * in FROM, and taint every constant it is made of.  A subquery inside the
 * expression is tainted whole.
 */
static bool
trace_walker(Node *node, TraceContext *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, Const))
	{
		taint_const((Const *) node, true);
		return false;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, taint_consts_walker, (void *) ctx, 0);
	if (IsA(node, Var) && ((Var *) node)->varlevelsup == 0 && ctx->depth < 16)
	{
		Var		   *var = (Var *) node;
		RangeTblEntry *rte;
		ListCell   *lc;

		if (var->varno < 1 || var->varno > list_length(ctx->query->rtable))
			return false;
		rte = rt_fetch(var->varno, ctx->query->rtable);
		switch (rte->rtekind)
		{
			case RTE_VALUES:
				if (var->varattno <= 0)
					return expression_tree_walker((Node *) rte->values_lists, trace_walker, (void *) ctx);
				foreach(lc, rte->values_lists)
					trace_walker(list_nth(lfirst(lc), var->varattno - 1), ctx);
				break;
			case RTE_SUBQUERY:
				if (var->varattno <= 0)
					return query_tree_walker(rte->subquery, taint_consts_walker, (void *) ctx, 0);
				trace_target(rte->subquery, var->varattno, ctx->depth + 1);
				break;
			case RTE_CTE:
				foreach(lc, ctx->query->cteList)
				{
					CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

					if (rte->ctelevelsup != 0 || strcmp(cte->ctename, rte->ctename) != 0 ||
						!IsA(cte->ctequery, Query))
						continue;
					if (var->varattno <= 0)
						query_tree_walker((Query *) cte->ctequery, taint_consts_walker, (void *) ctx, 0);
					else
						trace_target((Query *) cte->ctequery, var->varattno, ctx->depth + 1);
				}
				break;
			case RTE_JOIN:
				if (var->varattno > 0 && var->varattno <= list_length(rte->joinaliasvars))
				{
					TraceContext sub = *ctx;

					sub.depth++;
					trace_walker(list_nth(rte->joinaliasvars, var->varattno - 1), &sub);
				}
				break;
			case RTE_FUNCTION:
				/* unnest(ARRAY['...']), json_each('...'): the arguments */
				foreach(lc, rte->functions)
					taint_consts_walker(lfirst_node(RangeTblFunction, lc)->funcexpr, ctx);
				break;
			case RTE_TABLEFUNC:
				taint_consts_walker((Node *) rte->tablefunc, ctx);
				break;
			default:
				break;
		}
		return false;
	}
	return expression_tree_walker(node, trace_walker, (void *) ctx);
}

/* Trace output column resno of a query (a set operation: every branch). */
static void
trace_target(Query *query, AttrNumber resno, int depth)
{
	TraceContext ctx = {query, depth, true};
	TargetEntry *tle;

	if (query->setOperations)
	{
		ListCell   *lc;

		/* the branches are subqueries in the range table */
		foreach(lc, query->rtable)
		{
			RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

			if (rte->rtekind == RTE_SUBQUERY && depth < 16)
				trace_target(rte->subquery, resno, depth + 1);
		}
		return;
	}
	tle = get_tle_by_resno(query->targetList, resno);
	if (tle)
		trace_walker((Node *) tle->expr, &ctx);
}

/* Taint every constant of an expression or query. */
static bool
taint_consts_walker(Node *node, TraceContext *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, Const))
	{
		taint_const((Const *) node, ctx->any_type);
		return false;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, taint_consts_walker, (void *) ctx, 0);
	return expression_tree_walker(node, taint_consts_walker, (void *) ctx);
}

/* Taint every constant of a query (a MERGE; a statement that cannot be traced). */
static void
taint_all(Query *query)
{
	TraceContext ctx = {query, 0, true};

	query_tree_walker(query, taint_consts_walker, (void *) &ctx, 0);
}

/* Taint the constants written to the columns of a relation that hold encrypted values. */
static bool
trace_written(Query *query, Oid relid)
{
	Relation	rel = RelationIdGetRelation(relid);
	TupleDesc	td;
	bool		found = false;
	ListCell   *lc;

	if (!RelationIsValid(rel))
		return false;
	td = RelationGetDescr(rel);
	for (int i = 0; i < td->natts && !found; i++)
		found = !TupleDescAttr(td, i)->attisdropped &&
			fc_type_holds_encrypted(TupleDescAttr(td, i)->atttypid);
	if (!found)
	{
		RelationClose(rel);
		return false;
	}
	if (query->commandType == CMD_MERGE)
	{
		RelationClose(rel);
		taint_all(query);
		return true;
	}
	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (tle->resjunk || tle->resno < 1 || tle->resno > td->natts)
			continue;
		if (fc_type_holds_encrypted(TupleDescAttr(td, tle->resno - 1)->atttypid))
			trace_target(query, tle->resno, 0);
	}
	/* INSERT ... ON CONFLICT DO UPDATE SET col = ... */
	if (query->onConflict)
	{
		foreach(lc, query->onConflict->onConflictSet)
		{
			TargetEntry *tle = lfirst_node(TargetEntry, lc);
			TraceContext ctx = {query, 0, true};

			if (tle->resno >= 1 && tle->resno <= td->natts &&
				fc_type_holds_encrypted(TupleDescAttr(td, tle->resno - 1)->atttypid))
				trace_walker((Node *) tle->expr, &ctx);
		}
	}
	RelationClose(rel);
	return true;
}

/*
 * Find calls whose string arguments may be secrets: every user-defined
 * volatile function (it may write its arguments into an encrypted column,
 * or set a key, before anything of ours sees them run), and taint those
 * arguments.  Returns true through *found if there was one.
 */
static bool
user_call_walker(Node *node, bool *found)
{
	if (node == NULL)
		return false;
	if (IsA(node, FuncExpr) && ((FuncExpr *) node)->funcid >= FirstGenbkiObjectId &&
		func_volatile(((FuncExpr *) node)->funcid) == PROVOLATILE_VOLATILE)
	{
		TraceContext ctx = {NULL, 0, false};

		*found = true;
		taint_consts_walker((Node *) ((FuncExpr *) node)->args, &ctx);
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, user_call_walker, (void *) found, 0);
	return expression_tree_walker(node, user_call_walker, (void *) found);
}

/* Taint every constant of a raw (not yet analyzed) expression. */
static bool
raw_consts_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, A_Const))
	{
		taint_location(((A_Const *) node)->location);
		return false;
	}
	return raw_expression_tree_walker(node, raw_consts_walker, context);
}

/*
 * EXECUTE name(params) of a statement prepared by PREPARE: its parameters
 * are analyzed by EXECUTE itself, without this hook, and go wherever the
 * prepared statement puts them.  If that statement was found sensitive
 * when it was prepared, every constant of the parameters is masked.
 */
static bool
execute_params_sensitive(ExecuteStmt *stmt)
{
	PreparedStatement *ps;

	if (stmt->params == NIL)
		return false;
	ps = FetchPreparedStatement(stmt->name, false);
	if (ps == NULL || ps->plansource == NULL || ps->plansource->query_string == NULL ||
		!fc_statement_is_sensitive(ps->plansource->query_string))
		return false;
	raw_consts_walker((Node *) stmt->params, NULL);
	return true;
}

/*
 * Does this analyzed statement write to a column that can hold an encrypted
 * value (INSERT, UPDATE, MERGE, data-modifying WITH, CREATE TABLE AS,
 * SELECT INTO, EXPLAIN ANALYZE of those) or call what may (a procedure,
 * a user-defined volatile function, a DO block)?  Taints the constants that
 * can get there on the way.
 */
static bool
analyze_sensitive(Query *query)
{
	bool		sensitive = false;
	ListCell   *lc;

	if (query->commandType == CMD_UTILITY)
	{
		Node	   *u = query->utilityStmt;

		if (IsA(u, DoStmt) ||
			(IsA(u, CreateFunctionStmt) && ((CreateFunctionStmt *) u)->sql_body != NULL))
		{
			/*
			 * A DO body is parsed later, after pgaudit logged it; the
			 * statements of a BEGIN ATOMIC body are analyzed by CREATE
			 * FUNCTION itself, without this hook: all of it.
			 */
			fc_mask_all_literals(analyzed_text);
			return true;
		}
		if (IsA(u, CallStmt))
			user_call_walker((Node *) ((CallStmt *) u)->funcexpr, &sensitive);
		else if (IsA(u, ExecuteStmt))
			sensitive = execute_params_sensitive((ExecuteStmt *) u);
		else if (IsA(u, ExplainStmt) && IsA(((ExplainStmt *) u)->query, Query))
			sensitive = analyze_sensitive((Query *) ((ExplainStmt *) u)->query);
		else if (IsA(u, CreateTableAsStmt) && IsA(((CreateTableAsStmt *) u)->query, Query))
		{
			Query	   *q = (Query *) ((CreateTableAsStmt *) u)->query;

			sensitive = analyze_sensitive(q);
			foreach(lc, q->targetList)
			{
				TargetEntry *tle = lfirst_node(TargetEntry, lc);

				if (!tle->resjunk && fc_type_holds_encrypted(exprType((Node *) tle->expr)))
				{
					sensitive = true;
					trace_target(q, tle->resno, 0);
				}
			}
		}
		return sensitive;
	}
	if (query->resultRelation > 0 &&
		(query->commandType == CMD_INSERT || query->commandType == CMD_UPDATE ||
		 query->commandType == CMD_MERGE))
		sensitive = trace_written(query, rt_fetch(query->resultRelation, query->rtable)->relid);
	foreach(lc, query->cteList)
	{
		CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

		if (IsA(cte->ctequery, Query) && ((Query *) cte->ctequery)->commandType != CMD_SELECT)
			sensitive |= analyze_sensitive((Query *) cte->ctequery);
	}
	if (!sensitive)
		query_tree_walker(query, user_call_walker, &sensitive, 0);
	return sensitive;
}

/*
 * post_parse_analyze hook.  A statement that writes to a column that can
 * hold an encrypted value, or that may set a key, is sensitive: the
 * literals that can get there are masked in every copy of its text that
 * reaches a log or pg_stat_activity (redact.c), and its bind parameters are
 * hidden in logs.
 */
static void
fc_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	bool		installed;
	bool		top;
	int			upto;

	if (prev_post_parse_analyze)
		prev_post_parse_analyze(pstate, query, jstate);
	if (pstate->p_sourcetext == NULL)
		return;
	top = pstate->p_sourcetext == debug_query_string;
	if (top)
		fc_redact_new_statement(pstate->p_sourcetext);
	installed = fc_enctypes_installed();
	upto = query->stmt_len > 0 ? query->stmt_location + query->stmt_len :
		(int) strlen(pstate->p_sourcetext);
	if (!installed)
	{
		fc_note_analyzed(pstate->p_sourcetext, upto, 0);
		return;
	}
	analyzed_text = pstate->p_sourcetext;
	/* a statement of a DO body or of EXECUTE '...' may lie inside the top text */
	analyzed_offset = !top && debug_query_string != NULL ? OFFSET_UNKNOWN : -1;
	if (analyze_sensitive(query))
	{
		fc_mark_sensitive_statement(pstate->p_sourcetext);
		if (top)
			fc_redact_activity();
	}
	analyzed_text = NULL;
	analyzed_offset = -1;
	fc_note_analyzed(pstate->p_sourcetext, upto, 1);
}

/*
 * ExecutorStart hook: before anything logs a sensitive statement with its
 * parameters (pgaudit, at permission checks), remember their values; and
 * run it with its text masked, which is what pgaudit, auto_explain and
 * parallel workers (their log lines and pg_stat_activity) then see.
 */
static void
fc_ExecutorStart(QueryDesc *qd, int eflags)
{
	ParamListInfo params = qd->params;
	bool		sensitive = fc_statement_is_sensitive(qd->sourceText);
	char	   *masked;

	if (qd->sourceText == debug_query_string)
	{
		fc_redact_new_statement(qd->sourceText);
		fc_note_analyzed(qd->sourceText, strlen(qd->sourceText), -1);
		if (sensitive)
			fc_redact_activity();	/* Bind and Execute report the text again */
	}
	if (params && params->numParams > 0 && sensitive)
	{
		for (int i = 0; i < params->numParams; i++)
		{
			ParamExternData *p = &params->params[i];
			ParamExternData workspace;

			if (params->paramFetch)
				p = params->paramFetch(params, i + 1, false, &workspace);
			if (p == NULL || p->isnull || !OidIsValid(p->ptype) ||
				fc_is_encrypted_type(p->ptype))
				continue;
			register_value(p->ptype, p->value);
		}
	}
	masked = sensitive ? fc_mask_text(qd->sourceText) : NULL;
	if (masked)
		qd->sourceText = masked;
	if (prev_ExecutorStart)
		prev_ExecutorStart(qd, eflags);
	else
		standard_ExecutorStart(qd, eflags);
}

/* Install the executor hooks; called from _PG_init. */
void
fc_writeonly_init(void)
{
	prev_post_parse_analyze = post_parse_analyze_hook;
	post_parse_analyze_hook = fc_post_parse_analyze;
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = fc_ExecutorStart;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = fc_ExecutorRun;
}
