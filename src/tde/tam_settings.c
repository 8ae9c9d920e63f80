/*-------------------------------------------------------------------------
 *
 * tam_settings.c
 *	  Storage parameters that encrypted_heap does not honour as heap does
 *	  are warned about when they are set (CREATE TABLE ... WITH, ALTER
 *	  TABLE ... SET), after the statement succeeded:
 *	    - toast_tuple_target above TOAST_TUPLE_THRESHOLD (2032 bytes with
 *	      8 kB pages): our toaster (tam_format.c) moves values out of line
 *	      until a row fits under the threshold whatever the target, so a
 *	      higher target is silently capped.
 *
 * src/tde/tam_settings.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heaptoast.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "nodes/parsenodes.h"
#include "utils/rel.h"

#include "tde/keyed.h"
#include "tde/tam.h"

/* Whether a list of storage parameters sets toast_tuple_target. */
static bool
sets_toast_target(List *options)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *opt = lfirst(lc);

		if (opt->defnamespace == NULL && strcmp(opt->defname, "toast_tuple_target") == 0)
			return true;
	}
	return false;
}

/* WARNING if rv is an encrypted_heap table whose toast_tuple_target is capped. */
static void
check_toast_target(RangeVar *rv)
{
	Oid			relid = RangeVarGetRelid(rv, NoLock, true);
	Relation	rel;
	int			target;

	if (!OidIsValid(relid))
		return;
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return;
	target = RelationGetToastTupleTarget(rel, (int) TOAST_TUPLE_TARGET);
	if (fc_is_encrypted_heap(rel) && target > (int) TOAST_TUPLE_THRESHOLD)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("toast_tuple_target %d of encrypted_heap table \"%s\" is capped at %d",
						target, RelationGetRelationName(rel), (int) TOAST_TUPLE_THRESHOLD),
				 errdetail("encrypted_heap moves values out of line until a row fits in %d bytes, "
						   "whatever the target.", (int) TOAST_TUPLE_THRESHOLD)));
	relation_close(rel, AccessShareLock);
}

/* After CREATE TABLE or ALTER TABLE (hooks.c): warn about capped settings. */
void
fc_tam_check_settings(Node *parsetree)
{
	if (IsA(parsetree, CreateStmt))
	{
		CreateStmt *stmt = (CreateStmt *) parsetree;

		if (sets_toast_target(stmt->options))
			check_toast_target(stmt->relation);
	}
	else if (IsA(parsetree, AlterTableStmt))
	{
		AlterTableStmt *stmt = (AlterTableStmt *) parsetree;
		ListCell   *lc;

		if (stmt->objtype != OBJECT_TABLE)
			return;
		foreach(lc, stmt->cmds)
		{
			AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

			if (cmd->subtype == AT_SetRelOptions && sets_toast_target((List *) cmd->def))
			{
				check_toast_target(stmt->relation);
				return;
			}
		}
	}
}
