/*-------------------------------------------------------------------------
 *
 * hooks.c
 *	  Utility and object-access hooks: encryption cannot be turned off once
 *	  active, a dropped database's keys leave the keyring, and DDL on
 *	  encrypted columns goes through restrict.c before and after it runs.
 *
 * src/hooks.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "hooks.h"
#include "keyapi.h"
#include "enctypes.h"
#include "keystore.h"
#include "redact.h"
#include "reencrypt.h"
#include "restrict.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static object_access_hook_type prev_object_access = NULL;
static int	utility_depth = 0;	/* nesting of utility statements (COPY flag) */

static void fc_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
							  bool readOnlyTree, ProcessUtilityContext context,
							  ParamListInfo params, QueryEnvironment *queryEnv,
							  DestReceiver *dest, QueryCompletion *qc);
static void fc_object_access(ObjectAccessType access, Oid classId, Oid objectId,
							 int subId, void *arg);

/* Install the hooks; called last in _PG_init. */
void
fc_hooks_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = fc_ProcessUtility;
	prev_object_access = object_access_hook;
	object_access_hook = fc_object_access;
}

/*
 * Refuse to drop the key metadata table while encryption is active: that
 * covers DROP EXTENSION, DROP SCHEMA ... CASCADE and DROP OWNED alike.
 */
static void
fc_object_access(ObjectAccessType access, Oid classId, Oid objectId,
				 int subId, void *arg)
{
	if (prev_object_access)
		prev_object_access(access, classId, objectId, subId, arg);

	if (access == OAT_DROP && classId == RelationRelationId && subId == 0 &&
		objectId == fc_config_table_oid() && fc_db_is_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot drop extension fieldcrypt: data encryption is active in database \"%s\"",
						get_database_name(MyDatabaseId)),
				 errdetail("Once active, data encryption cannot be turned off."),
				 errhint("Drop the database if its encrypted data is no longer needed.")));
}

/*
 * After DROP DATABASE: remove the database's keys from the keyring.  The
 * database is already gone, so this never waits and never fails the
 * statement: if a key change is running or the keyring cannot be written,
 * the entry stays (a stale entry, see README) and a WARNING says so.
 */
static void
forget_dropped_database(Oid dboid)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (fc_shared->ring_state != FC_RING_OK || !fc_db_lookup(dboid, NULL))
		return;
	PG_TRY();
	{
		if (!fc_try_change_lock())
			ereport(WARNING,
					(errmsg("fieldcrypt: the keys of the dropped database stay in the keyring"),
					 errdetail("A key change was in progress.")));
		else
			fc_db_remove(dboid);
	}
	PG_CATCH();
	{
		fc_demote_error(cxt, "fieldcrypt: the keys of the dropped database stay in the keyring", NULL);
	}
	PG_END_TRY();
}

/* Restrict DDL on encrypted columns; forget a dropped database's keys. */
static void
fc_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
				  bool readOnlyTree, ProcessUtilityContext context,
				  ParamListInfo params, QueryEnvironment *queryEnv,
				  DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	Oid			dropped = InvalidOid;

	if (IsA(parsetree, DropdbStmt))
	{
		dropped = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);
		fc_reencrypt_stop(dropped);	/* its re-encryption worker is connected */
	}
	fc_restrict_before(parsetree);

	/*
	 * Errors are logged only once they reach the top level, after this
	 * function unwound: the flag stays set on error and is recomputed by the
	 * next utility statement (it only affects COPY's own context lines).
	 */
	if (context == PROCESS_UTILITY_TOPLEVEL)
		utility_depth = 0;		/* an error may have skipped the decrements */
	if (utility_depth++ == 0)
		fc_redact_copy_from(IsA(parsetree, CopyStmt) && ((CopyStmt *) parsetree)->is_from &&
							((CopyStmt *) parsetree)->relation &&
							fc_rel_has_encrypted(RangeVarGetRelid(((CopyStmt *) parsetree)->relation,
																  NoLock, true)));
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	if (--utility_depth == 0)
		fc_redact_copy_from(false);

	fc_restrict_after(parsetree);
	if (OidIsValid(dropped))
		forget_dropped_database(dropped);
}
