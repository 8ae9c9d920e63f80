/*-------------------------------------------------------------------------
 *
 * restrict.c
 *	  The Dynamics 365 rule that encrypted columns cannot be indexed,
 *	  audited or customized, enforced from the ProcessUtility hook.
 *
 *	  Two passes.  Before a statement runs, its raw parse tree is checked
 *	  for what names an encrypted column directly: index columns and
 *	  predicates, key columns of PRIMARY KEY / UNIQUE / EXCLUDE / FOREIGN
 *	  KEY, ALTER COLUMN TYPE, SET DEFAULT, CREATE STATISTICS, and GRANTs
 *	  that would let pgaudit's object-audit role (pgaudit.role) cover an
 *	  encrypted column.  After it ran, the resulting table is checked as a
 *	  whole (indexes, CHECK constraints, defaults, generated columns,
 *	  extended statistics), which catches expressions and every other
 *	  route to the same state; the ERROR rolls the statement back.
 *	  Renaming and dropping encrypted columns stay allowed.
 *
 *	  pgaudit.role never holds a privilege covering an encrypted column.
 *	  Besides the GRANT check before the statement, the check after it
 *	  looks at the privileges the role holds (as has_column_privilege and
 *	  pgaudit do: grants to it, to PUBLIC and to roles it inherits from,
 *	  ownership, predefined roles, superuser) on every encrypted column the
 *	  statement may have affected: the relation it created or altered and
 *	  those inheriting from it; every relation of the database when it
 *	  gave an encrypted type to a row type (which other columns may use)
 *	  or changed a role whose privileges the audit role has.  That covers
 *	  default privileges, added columns, composite types, role membership
 *	  and ownership alike.
 *
 *	  Every name lookup here is one that cannot fail: a statement whose
 *	  names PostgreSQL would refuse (another database, a schema without
 *	  USAGE, a FROM item that is not a relation, too many dotted names) is
 *	  not about an encrypted column, and PostgreSQL reports it itself, with
 *	  the error it gives without fieldcrypt.
 *
 *	  The file is longer than 800 lines because the three checks (before,
 *	  after, audit role) share its name lookups and column scans; the
 *	  audit-role part could become a file of its own.
 *
 * src/columns/restrict.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relation.h"
#include "access/tableam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_statistic_ext.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_type.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "columns/enctypes.h"
#include "columns/restrict.h"
#include "keys/redact.h"

#define DETAIL_RULE "Encrypted columns cannot be indexed, audited or customized."

/* relkinds whose columns pgaudit's object auditing can cover */
#define AUDITED_RELKINDS "rpvmf"

static void refuse(const char *what, const char *col, const char *table) pg_attribute_noreturn();
static void refuse_domain(const char *what) pg_attribute_noreturn();

/* source text of the utility statement being checked (set on entry) */
static const char *checked_text = NULL;

/*
 * A refused statement about an encrypted column may hold a plaintext among
 * its literals (a default, a constraint's constant): every literal of its
 * text is masked in the log.
 */
static void
mask_refused_statement(void)
{
	if (debug_query_string != NULL)
		fc_mask_all_literals(debug_query_string);
	/* a statement run by EXECUTE in PL/pgSQL: its CONTEXT line quotes it */
	if (checked_text != NULL && checked_text != debug_query_string)
		fc_mask_all_literals(checked_text);
}

/* ERROR: the statement would index or customize an encrypted column. */
static void
refuse(const char *what, const char *col, const char *table)
{
	mask_refused_statement();
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("encrypted column \"%s\" of table \"%s\" cannot be %s", col, table, what),
			 errdetail(DETAIL_RULE)));
}

/* ERROR: a domain over an encrypted type would get a default or a constraint. */
static void
refuse_domain(const char *what)
{
	mask_refused_statement();
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("a domain over an encrypted type cannot have a %s", what),
			 errdetail(DETAIL_RULE)));
}

/* Is catalog (a name's database part, or NULL) the current database? */
static bool
is_this_database(const char *catalog)
{
	return catalog == NULL || strcmp(catalog, get_database_name(MyDatabaseId)) == 0;
}

/* A schema by name if it exists and the user may use it, else InvalidOid. */
static Oid
lookup_namespace(const char *name)
{
	Oid			nsp = LookupNamespaceNoError(name);

	if (!OidIsValid(nsp) ||
		pg_namespace_aclcheck(nsp, GetUserId(), ACL_USAGE) != ACLCHECK_OK)
		return InvalidOid;
	return nsp;
}

/*
 * The relation a RangeVar names, as RangeVarGetRelid(rv, NoLock, true) finds
 * it, or InvalidOid where that would raise an error or node is not a RangeVar
 * (a join, subquery, function... in a FROM list): never raises an error.
 */
Oid
fc_lookup_relid(const Node *node)
{
	const RangeVar *rv = (const RangeVar *) node;
	Oid			nsp;

	if (node == NULL || !IsA(node, RangeVar) || rv->relname == NULL ||
		!is_this_database(rv->catalogname))
		return InvalidOid;
	if (rv->relpersistence == RELPERSISTENCE_TEMP)
	{
		nsp = LookupNamespaceNoError("pg_temp");
		if (rv->schemaname && lookup_namespace(rv->schemaname) != nsp)
			return InvalidOid;
	}
	else if (rv->schemaname)
		nsp = lookup_namespace(rv->schemaname);
	else
		return RelnameGetRelid(rv->relname);
	return OidIsValid(nsp) ? get_relname_relid(rv->relname, nsp) : InvalidOid;
}

/*
 * The type a TypeName names, as LookupTypeNameOid(NULL, tn, true) finds it
 * (typmods aside), or InvalidOid where that would raise an error or notice.
 */
static Oid
lookup_typid(const TypeName *tn)
{
	int			n;
	Oid			typid;

	if (tn == NULL || tn->pct_type)
		return InvalidOid;
	if (tn->names == NIL)
		return tn->typeOid;
	n = list_length(tn->names);
	if (n == 1)
		typid = TypenameGetTypidExtended(strVal(linitial(tn->names)), true);
	else if (n == 2 || (n == 3 && is_this_database(strVal(linitial(tn->names)))))
	{
		Oid			nsp = lookup_namespace(strVal(list_nth(tn->names, n - 2)));

		typid = !OidIsValid(nsp) ? InvalidOid :
			GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
							PointerGetDatum(strVal(llast(tn->names))),
							ObjectIdGetDatum(nsp));
	}
	else
		return InvalidOid;
	if (OidIsValid(typid) && tn->arrayBounds != NIL)
		typid = get_array_type(typid);
	return typid;
}

/* Names of the encrypted columns of a relation (NIL if none or no relation). */
static List *
encrypted_columns(Oid relid)
{
	Relation	rel;
	List	   *names = NIL;

	if (!OidIsValid(relid))
		return NIL;
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return NIL;
	for (int i = 0; i < RelationGetDescr(rel)->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), i);

		if (!att->attisdropped && fc_type_holds_encrypted(att->atttypid))
			names = lappend(names, pstrdup(NameStr(att->attname)));
	}
	relation_close(rel, AccessShareLock);
	return names;
}

static bool
name_in(const char *name, List *names)
{
	ListCell   *lc;

	if (name == NULL)
		return false;
	foreach(lc, names)
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	return false;
}

typedef struct RefContext
{
	List	   *names;
	const char *found;
} RefContext;

/* Raw-tree walker: does an expression name one of the columns? */
static bool
refs_walker(Node *node, RefContext *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, ColumnRef))
	{
		Node	   *last = llast(((ColumnRef *) node)->fields);

		if (IsA(last, String) && name_in(strVal(last), ctx->names))
		{
			ctx->found = strVal(last);
			return true;
		}
		/* t.* is the whole row: it covers every encrypted column */
		if (IsA(last, A_Star) && ctx->names != NIL)
		{
			ctx->found = linitial(ctx->names);
			return true;
		}
		return false;
	}
	return raw_expression_tree_walker(node, refs_walker, (void *) ctx);
}

/* The encrypted column a raw expression refers to, or NULL. */
static const char *
raw_refers(Node *expr, List *names)
{
	RefContext	ctx = {names, NULL};

	if (expr && names)
		refs_walker(expr, &ctx);
	return ctx.found;
}

/* Check index elements (IndexElem) against the encrypted columns. */
static void
check_index_elems(List *elems, List *names, const char *table)
{
	ListCell   *lc;

	foreach(lc, elems)
	{
		IndexElem  *ie = lfirst_node(IndexElem, lc);
		const char *col = ie->name ? (name_in(ie->name, names) ? ie->name : NULL)
			: raw_refers(ie->expr, names);

		if (col)
			refuse("indexed", col, table);
	}
}

/* Check a list of String column names against the encrypted columns. */
static void
check_name_list(List *cols, List *names, const char *what, const char *table)
{
	ListCell   *lc;

	foreach(lc, cols)
		if (name_in(strVal(lfirst(lc)), names))
			refuse(what, strVal(lfirst(lc)), table);
}

/* A constraint of an existing or new table; colname set for column constraints. */
static void
check_constraint(Constraint *c, const char *colname, List *names, const char *table)
{
	bool		oncol = colname && name_in(colname, names);

	switch (c->contype)
	{
		case CONSTR_PRIMARY:
		case CONSTR_UNIQUE:
			if (oncol)
				refuse("indexed", colname, table);
			check_name_list(c->keys, names, "indexed", table);
			check_name_list(c->including, names, "indexed", table);
			break;
		case CONSTR_EXCLUSION:
			{
				ListCell   *lc;

				foreach(lc, c->exclusions)
					check_index_elems(list_make1(linitial(lfirst(lc))), names, table);
				if (raw_refers(c->where_clause, names))
					refuse("indexed", raw_refers(c->where_clause, names), table);
				break;
			}
		case CONSTR_FOREIGN:
			if (oncol)
				refuse("used in a foreign key", colname, table);
			check_name_list(c->fk_attrs, names, "used in a foreign key", table);
			break;
		case CONSTR_CHECK:
			if (oncol)
				refuse("used in a CHECK constraint", colname, table);
			if (raw_refers(c->raw_expr, names))
				refuse("used in a CHECK constraint", raw_refers(c->raw_expr, names), table);
			break;
		case CONSTR_DEFAULT:
			if (oncol)
				refuse("given a default", colname, table);
			break;
		case CONSTR_GENERATED:
			if (oncol)
				refuse("generated", colname, table);
			if (raw_refers(c->raw_expr, names))
				refuse("used in a generated column", raw_refers(c->raw_expr, names), table);
			break;
		default:
			break;
	}
}

/* Is the type named in a column definition an encrypted one? */
static bool
typename_encrypted(TypeName *tn)
{
	Oid			typid = lookup_typid(tn);

	return OidIsValid(typid) && fc_type_holds_encrypted(typid);
}

/* Column definitions of CREATE TABLE / ADD COLUMN and their constraints. */
static void
check_column_def(ColumnDef *cd, List **names, const char *table)
{
	ListCell   *lc;

	if (typename_encrypted(cd->typeName))
	{
		*names = lappend(*names, cd->colname);
		if (cd->raw_default)
			refuse("given a default", cd->colname, table);
	}
	foreach(lc, cd->constraints)
		check_constraint(lfirst_node(Constraint, lc), cd->colname, *names, table);
}

/* CREATE TABLE: columns, inherited columns, table constraints. */
static void
check_create(CreateStmt *stmt)
{
	List	   *names = NIL;
	const char *table = stmt->relation->relname;
	ListCell   *lc;

	foreach(lc, stmt->inhRelations)
		names = list_concat(names, encrypted_columns(fc_lookup_relid(lfirst(lc))));
	foreach(lc, stmt->tableElts)
		if (IsA(lfirst(lc), ColumnDef))
			check_column_def(lfirst(lc), &names, table);
	foreach(lc, stmt->tableElts)
		if (IsA(lfirst(lc), Constraint))
			check_constraint(lfirst(lc), NULL, names, table);
	foreach(lc, stmt->constraints)
		check_constraint(lfirst_node(Constraint, lc), NULL, names, table);
}

/* ALTER TABLE subcommands. */
static void
check_alter(AlterTableStmt *stmt)
{
	Oid			relid = fc_lookup_relid((Node *) stmt->relation);
	List	   *names = encrypted_columns(relid);
	const char *table = stmt->relation->relname;
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		switch (cmd->subtype)
		{
			case AT_AddColumn:
				check_column_def(castNode(ColumnDef, cmd->def), &names, table);
				break;
			case AT_AddConstraint:
				check_constraint(castNode(Constraint, cmd->def), NULL, names, table);
				break;
			case AT_AlterColumnType:
				if (name_in(cmd->name, names))
					refuse("changed to another type", cmd->name, table);
				if (typename_encrypted(castNode(ColumnDef, cmd->def)->typeName))
				{
					mask_refused_statement();
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("cannot change the type of column \"%s\" of table \"%s\" to an encrypted type",
									cmd->name, table),
							 errdetail(DETAIL_RULE),
							 errhint("Add a new encrypted column and copy the values into it with UPDATE.")));
				}
				break;
			case AT_ColumnDefault:
				if (cmd->def && name_in(cmd->name, names))
					refuse("given a default", cmd->name, table);
				break;
			default:
				break;
		}
	}
}

/*
 * OIDs of the relations of the given relkinds in a schema, or outside
 * pg_catalog in the whole database if nsp is InvalidOid.
 */
static List *
relations_in(Oid nsp, const char *relkinds)
{
	Relation	pgclass = table_open(RelationRelationId, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(pgclass, 0, NULL);
	HeapTuple	tup;
	List	   *result = NIL;

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_class cl = (Form_pg_class) GETSTRUCT(tup);

		if (strchr(relkinds, cl->relkind) != NULL &&
			(OidIsValid(nsp) ? cl->relnamespace == nsp : cl->relnamespace != PG_CATALOG_NAMESPACE))
			result = lappend_oid(result, cl->oid);
	}
	table_endscan(scan);
	table_close(pgclass, AccessShareLock);
	return result;
}

/* pgaudit.role and its OID, or InvalidOid if it is unset or no such role exists. */
static Oid
audit_role(const char **name)
{
	const char *audit = GetConfigOption("pgaudit.role", true, false);

	*name = audit;
	if (audit == NULL || audit[0] == '\0')
		return InvalidOid;
	return get_role_oid(audit, true);
}

/* The relations a GRANT or REVOKE on tables names (schemas: their relations). */
static List *
grant_relations(GrantStmt *stmt)
{
	List	   *relids = NIL;
	ListCell   *lc;

	if (stmt->objtype != OBJECT_TABLE)
		return NIL;
	foreach(lc, stmt->objects)
	{
		if (stmt->targtype == ACL_TARGET_OBJECT)
			relids = lappend_oid(relids, fc_lookup_relid(lfirst(lc)));
		else if (stmt->targtype == ACL_TARGET_ALL_IN_SCHEMA)
		{
			Oid			nsp = lookup_namespace(strVal(lfirst(lc)));

			if (OidIsValid(nsp))
				relids = list_concat(relids, relations_in(nsp, AUDITED_RELKINDS));
		}
	}
	return relids;
}

/*
 * GRANT: pgaudit's object auditing logs what pgaudit.role has privileges
 * on, so no privilege that covers an encrypted column may reach that role
 * (directly, through a role it belongs to, or through PUBLIC).  This names
 * the column before anything changes; check_audit_relation after the
 * statement covers every other way in.
 */
static void
check_grant(GrantStmt *stmt)
{
	const char *audit;
	Oid			auditid;
	bool		reaches = false;
	List	   *relids;
	ListCell   *lc;

	if (!stmt->is_grant || stmt->objtype != OBJECT_TABLE)
		return;
	auditid = audit_role(&audit);
	if (!OidIsValid(auditid))
		return;
	foreach(lc, stmt->grantees)
	{
		RoleSpec   *rs = lfirst_node(RoleSpec, lc);
		Oid			grantee;

		if (rs->roletype == ROLESPEC_PUBLIC)
			reaches = true;
		else
		{
			grantee = get_rolespec_oid(rs, true);
			if (OidIsValid(grantee) && has_privs_of_role(auditid, grantee))
				reaches = true;
		}
	}
	if (!reaches)
		return;

	relids = grant_relations(stmt);
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);
		List	   *names = encrypted_columns(relid);
		ListCell   *pc;
		bool		table_level = (stmt->privileges == NIL);

		if (names == NIL)
			continue;
		foreach(pc, stmt->privileges)
		{
			AccessPriv *ap = lfirst_node(AccessPriv, pc);
			ListCell   *cc;

			if (ap->cols == NIL)
				table_level = true;
			foreach(cc, ap->cols)
				if (name_in(strVal(lfirst(cc)), names))
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("encrypted column \"%s\" of table \"%s\" cannot be audited",
									strVal(lfirst(cc)), get_rel_name(relid)),
							 errdetail("This grant would give the pgaudit object-audit role \"%s\" "
									   "a privilege on the column. " DETAIL_RULE, audit)));
		}
		if (table_level)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("encrypted column \"%s\" of table \"%s\" cannot be audited",
							(char *) linitial(names), get_rel_name(relid)),
					 errdetail("This table-level grant would give the pgaudit object-audit role \"%s\" "
							   "a privilege covering the column. " DETAIL_RULE, audit),
					 errhint("Grant privileges on the other columns only.")));
	}
}

/*
 * ERROR if the audit role holds a privilege covering an encrypted column:
 * any privilege on the relation, or one on the column itself.  Privileges
 * are those has_column_privilege sees (PUBLIC, inherited roles, ownership,
 * predefined roles, superuser).
 */
static void
check_audit_column(Oid relid, AttrNumber attnum, const char *attname,
				   Oid auditid, const char *audit)
{
	bool		missing = false;
	AclMode		held;

	held = pg_class_aclmask_ext(relid, auditid, ACL_ALL_RIGHTS_RELATION, ACLMASK_ANY, &missing);
	if (held == 0 && !missing)
		held = pg_attribute_aclmask_ext(relid, attnum, auditid, ACL_ALL_RIGHTS_COLUMN,
										ACLMASK_ANY, &missing);
	if (held != 0 && !missing)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("encrypted column \"%s\" of table \"%s\" cannot be audited",
						attname, get_rel_name(relid)),
				 errdetail("The pgaudit object-audit role \"%s\" would hold a privilege covering "
						   "the column. " DETAIL_RULE, audit),
				 errhint("Privileges reach that role through grants to it, to PUBLIC or to roles "
						 "it belongs to, default privileges and ownership; give it privileges "
						 "on the other columns only.")));
}

/*
 * After a statement created or altered a relation: check the audit role's
 * privileges on its encrypted columns and, with inheritors, on those of the
 * relations inheriting from it (ADD COLUMN recurses into them).
 */
static void
check_audit_relation(Oid relid, bool inheritors)
{
	const char *audit;
	Oid			auditid;
	ListCell   *lc;

	if (!OidIsValid(relid) || !OidIsValid(auditid = audit_role(&audit)) ||
		!fc_enctypes_installed())
		return;
	CommandCounterIncrement();	/* see the statement's own catalog changes */
	foreach(lc, inheritors ? find_all_inheritors(relid, NoLock, NULL) : list_make1_oid(relid))
	{
		Relation	rel = try_relation_open(lfirst_oid(lc), AccessShareLock);
		TupleDesc	td;

		if (rel == NULL)
			continue;
		td = RelationGetDescr(rel);
		if (strchr(AUDITED_RELKINDS, rel->rd_rel->relkind) != NULL)
			for (int i = 0; i < td->natts; i++)
			{
				Form_pg_attribute att = TupleDescAttr(td, i);

				if (!att->attisdropped && fc_type_holds_encrypted(att->atttypid))
					check_audit_column(RelationGetRelid(rel), att->attnum,
									   NameStr(att->attname), auditid, audit);
			}
		relation_close(rel, AccessShareLock);
	}
}

/*
 * After a statement that changed a role (membership, attributes, name,
 * ownership) or a row type (which other relations may use as a column
 * type): check the audit role's privileges on every encrypted column of the
 * database.  One pass over pg_attribute; no relation is locked.
 */
static void
check_audit_database(void)
{
	const char *audit;
	Oid			auditid = audit_role(&audit);
	Relation	pgattr;
	SysScanDesc scan;
	HeapTuple	tup;

	if (!OidIsValid(auditid) || !fc_enctypes_installed())
		return;
	CommandCounterIncrement();	/* see the statement's own catalog changes */
	pgattr = table_open(AttributeRelationId, AccessShareLock);
	scan = systable_beginscan(pgattr, InvalidOid, false, NULL, 0, NULL);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		Form_pg_attribute att = (Form_pg_attribute) GETSTRUCT(tup);
		char		relkind;

		if (att->attnum <= 0 || att->attisdropped || !fc_type_holds_encrypted(att->atttypid))
			continue;
		relkind = get_rel_relkind(att->attrelid);
		if (relkind != '\0' && strchr(AUDITED_RELKINDS, relkind) != NULL)
			check_audit_column(att->attrelid, att->attnum, NameStr(att->attname),
							   auditid, audit);
	}
	systable_endscan(scan);
	table_close(pgattr, AccessShareLock);
}

static void check_relation(Oid relid);

/*
 * REINDEX can make an index valid that CREATE INDEX CONCURRENTLY left
 * invalid: check every table it would touch before it runs.
 */
static void
check_reindex(ReindexStmt *stmt)
{
	Oid			nsp = InvalidOid;
	ListCell   *lc;

	switch (stmt->kind)
	{
		case REINDEX_OBJECT_INDEX:
			{
				Oid			idx = fc_lookup_relid((Node *) stmt->relation);

				if (OidIsValid(idx))
					check_relation(IndexGetRelation(idx, true));
				return;
			}
		case REINDEX_OBJECT_TABLE:
			check_relation(fc_lookup_relid((Node *) stmt->relation));
			return;
		case REINDEX_OBJECT_SCHEMA:
			nsp = lookup_namespace(stmt->name);
			if (!OidIsValid(nsp))
				return;
			break;
		default:
			break;				/* DATABASE, SYSTEM: every table */
	}
	foreach(lc, relations_in(nsp, "rmp"))
		check_relation(lfirst_oid(lc));
}

/* Checks on the raw statement (text: its source text), before it runs. */
void
fc_restrict_before(Node *parsetree, const char *text)
{
	checked_text = text;
	switch (nodeTag(parsetree))
	{
		case T_IndexStmt:
			{
				IndexStmt  *stmt = (IndexStmt *) parsetree;
				Oid			relid = fc_lookup_relid((Node *) stmt->relation);
				List	   *names = encrypted_columns(relid);
				List	   *refs;
				const char *table = stmt->relation->relname;

				if (names == NIL)
					break;
				check_index_elems(stmt->indexParams, names, table);
				check_index_elems(stmt->indexIncludingParams, names, table);
				if (raw_refers(stmt->whereClause, names))
					refuse("indexed", raw_refers(stmt->whereClause, names), table);

				/*
				 * A whole-row reference (the table's name) covers the encrypted
				 * columns; check it here too, since CREATE INDEX CONCURRENTLY
				 * commits before the check after the statement could run.
				 */
				if (get_attnum(relid, table) != InvalidAttrNumber)
					break;		/* the name is a column, not the whole row */
				refs = list_make1((char *) table);
				{
					ListCell   *lc;

					foreach(lc, stmt->indexParams)
						if (lfirst_node(IndexElem, lc)->expr &&
							raw_refers(lfirst_node(IndexElem, lc)->expr, refs))
							refuse("indexed", linitial(names), table);
					if (raw_refers(stmt->whereClause, refs))
						refuse("indexed", linitial(names), table);
				}
				break;
			}
		case T_CreateStmt:
			check_create((CreateStmt *) parsetree);
			break;
		case T_AlterTableStmt:
			check_alter((AlterTableStmt *) parsetree);
			break;
		case T_CreateStatsStmt:
			{
				/*
				 * The grammar accepts any FROM list; PostgreSQL refuses all
				 * but a single relation name, which alone can be checked.
				 */
				CreateStatsStmt *stmt = (CreateStatsStmt *) parsetree;
				List	   *names;
				ListCell   *ec;

				if (list_length(stmt->relations) != 1)
					break;
				names = encrypted_columns(fc_lookup_relid(linitial(stmt->relations)));
				foreach(ec, stmt->exprs)
				{
					StatsElem  *se = lfirst_node(StatsElem, ec);
					const char *col = se->name ? (name_in(se->name, names) ? se->name : NULL)
						: raw_refers(se->expr, names);

					if (col)
						refuse("used in extended statistics", col,
							   linitial_node(RangeVar, stmt->relations)->relname);
				}
				break;
			}
		case T_GrantStmt:
			check_grant((GrantStmt *) parsetree);
			break;
		case T_ReindexStmt:
			check_reindex((ReindexStmt *) parsetree);
			break;
		case T_AlterDomainStmt:
			{
				AlterDomainStmt *stmt = (AlterDomainStmt *) parsetree;
				Oid			typid = lookup_typid(makeTypeNameFromNameList(stmt->typeName));

				if (OidIsValid(typid) && fc_type_holds_encrypted(typid) &&
					((stmt->subtype == 'T' && stmt->def != NULL) || stmt->subtype == 'C'))
					refuse_domain(stmt->subtype == 'T' ? "default" : "constraint");
				break;
			}
		case T_CreateDomainStmt:
			{
				CreateDomainStmt *stmt = (CreateDomainStmt *) parsetree;
				ListCell   *lc;

				if (!typename_encrypted(stmt->typeName))
					break;
				foreach(lc, stmt->constraints)
				{
					Constraint *c = lfirst_node(Constraint, lc);

					if (c->contype == CONSTR_DEFAULT || c->contype == CONSTR_CHECK)
						refuse_domain(c->contype == CONSTR_DEFAULT ? "default" : "CHECK constraint");
				}
				break;
			}
		default:
			break;
	}
}

/*
 * ERROR if any attribute in attrs (offset by FirstLowInvalidHeapAttributeNumber,
 * as pull_varattnos makes them) is encrypted; a whole-row reference covers
 * every column.
 */
static void
check_attrs(Relation rel, Bitmapset *attrs, const char *what)
{
	TupleDesc	td = RelationGetDescr(rel);
	bool		whole_row = bms_is_member(-FirstLowInvalidHeapAttributeNumber, attrs);

	for (int i = 0; i < td->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (att->attisdropped || !fc_type_holds_encrypted(att->atttypid))
			continue;
		if (whole_row || bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, attrs))
			refuse(what, NameStr(att->attname), RelationGetRelationName(rel));
	}
}

/* Check the whole state of a table after DDL ran on it. */
static void
check_relation(Oid relid)
{
	Relation	rel;
	TupleDesc	td;
	ListCell   *lc;

	if (!OidIsValid(relid) || encrypted_columns(relid) == NIL)
		return;
	rel = relation_open(relid, AccessShareLock);
	td = RelationGetDescr(rel);

	foreach(lc, RelationGetIndexList(rel))
	{
		Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);
		Bitmapset  *attrs = NULL;

		for (int i = 0; i < idx->rd_index->indnatts; i++)
			if (idx->rd_index->indkey.values[i] != 0)
				attrs = bms_add_member(attrs, idx->rd_index->indkey.values[i] -
									   FirstLowInvalidHeapAttributeNumber);
		pull_varattnos((Node *) RelationGetIndexExpressions(idx), 1, &attrs);
		pull_varattnos((Node *) RelationGetIndexPredicate(idx), 1, &attrs);
		index_close(idx, AccessShareLock);
		check_attrs(rel, attrs, "indexed");
	}

	if (td->constr)
	{
		for (int i = 0; i < td->constr->num_check; i++)
		{
			Bitmapset  *attrs = NULL;

			pull_varattnos(stringToNode(td->constr->check[i].ccbin), 1, &attrs);
			check_attrs(rel, attrs, "used in a CHECK constraint");
		}
		for (int i = 0; i < td->constr->num_defval; i++)
		{
			AttrDefault *d = &td->constr->defval[i];
			Form_pg_attribute att = TupleDescAttr(td, d->adnum - 1);
			Bitmapset  *attrs = NULL;

			if (fc_type_holds_encrypted(att->atttypid))
				refuse(att->attgenerated ? "generated" : "given a default",
					   NameStr(att->attname), RelationGetRelationName(rel));
			pull_varattnos(stringToNode(d->adbin), 1, &attrs);
			check_attrs(rel, attrs, "used in a generated column");
		}
	}

	foreach(lc, RelationGetStatExtList(rel))
	{
		HeapTuple	tup = SearchSysCache1(STATEXTOID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_statistic_ext st;
		Bitmapset  *attrs = NULL;
		bool		isnull;
		Datum		exprs;

		if (!HeapTupleIsValid(tup))
			continue;
		st = (Form_pg_statistic_ext) GETSTRUCT(tup);
		for (int i = 0; i < st->stxkeys.dim1; i++)
			attrs = bms_add_member(attrs, st->stxkeys.values[i] - FirstLowInvalidHeapAttributeNumber);
		exprs = SysCacheGetAttr(STATEXTOID, tup, Anum_pg_statistic_ext_stxexprs, &isnull);
		if (!isnull)
			pull_varattnos(stringToNode(TextDatumGetCString(exprs)), 1, &attrs);
		ReleaseSysCache(tup);
		check_attrs(rel, attrs, "used in extended statistics");
	}
	relation_close(rel, AccessShareLock);
}

/*
 * After a statement changed a role (its memberships, attributes, name, or
 * what it owns): does the audit role now have the privileges of that role?
 * Only then can the statement have given it new privileges.
 */
static bool
reaches_audit_role(Oid roleid)
{
	const char *audit;
	Oid			auditid;

	if (!OidIsValid(roleid) || !OidIsValid(auditid = audit_role(&audit)))
		return false;
	CommandCounterIncrement();	/* see the statement's own catalog changes */
	return has_privs_of_role(auditid, roleid);
}

/* Does an ALTER TABLE / ALTER TYPE change the row type of its relation? */
static bool
alters_row_type(AlterTableStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		if (cmd->subtype == AT_AddColumn || cmd->subtype == AT_AlterColumnType)
			return true;
	}
	return false;
}

/*
 * After a statement changed the columns of a relation (and of those
 * inheriting from it): check the audit role's privileges.  A row type that
 * now holds an encrypted type may be the type of other relations' columns,
 * which then are encrypted columns too: the whole database is checked.
 */
static void
check_audit_changed(Oid relid, bool row_type_changed)
{
	const char *audit;
	ListCell   *lc;

	if (!OidIsValid(relid) || !OidIsValid(audit_role(&audit)))
		return;
	if (row_type_changed)
	{
		CommandCounterIncrement();	/* see the statement's own catalog changes */
		foreach(lc, find_all_inheritors(relid, NoLock, NULL))
			if (fc_type_holds_encrypted(get_rel_type_id(lfirst_oid(lc))))
			{
				check_audit_database();
				return;
			}
	}
	check_audit_relation(relid, true);
}

/*
 * Checks on the resulting tables, after the statement ran: the rules on
 * encrypted columns, then the audit role's privileges on them.
 */
void
fc_restrict_after(Node *parsetree, const char *text)
{
	checked_text = text;
	switch (nodeTag(parsetree))
	{
		case T_IndexStmt:
			check_relation(fc_lookup_relid((Node *) ((IndexStmt *) parsetree)->relation));
			break;
		case T_CreateStmt:
		case T_CreateForeignTableStmt:
			{
				Oid			relid = fc_lookup_relid((Node *) ((CreateStmt *) parsetree)->relation);

				if (IsA(parsetree, CreateStmt))
					check_relation(relid);
				check_audit_relation(relid, false);
				break;
			}
		case T_CreateTableAsStmt:
			check_audit_relation(fc_lookup_relid((Node *) ((CreateTableAsStmt *) parsetree)->into->rel),
								 false);
			break;
		case T_ViewStmt:
			/* CREATE OR REPLACE VIEW may add columns to an existing row type */
			check_audit_changed(fc_lookup_relid((Node *) ((ViewStmt *) parsetree)->view),
								((ViewStmt *) parsetree)->replace);
			break;
		case T_AlterTableStmt:
			{
				AlterTableStmt *stmt = (AlterTableStmt *) parsetree;
				Oid			relid = fc_lookup_relid((Node *) stmt->relation);

				check_relation(relid);
				check_audit_changed(relid, alters_row_type(stmt));
				break;
			}
		case T_CreateStatsStmt:
			if (list_length(((CreateStatsStmt *) parsetree)->relations) == 1)
				check_relation(fc_lookup_relid(linitial(((CreateStatsStmt *) parsetree)->relations)));
			break;
		case T_GrantStmt:
			{
				ListCell   *lc;

				if (((GrantStmt *) parsetree)->is_grant)
					foreach(lc, grant_relations((GrantStmt *) parsetree))
						check_audit_relation(lfirst_oid(lc), false);
				break;
			}
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_ROLE &&
				reaches_audit_role(get_role_oid(((RenameStmt *) parsetree)->newname, true)))
				check_audit_database();
			break;
		case T_GrantRoleStmt:
			{
				ListCell   *lc;

				if (((GrantRoleStmt *) parsetree)->is_grant)
					foreach(lc, ((GrantRoleStmt *) parsetree)->grantee_roles)
						if (reaches_audit_role(get_rolespec_oid(lfirst(lc), true)))
						{
							check_audit_database();
							break;
						}
				break;
			}
		case T_CreateRoleStmt:
			if (reaches_audit_role(get_role_oid(((CreateRoleStmt *) parsetree)->role, true)))
				check_audit_database();
			break;
		case T_AlterRoleStmt:
			if (reaches_audit_role(get_rolespec_oid(((AlterRoleStmt *) parsetree)->role, true)))
				check_audit_database();
			break;
		case T_ReassignOwnedStmt:
			if (reaches_audit_role(get_rolespec_oid(((ReassignOwnedStmt *) parsetree)->newrole, true)))
				check_audit_database();
			break;
		default:
			break;
	}
}
