/*-------------------------------------------------------------------------
 *
 * nullguard.c
 *	  fieldcrypt.keep_on_null_update: an UPDATE that writes back the NULL
 *	  an application was shown keeps the stored encrypted value.
 *
 *	  Reading an encrypted column returns NULL, so an ORM that writes every
 *	  field back on save (Django's Model.save(), Hibernate without
 *	  @DynamicUpdate) clears the stored secret of every row it loads and
 *	  saves.  With the setting on (off by default; PGC_SUSET, so that an
 *	  application role cannot turn it off), parse analysis rewrites each
 *	  assignment to an encrypted column (the types, or a domain over them)
 *	  whose value is a NULL constant, a parameter, or EXCLUDED.col of an
 *	  INSERT ... ON CONFLICT into COALESCE(value, old value): a NULL keeps
 *	  what is stored, any other value is written.  This covers UPDATE
 *	  (also in WITH, SQL and PL/pgSQL functions, prepared statements),
 *	  INSERT ... ON CONFLICT DO UPDATE and MERGE ... UPDATE.  The explicit
 *	  spelling that still clears a value is SET col = DEFAULT (the column's
 *	  default, NULL when it has none): DEFAULT is still a SetToDefault node
 *	  at this point, so it is left alone.  Other expressions are left alone.
 *
 *	  The old value is referenced without adding the column to the
 *	  statement's SELECT permissions: it is kept, never returned.  The
 *	  setting is read when a statement is parsed; a prepared statement keeps
 *	  the form it had then until it is prepared again.
 *
 * src/columns/nullguard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/analyze.h"
#include "parser/parsetree.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "columns/enctypes.h"
#include "columns/nullguard.h"

bool		fc_keep_on_null_update = false;	/* setting fieldcrypt.keep_on_null_update */
static post_parse_analyze_hook_type prev_post_parse_analyze = NULL;

static void nullguard_post_parse_analyze(ParseState *pstate, Query *query,
										 JumbleState *jstate);
static void guard_query(Query *query);
static void guard_tlist(Query *query, List *tlist, Index exclrel);
static bool writes_back_null(Node *expr, Index exclrel);

/* Define fieldcrypt.keep_on_null_update and install the hook. */
void
fc_nullguard_init(void)
{
	prev_post_parse_analyze = post_parse_analyze_hook;
	post_parse_analyze_hook = nullguard_post_parse_analyze;
}

/* post_parse_analyze hook: rewrite the statement when the setting is on. */
static void
nullguard_post_parse_analyze(ParseState *pstate, Query *query, JumbleState *jstate)
{
	if (prev_post_parse_analyze)
		prev_post_parse_analyze(pstate, query, jstate);
	if (!fc_keep_on_null_update || query == NULL || !fc_enctypes_installed())
		return;
	guard_query(query);
}

/* Rewrite the assignments of one query and of the data-modifying CTEs in it. */
static void
guard_query(Query *query)
{
	ListCell   *lc;

	foreach(lc, query->cteList)
	{
		CommonTableExpr *cte = lfirst(lc);

		if (cte->ctequery && IsA(cte->ctequery, Query))
			guard_query((Query *) cte->ctequery);
	}
	switch (query->commandType)
	{
		case CMD_UPDATE:
			guard_tlist(query, query->targetList, 0);
			break;
		case CMD_INSERT:
			if (query->onConflict && query->onConflict->action == ONCONFLICT_UPDATE)
				guard_tlist(query, query->onConflict->onConflictSet,
							query->onConflict->exclRelIndex);
			break;
		case CMD_MERGE:
			foreach(lc, query->mergeActionList)
			{
				MergeAction *action = lfirst(lc);

				if (action->commandType == CMD_UPDATE)
					guard_tlist(query, action->targetList, 0);
			}
			break;
		default:
			break;
	}
}

/*
 * A NULL constant, an external parameter, or (exclrel > 0) a Var of the
 * EXCLUDED pseudo-relation, under any casts (implicit or written).
 */
static bool
writes_back_null(Node *expr, Index exclrel)
{
	for (;;)
	{
		if (expr == NULL)
			return false;
		if (IsA(expr, RelabelType))
			expr = (Node *) ((RelabelType *) expr)->arg;
		else if (IsA(expr, CoerceViaIO))
			expr = (Node *) ((CoerceViaIO *) expr)->arg;
		else if (IsA(expr, CoerceToDomain))
			expr = (Node *) ((CoerceToDomain *) expr)->arg;
		else if (IsA(expr, FuncExpr) &&
				 (((FuncExpr *) expr)->funcformat == COERCE_IMPLICIT_CAST ||
				  ((FuncExpr *) expr)->funcformat == COERCE_EXPLICIT_CAST) &&
				 list_length(((FuncExpr *) expr)->args) >= 1)
			expr = linitial(((FuncExpr *) expr)->args);
		else
			break;
	}
	if (IsA(expr, Const))
		return ((Const *) expr)->constisnull;
	if (IsA(expr, Param))
		return ((Param *) expr)->paramkind == PARAM_EXTERN;
	if (IsA(expr, Var) && exclrel > 0)
		return ((Var *) expr)->varno == (int) exclrel &&
			((Var *) expr)->varlevelsup == 0;
	return false;
}

/* Turn value into COALESCE(value, old) for each guarded encrypted column. */
static void
guard_tlist(Query *query, List *tlist, Index exclrel)
{
	RangeTblEntry *rte;
	ListCell   *lc;

	if (query->resultRelation <= 0)
		return;
	rte = rt_fetch(query->resultRelation, query->rtable);
	if (rte->rtekind != RTE_RELATION || !fc_rel_has_encrypted(rte->relid))
		return;
	foreach(lc, tlist)
	{
		TargetEntry *te = lfirst(lc);
		Oid			atttype;
		int32		atttypmod;
		Oid			attcoll;
		CoalesceExpr *coalesce;

		if (te->resjunk || te->resno <= 0 || te->expr == NULL ||
			IsA(te->expr, SetToDefault))
			continue;
		get_atttypetypmodcoll(rte->relid, te->resno, &atttype, &atttypmod, &attcoll);
		if (!fc_is_encrypted_type(atttype) || exprType((Node *) te->expr) != atttype ||
			!writes_back_null((Node *) te->expr, exclrel))
			continue;
		coalesce = makeNode(CoalesceExpr);
		coalesce->coalescetype = atttype;
		coalesce->coalescecollid = exprCollation((Node *) te->expr);
		coalesce->args = list_make2(te->expr,
									makeVar(query->resultRelation, te->resno,
											atttype, atttypmod, attcoll, 0));
		coalesce->location = -1;
		te->expr = (Expr *) coalesce;
	}
}
