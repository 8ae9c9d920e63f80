/*-------------------------------------------------------------------------
 *
 * tam_fence.c
 *	  Keeps encrypted_heap tables out of publications.
 *
 *	  Logical decoding reads heap WAL records and hands their tuples to
 *	  the output plugin's type output functions: for our tables those hold
 *	  ciphertext (unsafe for numeric, arrays, jsonb, and useless anyway).
 *	  After every statement that can make such a table published (CREATE /
 *	  ALTER PUBLICATION, CREATE TABLE, ALTER TABLE for SET ACCESS METHOD,
 *	  ATTACH PARTITION or SET SCHEMA, CREATE TABLE AS) the utility hook
 *	  calls fc_tam_check_publications, whose ERROR aborts the statement.
 *	  Decoding through a slot with another plugin cannot be fenced here;
 *	  the README says so.  Where Citus is installed, the hint names the
 *	  shard transfer mode that copies rows instead (a shard move or the
 *	  rebalancer publishes the shard by default).
 *
 * src/tde/tam_fence.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_publication.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "keys/cluster.h"

#include "tde/tam.h"

static bool any_publication(void);
static bool relation_published(Oid relid, Oid nspid);

/* Whether the database has any publication at all (cheap early exit). */
static bool
any_publication(void)
{
	Relation	rel = table_open(PublicationRelationId, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
	bool		found = heap_getnext(scan, ForwardScanDirection) != NULL;

	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* Whether relid is in a publication, directly, by schema or via a parent. */
static bool
relation_published(Oid relid, Oid nspid)
{
	List	   *ancestors;
	ListCell   *lc;

	if (GetRelationPublications(relid) != NIL || GetSchemaPublications(nspid) != NIL)
		return true;
	if (!get_rel_relispartition(relid))
		return false;
	ancestors = get_partition_ancestors(relid);
	foreach(lc, ancestors)
	{
		Oid			anc = lfirst_oid(lc);

		if (GetRelationPublications(anc) != NIL ||
			GetSchemaPublications(get_rel_namespace(anc)) != NIL)
			return true;
	}
	return false;
}

/* ERROR if any encrypted_heap table of this database is published. */
void
fc_tam_check_publications(void)
{
	Oid			amoid;
	Relation	pgclass;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		all_tables;
	char	   *bad = NULL;

	amoid = fc_tam_oid();
	if (!OidIsValid(amoid))
		return;
	CommandCounterIncrement();
	if (!any_publication())
		return;
	all_tables = GetAllTablesPublications() != NIL;

	pgclass = table_open(RelationRelationId, AccessShareLock);
	scan = table_beginscan_catalog(pgclass, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_class c = (Form_pg_class) GETSTRUCT(tup);

		if (c->relam != amoid || c->relkind != RELKIND_RELATION)
			continue;
		if (all_tables || relation_published(c->oid, c->relnamespace))
		{
			bad = pstrdup(NameStr(c->relname));
			break;
		}
	}
	table_endscan(scan);
	table_close(pgclass, AccessShareLock);
	if (bad)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("tables using access method encrypted_heap cannot be published"),
				 errdetail("Table \"%s\" would be published; logical decoding would hand its "
						   "ciphertext to output functions.", bad),
				 fc_citus_installed() ?
				 errhint("Citus moves shards through a publication unless told otherwise: move or "
						 "rebalance shards of encrypted_heap tables with "
						 "shard_transfer_mode => 'block_writes', which copies their rows.") :
				 errhint("Leave encrypted_heap tables out of publications (and of FOR ALL TABLES "
						 "or FOR TABLES IN SCHEMA publications), or use heap for them.")));
}
