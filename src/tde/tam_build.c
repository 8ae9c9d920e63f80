/*-------------------------------------------------------------------------
 *
 * tam_build.c
 *	  Index builds over encrypted_heap tables: the index_build_range_scan
 *	  and index_validate_scan callbacks.
 *
 *	  Both follow heap's own versions (heapam_handler.c) step for step; the
 *	  one difference is that tuples on the page are encrypted.  We walk the
 *	  table with heap's scan (heap_beginscan + heap_getnextslot into a
 *	  private TTSOpsBufferHeapTuple slot: heap_getnext refuses other AMs),
 *	  decide visibility and HOT roots on the stored tuple, whose header is
 *	  plaintext, and decrypt (fc_tam_store) only the tuples that will reach
 *	  the index, into a TTSOpsHeapTuple slot that the predicate and
 *	  FormIndexDatum then read.  Skipped tuples cost no crypto.
 *
 *	  index_build_range_scan
 *		SnapshotAny for an ordinary build (we classify with
 *		HeapTupleSatisfiesVacuum and also index RECENTLY_DEAD tuples), an
 *		MVCC snapshot for CREATE INDEX CONCURRENTLY phase 2 and REINDEX
 *		CONCURRENTLY.  In a parallel build the caller hands us a scan begun
 *		by table_beginscan_parallel: that is our FcScanDesc (tam.h), and we
 *		drive its heap descriptor (hscan) and raw slot.  As with heap, this
 *		function ends the scan it was given.
 *
 *	  index_validate_scan
 *		CREATE INDEX CONCURRENTLY phase 3: an MVCC scan in physical order
 *		(no syncscan) merged with the sorted TIDs already in the index;
 *		only tuples missing from the index are decrypted and inserted.
 *
 *	  Locking: the buffer content lock (share) is held only around
 *	  HeapTupleSatisfiesVacuum and heap_get_root_tuples, never while we
 *	  decrypt, evaluate predicates or index expressions (user code), call
 *	  the build callback, or wait for another transaction.  The pin taken
 *	  by the scan is held for as long as we look at the page's tuples, so
 *	  pruning cannot move them; the root offset map is rebuilt when a
 *	  heap-only tuple points to a root we have not seen (new HOT members
 *	  can appear under ShareUpdateExclusiveLock).
 *
 *	  Memory: the decrypted tuple, and whatever decryption or expression
 *	  evaluation allocates, lives in the EState's per-tuple context, reset
 *	  for every tuple that is decrypted; the plain slot is cleared first so
 *	  that it never points into reset memory.
 *
 * src/tde/tam_build.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "catalog/catalog.h"
#include "catalog/index.h"
#include "commands/progress.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/backend_progress.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/tuplesort.h"

#include "tde/tam.h"

static BlockNumber scan_blocks_total(HeapScanDesc hscan);
static BlockNumber scan_blocks_done(HeapScanDesc hscan);
static void load_root_offsets(Buffer buf, OffsetNumber *root_offsets);
static OffsetNumber root_offset_of(Relation rel, HeapTuple stored, Buffer buf,
								   OffsetNumber *root_offsets);
static bool classify_for_build(Relation rel, IndexInfo *index_info,
							   HeapTuple stored, Buffer buf,
							   TransactionId OldestXmin, bool anyvisible,
							   bool checking_uniqueness,
							   bool is_system_catalog,
							   bool *alive, double *reltuples);
static void decrypt_into(Relation rel, HeapTuple stored, TupleTableSlot *slot,
						 ExprContext *econtext);

/* Number of blocks the scan will visit, for PROGRESS_SCAN_BLOCKS_TOTAL. */
static BlockNumber
scan_blocks_total(HeapScanDesc hscan)
{
	ParallelBlockTableScanDesc pbscan;

	pbscan = (ParallelBlockTableScanDesc) hscan->rs_base.rs_parallel;
	return pbscan != NULL ? pbscan->phs_nblocks : hscan->rs_nblocks;
}

/* Blocks read so far, counting from the (possibly synchronized) start block. */
static BlockNumber
scan_blocks_done(HeapScanDesc hscan)
{
	ParallelBlockTableScanDesc pbscan;
	BlockNumber startblock;

	pbscan = (ParallelBlockTableScanDesc) hscan->rs_base.rs_parallel;
	startblock = pbscan != NULL ? pbscan->phs_startblock : hscan->rs_startblock;

	/* a scan that started past block 0 wraps around the end */
	if (hscan->rs_cblock >= startblock)
		return hscan->rs_cblock - startblock;
	return scan_blocks_total(hscan) - startblock + hscan->rs_cblock;
}

/* Map every offset of the pinned page to the root of its HOT chain. */
static void
load_root_offsets(Buffer buf, OffsetNumber *root_offsets)
{
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	heap_get_root_tuples(BufferGetPage(buf), root_offsets);
	LockBuffer(buf, BUFFER_LOCK_UNLOCK);
}

/*
 * Offset of the HOT chain root of a heap-only tuple; rebuilds the map once
 * when the root is unknown (chain grown since), XX001 if it stays unknown.
 */
static OffsetNumber
root_offset_of(Relation rel, HeapTuple stored, Buffer buf,
			   OffsetNumber *root_offsets)
{
	OffsetNumber offnum = ItemPointerGetOffsetNumber(&stored->t_self);

	if (root_offsets[offnum - 1] == InvalidOffsetNumber)
		load_root_offsets(buf, root_offsets);

	if (!OffsetNumberIsValid(root_offsets[offnum - 1]))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg_internal("failed to find parent tuple for heap-only tuple at (%u,%u) in table \"%s\"",
								 ItemPointerGetBlockNumber(&stored->t_self),
								 offnum,
								 RelationGetRelationName(rel))));

	return root_offsets[offnum - 1];
}

/*
 * SnapshotAny build: decide from the stored tuple's header whether it goes
 * into the index (the return value) and whether it counts as alive for
 * uniqueness checks; waits for in-progress transactions where heap does.
 */
static bool
classify_for_build(Relation rel, IndexInfo *index_info, HeapTuple stored,
				   Buffer buf, TransactionId OldestXmin, bool anyvisible,
				   bool checking_uniqueness, bool is_system_catalog,
				   bool *alive, double *reltuples)
{
	for (;;)
	{
		TransactionId xwait = InvalidTransactionId;
		bool		index_it = false;

		*alive = false;

		/*
		 * The table lock (ShareLock or better, or ShareUpdateExclusiveLock
		 * for concurrent builds, which use an MVCC snapshot instead) would
		 * almost allow us to skip this lock, but hint bits and our pin's
		 * guarantees are cleanest with it, as in heap.
		 */
		LockBuffer(buf, BUFFER_LOCK_SHARE);

		/*
		 * What counts in reltuples matches what ANALYZE counts as live
		 * (heapam_scan_analyze_next_tuple), so that the two agree.
		 */
		switch (HeapTupleSatisfiesVacuum(stored, OldestXmin, buf))
		{
			case HEAPTUPLE_DEAD:
				break;

			case HEAPTUPLE_LIVE:
				index_it = true;
				*alive = true;
				*reltuples += 1;
				break;

			case HEAPTUPLE_RECENTLY_DEAD:

				/*
				 * Older snapshots may still need it, so it is indexed,
				 * unless it was HOT-updated: then only the chain's live end
				 * is indexed (under the root's TID) and the index is not
				 * safe for those older snapshots.  Never unique-checked, and
				 * not counted as live.
				 */
				if (HeapTupleIsHotUpdated(stored))
					index_info->ii_BrokenHotChain = true;
				else
					index_it = true;
				break;

			case HEAPTUPLE_INSERT_IN_PROGRESS:
				if (anyvisible)
				{
					index_it = true;
					*alive = true;
					*reltuples += 1;
					break;
				}

				/*
				 * With our table lock this is normally our own insert;
				 * anything else is unexpected.  A concurrent insert could
				 * make a uniqueness check fail for nothing: wait for its
				 * transaction and look again.
				 */
				xwait = HeapTupleHeaderGetXmin(stored->t_data);
				if (!TransactionIdIsCurrentTransactionId(xwait))
				{
					if (!is_system_catalog)
						elog(WARNING, "concurrent insert in progress within table \"%s\"",
							 RelationGetRelationName(rel));
					if (checking_uniqueness)
						break;	/* wait below */
				}
				else
					*reltuples += 1;
				xwait = InvalidTransactionId;
				index_it = true;
				*alive = true;
				break;

			case HEAPTUPLE_DELETE_IN_PROGRESS:
				if (anyvisible)
				{
					index_it = true;
					*reltuples += 1;
					break;
				}

				xwait = HeapTupleHeaderGetUpdateXid(stored->t_data);
				if (!TransactionIdIsCurrentTransactionId(xwait))
				{
					if (!is_system_catalog)
						elog(WARNING, "concurrent delete in progress within table \"%s\"",
							 RelationGetRelationName(rel));

					/*
					 * A uniqueness check must know whether the deletion
					 * commits; and a HOT-updated tuple must be indexed only
					 * if the update aborts.  Either way, wait and look again.
					 */
					if (checking_uniqueness || HeapTupleIsHotUpdated(stored))
						break;	/* wait below */

					/* indexed like a RECENTLY_DEAD tuple, counted as live */
					index_it = true;
					*reltuples += 1;
				}
				else if (HeapTupleIsHotUpdated(stored))
				{
					/* our own HOT update: as RECENTLY_DEAD and HOT-updated */
					index_info->ii_BrokenHotChain = true;
				}
				else
				{
					/* our own delete: indexed, not unique-checked or counted */
					index_it = true;
				}
				xwait = InvalidTransactionId;
				break;

			default:
				elog(ERROR, "unexpected HeapTupleSatisfiesVacuum result");
				break;
		}

		LockBuffer(buf, BUFFER_LOCK_UNLOCK);

		if (!TransactionIdIsValid(xwait))
			return index_it;

		/* wait without the buffer lock (keeping the pin), then recheck */
		XactLockTableWait(xwait, rel, &stored->t_self, XLTW_InsertIndexUnique);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Decrypt a stored tuple into the plain slot for predicate and expression
 * evaluation; all of it is per-tuple memory.  No buffer lock may be held.
 */
static void
decrypt_into(Relation rel, HeapTuple stored, TupleTableSlot *slot,
			 ExprContext *econtext)
{
	MemoryContext oldcxt;

	/* the slot may point into the context we are about to reset */
	ExecClearTuple(slot);
	MemoryContextReset(econtext->ecxt_per_tuple_memory);

	oldcxt = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	fc_tam_store(rel, stored, slot);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * The index_build_range_scan callback: feed every tuple that belongs in the
 * index, decrypted, to the index AM's callback, under its HOT root's TID.
 * Returns the number of live tuples (reltuples), as heap does.
 */
double
fc_tam_index_build_range_scan(Relation table_rel, Relation index_rel,
							  IndexInfo *index_info, bool allow_sync,
							  bool anyvisible, bool progress,
							  BlockNumber start_blockno, BlockNumber numblocks,
							  IndexBuildCallback callback,
							  void *callback_state, TableScanDesc scan)
{
	TableScanDesc hscan_base;
	HeapScanDesc hscan;
	TupleTableSlot *raw;
	TupleTableSlot *slot;
	bool		own_scan = (scan == NULL);
	bool		is_system_catalog;
	bool		checking_uniqueness;
	Datum		values[INDEX_MAX_KEYS];
	bool		isnull[INDEX_MAX_KEYS];
	double		reltuples = 0;
	ExprState  *predicate;
	EState	   *estate;
	ExprContext *econtext;
	Snapshot	snapshot;
	bool		need_unregister_snapshot = false;
	TransactionId OldestXmin = InvalidTransactionId;
	BlockNumber previous_done = InvalidBlockNumber;
	BlockNumber root_blkno = InvalidBlockNumber;
	OffsetNumber root_offsets[MaxHeapTuplesPerPage];

	Assert(OidIsValid(index_rel->rd_rel->relam));

	is_system_catalog = IsSystemRelation(table_rel);
	checking_uniqueness = (index_info->ii_Unique ||
						   index_info->ii_ExclusionOps != NULL);

	/* "any visible" (BRIN summarization) never comes with uniqueness */
	Assert(!(anyvisible && checking_uniqueness));

	/* expressions and the predicate read the decrypted tuple in "slot" */
	estate = CreateExecutorState();
	econtext = GetPerTupleExprContext(estate);
	slot = table_slot_create(table_rel, NULL);
	econtext->ecxt_scantuple = slot;
	predicate = ExecPrepareQual(index_info->ii_Predicate, estate);

	/*
	 * An ordinary build sees every tuple (SnapshotAny) and judges each one
	 * against OldestXmin, since RECENTLY_DEAD tuples must be indexed too.  A
	 * concurrent build indexes what an MVCC snapshot sees.
	 */
	if (!IsBootstrapProcessingMode() && !index_info->ii_Concurrent)
		OldestXmin = GetOldestNonRemovableTransactionId(table_rel);

	if (own_scan)
	{
		uint32		flags = SO_TYPE_SEQSCAN | SO_ALLOW_STRAT | SO_ALLOW_PAGEMODE;

		if (!TransactionIdIsValid(OldestXmin))
		{
			snapshot = RegisterSnapshot(GetTransactionSnapshot());
			need_unregister_snapshot = true;
		}
		else
			snapshot = SnapshotAny;

		if (allow_sync)
			flags |= SO_ALLOW_SYNC;

		/* heap's scan works on our relation; only heap_getnext refuses it */
		hscan_base = heap_beginscan(table_rel, snapshot, 0, NULL, NULL, flags);
		raw = MakeSingleTupleTableSlot(RelationGetDescr(table_rel),
									   &TTSOpsBufferHeapTuple);
	}
	else
	{
		/*
		 * Parallel build: the scan came from table_beginscan_parallel, i.e.
		 * our scan_begin.  Its snapshot was chosen by the same rules as
		 * above (SnapshotAny unless concurrent) and is not ours to register.
		 */
		FcScanDesc	fscan = (FcScanDesc) scan;

		Assert(!IsBootstrapProcessingMode());
		Assert(allow_sync);
		hscan_base = fscan->hscan;
		raw = fscan->raw;
		snapshot = hscan_base->rs_snapshot;
	}
	hscan = (HeapScanDesc) hscan_base;

	Assert(raw->tts_ops == &TTSOpsBufferHeapTuple);
	Assert(snapshot == SnapshotAny || IsMVCCSnapshot(snapshot));
	Assert(snapshot == SnapshotAny ? TransactionIdIsValid(OldestXmin) :
		   !TransactionIdIsValid(OldestXmin));
	Assert(snapshot == SnapshotAny || !anyvisible);

	if (progress)
		pgstat_progress_update_param(PROGRESS_SCAN_BLOCKS_TOTAL,
									 scan_blocks_total(hscan));

	/* a block range (BRIN) comes without syncscan */
	if (!allow_sync)
		heap_setscanlimits(hscan_base, start_blockno, numblocks);
	else
	{
		Assert(start_blockno == 0);
		Assert(numblocks == InvalidBlockNumber);
	}

	while (heap_getnextslot(hscan_base, ForwardScanDirection, raw))
	{
		HeapTuple	stored = &hscan->rs_ctup;
		Buffer		buf = hscan->rs_cbuf;
		bool		alive;
		ItemPointerData tid;

		CHECK_FOR_INTERRUPTS();

		if (progress)
		{
			BlockNumber done = scan_blocks_done(hscan);

			if (done != previous_done)
			{
				pgstat_progress_update_param(PROGRESS_SCAN_BLOCKS_DONE, done);
				previous_done = done;
			}
		}

		/*
		 * A HOT chain is indexed once, with the values of its live member
		 * and the TID of its root; map roots when we reach a new page.  Our
		 * pin keeps pruning away, and the map is rebuilt on a miss (see
		 * root_offset_of).  Visibility may change while we wait for other
		 * transactions, root positions do not.
		 */
		if (hscan->rs_cblock != root_blkno)
		{
			load_root_offsets(buf, root_offsets);
			root_blkno = hscan->rs_cblock;
		}

		if (snapshot == SnapshotAny)
		{
			if (!classify_for_build(table_rel, index_info, stored, buf,
									OldestXmin, anyvisible,
									checking_uniqueness, is_system_catalog,
									&alive, &reltuples))
				continue;
		}
		else
		{
			/* the MVCC scan already applied the snapshot */
			alive = true;
			reltuples += 1;
		}

		/* only now, without any buffer lock, look at the contents */
		decrypt_into(table_rel, stored, slot, econtext);

		if (predicate != NULL && !ExecQual(predicate, econtext))
			continue;

		FormIndexDatum(index_info, slot, estate, values, isnull);

		/* a heap-only tuple is indexed under its chain's root */
		tid = stored->t_self;
		if (HeapTupleIsHeapOnly(stored))
			ItemPointerSetOffsetNumber(&tid,
									   root_offset_of(table_rel, stored, buf,
													  root_offsets));

		/* values[] are handed over as they are: the AM may process them */
		callback(index_rel, &tid, values, isnull, alive, callback_state);
	}

	if (progress)
		pgstat_progress_update_param(PROGRESS_SCAN_BLOCKS_DONE,
									 scan_blocks_total(hscan));

	/* we end the scan in both cases, as heap does (nbtsort.c relies on it) */
	if (own_scan)
	{
		ExecDropSingleTupleTableSlot(raw);
		heap_endscan(hscan_base);
	}
	else
		table_endscan(scan);

	if (need_unregister_snapshot)
		UnregisterSnapshot(snapshot);

	/* before FreeExecutorState: its tuple may live in per-tuple memory */
	ExecDropSingleTupleTableSlot(slot);
	FreeExecutorState(estate);

	/* these pointed into the estate */
	index_info->ii_ExpressionsState = NIL;
	index_info->ii_PredicateState = NULL;

	return reltuples;
}

/*
 * The index_validate_scan callback (CREATE INDEX CONCURRENTLY phase 3):
 * insert into the index every tuple visible to "snapshot" whose root TID is
 * not among the sorted TIDs in state->tuplesort.
 */
void
fc_tam_index_validate_scan(Relation table_rel, Relation index_rel,
						   IndexInfo *index_info, Snapshot snapshot,
						   ValidateIndexState *state)
{
	TableScanDesc hscan_base;
	HeapScanDesc hscan;
	TupleTableSlot *raw;
	TupleTableSlot *slot;
	Datum		values[INDEX_MAX_KEYS];
	bool		isnull[INDEX_MAX_KEYS];
	ExprState  *predicate;
	EState	   *estate;
	ExprContext *econtext;
	BlockNumber root_blkno = InvalidBlockNumber;
	BlockNumber previous_blkno = InvalidBlockNumber;
	OffsetNumber root_offsets[MaxHeapTuplesPerPage];
	bool		in_index[MaxHeapTuplesPerPage];

	/* merge state: the current TID of the sorted index stream */
	ItemPointer indexcursor = NULL;
	ItemPointerData decoded;
	bool		tuplesort_empty = false;

	Assert(OidIsValid(index_rel->rd_rel->relam));
	Assert(IsMVCCSnapshot(snapshot));

	estate = CreateExecutorState();
	econtext = GetPerTupleExprContext(estate);
	slot = table_slot_create(table_rel, NULL);
	econtext->ecxt_scantuple = slot;
	predicate = ExecPrepareQual(index_info->ii_Predicate, estate);

	/* the merge needs block 0 first: no syncscan */
	hscan_base = heap_beginscan(table_rel, snapshot, 0, NULL, NULL,
								SO_TYPE_SEQSCAN | SO_ALLOW_STRAT |
								SO_ALLOW_PAGEMODE);
	hscan = (HeapScanDesc) hscan_base;
	raw = MakeSingleTupleTableSlot(RelationGetDescr(table_rel),
								   &TTSOpsBufferHeapTuple);

	pgstat_progress_update_param(PROGRESS_SCAN_BLOCKS_TOTAL,
								 hscan->rs_nblocks);

	while (heap_getnextslot(hscan_base, ForwardScanDirection, raw))
	{
		HeapTuple	stored = &hscan->rs_ctup;
		Buffer		buf = hscan->rs_cbuf;
		ItemPointerData root_tid;
		OffsetNumber root_offnum;

		CHECK_FOR_INTERRUPTS();

		state->htups += 1;

		if (previous_blkno == InvalidBlockNumber ||
			hscan->rs_cblock != previous_blkno)
		{
			pgstat_progress_update_param(PROGRESS_SCAN_BLOCKS_DONE,
										 hscan->rs_cblock);
			previous_blkno = hscan->rs_cblock;
		}

		/*
		 * Tuples come in offset order, but the roots we compare with the
		 * index need not: in_index[] remembers the index TIDs of this page
		 * the merge has already passed, so that we can look back.
		 */
		if (hscan->rs_cblock != root_blkno)
		{
			load_root_offsets(buf, root_offsets);
			memset(in_index, 0, sizeof(in_index));
			root_blkno = hscan->rs_cblock;
		}

		root_tid = stored->t_self;
		root_offnum = ItemPointerGetOffsetNumber(&root_tid);
		if (HeapTupleIsHeapOnly(stored))
		{
			root_offnum = root_offset_of(table_rel, stored, buf, root_offsets);
			ItemPointerSetOffsetNumber(&root_tid, root_offnum);
		}

		/* advance the index stream up to or past this root */
		while (!tuplesort_empty &&
			   (indexcursor == NULL ||
				ItemPointerCompare(indexcursor, &root_tid) < 0))
		{
			Datum		ts_val;
			bool		ts_isnull;

			if (indexcursor != NULL &&
				ItemPointerGetBlockNumber(indexcursor) == root_blkno)
				in_index[ItemPointerGetOffsetNumber(indexcursor) - 1] = true;

			tuplesort_empty = !tuplesort_getdatum(state->tuplesort, true,
												  &ts_val, &ts_isnull, NULL);
			Assert(tuplesort_empty || !ts_isnull);
			if (tuplesort_empty)
			{
				indexcursor = NULL;
				break;
			}

			itemptr_decode(&decoded, DatumGetInt64(ts_val));
			indexcursor = &decoded;
#ifndef USE_FLOAT8_BYVAL
			/* int8 by reference: the encoded TID was palloc'd */
			pfree(DatumGetPointer(ts_val));
#endif
		}

		/* present in the index: at the cursor, or passed earlier */
		if (!tuplesort_empty &&
			ItemPointerCompare(indexcursor, &root_tid) == 0)
			continue;
		if (in_index[root_offnum - 1])
			continue;

		decrypt_into(table_rel, stored, slot, econtext);

		if (predicate != NULL && !ExecQual(predicate, econtext))
			continue;

		FormIndexDatum(index_info, slot, estate, values, isnull);

		/*
		 * Unique-check even a tuple that is already dead: with HOT it stands
		 * for its whole chain, whose updater inserted no index entry, and
		 * the index AM checks the chain.
		 */
		index_insert(index_rel, values, isnull, &root_tid, table_rel,
					 index_info->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 false, index_info);

		state->tups_inserted += 1;
	}

	ExecDropSingleTupleTableSlot(raw);
	heap_endscan(hscan_base);

	ExecDropSingleTupleTableSlot(slot);
	FreeExecutorState(estate);

	index_info->ii_ExpressionsState = NIL;
	index_info->ii_PredicateState = NULL;
}
