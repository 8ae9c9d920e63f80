/*-------------------------------------------------------------------------
 *
 * tam_rewrite.c
 *	  VACUUM FULL and CLUSTER over encrypted_heap tables: the
 *	  relation_copy_for_cluster callback.
 *
 *	  It follows heap's version (heapam_handler.c): heap's rewrite module
 *	  (rewriteheap.c) writes the new relation, keeps update chains and
 *	  freezes; we decide which versions survive with HeapTupleSatisfiesVacuum
 *	  on the stored tuple, whose header is plaintext.  Each surviving version
 *	  is decrypted, deformed with OldTable's descriptor, its dropped columns
 *	  set to NULL, and formed again for NewTable by fc_tam_form_values: new
 *	  ciphertext under the current key and a fresh nonce, large values saved
 *	  again into NewTable's TOAST table (they are read through OldTable's
 *	  exposed pointers, OldTable being open throughout).  rewrite_heap_tuple
 *	  then copies the old version's transaction header, t_self and t_ctid
 *	  bookkeeping onto the new stored tuple; it never reads data bytes.
 *
 *	  Sources, as in heap:
 *	  - index order (CLUSTER without sort): index_getnext_slot over
 *		SnapshotAny.  Our index fetch decrypts into the slot and leaves the
 *		stored version, pinned, in its FcIndexFetchData raw slot (tam.h);
 *		we classify that one and take the values from the slot.
 *	  - sequential (VACUUM FULL, CLUSTER with sort): heap's own scan over
 *		SnapshotAny into a private buffer slot; only surviving versions are
 *		decrypted.
 *	  - with sort, tuplesort_begin_cluster holds the decrypted plain tuples
 *		(its comparator needs plaintext keys; it keeps the header and
 *		t_self), and each sorted plain tuple is both the source of values
 *		and the "old tuple" for rewrite_heap_tuple.  Sort spill files hold
 *		plaintext, like those of any sort.
 *
 *	  Locking: the caller holds AccessExclusiveLock on OldTable.  The buffer
 *	  content lock (share) is held only around HeapTupleSatisfiesVacuum;
 *	  decryption, TOAST work and the rewrite run with only the pin.
 *
 *	  Memory: everything a version needs (plain tuple, detoasted values, the
 *	  new stored tuple) lives in a private per-tuple context, reset for every
 *	  version; rewrite_heap_tuple copies what it keeps into its own context.
 *
 * src/tde/tam_rewrite.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/rewriteheap.h"
#include "access/tableam.h"
#include "catalog/catalog.h"
#include "commands/progress.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/backend_progress.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplesort.h"

#include "tde/tam.h"

/* where the versions of OldTable come from */
typedef struct ClusterSource
{
	IndexScanDesc index_scan;	/* index order, or NULL */
	TupleTableSlot *plain;		/* index order: what our fetch decrypted */
	TableScanDesc heap_scan;	/* sequential: heap's descriptor, or NULL */
	TupleTableSlot *raw;		/* sequential: stored tuple + pin */
	BlockNumber prev_cblock;	/* sequential: for progress */
} ClusterSource;

static bool next_stored(ClusterSource *src, Relation OldTable,
						HeapTuple *stored, Buffer *buf);
static bool classify_for_cluster(Relation OldTable, HeapTuple stored,
								 Buffer buf, TransactionId OldestXmin,
								 bool is_system_catalog,
								 double *tups_recently_dead);
static void form_and_rewrite(RewriteState rwstate, Relation NewTable,
							 HeapTuple old, Datum *values, bool *isnull,
							 int natts);

/*
 * Advance to the next version of OldTable, setting *stored to the tuple on
 * the (pinned, unlocked) page and *buf to its buffer; false at the end.
 */
static bool
next_stored(ClusterSource *src, Relation OldTable, HeapTuple *stored,
			Buffer *buf)
{
	if (src->index_scan != NULL)
	{
		FcIndexFetchData *fetch;
		BufferHeapTupleTableSlot *bslot;

		if (!index_getnext_slot(src->index_scan, ForwardScanDirection,
								src->plain))
			return false;

		/* no scan keys, so nothing to recheck */
		if (src->index_scan->xs_recheck)
			elog(ERROR, "CLUSTER does not support lossy index conditions");

		fetch = (FcIndexFetchData *) src->index_scan->xs_heapfetch;
		if (fetch->raw == NULL ||
			fetch->raw->tts_ops != &TTSOpsBufferHeapTuple ||
			TTS_EMPTY(fetch->raw))
			elog(ERROR, "encrypted_heap index fetch kept no stored tuple");

		bslot = (BufferHeapTupleTableSlot *) fetch->raw;
		*stored = ExecFetchSlotHeapTuple(fetch->raw, false, NULL);
		*buf = bslot->buffer;
		if (!BufferIsValid(*buf))
			elog(ERROR, "encrypted_heap index fetch kept no buffer");
	}
	else
	{
		HeapScanDesc hscan = (HeapScanDesc) src->heap_scan;

		if (!heap_getnextslot(src->heap_scan, ForwardScanDirection, src->raw))
		{
			/*
			 * Trailing empty pages return nothing: report the scan complete
			 * so that blocks scanned ends equal to the total.
			 */
			pgstat_progress_update_param(PROGRESS_CLUSTER_HEAP_BLKS_SCANNED,
										 hscan->rs_nblocks);
			return false;
		}

		/*
		 * A synchronized scan may start past block 0 and wrap around; report
		 * blocks counted from its start block.
		 */
		if (src->prev_cblock != hscan->rs_cblock)
		{
			pgstat_progress_update_param(PROGRESS_CLUSTER_HEAP_BLKS_SCANNED,
										 (hscan->rs_cblock +
										  hscan->rs_nblocks -
										  hscan->rs_startblock) %
										 hscan->rs_nblocks + 1);
			src->prev_cblock = hscan->rs_cblock;
		}

		*stored = &hscan->rs_ctup;
		*buf = hscan->rs_cbuf;
	}
	return true;
}

/*
 * Whether a version is copied (true) or dead (false), by
 * HeapTupleSatisfiesVacuum under a share lock; counts recently dead ones.
 */
static bool
classify_for_cluster(Relation OldTable, HeapTuple stored, Buffer buf,
					 TransactionId OldestXmin, bool is_system_catalog,
					 double *tups_recently_dead)
{
	bool		copy = true;

	LockBuffer(buf, BUFFER_LOCK_SHARE);

	switch (HeapTupleSatisfiesVacuum(stored, OldestXmin, buf))
	{
		case HEAPTUPLE_DEAD:
			copy = false;
			break;

		case HEAPTUPLE_RECENTLY_DEAD:
			*tups_recently_dead += 1;
			break;

		case HEAPTUPLE_LIVE:
			break;

		case HEAPTUPLE_INSERT_IN_PROGRESS:

			/*
			 * Under our exclusive lock this can only be our own earlier
			 * insert (or a catalog's, which we never are): warn otherwise,
			 * and copy it as live in any case.
			 */
			if (!is_system_catalog &&
				!TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(stored->t_data)))
				elog(WARNING, "concurrent insert in progress within table \"%s\"",
					 RelationGetRelationName(OldTable));
			break;

		case HEAPTUPLE_DELETE_IN_PROGRESS:
			/* likewise; copied as recently dead */
			if (!is_system_catalog &&
				!TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetUpdateXid(stored->t_data)))
				elog(WARNING, "concurrent delete in progress within table \"%s\"",
					 RelationGetRelationName(OldTable));
			*tups_recently_dead += 1;
			break;

		default:
			elog(ERROR, "unexpected HeapTupleSatisfiesVacuum result");
			break;
	}

	LockBuffer(buf, BUFFER_LOCK_UNLOCK);

	return copy;
}

/*
 * Encrypt one version's values (OldTable's descriptor order) for NewTable,
 * dropped columns nulled, and hand it to the rewrite module with "old"
 * supplying header, t_self and t_ctid.  Runs in per-tuple memory.
 */
static void
form_and_rewrite(RewriteState rwstate, Relation NewTable, HeapTuple old,
				 Datum *values, bool *isnull, int natts)
{
	TupleDesc	newdesc = RelationGetDescr(NewTable);
	HeapTuple	newtup;
	int			i;

	/* dropped columns go (as in heap); so would columns "old" lacks */
	for (i = 0; i < newdesc->natts; i++)
	{
		if (i >= natts || TupleDescAttr(newdesc, i)->attisdropped)
		{
			values[i] = (Datum) 0;
			isnull[i] = true;
		}
	}

	/* TOAST chunks of a rewrite are not for logical decoding, as in heap */
	newtup = fc_tam_form_values(NewTable, values, isnull,
								HEAP_INSERT_SKIP_FSM | HEAP_INSERT_NO_LOGICAL);

	rewrite_heap_tuple(rwstate, old, newtup);
}

/*
 * The relation_copy_for_cluster callback: copy every version of OldTable
 * that is not dead to NewTable, re-encrypted, in index or physical order.
 */
void
fc_tam_copy_for_cluster(Relation OldTable, Relation NewTable,
						Relation OldIndex, bool use_sort,
						TransactionId OldestXmin,
						TransactionId *xid_cutoff,
						MultiXactId *multi_cutoff,
						double *num_tuples, double *tups_vacuumed,
						double *tups_recently_dead)
{
	TupleDesc	olddesc = RelationGetDescr(OldTable);
	TupleDesc	newdesc = RelationGetDescr(NewTable);
	RewriteState rwstate;
	Tuplesortstate *tuplesort = NULL;
	ClusterSource src;
	MemoryContext tuple_cxt;
	MemoryContext oldcxt;
	bool		is_system_catalog;
	int			natts;
	Datum	   *values;
	bool	   *isnull;
	HeapTuple	stored;
	Buffer		buf;

	is_system_catalog = IsSystemRelation(OldTable);

	/* nothing may have written to the new relation yet */
	Assert(RelationGetTargetBlock(NewTable) == InvalidBlockNumber);

	/* the descriptors match (make_new_heap copies it); be safe anyway */
	natts = Max(olddesc->natts, newdesc->natts);
	values = (Datum *) palloc(natts * sizeof(Datum));
	isnull = (bool *) palloc(natts * sizeof(bool));

	tuple_cxt = AllocSetContextCreate(CurrentMemoryContext,
									  "fieldcrypt rewrite tuple",
									  ALLOCSET_DEFAULT_SIZES);

	/* the caller computed the cutoffs (vacuum_set_xid_limits); we keep them */
	rwstate = begin_heap_rewrite(OldTable, NewTable, OldestXmin,
								 *xid_cutoff, *multi_cutoff);

	if (use_sort)
		tuplesort = tuplesort_begin_cluster(olddesc, OldIndex,
											maintenance_work_mem,
											NULL, TUPLESORT_NONE);

	/*
	 * SnapshotAny, so that recently dead versions (still needed by older
	 * snapshots) are seen and copied; HeapTupleSatisfiesVacuum decides.
	 */
	memset(&src, 0, sizeof(src));
	src.prev_cblock = InvalidBlockNumber;
	if (OldIndex != NULL && !use_sort)
	{
		const int	ci_index[] = {
			PROGRESS_CLUSTER_PHASE,
			PROGRESS_CLUSTER_INDEX_RELID
		};
		int64		ci_val[2];

		ci_val[0] = PROGRESS_CLUSTER_PHASE_INDEX_SCAN_HEAP;
		ci_val[1] = RelationGetRelid(OldIndex);
		pgstat_progress_update_multi_param(2, ci_index, ci_val);

		src.index_scan = index_beginscan(OldTable, OldIndex, SnapshotAny, 0, 0);
		index_rescan(src.index_scan, NULL, 0, NULL, 0);
		src.plain = table_slot_create(OldTable, NULL);
	}
	else
	{
		/* VACUUM FULL, or CLUSTER's scan-and-sort */
		pgstat_progress_update_param(PROGRESS_CLUSTER_PHASE,
									 PROGRESS_CLUSTER_PHASE_SEQ_SCAN_HEAP);

		/* heap's scan on our relation: no decryption of dead versions */
		src.heap_scan = heap_beginscan(OldTable, SnapshotAny, 0, NULL, NULL,
									   SO_TYPE_SEQSCAN | SO_ALLOW_STRAT |
									   SO_ALLOW_SYNC | SO_ALLOW_PAGEMODE);
		src.raw = MakeSingleTupleTableSlot(olddesc, &TTSOpsBufferHeapTuple);

		pgstat_progress_update_param(PROGRESS_CLUSTER_TOTAL_HEAP_BLKS,
									 ((HeapScanDesc) src.heap_scan)->rs_nblocks);
	}

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();

		if (!next_stored(&src, OldTable, &stored, &buf))
			break;

		if (!classify_for_cluster(OldTable, stored, buf, OldestXmin,
								  is_system_catalog, tups_recently_dead))
		{
			*tups_vacuumed += 1;
			/* the rewrite module still needs to see it */
			if (rewrite_heap_dead_tuple(rwstate, stored))
			{
				/* a version held back as recently dead is dead after all */
				*tups_vacuumed += 1;
				*tups_recently_dead -= 1;
			}
			continue;
		}

		*num_tuples += 1;

		MemoryContextReset(tuple_cxt);
		oldcxt = MemoryContextSwitchTo(tuple_cxt);

		if (tuplesort != NULL)
		{
			/* the sort copies the plain tuple, header and t_self included */
			tuplesort_putheaptuple(tuplesort, fc_tam_decrypt(OldTable, stored));

			pgstat_progress_update_param(PROGRESS_CLUSTER_HEAP_TUPLES_SCANNED,
										 *num_tuples);
		}
		else
		{
			const int	ct_index[] = {
				PROGRESS_CLUSTER_HEAP_TUPLES_SCANNED,
				PROGRESS_CLUSTER_HEAP_TUPLES_WRITTEN
			};
			int64		ct_val[2];
			HeapTuple	old;

			if (src.index_scan != NULL)
			{
				/* our index fetch already decrypted this version */
				slot_getallattrs(src.plain);
				memcpy(values, src.plain->tts_values,
					   olddesc->natts * sizeof(Datum));
				memcpy(isnull, src.plain->tts_isnull,
					   olddesc->natts * sizeof(bool));
			}
			else
				heap_deform_tuple(fc_tam_decrypt(OldTable, stored), olddesc,
								  values, isnull);

			/* header after the visibility check (hint bits), t_self, t_ctid */
			old = heap_copytuple(stored);
			form_and_rewrite(rwstate, NewTable, old, values, isnull,
							 olddesc->natts);

			ct_val[0] = *num_tuples;
			ct_val[1] = *num_tuples;
			pgstat_progress_update_multi_param(2, ct_index, ct_val);
		}

		MemoryContextSwitchTo(oldcxt);
	}

	if (src.index_scan != NULL)
	{
		index_endscan(src.index_scan);
		ExecDropSingleTupleTableSlot(src.plain);
	}
	else
	{
		ExecDropSingleTupleTableSlot(src.raw);
		heap_endscan(src.heap_scan);
	}

	/* scan-and-sort: sort, then write the versions out in index order */
	if (tuplesort != NULL)
	{
		double		n_tuples = 0;

		pgstat_progress_update_param(PROGRESS_CLUSTER_PHASE,
									 PROGRESS_CLUSTER_PHASE_SORT_TUPLES);

		tuplesort_performsort(tuplesort);

		pgstat_progress_update_param(PROGRESS_CLUSTER_PHASE,
									 PROGRESS_CLUSTER_PHASE_WRITE_NEW_HEAP);

		for (;;)
		{
			HeapTuple	plain;

			CHECK_FOR_INTERRUPTS();

			/* owned by the sort, valid until the next call */
			plain = tuplesort_getheaptuple(tuplesort, true);
			if (plain == NULL)
				break;

			n_tuples += 1;

			MemoryContextReset(tuple_cxt);
			oldcxt = MemoryContextSwitchTo(tuple_cxt);

			/* the plain tuple kept the original header, t_self and t_ctid */
			heap_deform_tuple(plain, olddesc, values, isnull);
			form_and_rewrite(rwstate, NewTable, plain, values, isnull,
							 olddesc->natts);

			MemoryContextSwitchTo(oldcxt);

			pgstat_progress_update_param(PROGRESS_CLUSTER_HEAP_TUPLES_WRITTEN,
										 n_tuples);
		}

		tuplesort_end(tuplesort);
	}

	/* write out what is left and sync the new relation */
	end_heap_rewrite(rwstate);

	MemoryContextDelete(tuple_cxt);
	pfree(values);
	pfree(isnull);
}
