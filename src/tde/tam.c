/*-------------------------------------------------------------------------
 *
 * tam.c
 *	  The encrypted_heap table access method: its handler and routine
 *	  table, and the storage-level callbacks that are heap's plus what our
 *	  format changes (TOAST decisions, size estimates, the TDE key at
 *	  creation).
 *
 *	  The routine starts as a copy of heap's; tam_scan.c and tam_modify.c
 *	  replace every callback that touches tuple contents, tam_build.c the
 *	  index builds, tam_rewrite.c CLUSTER / VACUUM FULL, tam_toast.c the
 *	  reading of out-of-line values.  What stays heap's works on pages and
 *	  headers only: VACUUM, pruning, freezing, relation files, parallel
 *	  scan coordination, index deletion.
 *
 * src/tde/tam.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/heaptoast.h"
#include "access/tableam.h"
#include "catalog/pg_am_d.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "tde/tam.h"
#include "tde/tam_crypt.h"

PG_FUNCTION_INFO_V1(fieldcrypt_tam_handler);

static TableAmRoutine fc_routine;
static bool routine_ready = false;

/*
 * New storage (CREATE, TRUNCATE, rewrites): heap's, after making sure the
 * database has a TDE key, so that a table that cannot be written is
 * refused when it is created.  Except the extension's own statistics table
 * created by CREATE EXTENSION / ALTER EXTENSION UPDATE (where encryption
 * may not be active yet): it is written only by ANALYZE of encrypted_heap
 * tables, which exist only once the key does.
 */
static void
fc_relation_set_new_filenode(Relation rel, const RelFileNode *newrnode,
							 char persistence, TransactionId *freezeXid,
							 MultiXactId *minmulti)
{
	if (!(creating_extension &&
		  CurrentExtensionObject == get_extension_oid("fieldcrypt", true) &&
		  strcmp(RelationGetRelationName(rel), "tde_statistic") == 0))
		(void) fc_tde_encrypt_ctx();
	fc_heap_routine->relation_set_new_filenode(rel, newrnode, persistence,
											   freezeXid, minmulti);
}

/*
 * Heap's rule plus our trailer: a TOAST table whenever our toaster could
 * move a value out (a row with a non-PLAIN varlena that may exceed the
 * threshold).
 */
static bool
fc_relation_needs_toast_table(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int32		data_length = 0;
	bool		maxlength_unknown = false;
	bool		has_toastable = false;
	int32		tuple_length;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		data_length = att_align_nominal(data_length, att->attalign);
		if (att->attlen > 0)
			data_length += att->attlen;
		else
		{
			int32		maxlen = type_maximum_size(att->atttypid, att->atttypmod);

			if (maxlen < 0)
				maxlength_unknown = true;
			else
				data_length += maxlen;
			if (att->attstorage != TYPSTORAGE_PLAIN)
				has_toastable = true;
		}
	}
	if (!has_toastable)
		return false;
	if (maxlength_unknown)
		return true;
	tuple_length = MAXALIGN(SizeofHeapTupleHeader + BITMAPLEN(desc->natts)) +
		MAXALIGN(data_length) + FC_TAM_TRAILER_FIXED + BITMAPLEN(desc->natts);
	return tuple_length > (int32) TOAST_TUPLE_THRESHOLD;
}

/* The TOAST table is a plain heap: its chunks are ciphertext already. */
static Oid
fc_relation_toast_am(Relation rel)
{
	return HEAP_TABLE_AM_OID;
}

/* Heap's estimate with our per-tuple trailer. */
static void
fc_relation_estimate_size(Relation rel, int32 *attr_widths, BlockNumber *pages,
						  double *tuples, double *allvisfrac)
{
	table_block_relation_estimate_size(rel, attr_widths, pages, tuples, allvisfrac,
									   MAXALIGN(SizeofHeapTupleHeader) + sizeof(ItemIdData) +
									   FC_TAM_TRAILER_FIXED,
									   BLCKSZ - SizeOfPageHeaderData);
}

/* The handler of ACCESS METHOD encrypted_heap. */
Datum
fieldcrypt_tam_handler(PG_FUNCTION_ARGS)
{
	if (!routine_ready)
	{
		fc_heap_routine = GetHeapamTableAmRoutine();
		fc_routine = *fc_heap_routine;
		fc_tam_scan_routine(&fc_routine);
		fc_tam_modify_routine(&fc_routine);
		fc_routine.relation_set_new_filenode = fc_relation_set_new_filenode;
		fc_routine.relation_copy_for_cluster = fc_tam_copy_for_cluster;
		fc_routine.index_build_range_scan = fc_tam_index_build_range_scan;
		fc_routine.index_validate_scan = fc_tam_index_validate_scan;
		fc_routine.relation_needs_toast_table = fc_relation_needs_toast_table;
		fc_routine.relation_toast_am = fc_relation_toast_am;
		fc_routine.relation_fetch_toast_slice = fc_tam_fetch_toast_slice;
		fc_routine.relation_estimate_size = fc_relation_estimate_size;
		fc_tam_routine = &fc_routine;
		routine_ready = true;
	}
	PG_RETURN_POINTER(&fc_routine);
}
