/*-------------------------------------------------------------------------
 *
 * index_guard.c
 *	  What the creation of an index does about encryption at rest: a keyed
 *	  hash index records the TDE key generation its hash codes are keyed
 *	  with, and an index that would keep plaintext values of an
 *	  encrypted_heap table is allowed, warned about or refused
 *	  (fieldcrypt.tde_plain_indexes).  Also: which keyed indexes exist and
 *	  under which generation (for key destruction and the rebuild worker).
 *
 *	  Every way of making an index -- CREATE INDEX [CONCURRENTLY],
 *	  constraints of CREATE/ALTER TABLE, partitions cloning a parent's
 *	  index, CREATE TABLE LIKE, REINDEX CONCURRENTLY, ALTER COLUMN TYPE --
 *	  goes through index_create(), whose object-access hook (hooks.c) calls
 *	  fc_index_post_create before the catalog rows are visible and before
 *	  the index is built.  The generation is written into the opclass
 *	  option "generation" of each keyed column (pg_attribute.attoptions of
 *	  the index), so that pg_dump dumps it and every reader uses it:
 *	    - not given: the current generation (the database gets its first
 *	      TDE key here if it has none); a partitioned index, which hashes
 *	      nothing, gets none, so that each partition's index takes the
 *	      current one when it is made;
 *	    - given (a restore, a clone, a copy for REINDEX CONCURRENTLY): kept
 *	      if this database holds it; if not, an index built here from the
 *	      table's rows takes the current one (a NOTICE says so: a dump
 *	      restored into another database, whose generations are its own),
 *	      and one that reuses existing storage (ALTER COLUMN TYPE without a
 *	      rewrite, pg_upgrade) fails;
 *	    - during a rebuild (REINDEX CONCURRENTLY, the re-encryption worker):
 *	      replaced by the current generation: that is how an index moves to
 *	      a new key.
 *	  Plain REINDEX rebuilds with the generation the index has.
 *
 *	  Writing the option needs the index's rows visible: only for an index
 *	  with a keyed column, a CommandCounterIncrement here, and the cached
 *	  options of the open index are dropped so that its build reads them
 *	  again (an open index's relcache entry keeps them across invalidation).
 *	  Any other index sees no catalog change and no extra work but a look at
 *	  its pg_index row.
 *
 * src/tde/index_guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/hash.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_index.h"
#include "catalog/pg_language.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "tde/keyed.h"
#include "tde/tam.h"
#include "tde/tam_crypt.h"

#define GEN_OPTION		"generation="

int			fc_tde_plain_indexes = FC_PLAIN_INDEXES_WARN;	/* setting */
static bool rebuilding = false; /* a rebuild moves keyed indexes to the current key */

/* Whether function proc is the C function name of this library. */
static bool
is_our_function(Oid proc, const char *name)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(proc));
	bool		result = false;

	if (HeapTupleIsValid(tup))
	{
		Datum		d;
		bool		isnull;

		if (((Form_pg_proc) GETSTRUCT(tup))->prolang == ClanguageId)
		{
			d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull);
			if (!isnull && strcmp(TextDatumGetCString(d), name) == 0)
			{
				d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &isnull);
				result = !isnull && strstr(TextDatumGetCString(d), "fieldcrypt") != NULL;
			}
		}
		ReleaseSysCache(tup);
	}
	return result;
}

/* Whether opclass is one of the keyed hash operator classes. */
static bool
is_keyed_opclass(Oid opclass)
{
	HeapTuple	tup = SearchSysCache1(CLAOID, ObjectIdGetDatum(opclass));
	Oid			proc = InvalidOid;

	if (!HeapTupleIsValid(tup))
		return false;
	if (((Form_pg_opclass) GETSTRUCT(tup))->opcmethod == HASH_AM_OID)
		proc = get_opfamily_proc(((Form_pg_opclass) GETSTRUCT(tup))->opcfamily,
								 ((Form_pg_opclass) GETSTRUCT(tup))->opcintype,
								 ((Form_pg_opclass) GETSTRUCT(tup))->opcintype,
								 HASHOPTIONS_PROC);
	ReleaseSysCache(tup);
	return OidIsValid(proc) && is_our_function(proc, "fieldcrypt_keyed_hash_options");
}

/* The generation in an attoptions array; 0 if none. */
static uint32
generation_of(Datum attoptions)
{
	Datum	   *elems;
	int			n;
	uint32		gen = 0;

	if (attoptions == (Datum) 0)
		return 0;
	deconstruct_array(DatumGetArrayTypeP(attoptions), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, NULL, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *s = TextDatumGetCString(elems[i]);

		if (strncmp(s, GEN_OPTION, strlen(GEN_OPTION)) == 0)
			gen = (uint32) strtoul(s + strlen(GEN_OPTION), NULL, 10);
	}
	return gen;
}

/*
 * Write generation gen into the options of key column attnum of indexoid
 * (visible rows), unless one is there and !overwrite, and it is loaded or
 * the index reuses existing storage (reuse).  Returns the generation the
 * column ends up with.
 */
static uint32
set_generation_option(Oid indexoid, AttrNumber attnum, uint32 gen, bool overwrite,
					  bool reuse)
{
	Relation	pgattr = table_open(AttributeRelationId, RowExclusiveLock);
	HeapTuple	tup = SearchSysCacheCopy2(ATTNUM, ObjectIdGetDatum(indexoid),
										  Int16GetDatum(attnum));
	Datum		old;
	bool		isnull;
	ArrayBuildState *astate = NULL;
	Datum		values[Natts_pg_attribute] = {0};
	bool		nulls[Natts_pg_attribute] = {0};
	bool		repl[Natts_pg_attribute] = {0};
	HeapTuple	newtup;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for attribute %d of relation %u", attnum, indexoid);
	old = SysCacheGetAttr(ATTNUM, tup, Anum_pg_attribute_attoptions, &isnull);
	if (!isnull && !overwrite && generation_of(old) != 0)
	{
		uint32		given = generation_of(old);

		if (reuse || given > 65535 || fc_local_tde_generation(given, false) != NULL)
		{
			heap_freetuple(tup);
			table_close(pgattr, RowExclusiveLock);
			return given;
		}
		/* built from the table here: any generation will do, take the current one */
		ereport(NOTICE,
				(errmsg("keyed hash index \"%s\" is keyed with TDE key generation %u, not %u",
						get_rel_name(indexoid), gen, given),
				 errdetail("This database holds no TDE key generation %u (a dump restored from another "
						   "database, or a generation destroyed since); the index is built here from "
						   "the table's rows.", given)));
	}
	if (!isnull)
	{
		Datum	   *elems;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(old), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &n);
		for (int i = 0; i < n; i++)
			if (strncmp(TextDatumGetCString(elems[i]), GEN_OPTION, strlen(GEN_OPTION)) != 0)
				astate = accumArrayResult(astate, elems[i], false, TEXTOID, CurrentMemoryContext);
	}
	astate = accumArrayResult(astate, CStringGetTextDatum(psprintf(GEN_OPTION "%u", gen)),
							  false, TEXTOID, CurrentMemoryContext);
	values[Anum_pg_attribute_attoptions - 1] = makeArrayResult(astate, CurrentMemoryContext);
	repl[Anum_pg_attribute_attoptions - 1] = true;
	newtup = heap_modify_tuple(tup, RelationGetDescr(pgattr), values, nulls, repl);
	CatalogTupleUpdate(pgattr, &newtup->t_self, newtup);
	heap_freetuple(newtup);
	heap_freetuple(tup);
	table_close(pgattr, RowExclusiveLock);
	return gen;
}

/* The current TDE generation of this database, made if it has none. */
static uint32
current_generation(void)
{
	return fc_tde_encrypt_ctx()->gen;
}

/*
 * Is this fieldcrypt's own CREATE/ALTER EXTENSION?  The index of
 * fieldcrypt.tde_statistic holds relation OIDs and column numbers only,
 * and the guard must not make the extension impossible to install.
 */
static bool
own_object(void)
{
	return creating_extension &&
		CurrentExtensionObject == get_extension_oid("fieldcrypt", true);
}

/* WARNING or ERROR (per fieldcrypt.tde_plain_indexes) for a plaintext index. */
static void
plain_index(const char *index, const char *table)
{
	if (fc_tde_plain_indexes == FC_PLAIN_INDEXES_ALLOW)
		return;
	ereport(fc_tde_plain_indexes == FC_PLAIN_INDEXES_REFUSE ? ERROR : WARNING,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 fc_tde_plain_indexes == FC_PLAIN_INDEXES_REFUSE ?
			 errmsg("index \"%s\" would store values of encrypted_heap table \"%s\" in plaintext",
					index, table) :
			 errmsg("index \"%s\" stores values of encrypted_heap table \"%s\" in plaintext",
					index, table),
			 errdetail("Index pages and their WAL are not encrypted; only a hash index with a keyed "
					   "operator class keeps no values."),
			 errhint("For equality search use USING hash with fieldcrypt.text_keyed_ops (or the "
					 "int4, int8, uuid, bytea, bpchar variant); fieldcrypt.tde_plain_indexes "
					 "says whether such indexes are allowed, warned about or refused.")));
}

/*
 * The object-access hook's part for a new relation (hooks.c): nothing
 * unless it is an index with a keyed column or on an encrypted_heap table.
 */
void
fc_index_post_create(Oid indexoid)
{
	Relation	irel = RelationIdGetRelation(indexoid);
	Relation	pgindex;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	Form_pg_index form;
	oidvector  *indclass;
	oidvector  *indcoll;
	Datum		d;
	bool		isnull;
	bool		keyed[INDEX_MAX_KEYS];
	bool		any_keyed = false;
	bool		all_keyed = true;
	bool		encrypted = false;
	Relation	trel;
	int			nkeys;
	Oid			tableoid;
	Oid			am;

	if (irel == NULL)
		return;
	if (irel->rd_rel->relkind != RELKIND_INDEX &&
		irel->rd_rel->relkind != RELKIND_PARTITIONED_INDEX)
	{
		RelationClose(irel);
		return;
	}
	am = irel->rd_rel->relam;

	/* the pg_index row of this very command */
	pgindex = table_open(IndexRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_index_indexrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(indexoid));
	scan = systable_beginscan(pgindex, IndexRelidIndexId, true, SnapshotSelf, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
	{
		systable_endscan(scan);
		table_close(pgindex, AccessShareLock);
		RelationClose(irel);
		return;
	}
	form = (Form_pg_index) GETSTRUCT(tup);
	tableoid = form->indrelid;
	nkeys = form->indnkeyatts;
	d = heap_getattr(tup, Anum_pg_index_indclass, RelationGetDescr(pgindex), &isnull);
	indclass = (oidvector *) DatumGetPointer(d);
	d = heap_getattr(tup, Anum_pg_index_indcollation, RelationGetDescr(pgindex), &isnull);
	indcoll = (oidvector *) DatumGetPointer(d);
	for (int i = 0; i < nkeys; i++)
	{
		keyed[i] = (am == HASH_AM_OID && is_keyed_opclass(indclass->values[i]));
		any_keyed |= keyed[i];
		all_keyed &= keyed[i];
		if (keyed[i])
			fc_keyed_check_collation(indcoll->values[i]);
	}
	systable_endscan(scan);
	table_close(pgindex, AccessShareLock);

	trel = RelationIdGetRelation(tableoid);
	if (trel != NULL)
	{
		encrypted = fc_is_encrypted_heap(trel);
		if (encrypted && !rebuilding && !all_keyed && !own_object())
			plain_index(RelationGetRelationName(irel), RelationGetRelationName(trel));
		RelationClose(trel);
	}

	/* a partitioned index hashes nothing: its partitions' indexes get their own */
	if (any_keyed && irel->rd_rel->relkind == RELKIND_INDEX)
	{
		uint32		current = current_generation();

		/* ALTER COLUMN TYPE keeps an index's storage when it can; so does pg_upgrade */
		bool		reuse = IsBinaryUpgrade || irel->rd_node.relNode != indexoid;

		CommandCounterIncrement();
		for (int i = 0; i < nkeys; i++)
			if (keyed[i])
			{
				uint32		gen = set_generation_option(indexoid, i + 1, current, rebuilding,
														reuse);

				/* out of range: index_create's validation of the options says so next */
				if (gen <= 65535 && fc_local_tde_generation(gen, false) == NULL)
					fc_keyed_generation_missing(gen);
			}
		/* the build must read the options again (see the file header) */
		irel->rd_opcoptions = NULL;
	}
	RelationClose(irel);
}

/* From now on (until fc_index_rebuild_end) new keyed indexes take the current key. */
void
fc_index_rebuild_begin(bool *save)
{
	*save = rebuilding;
	rebuilding = true;
}

void
fc_index_rebuild_end(bool save)
{
	rebuilding = save;
}

/*
 * The keyed hash indexes of this database (FcKeyedIndex *, palloc'd in the
 * current context), each with the generation of its first keyed column.
 */
List *
fc_keyed_indexes(void)
{
	Relation	pgindex = table_open(IndexRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(pgindex, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tup;
	List	   *keyed_ops = NIL;
	List	   *plain_ops = NIL;
	List	   *result = NIL;

	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_index form = (Form_pg_index) GETSTRUCT(tup);
		bool		isnull;
		oidvector  *indclass = (oidvector *) DatumGetPointer(
			heap_getattr(tup, Anum_pg_index_indclass, RelationGetDescr(pgindex), &isnull));

		if (get_rel_relkind(form->indexrelid) != RELKIND_INDEX)
			continue;
		for (int i = 0; i < form->indnkeyatts; i++)
		{
			Oid			opc = indclass->values[i];
			FcKeyedIndex *k;

			if (list_member_oid(plain_ops, opc))
				continue;
			if (!list_member_oid(keyed_ops, opc))
			{
				if (!is_keyed_opclass(opc))
				{
					plain_ops = lappend_oid(plain_ops, opc);
					continue;
				}
				keyed_ops = lappend_oid(keyed_ops, opc);
			}
			k = palloc0(sizeof(FcKeyedIndex));
			k->indexoid = form->indexrelid;
			k->tableoid = form->indrelid;
			k->generation = generation_of(get_attoptions(form->indexrelid, i + 1));
			k->exclusion = form->indisexclusion;
			k->valid = form->indisvalid;
			k->other_temp = isOtherTempNamespace(get_rel_namespace(form->indexrelid));
			result = lappend(result, k);
			break;
		}
	}
	systable_endscan(scan);
	table_close(pgindex, AccessShareLock);
	list_free(keyed_ops);
	list_free(plain_ops);
	return result;
}

/*
 * Mark in used[] the generations keyed hash indexes of this database use
 * (other sessions' temporary ones too: their options are in the catalog).
 */
void
fc_keyed_index_generations(bool *used)
{
	List	   *l = fc_keyed_indexes();
	ListCell   *lc;

	foreach(lc, l)
	{
		FcKeyedIndex *k = lfirst(lc);

		if (k->generation > 0 && k->generation < 65536)
			used[k->generation] = true;
	}
	list_free_deep(l);
}

/*
 * Key every keyed column of indexoid with generation gen (the caller holds
 * the index's lock and rebuilds it in this transaction).
 */
void
fc_keyed_index_set_generation(Oid indexoid, uint32 gen)
{
	HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	Form_pg_index form;
	bool		isnull;
	oidvector  *indclass;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for index %u", indexoid);
	form = (Form_pg_index) GETSTRUCT(tup);
	indclass = (oidvector *) DatumGetPointer(SysCacheGetAttr(INDEXRELID, tup,
															 Anum_pg_index_indclass, &isnull));
	for (int i = 0; i < form->indnkeyatts; i++)
		if (is_keyed_opclass(indclass->values[i]))
			(void) set_generation_option(indexoid, i + 1, gen, true, false);
	ReleaseSysCache(tup);
	CommandCounterIncrement();
}
