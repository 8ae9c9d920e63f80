/*-------------------------------------------------------------------------
 *
 * tam_repack.c
 *	  pg_repack on encrypted_heap tables: its work tables use encrypted_heap.
 *
 *	  pg_repack rebuilds a table T (OID n) online: it creates
 *	  repack.log_n (CREATE TABLE, a trigger on T logs concurrent changes
 *	  there, whole rows included) and repack.table_n (CREATE TABLE ... AS
 *	  SELECT ... WITH NO DATA, then INSERT ... SELECT), replays the log, and
 *	  finally swaps the relation files of T and repack.table_n in pg_class
 *	  (relfilenode, TOAST table) while T keeps its relam.  Both CREATE
 *	  statements name no access method, so they made heap tables: T ended up
 *	  labelled encrypted_heap over a heap file holding every row in clear.
 *
 *	  The utility hook calls fc_tam_repack_rewrite before such a statement
 *	  runs: when the statement creates repack.table_n or repack.log_n without
 *	  an access method and n is an encrypted_heap table, the statement gets
 *	  USING encrypted_heap.  The copy then goes through our access method
 *	  (rows sealed under the current generation, large values into our
 *	  TOAST format), the swapped-in file is one encrypted_heap can read, and
 *	  rows logged during the repack are never stored in clear.
 *
 * src/tde/tam_repack.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "utils/syscache.h"

#include "tde/tam.h"

static Oid	repack_target(const RangeVar *rv, const char *prefix);

/*
 * The encrypted_heap table a pg_repack work table named repack.<prefix><oid>
 * is built for, or InvalidOid.
 */
static Oid
repack_target(const RangeVar *rv, const char *prefix)
{
	size_t		plen = strlen(prefix);
	const char *digits;
	char	   *end;
	unsigned long n;
	Oid			amoid;
	HeapTuple	tup;
	Form_pg_class form;
	bool		ours;

	if (rv == NULL || rv->schemaname == NULL || rv->relname == NULL ||
		strcmp(rv->schemaname, "repack") != 0 ||
		strncmp(rv->relname, prefix, plen) != 0)
		return InvalidOid;
	digits = rv->relname + plen;
	if (*digits < '0' || *digits > '9')
		return InvalidOid;
	errno = 0;
	n = strtoul(digits, &end, 10);
	if (errno != 0 || *end != '\0' || n == 0 || n > PG_UINT32_MAX)
		return InvalidOid;
	amoid = fc_tam_oid();
	if (!OidIsValid(amoid))
		return InvalidOid;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum((Oid) n));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	form = (Form_pg_class) GETSTRUCT(tup);
	ours = form->relkind == RELKIND_RELATION && form->relam == amoid;
	ReleaseSysCache(tup);
	return ours ? (Oid) n : InvalidOid;
}

/*
 * Give pg_repack's work tables for an encrypted_heap table the access method
 * encrypted_heap.  *pstmt is copied first when the tree is read-only.
 */
void
fc_tam_repack_rewrite(PlannedStmt **pstmt, bool *readOnlyTree)
{
	Node	   *parsetree = (*pstmt)->utilityStmt;
	bool		table = false;

	if (IsA(parsetree, CreateTableAsStmt))
	{
		CreateTableAsStmt *ctas = (CreateTableAsStmt *) parsetree;

		if (ctas->objtype != OBJECT_TABLE || ctas->into == NULL ||
			ctas->into->accessMethod != NULL ||
			!OidIsValid(repack_target(ctas->into->rel, "table_")))
			return;
		table = true;
	}
	else if (IsA(parsetree, CreateStmt))
	{
		CreateStmt *cs = (CreateStmt *) parsetree;

		if (cs->accessMethod != NULL || cs->partspec != NULL ||
			!OidIsValid(repack_target(cs->relation, "log_")))
			return;
	}
	else
		return;

	if (*readOnlyTree)
	{
		*pstmt = copyObject(*pstmt);
		*readOnlyTree = false;
		parsetree = (*pstmt)->utilityStmt;
	}
	if (table)
		((CreateTableAsStmt *) parsetree)->into->accessMethod = pstrdup("encrypted_heap");
	else
		((CreateStmt *) parsetree)->accessMethod = pstrdup("encrypted_heap");
}
