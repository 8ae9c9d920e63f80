/*-------------------------------------------------------------------------
 *
 * hooks.c
 *	  Utility and object-access hooks: encryption cannot be turned off once
 *	  active, a dropped database's keys leave the keyring, DDL on
 *	  encrypted columns goes through restrict.c before and after it runs,
 *	  and the encrypted statistics of a dropped relation or column go
 *	  (tde/tde_stats.c, which also refuses CREATE STATISTICS on
 *	  encrypted_heap tables).
 *
 * src/hooks.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "utils/lsyscache.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/guc.h"

#include "hooks.h"
#include "tde/keyed.h"
#include "tde/tam.h"
#include "tde/tde_stats.h"
#include "keys/keyapi.h"
#include "keys/rotstate.h"
#include "columns/enctypes.h"
#include "keys/keystore.h"
#include "keys/prepared.h"
#include "keys/redact.h"
#include "columns/restrict.h"
#include "columns/nullguard.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static object_access_hook_type prev_object_access = NULL;
static int	utility_depth = 0;	/* nesting of utility statements (COPY flag) */

static void fc_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
							  bool readOnlyTree, ProcessUtilityContext context,
							  ParamListInfo params, QueryEnvironment *queryEnv,
							  DestReceiver *dest, QueryCompletion *qc);
static void refuse_drop(void) pg_attribute_noreturn();
static void copy_template_tde_keys(CreatedbStmt *stmt);
static void check_drop_extension(Node *parsetree);
static void finish_prepared_key_change(void);
static void check_restore_clean(Node *parsetree, ProcessUtilityContext context);
static void fc_object_access(ObjectAccessType access, Oid classId, Oid objectId,
							 int subId, void *arg);
static bool is_reindex_concurrently(Node *parsetree);
static void run_rebuilding(PlannedStmt *pstmt, const char *queryString,
						   bool readOnlyTree, ProcessUtilityContext context,
						   ParamListInfo params, QueryEnvironment *queryEnv,
						   DestReceiver *dest, QueryCompletion *qc);

/* Install the hooks; called last in _PG_init. */
void
fc_hooks_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = fc_ProcessUtility;
	prev_object_access = object_access_hook;
	object_access_hook = fc_object_access;
	fc_nullguard_init();
	fc_tde_stats_init();
}

/* The database whose worker a DROP DATABASE of this transaction stopped. */
static Oid	dropping_db = InvalidOid;

/* A DROP DATABASE that failed after stopping the worker: let it go on. */
static void
dropdb_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT && OidIsValid(dropping_db))
		fc_rotstate_resume(dropping_db);
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT)
		dropping_db = InvalidOid;
}

/*
 * Stop the re-encryption worker of a database DROP DATABASE is about to
 * drop (it is connected, and dropdb counts the database's sessions next).
 * Called past dropdb's ownership check; the drop may still fail (a
 * template, other sessions, ...), which dropdb_xact_callback undoes.
 */
static void
stop_for_dropdb(Oid dboid)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(dropdb_xact_callback, NULL);
		registered = true;
	}
	dropping_db = dboid;
	fc_rotstate_stop(dboid);
}

/*
 * Refuse to drop the key metadata table while encryption is active: that
 * covers DROP EXTENSION, DROP SCHEMA ... CASCADE and DROP OWNED alike.
 * A new index goes to index_guard.c.
 */
static void
fc_object_access(ObjectAccessType access, Oid classId, Oid objectId,
				 int subId, void *arg)
{
	if (prev_object_access)
		prev_object_access(access, classId, objectId, subId, arg);

	if (access == OAT_DROP && classId == RelationRelationId && subId == 0 &&
		objectId == fc_config_table_oid() && fc_db_is_active())
		refuse_drop();
	/* statistics of a dropped table, index or column (tde_stats.c) */
	if (access == OAT_DROP && classId == RelationRelationId)
		fc_tde_stats_forget(objectId, subId, -1);

	/*
	 * DROP DATABASE, past its ownership check and before it counts the
	 * database's other sessions: its re-encryption worker is one of them.
	 * (Not from ProcessUtility: any login could stop any database's worker
	 * with a DROP DATABASE bound to fail.)
	 */
	if (access == OAT_DROP && classId == DatabaseRelationId && objectId != MyDatabaseId)
		stop_for_dropdb(objectId);

	/* keyed hash indexes record their key; plaintext indexes of encrypted_heap */
	if (access == OAT_POST_CREATE && classId == RelationRelationId && subId == 0)
		fc_index_post_create(objectId);
}

/* The error of every attempt to drop the extension while it is active. */
static void
refuse_drop(void)
{
	/* pg_restore --clean gets here after dropping the tables of the dump */
	bool		restore = application_name != NULL &&
		strncmp(application_name, "pg_restore", 10) == 0;

	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot drop extension fieldcrypt: data encryption is active in database \"%s\"",
					get_database_name(MyDatabaseId)),
			 errdetail("Once active, data encryption cannot be turned off."),
			 restore ?
			 errhint("pg_restore --clean cannot replace a database whose data encryption is active: "
					 "restore into a new database instead, and use --single-transaction so that "
					 "a failed restore changes nothing.") :
			 errhint("Drop the database if its encrypted data is no longer needed.")));
}

/*
 * pg_restore --clean into a database whose data encryption is active: its
 * first statement that drops something (DROP ..., or ALTER TABLE ... DROP
 * CONSTRAINT / ALTER COLUMN ... DROP DEFAULT, which it issues first) is
 * refused, before anything is dropped.  Otherwise it would drop the tables
 * and then fail at DROP EXTENSION, leaving the database half dropped.  The
 * client is known by its application_name (pg_restore's own default); a
 * client that sets another one meets the DROP EXTENSION refusal instead.
 */
static void
check_restore_clean(Node *parsetree, ProcessUtilityContext context)
{
	bool		drops = false;

	if (context != PROCESS_UTILITY_TOPLEVEL || application_name == NULL ||
		strncmp(application_name, "pg_restore", 10) != 0)
		return;
	if (IsA(parsetree, DropStmt))
		drops = true;
	else if (IsA(parsetree, AlterTableStmt))
	{
		ListCell   *lc;

		foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
		{
			AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

			if (cmd->subtype == AT_DropConstraint ||
				(cmd->subtype == AT_ColumnDefault && cmd->def == NULL))
				drops = true;
		}
	}
	if (!drops || !fc_db_is_active())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("pg_restore --clean cannot replace database \"%s\": its data encryption is active",
					get_database_name(MyDatabaseId)),
			 errdetail("Nothing was dropped. Once active, data encryption cannot be turned off, "
					   "so the extension and its keys cannot be dropped and recreated."),
			 errhint("Restore into a new database (createdb, then pg_restore -d <new database>), "
					 "then restore its key there with fieldcrypt.set_data_encryption_key.")));
}

/*
 * DROP EXTENSION fieldcrypt and DROP SCHEMA <its schema> CASCADE, checked
 * before PostgreSQL's dependency check: otherwise encrypted_heap tables
 * (which depend on the access method) would turn the refusal into "other
 * objects depend on it", or list themselves in the cascade notice.
 */
static void
check_drop_extension(Node *parsetree)
{
	DropStmt   *stmt = (DropStmt *) parsetree;
	ListCell   *lc;

	Oid			extoid;

	if (!IsA(parsetree, DropStmt) ||
		(stmt->removeType != OBJECT_EXTENSION &&
		 !(stmt->removeType == OBJECT_SCHEMA && stmt->behavior == DROP_CASCADE)))
		return;
	extoid = get_extension_oid("fieldcrypt", true);
	if (!OidIsValid(extoid))
		return;
	foreach(lc, stmt->objects)
	{
		Node	   *name = lfirst(lc);
		const char *target;

		if (!IsA(name, String))
			continue;
		/* the extension's schema is where its configuration table lives */
		target = stmt->removeType == OBJECT_EXTENSION ? "fieldcrypt" :
			OidIsValid(fc_config_table_oid()) ?
			get_namespace_name(get_rel_namespace(fc_config_table_oid())) : NULL;
		if (target && strcmp(strVal(name), target) == 0 && fc_db_is_active())
			refuse_drop();
	}
}

/*
 * After CREATE DATABASE: the copy of the template holds its encrypted_heap
 * files, so it gets the template's TDE keys.  The database exists by now;
 * a failure only warns (its encrypted tables stay unreadable).
 */
static void
copy_template_tde_keys(CreatedbStmt *stmt)
{
	MemoryContext cxt = CurrentMemoryContext;
	const char *template = "template1";
	ListCell   *lc;
	Oid			src;
	Oid			dst;

	foreach(lc, stmt->options)
	{
		DefElem    *opt = lfirst(lc);

		if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
			template = defGetString(opt);
	}
	src = get_database_oid(template, true);
	dst = get_database_oid(stmt->dbname, true);
	if (!OidIsValid(src) || !OidIsValid(dst) || fc_shared->ring_state != FC_RING_OK ||
		!fc_db_lookup_tde(src, NULL))
		return;
	PG_TRY();
	{
		fc_db_tde_copy(src, dst);
	}
	PG_CATCH();
	{
		fc_demote_error(cxt, "fieldcrypt: the new database did not get the TDE keys of its template",
						"Its encrypted_heap tables cannot be read; drop it and create it again "
						"once the keyring is writable.");
	}
	PG_END_TRY();
}

/*
 * After DROP DATABASE: remove the database's keys from the keyring.  The
 * database is already gone, so this never waits and never fails the
 * statement: if a key change is running or the keyring cannot be written,
 * the entry stays (a stale entry, see docs/security.md) and a WARNING says so.
 */
static void
forget_dropped_database(Oid dboid)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (fc_shared->ring_state != FC_RING_OK ||
		(!fc_db_lookup(dboid, NULL) && !fc_db_lookup_tde(dboid, NULL)))
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

/* REINDEX (CONCURRENTLY): its copies of keyed indexes take the current key. */
static bool
is_reindex_concurrently(Node *parsetree)
{
	ListCell   *lc;

	if (!IsA(parsetree, ReindexStmt))
		return false;
	foreach(lc, ((ReindexStmt *) parsetree)->params)
	{
		DefElem    *opt = lfirst(lc);

		if (strcmp(opt->defname, "concurrently") == 0)
			return defGetBoolean(opt);
	}
	return false;
}

/* Run a REINDEX CONCURRENTLY with keyed copies moving to the current key. */
static void
run_rebuilding(PlannedStmt *pstmt, const char *queryString,
			   bool readOnlyTree, ProcessUtilityContext context,
			   ParamListInfo params, QueryEnvironment *queryEnv,
			   DestReceiver *dest, QueryCompletion *qc)
{
	bool		save;

	fc_index_rebuild_begin(&save);
	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		fc_index_rebuild_end(save);
	}
	PG_END_TRY();
}

/*
 * After COMMIT PREPARED or ROLLBACK PREPARED: apply (or remove) the key
 * change the prepared transaction sealed (keys/prepared.c).  The
 * transaction is decided already, so a failure is a WARNING.
 */
static void
finish_prepared_key_change(void)
{
	if (!fc_test_prepared_skip_apply)
		fc_prepared_recover_or_warn();
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
		dropped = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);
	check_restore_clean(parsetree, context);
	check_drop_extension(parsetree);
	fc_tam_repack_rewrite(&pstmt, &readOnlyTree);
	parsetree = pstmt->utilityStmt;
	fc_restrict_before(parsetree, queryString);
	fc_tde_stats_check_utility(parsetree);

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
							fc_rel_has_encrypted(fc_lookup_relid((Node *) ((CopyStmt *) parsetree)->relation)));
	if (is_reindex_concurrently(parsetree))
		run_rebuilding(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	if (--utility_depth == 0)
		fc_redact_copy_from(false);

	fc_restrict_after(parsetree, queryString);
	if (IsA(parsetree, CreatePublicationStmt) || IsA(parsetree, AlterPublicationStmt) ||
		IsA(parsetree, CreateStmt) || IsA(parsetree, AlterTableStmt) ||
		IsA(parsetree, AlterObjectSchemaStmt) || IsA(parsetree, CreateTableAsStmt))
		fc_tam_check_publications();
	if (IsA(parsetree, CreateStmt) || IsA(parsetree, AlterTableStmt))
		fc_tam_check_settings(parsetree);
	if (OidIsValid(dropped))
		forget_dropped_database(dropped);
	if (IsA(parsetree, CreatedbStmt))
		copy_template_tde_keys((CreatedbStmt *) parsetree);
	if (IsA(parsetree, TransactionStmt) &&
		(((TransactionStmt *) parsetree)->kind == TRANS_STMT_COMMIT_PREPARED ||
		 ((TransactionStmt *) parsetree)->kind == TRANS_STMT_ROLLBACK_PREPARED))
		finish_prepared_key_change();
}
