/*-------------------------------------------------------------------------
 *
 * writeonly.c
 *	  Executor hooks that make encrypted columns write-only: every row a
 *	  query hands to a receiver (client, cursor, SPI, COPY (query) TO, SQL
 *	  function, tuplestore) carries NULL in place of a value of an
 *	  encrypted type, of a domain over one, or of an array holding them;
 *	  composite values keep their other fields.  Where the server itself
 *	  moves values into a relation (CREATE TABLE AS, SELECT INTO, REFRESH
 *	  MATERIALIZED VIEW, parallel workers feeding their leader) the
 *	  ciphertext flows unchanged; INSERT ... SELECT never reaches a
 *	  receiver.  pg_dump --inserts reads through its cursor
 *	  "_pg_dump_cursor" and gets envelopes, exactly what COPY TO gives.
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
#include "nodes/nodeFuncs.h"
#include "nodes/params.h"
#include "parser/analyze.h"
#include "parser/parsetree.h"
#include "parser/parse_relation.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "columns/enctypes.h"
#include "keys/redact.h"
#include "columns/writeonly.h"

/* What to do with one result column. */
typedef enum ColAction
{
	COL_KEEP = 0,
	COL_NULL,					/* encrypted, or an array holding encrypted */
	COL_SCRUB,					/* composite holding encrypted fields */
	COL_RECORD					/* anonymous record: inspect each value */
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

static Datum scrub_composite(Datum value, int depth);

/* Does one column of this type need work, and which? */
static ColAction
action_for(Oid typid)
{
	Oid			base;

	if (typid == RECORDOID)
		return COL_RECORD;
	if (typid < FirstGenbkiObjectId && typid != RECORDARRAYOID)
		return COL_KEEP;
	if (typid == RECORDARRAYOID)
		return COL_NULL;		/* arrays of anonymous records: be safe */
	if (!fc_type_holds_encrypted(typid))
		return COL_KEEP;
	base = getBaseType(typid);
	if (get_typtype(base) == TYPTYPE_COMPOSITE)
		return COL_SCRUB;
	return COL_NULL;
}

/* Return a copy of a composite value whose encrypted fields are NULL. */
static Datum
scrub_composite(Datum value, int depth)
{
	HeapTupleHeader th = DatumGetHeapTupleHeader(value);
	Oid			typid = HeapTupleHeaderGetTypeId(th);
	int32		typmod = HeapTupleHeaderGetTypMod(th);
	TupleDesc	td = lookup_rowtype_tupdesc(typid, typmod);
	HeapTupleData tup;
	Datum	   *values = palloc(sizeof(Datum) * td->natts);
	bool	   *nulls = palloc(sizeof(bool) * td->natts);
	HeapTuple	result;

	check_stack_depth();
	tup.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tup.t_self);
	tup.t_tableOid = InvalidOid;
	tup.t_data = th;
	heap_deform_tuple(&tup, td, values, nulls);
	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (nulls[i] || att->attisdropped)
			continue;
		switch (action_for(att->atttypid))
		{
			case COL_KEEP:
				break;
			case COL_NULL:
				nulls[i] = true;
				break;
			case COL_SCRUB:
			case COL_RECORD:
				values[i] = scrub_composite(values[i], depth + 1);
				break;
		}
	}
	result = heap_form_tuple(td, values, nulls);
	ReleaseTupleDesc(td);
	return HeapTupleGetDatum(result);
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
		switch (r->action[i])
		{
			case COL_KEEP:
				break;
			case COL_NULL:
				out->tts_isnull[i] = true;
				out->tts_values[i] = (Datum) 0;
				break;
			case COL_SCRUB:
				out->tts_values[i] = scrub_composite(slot->tts_values[i], 0);
				break;
			case COL_RECORD:
				{
					HeapTupleHeader th = DatumGetHeapTupleHeader(slot->tts_values[i]);
					Oid			t = HeapTupleHeaderGetTypeId(th);

					if (t == RECORDOID || fc_type_holds_encrypted(t))
						out->tts_values[i] = scrub_composite(slot->tts_values[i], 0);
					break;
				}
		}
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

/* A nulling receiver around dest for this result, or NULL if not needed. */
static DestReceiver *
maybe_wrap(QueryDesc *qd)
{
	TupleDesc	td = qd->tupDesc;
	NullingReceiver *r;
	ColAction  *action;
	bool		any = false;

	if (td == NULL || td->natts == 0)
		return NULL;
	switch (qd->dest->mydest)
	{
		case DestNone:
		case DestIntoRel:
		case DestTransientRel:
		case DestTupleQueue:
			return NULL;		/* the server moves ciphertext itself */
		default:
			break;
	}
	/* the common case: only built-in, non-record types, nothing to do */
	for (int i = 0; i < td->natts && !any; i++)
	{
		Oid			t = TupleDescAttr(td, i)->atttypid;

		any = t >= FirstGenbkiObjectId || t == RECORDOID || t == RECORDARRAYOID;
	}
	if (!any || !fc_enctypes_installed())
		return NULL;
	any = false;
	action = palloc0(sizeof(ColAction) * td->natts);
	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped)
			action[i] = action_for(att->atttypid);
		any |= action[i] != COL_KEEP;
	}
	if (!any || (ActivePortal && ActivePortal->name &&
				 strcmp(ActivePortal->name, "_pg_dump_cursor") == 0))
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
	if (wrapped == NULL)
	{
		if (prev_ExecutorRun)
			prev_ExecutorRun(qd, direction, count, execute_once);
		else
			standard_ExecutorRun(qd, direction, count, execute_once);
		return;
	}
	qd->dest = wrapped;
	PG_TRY();
	{
		if (prev_ExecutorRun)
			prev_ExecutorRun(qd, direction, count, execute_once);
		else
			standard_ExecutorRun(qd, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		qd->dest = orig;
	}
	PG_END_TRY();
}

typedef struct TraceContext
{
	Query	   *query;			/* the query whose range table Vars refer to */
	int			depth;
} TraceContext;

static void trace_target(Query *query, AttrNumber resno, int depth);

/* Statement text being analyzed, for the literals' spellings. */
static const char *analyzed_text = NULL;
static size_t analyzed_len = 0;

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

/* Remember the text of a non-null string constant as a secret. */
static void
register_const(Const *c)
{
	if (c->constisnull)
		return;
	if (c->consttype == TEXTOID || c->consttype == VARCHAROID ||
		c->consttype == BPCHAROID || c->consttype == BYTEAOID ||
		c->consttype == UNKNOWNOID || c->consttype == NAMEOID)
		fc_register_literal_at(analyzed_text, analyzed_len, c->location);
	else
	{
		/* a literal already coerced to an encrypted type: its spelling only */
		if (fc_is_encrypted_type(c->consttype))
			fc_register_literal_at(analyzed_text, analyzed_len, c->location);
		return;
	}
	register_value(c->consttype, c->constvalue);
}

/*
 * Walk an expression that produces a value stored in an encrypted column,
 * following Vars into VALUES lists, subqueries and CTEs, and remember every
 * string constant it is made of.
 */
static bool
trace_walker(Node *node, TraceContext *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, Const))
	{
		register_const((Const *) node);
		return false;
	}
	if (IsA(node, Var) && ((Var *) node)->varlevelsup == 0 && ctx->depth < 8)
	{
		Var		   *var = (Var *) node;
		RangeTblEntry *rte;

		if (var->varno < 1 || var->varno > list_length(ctx->query->rtable) ||
			var->varattno <= 0)
			return false;
		rte = rt_fetch(var->varno, ctx->query->rtable);
		if (rte->rtekind == RTE_VALUES)
		{
			ListCell   *lc;

			foreach(lc, rte->values_lists)
				trace_walker(list_nth(lfirst(lc), var->varattno - 1), ctx);
		}
		else if (rte->rtekind == RTE_SUBQUERY)
			trace_target(rte->subquery, var->varattno, ctx->depth + 1);
		else if (rte->rtekind == RTE_CTE && rte->ctelevelsup == 0)
		{
			ListCell   *lc;

			foreach(lc, ctx->query->cteList)
			{
				CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

				if (strcmp(cte->ctename, rte->ctename) == 0 && IsA(cte->ctequery, Query))
					trace_target((Query *) cte->ctequery, var->varattno, ctx->depth + 1);
			}
		}
		return false;
	}
	return expression_tree_walker(node, trace_walker, (void *) ctx);
}

/* Trace output column resno of a query (a set operation: every branch). */
static void
trace_target(Query *query, AttrNumber resno, int depth)
{
	TraceContext ctx = {query, depth};
	TargetEntry *tle;

	if (query->setOperations)
	{
		ListCell   *lc;

		/* the branches are subqueries in the range table */
		foreach(lc, query->rtable)
		{
			RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

			if (rte->rtekind == RTE_SUBQUERY && depth < 8)
				trace_target(rte->subquery, resno, depth + 1);
		}
		return;
	}
	tle = get_tle_by_resno(query->targetList, resno);
	if (tle)
		trace_walker((Node *) tle->expr, &ctx);
}

/* Remember the string constants written to encrypted columns of the target. */
static void
register_written_consts(Query *query, Oid relid)
{
	Relation	rel = RelationIdGetRelation(relid);
	ListCell   *lc;

	if (!RelationIsValid(rel))
		return;
	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (tle->resjunk || tle->resno < 1 || tle->resno > RelationGetDescr(rel)->natts)
			continue;
		if (fc_is_encrypted_type(TupleDescAttr(RelationGetDescr(rel), tle->resno - 1)->atttypid))
			trace_target(query, tle->resno, 0);
	}
	/* INSERT ... ON CONFLICT DO UPDATE SET col = ... */
	if (query->onConflict)
	{
		foreach(lc, query->onConflict->onConflictSet)
		{
			TargetEntry *tle = lfirst_node(TargetEntry, lc);
			TraceContext ctx = {query, 0};

			if (tle->resno >= 1 && tle->resno <= RelationGetDescr(rel)->natts &&
				fc_is_encrypted_type(TupleDescAttr(RelationGetDescr(rel), tle->resno - 1)->atttypid))
				trace_walker((Node *) tle->expr, &ctx);
		}
	}
	RelationClose(rel);
}

/* Remember every string constant of a query (a call that sets a key). */
static bool
register_consts_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Const))
	{
		register_const((Const *) node);
		return false;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, register_consts_walker, context, 0);
	return expression_tree_walker(node, register_consts_walker, context);
}

/*
 * Find calls whose string arguments may be secrets: every user-defined
 * volatile function (it may write its arguments into an encrypted column,
 * or set a key, before anything of ours sees them run), and remember those
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
		*found = true;
		register_consts_walker((Node *) ((FuncExpr *) node)->args, NULL);
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, user_call_walker, (void *) found, 0);
	return expression_tree_walker(node, user_call_walker, (void *) found);
}

/*
 * post_parse_analyze hook.  A statement that writes to a table with
 * encrypted columns, or that sets a key, is sensitive: its string constants
 * are remembered as secrets (pgaudit logs the statement text before a text
 * value is cast and encrypted) and its bind parameters are hidden in logs.
 */
static void
fc_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	Oid			target = InvalidOid;
	bool		user_calls = false;

	if (prev_post_parse_analyze)
		prev_post_parse_analyze(pstate, query, jstate);
	if (pstate->p_sourcetext == NULL || !fc_enctypes_installed())
		return;
	analyzed_text = pstate->p_sourcetext;
	analyzed_len = strlen(analyzed_text);
	if (query->commandType == CMD_UTILITY)
	{
		/* CALL proc(...): arguments are analyzed into funcexpr */
		if (IsA(query->utilityStmt, CallStmt))
			user_call_walker((Node *) ((CallStmt *) query->utilityStmt)->funcexpr, &user_calls);
		if (user_calls)
		{
			fc_mark_sensitive_statement(pstate->p_sourcetext);
			if (pstate->p_sourcetext == debug_query_string)
				fc_redact_activity();
		}
		return;
	}
	if (query->resultRelation > 0 &&
		(query->commandType == CMD_INSERT || query->commandType == CMD_UPDATE ||
		 query->commandType == CMD_MERGE))
		target = rt_fetch(query->resultRelation, query->rtable)->relid;

	if (OidIsValid(target) && fc_rel_has_encrypted(target))
	{
		fc_mark_sensitive_statement(pstate->p_sourcetext);
		if (query->commandType == CMD_MERGE)
			query_tree_walker(query, register_consts_walker, NULL, 0);
		else
			register_written_consts(query, target);
	}
	else
	{
		query_tree_walker(query, user_call_walker, &user_calls, 0);
		if (!user_calls)
			return;
		fc_mark_sensitive_statement(pstate->p_sourcetext);
	}
	if (pstate->p_sourcetext == debug_query_string)
		fc_redact_activity();
}

/*
 * ExecutorStart hook: before anything logs a sensitive statement with its
 * parameters (pgaudit, at permission checks), remember their values.
 */
static void
fc_ExecutorStart(QueryDesc *qd, int eflags)
{
	ParamListInfo params = qd->params;

	if (qd->sourceText == debug_query_string && fc_statement_is_sensitive(qd->sourceText))
		fc_redact_activity();	/* Bind and Execute report the text again */
	if (params && params->numParams > 0 && fc_statement_is_sensitive(qd->sourceText))
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
