/*-------------------------------------------------------------------------
 *
 * tdekeyapi.c
 *	  The SQL functions on TDE keys: rotate_tde_key, tde_key_status,
 *	  is_encrypted, reencrypt_table, drop_unused_tde_keys and
 *	  _tde_tuple_generation, and the scan of which generations the rows of
 *	  encrypted_heap tables still use.
 *
 *	  rotate_tde_key adds a generation that new writes use at once; it is
 *	  written to the keyring and WAL before any data can use it, and is not
 *	  undone if the calling transaction aborts.  On a Citus coordinator it
 *	  checks every worker (_rotate_tde_key_check), then rotates every
 *	  worker's TDE key, then its own (keys/cluster_tenant.c: a refusal in
 *	  the check changes no node; TDE keys are per node, rows cross nodes
 *	  through SQL and are sealed again on arrival, so the nodes need not
 *	  share them).
 *
 * src/tde/tdekeyapi.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/cluster.h"
#include "commands/dbcommands.h"
#include "commands/matview.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/itemptr.h"

#include "catalog/namespace.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "utils/timestamp.h"

#include "keys/cluster_tenant.h"
#include "keys/keyring.h"
#include "keys/policy.h"
#include "keys/rotstate.h"
#include "tde/keyed.h"
#include "tde/tam.h"
#include "tde/tam_crypt.h"
#include "tde/tde_stats.h"

PG_FUNCTION_INFO_V1(fieldcrypt_rotate_tde_key);
PG_FUNCTION_INFO_V1(fieldcrypt_rotate_tde_key_check);
PG_FUNCTION_INFO_V1(fieldcrypt_tde_key_status);
PG_FUNCTION_INFO_V1(fieldcrypt_is_encrypted);
PG_FUNCTION_INFO_V1(fieldcrypt_reencrypt_table);
PG_FUNCTION_INFO_V1(fieldcrypt_drop_unused_tde_keys);
PG_FUNCTION_INFO_V1(fieldcrypt_tde_tuple_generation);

/*
 * Every check of rotate_tde_key, in order: role, TLS, not a standby, TDE
 * active, keyring writable, the change lock (kept to the end of the
 * transaction), no re-encryption of TDE keys running.
 */
static void
rotate_checks(void)
{
	FcTdeKeys	tde;

	fc_require_role(FC_ADMIN_ROLE, "rotate the TDE key");
	fc_require_tls("fieldcrypt.rotate_tde_key");
	fc_tde_require_active();
	fc_keyring_check_writable();
	if (!fc_try_change_lock())
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a data encryption key change is already in progress"),
				 errdetail("Only one key change can run at a time in the cluster."),
				 errhint("Retry when the other key change has finished.")));
	if (fc_db_lookup_tde(MyDatabaseId, &tde))
	{
		PG_TRY();
		{
			fc_rotstate_check_tde_idle(&tde);
		}
		PG_FINALLY();
		{
			explicit_bzero(&tde, sizeof(tde));
		}
		PG_END_TRY();
	}
}

/*
 * fieldcrypt._rotate_tde_key_check(): every check of rotate_tde_key, with
 * its errors, nothing changed; a Citus coordinator runs it on every worker
 * before any node rotates (keys/cluster_tenant.c).
 */
Datum
fieldcrypt_rotate_tde_key_check(PG_FUNCTION_ARGS)
{
	/*
	 * Not in a transaction block: the change lock it takes would outlive
	 * the check (a PREPARE TRANSACTION keeps it) and hold back every key
	 * change of the cluster.
	 */
	PreventInTransactionBlock(true, "fieldcrypt._rotate_tde_key_check()");
	rotate_checks();
	PG_RETURN_VOID();
}

/* fieldcrypt.rotate_tde_key(): a new TDE key generation for new writes. */
Datum
fieldcrypt_rotate_tde_key(PG_FUNCTION_ARGS)
{
	uint8		key[FC_KEY_LEN];
	uint32		gen = 0;
	FcClusterCall call = {
		.what = "the data encryption key",
		.check_sql = "SELECT fieldcrypt._rotate_tde_key_check()",
		.apply_sql = "SELECT fieldcrypt.rotate_tde_key()",
		/* a worker that rotated alone waits for the cluster once its tables are done */
		.retry_hint = "A worker that took it waits for the cluster once it has re-encrypted its "
		"tables and refuses the retry (55P03) until fieldcrypt.finish_cluster_reencryption() "
		"has run on the coordinator.",
	};

	rotate_checks();
	/* on a Citus coordinator: checked on every worker, then every worker first */
	(void) fc_cluster_check_then_apply(&call);
	if (!fc_random_bytes(key, FC_KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("random number generator failed: %s", fc_crypto_last_error())));
	PG_TRY();
	{
		gen = fc_db_tde_add_generation(MyDatabaseId, key, false);
	}
	PG_FINALLY();
	{
		explicit_bzero(key, sizeof(key));
	}
	PG_END_TRY();
	fc_cluster_applied_done();
	ereport(LOG,
			(errmsg("fieldcrypt: TDE key of database \"%s\" rotated to generation %u",
					get_database_name(MyDatabaseId), gen)));
	fc_rotstate_wake();		/* re-encrypt rows of older generations */
	PG_RETURN_INT32((int32) gen);
}

/*
 * The encrypted_heap tables and materialized views of this database whose
 * pages we can read; *others_temp is set if another session's temporary
 * table (in its local buffers) uses encrypted_heap.
 */
static List *
encrypted_tables(bool *others_temp)
{
	List	   *tables = NIL;
	Relation	pgclass;
	TableScanDesc scan;
	HeapTuple	tup;
	Oid			amoid = fc_tam_oid();

	if (others_temp)
		*others_temp = false;
	pgclass = table_open(RelationRelationId, AccessShareLock);
	scan = table_beginscan_catalog(pgclass, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_class c = (Form_pg_class) GETSTRUCT(tup);

		if (c->relam != amoid || !(c->relkind == RELKIND_RELATION ||
								   c->relkind == RELKIND_MATVIEW))
			continue;
		if (c->relpersistence == RELPERSISTENCE_TEMP && !isTempOrTempToastNamespace(c->relnamespace))
		{
			if (others_temp)
				*others_temp = true;
			continue;
		}
		tables = lappend_oid(tables, c->oid);
	}
	table_endscan(scan);
	table_close(pgclass, AccessShareLock);
	return tables;
}

/* The generations of TDE keys used by the stored tuples of relid. */
static void
table_generations(Oid relid, bool *used)
{
	Relation	rel = table_open(relid, AccessShareLock);
	BlockNumber nblocks = RelationGetNumberOfBlocks(rel);
	BufferAccessStrategy strategy = GetAccessStrategy(BAS_BULKREAD);

	for (BlockNumber b = 0; b < nblocks; b++)
	{
		Buffer		buf;
		Page		page;
		OffsetNumber maxoff;

		CHECK_FOR_INTERRUPTS();
		buf = ReadBufferExtended(rel, MAIN_FORKNUM, b, RBM_NORMAL, strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId		lp = PageGetItemId(page, off);
			HeapTupleData tup;
			int			gen;

			if (!ItemIdIsNormal(lp))
				continue;
			tup.t_data = (HeapTupleHeader) PageGetItem(page, lp);
			tup.t_len = ItemIdGetLength(lp);
			gen = fc_tam_tuple_generation(&tup);
			if (gen > 0 && gen < 65536)
				used[gen] = true;
		}
		UnlockReleaseBuffer(buf);
	}
	FreeAccessStrategy(strategy);
	table_close(rel, AccessShareLock);
}

/*
 * fieldcrypt.tde_key_status: one row per TDE key generation of this
 * database, with the encrypted_heap tables whose pages still hold tuples
 * under it (read from the tuple trailers: no decryption).
 */
Datum
fieldcrypt_tde_key_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FcTdeKeys	tde;
	List	   *tables;
	bool	   *used;
	uint32	   *masks;

	InitMaterializedSRF(fcinfo, 0);
	if (!fc_db_lookup_tde(MyDatabaseId, &tde))
		return (Datum) 0;

	tables = encrypted_tables(NULL);

	/* per table, which of the (at most 16) generations it uses: one bit each */
	masks = palloc0(sizeof(uint32) * Max(list_length(tables), 1));
	used = palloc(65536 * sizeof(bool));
	for (int i = 0; i < list_length(tables); i++)
	{
		memset(used, 0, 65536 * sizeof(bool));
		table_generations(list_nth_oid(tables, i), used);
		for (int g = 0; g < tde.ngens; g++)
			if (tde.gens[g].gen < 65536 && used[tde.gens[g].gen])
				masks[i] |= (uint32) 1 << g;
	}

	for (int g = 0; g < tde.ngens; g++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(tables), 1));
		int			n = 0;

		for (int i = 0; i < list_length(tables); i++)
			if (masks[i] & ((uint32) 1 << g))
				elems[n++] = ObjectIdGetDatum(list_nth_oid(tables, i));
		values[0] = Int32GetDatum((int32) tde.gens[g].gen);
		values[1] = BoolGetDatum(tde.gens[g].gen == tde.current);
		values[2] = TimestampTzGetDatum(tde.gens[g].created_at);
		values[3] = PointerGetDatum(construct_array(elems, n, REGCLASSOID, 4, true,
													TYPALIGN_INT));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	explicit_bzero(&tde, sizeof(tde));
	return (Datum) 0;
}

/* relam of relid; ERROR if there is no such relation. */
static Oid
relation_am(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			am;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	am = ((Form_pg_class) GETSTRUCT(tup))->relam;
	ReleaseSysCache(tup);
	return am;
}

/* fieldcrypt.is_encrypted(regclass): whether the table uses encrypted_heap. */
Datum
fieldcrypt_is_encrypted(PG_FUNCTION_ARGS)
{
	Oid			am = relation_am(PG_GETARG_OID(0));

	PG_RETURN_BOOL(OidIsValid(am) && am == fc_tam_oid());
}

/*
 * Rewrite relid as VACUUM FULL does (the access method seals every row
 * under the current TDE key).  fieldcrypt.tde_statistic is a materialized
 * view that is never "populated" (so that nobody can SELECT it), and
 * cluster_rel skips such views without a word: it is marked populated for
 * the rewrite only, inside this transaction and under the rewrite's ACCESS
 * EXCLUSIVE lock, so no other session ever sees it so.
 */
static void
rewrite_table(Oid relid)
{
	ClusterParams params = {CLUOPT_RECHECK};
	bool		stats = (relid == fc_tde_stats_table());
	Relation	rel;

	Oid			save_user;
	int			save_sec;

	if (!stats)
	{
		cluster_rel(relid, InvalidOid, &params);
		CommandCounterIncrement();
		return;
	}

	/*
	 * As the view's owner (the extension's): cluster_rel skips, without a
	 * word, a relation the current user does not own, and a non-superuser
	 * member of fieldcrypt_admin may call drop_unused_tde_keys.
	 */
	rel = table_open(relid, AccessExclusiveLock);
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	SetMatViewPopulatedState(rel, true);
	table_close(rel, NoLock);
	cluster_rel(relid, InvalidOid, &params);
	rel = table_open(relid, AccessExclusiveLock);
	SetMatViewPopulatedState(rel, false);
	table_close(rel, NoLock);
	SetUserIdAndSecContext(save_user, save_sec);
	CommandCounterIncrement();
}

/*
 * fieldcrypt.reencrypt_table(regclass): rewrite the table (as VACUUM FULL
 * does) so that every tuple and value is sealed under the current TDE key.
 */
Datum
fieldcrypt_reencrypt_table(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Oid			am = relation_am(relid);
	char	   *name = get_rel_name(relid);

	if (!OidIsValid(am) || am != fc_tam_oid())
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("table \"%s\" does not use access method encrypted_heap", name)));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)), name);
	rewrite_table(relid);
	PG_RETURN_VOID();
}

/*
 * Mark in used[] (indexed by generation) the TDE key generations that any
 * row version of an encrypted_heap table of this database uses (from the
 * row trailers; dead versions count until vacuumed), or that a keyed hash
 * index is keyed with.  *others_temp: another session has such a temporary
 * table, which cannot be read from here.
 */
void
fc_tde_used_generations(bool *used, bool *others_temp)
{
	List	   *tables = encrypted_tables(others_temp);

	for (int i = 0; i < list_length(tables); i++)
		table_generations(list_nth_oid(tables, i), used);
	list_free(tables);
	fc_keyed_index_generations(used);
}

/*
 * fieldcrypt.tde_statistic holds derived rows that ANALYZE wrote under the
 * generation current then, and no user can rewrite it (it is not theirs):
 * rewrite it here when it keeps an older generation than keep_from alive,
 * so that re-encrypting one's own tables is enough to drop old keys.
 */
static void
rewrite_statistics(uint32 keep_from)
{
	Oid			relid = fc_tde_stats_table();
	bool	   *used;
	bool		old = false;

	if (!OidIsValid(relid))
		return;
	used = palloc0(65536 * sizeof(bool));
	table_generations(relid, used);
	for (uint32 g = 0; g < keep_from && g < 65536; g++)
		old |= used[g];
	pfree(used);
	if (old)
		rewrite_table(relid);
}

/*
 * fieldcrypt.drop_unused_tde_keys(): destroy the TDE key generations that no
 * row version of any encrypted_heap table uses any more (after
 * reencrypt_table, VACUUM FULL or online re-encryption and VACUUM; the
 * statistics relation is rewritten here if it needs it).  Waits
 * for transactions that might still be writing under an older generation.
 * Returns how many generations were destroyed.
 */
Datum
fieldcrypt_drop_unused_tde_keys(PG_FUNCTION_ARGS)
{
	FcTdeKeys	tde;
	bool	   *used;
	bool		others_temp;
	uint32		keep_from;
	int			dropped;
	VirtualTransactionId *vxids;
	int			nvxids;

	fc_require_role(FC_ADMIN_ROLE, "drop TDE keys");
	fc_require_tls("fieldcrypt.drop_unused_tde_keys");
	if (!fc_db_lookup_tde(MyDatabaseId, &tde))
		PG_RETURN_INT32(0);
	keep_from = tde.current;
	explicit_bzero(&tde, sizeof(tde));

	/*
	 * A write that started before the current generation may still run, or
	 * have written into a table its transaction created, which this cannot
	 * see: wait for the transactions of this database that have written or
	 * hold a snapshot (a session idle in a transaction that wrote holds
	 * none).  Other databases have keys of their own; a read-only session
	 * idle in a transaction is not waited for.  The wait can be cancelled.
	 */
	vxids = GetCurrentVirtualXIDs(InvalidTransactionId, false, false, 0, &nvxids);
	for (int i = 0; i < nvxids; i++)
	{
		int			pid;
		bool		snapshot;

		if (fc_xact_to_wait_for(vxids[i], &pid, &snapshot))
			(void) VirtualXactLock(vxids[i], true);
	}

	/* tables those transactions created and committed: read the catalogs anew */
	AcceptInvalidationMessages();
	InvalidateCatalogSnapshot();

	rewrite_statistics(keep_from);
	used = palloc0(65536 * sizeof(bool));
	fc_tde_used_generations(used, &others_temp);
	if (others_temp)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("cannot tell which TDE keys are unused while other sessions have encrypted temporary tables"),
				 errhint("Retry when those sessions have ended.")));
	dropped = fc_db_tde_drop_generations(MyDatabaseId, used, keep_from);
	if (dropped > 0)
		ereport(LOG,
				(errmsg("fieldcrypt: destroyed %d unused TDE key generation(s) of database \"%s\"",
						dropped, get_database_name(MyDatabaseId))));
	PG_RETURN_INT32(dropped);
}

/*
 * fieldcrypt._tde_tuple_generation(regclass, tid): the TDE key generation
 * of the row version at tid (NULL if there is none); for re-encryption.
 */
Datum
fieldcrypt_tde_tuple_generation(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	ItemPointer tid = (ItemPointer) PG_GETARG_POINTER(1);
	Relation	rel;
	Buffer		buf;
	Page		page;
	OffsetNumber off = ItemPointerGetOffsetNumberNoCheck(tid);
	BlockNumber blk = ItemPointerGetBlockNumberNoCheck(tid);
	int			gen = -1;

	BlockNumber *known = (BlockNumber *) fcinfo->flinfo->fn_extra;

	rel = table_open(relid, AccessShareLock);
	if (!fc_is_encrypted_heap(rel))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("table \"%s\" does not use access method encrypted_heap",
						RelationGetRelationName(rel))));
	/* the table's size, asked again only past the last size seen (one lseek per call otherwise) */
	if (known == NULL)
	{
		known = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, 2 * sizeof(BlockNumber));
		known[0] = InvalidOid;
		fcinfo->flinfo->fn_extra = known;
	}
	if (known[0] != relid || blk >= known[1])
	{
		known[0] = relid;
		known[1] = RelationGetNumberOfBlocks(rel);
	}
	if (blk < known[1])
	{
		buf = ReadBuffer(rel, blk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (off >= FirstOffsetNumber && off <= PageGetMaxOffsetNumber(page) &&
			ItemIdIsNormal(PageGetItemId(page, off)))
		{
			HeapTupleData t;

			t.t_data = (HeapTupleHeader) PageGetItem(page, PageGetItemId(page, off));
			t.t_len = ItemIdGetLength(PageGetItemId(page, off));
			gen = fc_tam_tuple_generation(&t);
		}
		UnlockReleaseBuffer(buf);
	}
	table_close(rel, AccessShareLock);
	if (gen < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(gen);
}
