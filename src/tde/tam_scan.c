/*-------------------------------------------------------------------------
 *
 * tam_scan.c
 *	  Read paths of encrypted_heap: sequential, TID-range, index, bitmap,
 *	  sample and ANALYZE scans, single-row fetches and visibility checks.
 *
 *	  Every read calls heap's own function with a private buffer slot
 *	  ("raw": the stored tuple, pinned), then hands the stored tuple to the
 *	  caller's slot, a lazy slot (tam_slot.c) that pins the buffer itself
 *	  and decrypts on first attribute access, through the decrypted-row
 *	  cache (tam_cache.c); system columns come from the stored header.  Heap's code does all the
 *	  visibility, HOT-chain, pruning, predicate-locking and parallel-scan
 *	  work; nothing here looks at tuple contents except through
 *	  fc_tam_store.  Scan keys are never used for user tables (only catalog
 *	  scans pass them) and are refused.
 *
 *	  Which reads use the decrypted-row cache: scans (sequential, TID
 *	  range, bitmap, sample, ANALYZE) do.  Single-row fetches do not: an
 *	  index lookup, a TID scan's fetch, the old row of UPDATE or DELETE, a
 *	  row lock (tam_modify.c) decrypt the stored row directly and neither
 *	  probe nor fill the cache, since for a short row the lookup, the pin and
 *	  the first touch of the entry's memory by a new backend cost more than
 *	  the decryption (docs/performance.md, "Index lookups and the cache").
 *	  An index scan that reads a second row of the page it read last (a
 *	  range over a correlated index) uses the cache for it, as a scan does.
 *
 * src/tde/tam_scan.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "utils/rel.h"

#include "tde/tam.h"
#include "tde/tam_slot.h"
#include "tde/tde_stats.h"

static inline TableScanDesc hscan_of(TableScanDesc sscan);

/*
 * Heap's descriptor of our scan, after passing down what core may have
 * changed in ours: table_scan_update_snapshot (parallel bitmap heap scan
 * workers) sets rs_snapshot and SO_TEMP_SNAPSHOT in the descriptor it was
 * given, and heap_endscan must unregister that snapshot.
 */
static inline TableScanDesc
hscan_of(TableScanDesc sscan)
{
	TableScanDesc h = ((FcScanDesc) sscan)->hscan;

	if (unlikely(h->rs_snapshot != sscan->rs_snapshot))
	{
		h->rs_snapshot = sscan->rs_snapshot;
		h->rs_flags |= (sscan->rs_flags & SO_TEMP_SNAPSHOT);
	}
	return h;
}

/* A private buffer slot for stored tuples of rel. */
static TupleTableSlot *
raw_slot(Relation rel)
{
	return MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsBufferHeapTuple);
}

static const TupleTableSlotOps *
fc_slot_callbacks(Relation rel)
{
	return &FcTTSOpsLazy;
}

static TableScanDesc
fc_scan_begin(Relation rel, Snapshot snapshot, int nkeys, struct ScanKeyData *key,
			  ParallelTableScanDesc pscan, uint32 flags)
{
	FcScanDesc	s;

	if (nkeys > 0)
		elog(ERROR, "encrypted_heap does not support scan keys");
	s = palloc0(sizeof(FcScanDescData));
	s->hscan = heap_beginscan(rel, snapshot, 0, NULL, pscan, flags);
	s->rs_base = *s->hscan;
	s->raw = raw_slot(rel);
	if (flags & SO_TYPE_ANALYZE)
		fc_analyze_begin(&s->rs_base);	/* tam_analyze.c keeps the sample */
	return &s->rs_base;
}

static void
fc_scan_end(TableScanDesc sscan)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	if (sscan->rs_flags & SO_TYPE_ANALYZE)
		fc_analyze_end(sscan);
	ExecDropSingleTupleTableSlot(s->raw);
	heap_endscan(hscan_of(sscan));
	pfree(s);
}

static void
fc_scan_rescan(TableScanDesc sscan, struct ScanKeyData *key, bool set_params,
			   bool allow_strat, bool allow_sync, bool allow_pagemode)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	ExecClearTuple(s->raw);
	heap_rescan(hscan_of(sscan), NULL, set_params, allow_strat, allow_sync, allow_pagemode);
	s->rs_base.rs_flags = s->hscan->rs_flags;
}

static bool
fc_scan_getnextslot(TableScanDesc sscan, ScanDirection direction, TupleTableSlot *slot)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	if (!heap_getnextslot(hscan_of(sscan), direction, s->raw))
	{
		ExecClearTuple(slot);
		return false;
	}
	fc_slot_store_raw(slot, sscan->rs_rd, s->raw, true);
	return true;
}

static void
fc_scan_set_tidrange(TableScanDesc sscan, ItemPointer mintid, ItemPointer maxtid)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	heap_set_tidrange(hscan_of(sscan), mintid, maxtid);
	s->rs_base.rs_mintid = s->hscan->rs_mintid;
	s->rs_base.rs_maxtid = s->hscan->rs_maxtid;
}

static bool
fc_scan_getnextslot_tidrange(TableScanDesc sscan, ScanDirection direction,
							 TupleTableSlot *slot)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	if (!heap_getnextslot_tidrange(hscan_of(sscan), direction, s->raw))
	{
		ExecClearTuple(slot);
		return false;
	}
	fc_slot_store_raw(slot, sscan->rs_rd, s->raw, true);
	return true;
}

static IndexFetchTableData *
fc_index_fetch_begin(Relation rel)
{
	FcIndexFetchData *f = palloc0(sizeof(FcIndexFetchData));

	f->base.rel = rel;
	f->h = fc_heap_routine->index_fetch_begin(rel);
	f->raw = raw_slot(rel);
	f->lastblk = InvalidBlockNumber;
	return &f->base;
}

static void
fc_index_fetch_reset(IndexFetchTableData *scan)
{
	FcIndexFetchData *f = (FcIndexFetchData *) scan;

	ExecClearTuple(f->raw);
	f->lastblk = InvalidBlockNumber;
	fc_heap_routine->index_fetch_reset(f->h);
}

static void
fc_index_fetch_end(IndexFetchTableData *scan)
{
	FcIndexFetchData *f = (FcIndexFetchData *) scan;

	ExecDropSingleTupleTableSlot(f->raw);
	fc_heap_routine->index_fetch_end(f->h);
	pfree(f);
}

static bool
fc_index_fetch_tuple(struct IndexFetchTableData *scan, ItemPointer tid,
					 Snapshot snapshot, TupleTableSlot *slot,
					 bool *call_again, bool *all_dead)
{
	FcIndexFetchData *f = (FcIndexFetchData *) scan;
	BlockNumber blk = ItemPointerGetBlockNumber(tid);
	bool		again;

	if (!fc_heap_routine->index_fetch_tuple(f->h, tid, snapshot, f->raw,
											call_again, all_dead))
		return false;
	again = (blk == f->lastblk);
	f->lastblk = blk;
	fc_slot_store_raw(slot, scan->rel, f->raw, again);
	return true;
}

static bool
fc_tuple_fetch_row_version(Relation rel, ItemPointer tid, Snapshot snapshot,
						   TupleTableSlot *slot)
{
	TupleTableSlot *raw = raw_slot(rel);
	bool		found;

	found = fc_heap_routine->tuple_fetch_row_version(rel, tid, snapshot, raw);
	if (found)
		fc_slot_store_raw(slot, rel, raw, false);	/* one row: no cache */
	ExecDropSingleTupleTableSlot(raw);
	return found;
}

static bool
fc_tuple_tid_valid(TableScanDesc sscan, ItemPointer tid)
{
	return fc_heap_routine->tuple_tid_valid(((FcScanDesc) sscan)->hscan, tid);
}

static void
fc_tuple_get_latest_tid(TableScanDesc sscan, ItemPointer tid)
{
	heap_get_latest_tid(((FcScanDesc) sscan)->hscan, tid);
}

/*
 * Whether the row version in slot is visible to snapshot.  Our slots hold
 * copies, not a buffer: re-read the line pointer, and accept it only if it
 * still holds the same version (same raw xmin; a line pointer is reused
 * only after its version was pruned, i.e. was invisible to everyone).
 */
static bool
fc_tuple_satisfies_snapshot(Relation rel, TupleTableSlot *slot, Snapshot snapshot)
{
	ItemPointerData tid = slot->tts_tid;
	Buffer		buf;
	Page		page;
	OffsetNumber off = ItemPointerGetOffsetNumber(&tid);
	bool		res = false;

	buf = ReadBuffer(rel, ItemPointerGetBlockNumber(&tid));
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (off >= FirstOffsetNumber && off <= PageGetMaxOffsetNumber(page))
	{
		ItemId		lp = PageGetItemId(page, off);

		if (ItemIdIsNormal(lp))
		{
			HeapTupleData tup;
			bool		same = true;
			HeapTupleHeader held = fc_slot_header(slot);

			tup.t_data = (HeapTupleHeader) PageGetItem(page, lp);
			tup.t_len = ItemIdGetLength(lp);
			tup.t_self = tid;
			tup.t_tableOid = RelationGetRelid(rel);
			if (held != NULL)
				same = HeapTupleHeaderGetRawXmin(held) == HeapTupleHeaderGetRawXmin(tup.t_data);
			res = same && HeapTupleSatisfiesVisibility(&tup, snapshot, buf);
		}
	}
	UnlockReleaseBuffer(buf);
	return res;
}

static bool
fc_scan_analyze_next_block(TableScanDesc sscan, BlockNumber blockno,
						   BufferAccessStrategy bstrategy)
{
	fc_analyze_block(sscan);
	return fc_heap_routine->scan_analyze_next_block(hscan_of(sscan),
													blockno, bstrategy);
}

/*
 * With fieldcrypt.analyze_values off, count the block's rows (so reltuples
 * stays right) but return none to core: each is offered to the sample of
 * tam_analyze.c, which computes the statistics and keeps them encrypted,
 * so no plaintext sample reaches pg_statistic.
 */
static bool
fc_scan_analyze_next_tuple(TableScanDesc sscan, TransactionId OldestXmin,
						   double *liverows, double *deadrows, TupleTableSlot *slot)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	if (fc_analyze_wants_rows(sscan))
	{
		while (fc_heap_routine->scan_analyze_next_tuple(s->hscan, OldestXmin, liverows,
														deadrows, s->raw))
		{
			fc_analyze_offer(sscan, ((BufferHeapTupleTableSlot *) s->raw)->base.tuple,
							 *liverows);
			ExecClearTuple(s->raw);
		}
		fc_analyze_offer(sscan, NULL, *liverows);
		ExecClearTuple(slot);
		return false;
	}
	if (!fc_heap_routine->scan_analyze_next_tuple(s->hscan, OldestXmin, liverows,
												  deadrows, s->raw))
	{
		ExecClearTuple(slot);
		return false;
	}
	fc_slot_store_raw(slot, sscan->rs_rd, s->raw, true);
	ExecClearTuple(s->raw);
	return true;
}

static bool
fc_scan_bitmap_next_block(TableScanDesc sscan, struct TBMIterateResult *tbmres)
{
	return fc_heap_routine->scan_bitmap_next_block(hscan_of(sscan), tbmres);
}

static bool
fc_scan_bitmap_next_tuple(TableScanDesc sscan, struct TBMIterateResult *tbmres,
						  TupleTableSlot *slot)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	if (!fc_heap_routine->scan_bitmap_next_tuple(s->hscan, tbmres, s->raw))
	{
		ExecClearTuple(slot);
		return false;
	}
	fc_slot_store_raw(slot, sscan->rs_rd, s->raw, true);
	return true;
}

static bool
fc_scan_sample_next_block(TableScanDesc sscan, struct SampleScanState *scanstate)
{
	return fc_heap_routine->scan_sample_next_block(hscan_of(sscan), scanstate);
}

static bool
fc_scan_sample_next_tuple(TableScanDesc sscan, struct SampleScanState *scanstate,
						  TupleTableSlot *slot)
{
	FcScanDesc	s = (FcScanDesc) sscan;

	if (!fc_heap_routine->scan_sample_next_tuple(s->hscan, scanstate, s->raw))
	{
		ExecClearTuple(slot);
		return false;
	}
	fc_slot_store_raw(slot, sscan->rs_rd, s->raw, true);
	return true;
}

/* Install the read callbacks into r. */
void
fc_tam_scan_routine(TableAmRoutine *r)
{
	r->slot_callbacks = fc_slot_callbacks;
	r->scan_begin = fc_scan_begin;
	r->scan_end = fc_scan_end;
	r->scan_rescan = fc_scan_rescan;
	r->scan_getnextslot = fc_scan_getnextslot;
	r->scan_set_tidrange = fc_scan_set_tidrange;
	r->scan_getnextslot_tidrange = fc_scan_getnextslot_tidrange;
	r->index_fetch_begin = fc_index_fetch_begin;
	r->index_fetch_reset = fc_index_fetch_reset;
	r->index_fetch_end = fc_index_fetch_end;
	r->index_fetch_tuple = fc_index_fetch_tuple;
	r->tuple_fetch_row_version = fc_tuple_fetch_row_version;
	r->tuple_tid_valid = fc_tuple_tid_valid;
	r->tuple_get_latest_tid = fc_tuple_get_latest_tid;
	r->tuple_satisfies_snapshot = fc_tuple_satisfies_snapshot;
	r->scan_analyze_next_block = fc_scan_analyze_next_block;
	r->scan_analyze_next_tuple = fc_scan_analyze_next_tuple;
	r->scan_bitmap_next_block = fc_scan_bitmap_next_block;
	r->scan_bitmap_next_tuple = fc_scan_bitmap_next_tuple;
	r->scan_sample_next_block = fc_scan_sample_next_block;
	r->scan_sample_next_tuple = fc_scan_sample_next_tuple;
}
