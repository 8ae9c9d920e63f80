/*-------------------------------------------------------------------------
 *
 * tam_slot.c
 *	  The slot type of encrypted_heap: a row is decrypted when one of its
 *	  attributes is first needed, so scans that read no column (count(*),
 *	  EXISTS, semi-joins, ctid) decrypt nothing.
 *
 *	  The slot behaves as a TTSOpsHeapTuple slot (its callbacks delegate to
 *	  heap's) with three more states:
 *	  - pending: it holds the stored row, pointing into a shared buffer it
 *	    pins (as a buffer slot does); nothing decrypted yet.  System
 *	    columns are read from the stored row's header.
 *	  - cached: its tuple points into an entry of the decrypted-row cache
 *	    (tam_cache.c) that it pins; the stored row was checked to be the one
 *	    the entry holds.  Attributes are deformed from shared memory; system
 *	    columns still come from the stored header.  Whoever asks for a heap
 *	    tuple (get/copy/materialize) gets a private copy carrying the stored
 *	    header: cache memory is never handed out for writing.
 *	  - owned: a palloc'd plain tuple (fc_tam_decrypt_desc's), as before.
 *	  A row stored by a single-row fetch (fc_slot_store_raw's usecache
 *	  false) goes from pending to owned without looking in the cache.
 *	  Virtual contents (ExecStoreVirtualTuple) work as in heap's slots.
 *
 *	  Pins: the buffer pin is dropped on clear or when another buffer's row
 *	  is stored; the cache entry pin is kept across rows of the same page
 *	  (one lookup per page, not per row) and dropped when a row of another
 *	  page is decrypted, on release, or at the end of the transaction.  A
 *	  row served from the cache starts loading the stored trailer and the
 *	  cached row of the one a few offsets ahead (a scan reads it soon).
 *
 * src/tde/tam_slot.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "storage/bufmgr.h"
#include "utils/rel.h"

#include "tde/tam.h"
#include "tde/tam_cache.h"
#include "tde/tam_slot.h"

/* rows ahead of the one served whose memory a scan starts loading */
#define PREFETCH_DISTANCE	4

typedef struct FcLazySlot
{
	HeapTupleTableSlot base;	/* tuple: NULL, owned, or &ctup (cached) */
	HeapTupleData stored;		/* stored row (t_data NULL: none) */
	Buffer		buffer;			/* pinned buffer holding stored */
	Relation	rel;			/* relation of stored */
	bool		incache;		/* base.tuple == &ctup */
	HeapTupleData ctup;			/* the cached row */
	int			entry;			/* pinned cache entry, or -1 */
	uint32		epoch;			/* its pin epoch */
	RelFileNode enode;			/* its page */
	BlockNumber eblk;
	bool		nocache;		/* stored came from a single-row fetch */
} FcLazySlot;

static void lazy_init(TupleTableSlot *slot);
static void lazy_release(TupleTableSlot *slot);
static void lazy_clear(TupleTableSlot *slot);
static void lazy_getsomeattrs(TupleTableSlot *slot, int natts);
static Datum lazy_getsysattr(TupleTableSlot *slot, int attnum, bool *isnull);
static void lazy_materialize(TupleTableSlot *slot);
static void lazy_copyslot(TupleTableSlot *dst, TupleTableSlot *src);
static HeapTuple lazy_get_heap_tuple(TupleTableSlot *slot);
static HeapTuple lazy_copy_heap_tuple(TupleTableSlot *slot);
static MinimalTuple lazy_copy_minimal_tuple(TupleTableSlot *slot);
static void decode(FcLazySlot *s);
static void to_owned(FcLazySlot *s);
static void store_owned(TupleTableSlot *slot, HeapTuple plain);
static void drop_stored(FcLazySlot *s);
static int	page_entry(FcLazySlot *s, bool create);

const TupleTableSlotOps FcTTSOpsLazy = {
	.base_slot_size = sizeof(FcLazySlot),
	.init = lazy_init,
	.release = lazy_release,
	.clear = lazy_clear,
	.getsomeattrs = lazy_getsomeattrs,
	.getsysattr = lazy_getsysattr,
	.materialize = lazy_materialize,
	.copyslot = lazy_copyslot,
	.get_heap_tuple = lazy_get_heap_tuple,
	.get_minimal_tuple = NULL,
	.copy_heap_tuple = lazy_copy_heap_tuple,
	.copy_minimal_tuple = lazy_copy_minimal_tuple
};

/* Whether the slot holds a stored row it has not decrypted nor found cached. */
static inline bool
pending(FcLazySlot *s)
{
	return s->stored.t_data != NULL && s->base.tuple == NULL;
}

static void
lazy_init(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	s->stored.t_data = NULL;
	s->buffer = InvalidBuffer;
	s->rel = NULL;
	s->incache = false;
	s->nocache = false;
	s->entry = -1;
}

static void
lazy_release(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	fc_tam_cache_unpin(s->entry, s->epoch);
	s->entry = -1;
}

/* Forget the stored row and unpin its buffer. */
static void
drop_stored(FcLazySlot *s)
{
	if (BufferIsValid(s->buffer))
		ReleaseBuffer(s->buffer);
	s->buffer = InvalidBuffer;
	s->stored.t_data = NULL;
}

static void
lazy_clear(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	drop_stored(s);
	s->incache = false;
	TTSOpsHeapTuple.clear(slot);
}

/*
 * The pinned cache entry of the stored row's page (looked up, or created
 * if create), or -1.
 */
static int
page_entry(FcLazySlot *s, bool create)
{
	BlockNumber blk = ItemPointerGetBlockNumber(&s->stored.t_self);

	if (s->entry >= 0)
	{
		if (s->epoch == fc_tam_cache_epoch() && s->eblk == blk &&
			RelFileNodeEquals(s->enode, s->rel->rd_node))
			return s->entry;
		fc_tam_cache_unpin(s->entry, s->epoch);
		s->entry = -1;
	}
	s->entry = fc_tam_cache_pin(&s->rel->rd_node, blk, RelationGetRelid(s->rel), create,
								&s->epoch);
	s->enode = s->rel->rd_node;
	s->eblk = blk;
	return s->entry;
}

/*
 * A scan that found the row at off in the cache will most likely read the
 * rows that follow: start loading the stored trailer (which the cache
 * compares) and the cached row of the one PREFETCH_DISTANCE rows ahead, so
 * that they are in the CPU cache when the scan gets there.  Reading the line pointer without the
 * buffer's content lock is fine for a hint: the pin keeps the page from
 * being defragmented, and a prefetch of a stale address does no harm.
 */
static inline void
prefetch_next(FcLazySlot *s, OffsetNumber off)
{
	Page		page = BufferGetPage(s->buffer);
	OffsetNumber next = off + PREFETCH_DISTANCE;
	ItemId		id;

	if (next > PageGetMaxOffsetNumber(page))
		return;
	id = PageGetItemId(page, next);
	if (ItemIdIsNormal(id))
		FC_PREFETCH((char *) page + ItemIdGetOffset(id) + ItemIdGetLength(id) -
					FC_TAM_TRAILER_FIXED);
	fc_tam_cache_prefetch(s->entry, next);
}

/*
 * Pending -> cached (the cache holds this very row) or owned (decrypted
 * and authenticated now, then offered to the cache).
 */
static void
decode(FcLazySlot *s)
{
	TupleTableSlot *slot = &s->base.base;
	TupleDesc	desc = slot->tts_tupleDescriptor;
	OffsetNumber off = ItemPointerGetOffsetNumber(&s->stored.t_self);
	bool		usecache = !s->nocache && fc_tam_cache_usable(s->rel) &&
		desc == RelationGetDescr(s->rel);
	HeapTuple	plain;
	MemoryContext old;

	if (usecache && page_entry(s, false) >= 0)
	{
		const FcCacheRow *row = fc_tam_cache_probe(s->entry, off, &s->stored);

		if (row != NULL)
		{
			s->ctup.t_data = FC_CACHE_ROW_DATA(row);
			s->ctup.t_len = row->plain_len;
			s->ctup.t_self = s->stored.t_self;
			s->ctup.t_tableOid = RelationGetRelid(s->rel);
			s->base.tuple = &s->ctup;
			s->base.off = 0;
			s->incache = true;
			fc_tam_cache_count(true);
			prefetch_next(s, off);
			return;
		}
	}
	old = MemoryContextSwitchTo(slot->tts_mcxt);
	plain = fc_tam_decrypt_desc(s->rel, desc, &s->stored);
	MemoryContextSwitchTo(old);
	if (usecache)
	{
		fc_tam_cache_count(false);
		if (page_entry(s, true) >= 0)
			fc_tam_cache_fill(s->entry, off, &s->stored, plain);
	}
	s->base.tuple = plain;
	s->base.off = 0;
	slot->tts_flags |= TTS_FLAG_SHOULDFREE;
}

/*
 * Cached -> owned: a private copy of the cached row with the stored row's
 * current header (as fc_tam_decrypt gives), deformed afresh.
 */
static void
to_owned(FcLazySlot *s)
{
	TupleTableSlot *slot = &s->base.base;
	HeapTuple	t;
	HeapTupleHeader o = s->stored.t_data;
	HeapTupleHeader n;
	uint16		keep = HEAP_HASNULL | HEAP_HASVARWIDTH | HEAP_HASEXTERNAL;

	t = (HeapTuple) MemoryContextAlloc(slot->tts_mcxt, HEAPTUPLESIZE + s->ctup.t_len);
	*t = s->ctup;
	t->t_data = n = (HeapTupleHeader) ((char *) t + HEAPTUPLESIZE);
	memcpy(n, s->ctup.t_data, s->ctup.t_len);
	n->t_choice = o->t_choice;
	n->t_ctid = o->t_ctid;
	n->t_infomask = (n->t_infomask & keep) | (o->t_infomask & ~keep);
	n->t_infomask2 = (n->t_infomask2 & HEAP_NATTS_MASK) | (o->t_infomask2 & ~HEAP_NATTS_MASK);
	s->base.tuple = t;
	s->base.off = 0;
	s->incache = false;
	slot->tts_nvalid = 0;		/* values may point into the cache */
	slot->tts_flags |= TTS_FLAG_SHOULDFREE;
}

static void
lazy_getsomeattrs(TupleTableSlot *slot, int natts)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	if (pending(s))
		decode(s);
	TTSOpsHeapTuple.getsomeattrs(slot, natts);
}

/* System columns: from the stored row while the slot holds it. */
static Datum
lazy_getsysattr(TupleTableSlot *slot, int attnum, bool *isnull)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	if (s->stored.t_data != NULL)
		return heap_getsysattr(&s->stored, attnum, slot->tts_tupleDescriptor, isnull);
	return TTSOpsHeapTuple.getsysattr(slot, attnum, isnull);
}

/* Own the contents; the stored row and its buffer are no longer needed. */
static void
lazy_materialize(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	if (pending(s))
		decode(s);
	if (s->incache)
		to_owned(s);
	drop_stored(s);
	TTSOpsHeapTuple.materialize(slot);
}

static void
lazy_copyslot(TupleTableSlot *dst, TupleTableSlot *src)
{
	HeapTuple	tuple;
	MemoryContext old;

	old = MemoryContextSwitchTo(dst->tts_mcxt);
	tuple = ExecCopySlotHeapTuple(src);
	MemoryContextSwitchTo(old);
	store_owned(dst, tuple);
}

static HeapTuple
lazy_get_heap_tuple(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	if (pending(s))
		decode(s);
	if (s->incache)
		to_owned(s);
	return TTSOpsHeapTuple.get_heap_tuple(slot);
}

static HeapTuple
lazy_copy_heap_tuple(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	if (pending(s))
		decode(s);
	if (s->incache)
		to_owned(s);
	return TTSOpsHeapTuple.copy_heap_tuple(slot);
}

/* A minimal tuple has no header: it may come from the cached row. */
static MinimalTuple
lazy_copy_minimal_tuple(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	if (pending(s))
		decode(s);
	return TTSOpsHeapTuple.copy_minimal_tuple(slot);
}

/* Store a palloc'd plain tuple (slot's context) the slot now owns. */
static void
store_owned(TupleTableSlot *slot, HeapTuple plain)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	ExecClearTuple(slot);
	s->base.tuple = plain;
	s->base.off = 0;
	slot->tts_nvalid = 0;
	slot->tts_flags &= ~TTS_FLAG_EMPTY;
	slot->tts_flags |= TTS_FLAG_SHOULDFREE;
	slot->tts_tid = plain->t_self;
}

/*
 * Put the stored row held by a raw buffer slot into slot: lazily (pinning
 * its buffer) into our slot type, decrypted now into any other.  usecache
 * says whether its decryption goes through the decrypted-row cache (scans)
 * or not (single-row fetches: see tam_scan.c).
 */
void
fc_slot_store_raw(TupleTableSlot *slot, Relation rel, TupleTableSlot *raw, bool usecache)
{
	BufferHeapTupleTableSlot *b = (BufferHeapTupleTableSlot *) raw;
	FcLazySlot *s = (FcLazySlot *) slot;
	Buffer		keep;

	Assert(TTS_IS_BUFFERTUPLE(raw) && !TTS_EMPTY(raw));
	if (!FC_IS_LAZY_SLOT(slot))
	{
		fc_tam_store(rel, b->base.tuple, slot);
		return;
	}
	if (!BufferIsValid(b->buffer))
	{
		MemoryContext old = MemoryContextSwitchTo(slot->tts_mcxt);
		HeapTuple	plain = fc_tam_decrypt_desc(rel, slot->tts_tupleDescriptor, b->base.tuple);

		MemoryContextSwitchTo(old);
		store_owned(slot, plain);
		slot->tts_tableOid = RelationGetRelid(rel);
		return;
	}
	/* clear (as lazy_clear, inline: once per row), keeping the pin if on the same buffer */
	keep = s->buffer;
	s->buffer = InvalidBuffer;
	if (unlikely(TTS_SHOULDFREE(slot)))
	{
		heap_freetuple(s->base.tuple);
		slot->tts_flags &= ~TTS_FLAG_SHOULDFREE;
	}
	s->base.tuple = NULL;
	s->base.off = 0;
	s->incache = false;
	if (keep != b->buffer)
	{
		if (BufferIsValid(keep))
			ReleaseBuffer(keep);
		IncrBufferRefCount(b->buffer);
	}
	s->buffer = b->buffer;
	s->stored = *b->base.tuple;
	s->stored.t_tableOid = RelationGetRelid(rel);
	s->rel = rel;
	s->nocache = !usecache;
	slot->tts_flags &= ~TTS_FLAG_EMPTY;
	slot->tts_nvalid = 0;
	slot->tts_tid = s->stored.t_self;
	slot->tts_tableOid = RelationGetRelid(rel);
}

/*
 * The header of the row version a slot holds (the stored row's while it
 * holds one), or NULL (virtual contents).
 */
HeapTupleHeader
fc_slot_header(TupleTableSlot *slot)
{
	FcLazySlot *s = (FcLazySlot *) slot;

	if (FC_IS_LAZY_SLOT(slot) && s->stored.t_data != NULL)
		return s->stored.t_data;
	if ((FC_IS_LAZY_SLOT(slot) || TTS_IS_HEAPTUPLE(slot)) && !TTS_EMPTY(slot) &&
		((HeapTupleTableSlot *) slot)->tuple != NULL)
		return ((HeapTupleTableSlot *) slot)->tuple->t_data;
	return NULL;
}

/*
 * The tuple a heap or lazy slot owns and a writer may patch (heap's header
 * after an insert), or NULL: never one in the cache or in a buffer.
 */
HeapTuple
fc_slot_owned_tuple(TupleTableSlot *slot)
{
	if (TTS_IS_HEAPTUPLE(slot) || (FC_IS_LAZY_SLOT(slot) && !((FcLazySlot *) slot)->incache &&
								   ((FcLazySlot *) slot)->stored.t_data == NULL))
		return ((HeapTupleTableSlot *) slot)->tuple;
	return NULL;
}
