/*-------------------------------------------------------------------------
 *
 * tam_modify.c
 *	  Write paths of encrypted_heap: insert (single, multi, speculative),
 *	  delete, update and row locking.
 *
 *	  Each write forms the stored (encrypted) tuple itself (tam_format.c)
 *	  and hands it to heap's functions, which do the locking, WAL and
 *	  visibility work and see only ciphertext.  Out-of-line values are ours
 *	  to delete: with the old row version after a delete or update that
 *	  succeeded, with the new version's blobs after one that failed, and
 *	  with an aborted speculative insertion.  Blobs are never shared between
 *	  row versions (an UPDATE re-saves unchanged large values), which keeps
 *	  that bookkeeping exact.
 *
 *	  Updates are HOT as heap's are: every version has fresh ciphertext, so
 *	  heap's byte comparison would see every indexed column as modified;
 *	  update_with_plain_bitmaps compares the plaintexts and tells heap which
 *	  indexed columns really changed.
 *
 * src/tde/tam_modify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/rel.h"

#include "tde/tam.h"
#include "tde/tam_slot.h"

/*
 * Give the caller's slot the header heap wrote into our stored tuple (xmin,
 * cmin, ctid, infomask bits), as heap's own callbacks do by inserting the
 * slot's tuple itself: INSERT/UPDATE ... RETURNING xmin reads it there.
 */
static void
header_to_slot(TupleTableSlot *slot, HeapTuple stored)
{
	HeapTupleHeader src = stored->t_data;
	HeapTupleHeader dst;
	HeapTuple	owned = fc_slot_owned_tuple(slot);

	if (owned == NULL)
		return;
	dst = owned->t_data;
	dst->t_choice = src->t_choice;
	dst->t_ctid = src->t_ctid;
	dst->t_infomask = (dst->t_infomask & ~HEAP_XACT_MASK) | (src->t_infomask & HEAP_XACT_MASK);
	dst->t_infomask2 = (dst->t_infomask2 & ~HEAP2_XACT_MASK) | (src->t_infomask2 & HEAP2_XACT_MASK);
	owned->t_self = stored->t_self;
}

/*
 * The stored tuple of an inserted row.  A slot that holds a plain heap
 * tuple of the table's descriptor (COPY materializes every row it batches;
 * a BEFORE trigger returns one) is encrypted from that tuple's bytes,
 * without deforming and forming it again; any other from its values.
 */
static HeapTuple
form_inserted(Relation rel, TupleTableSlot *slot, int options)
{
	HeapTuple	plain;

	if (!TTS_EMPTY(slot) && slot->tts_tupleDescriptor == RelationGetDescr(rel) &&
		(plain = fc_slot_owned_tuple(slot)) != NULL)
	{
		HeapTuple	tup = fc_tam_form_plain(rel, plain);

		if (tup != NULL)
			return tup;
	}
	return fc_tam_form(rel, slot, options);
}

static void
fc_tuple_insert(Relation rel, TupleTableSlot *slot, CommandId cid, int options,
				BulkInsertState bistate)
{
	HeapTuple	tup = form_inserted(rel, slot, options);

	slot->tts_tableOid = RelationGetRelid(rel);
	tup->t_tableOid = slot->tts_tableOid;
	heap_insert(rel, tup, cid, options, bistate);
	slot->tts_tid = tup->t_self;
	header_to_slot(slot, tup);
	pfree(tup);
}

static void
fc_tuple_insert_speculative(Relation rel, TupleTableSlot *slot, CommandId cid,
							int options, BulkInsertState bistate, uint32 specToken)
{
	HeapTuple	tup = fc_tam_form(rel, slot, options);

	slot->tts_tableOid = RelationGetRelid(rel);
	tup->t_tableOid = slot->tts_tableOid;
	HeapTupleHeaderSetSpeculativeToken(tup->t_data, specToken);
	heap_insert(rel, tup, cid, options | HEAP_INSERT_SPECULATIVE, bistate);
	slot->tts_tid = tup->t_self;
	header_to_slot(slot, tup);
	pfree(tup);
}

static void
fc_tuple_complete_speculative(Relation rel, TupleTableSlot *slot, uint32 specToken,
							  bool succeeded)
{
	if (succeeded)
		heap_finish_speculative(rel, &slot->tts_tid);
	else
	{
		fc_tam_delete_blobs(rel, &slot->tts_tid, true);
		heap_abort_speculative(rel, &slot->tts_tid);
	}
}

/*
 * The stored tuples of one COPY batch.  COPY flushes a batch at 1,000 rows
 * or 64 kB of input; its stored tuples, in power-of-two chunks, take about
 * 100 to 300 kB, which the first block holds and keeps across resets.  With
 * a 64 kB first block every batch malloc'd and freed its further blocks and
 * glibc returned them to the kernel each time (munmap, brk): the page faults
 * of touching that memory afresh cost an encrypted_heap COPY FROM about 15%
 * of its time on the 2-CPU virtual machines (docs/performance.md).  The
 * context is deleted when the COPY ends.
 */
#define BATCH_BLOCK		(512 * 1024)
static MemoryContext batch = NULL;

/*
 * COPY's batches: encrypt every row into a heap slot of our own, so that
 * heap_multi_insert finds materialized heap tuples and copies nothing.  The
 * stored tuples of a batch are allocated in one context, reset after the
 * batch (no allocation or free per row from a long-lived context); the
 * slots are marked as owning them, which keeps heap from copying them, and
 * unmarked before they are cleared.
 */
static void
fc_multi_insert(Relation rel, TupleTableSlot **slots, int nslots, CommandId cid,
				int options, BulkInsertState bistate)
{
	static TupleTableSlot **priv = NULL;
	static int	npriv = 0;
	MemoryContext old;

	if (batch == NULL)
		batch = AllocSetContextCreate(TopMemoryContext, "fieldcrypt multi-insert batch",
									  BATCH_BLOCK, BATCH_BLOCK, ALLOCSET_DEFAULT_MAXSIZE);
	if (npriv < nslots)
	{
		for (int i = 0; i < npriv; i++)
			ExecDropSingleTupleTableSlot(priv[i]);
		if (priv)
			pfree(priv);
		npriv = Max(nslots, 64);
		priv = MemoryContextAlloc(TopMemoryContext, sizeof(TupleTableSlot *) * npriv);
		old = MemoryContextSwitchTo(TopMemoryContext);
		for (int i = 0; i < npriv; i++)
			priv[i] = MakeSingleTupleTableSlot(NULL, &TTSOpsHeapTuple);
		MemoryContextSwitchTo(old);
	}
	PG_TRY();
	{
		for (int i = 0; i < nslots; i++)
		{
			HeapTuple	tup;

			old = MemoryContextSwitchTo(batch);
			tup = form_inserted(rel, slots[i], options);
			MemoryContextSwitchTo(old);
			ExecStoreHeapTuple(tup, priv[i], false);
			priv[i]->tts_flags |= TTS_FLAG_SHOULDFREE;
		}
		heap_multi_insert(rel, priv, nslots, cid, options, bistate);
		for (int i = 0; i < nslots; i++)
		{
			slots[i]->tts_tid = priv[i]->tts_tid;
			slots[i]->tts_tableOid = RelationGetRelid(rel);
			header_to_slot(slots[i], ((HeapTupleTableSlot *) priv[i])->tuple);
		}
	}
	PG_FINALLY();
	{
		for (int i = 0; i < nslots; i++)
		{
			priv[i]->tts_flags &= ~TTS_FLAG_SHOULDFREE;
			ExecClearTuple(priv[i]);
		}
		MemoryContextReset(batch);
	}
	PG_END_TRY();
}

/* The end of a COPY into the table (or into one partition of it). */
static void
fc_finish_bulk_insert(Relation rel, int options)
{
	if (batch != NULL)
	{
		MemoryContextDelete(batch);
		batch = NULL;
	}
}

static TM_Result
fc_tuple_delete(Relation rel, ItemPointer tid, CommandId cid, Snapshot snapshot,
				Snapshot crosscheck, bool wait, TM_FailureData *tmfd, bool changingPart)
{
	TM_Result	r = heap_delete(rel, tid, cid, crosscheck, wait, tmfd, changingPart);

	if (r == TM_Ok)
		fc_tam_delete_blobs(rel, tid, false);
	return r;
}

/*
 * The indexed columns (in RelationGetIndexAttrBitmap's encoding) whose
 * plaintext the update leaves unchanged: old version at otid, new values in
 * slot (already deformed).  Binary image equality, as heap compares.
 */
static Bitmapset *
unchanged_columns(Relation rel, ItemPointer otid, TupleTableSlot *slot, Bitmapset *cols)
{
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTupleData oldtup;
	Buffer		buf;
	HeapTuple	stored;
	HeapTuple	plain;
	Datum	   *values;
	bool	   *isnull;
	Bitmapset  *equal = NULL;
	int			x = -1;

	oldtup.t_self = *otid;
	if (!heap_fetch(rel, SnapshotAny, &oldtup, &buf, false))
	{
		if (BufferIsValid(buf))
			ReleaseBuffer(buf);
		return NULL;
	}
	stored = heap_copytuple(&oldtup);
	ReleaseBuffer(buf);
	plain = fc_tam_decrypt(rel, stored);
	values = palloc(desc->natts * sizeof(Datum));
	isnull = palloc(desc->natts * sizeof(bool));
	heap_deform_tuple(plain, desc, values, isnull);
	while ((x = bms_next_member(cols, x)) >= 0)
	{
		AttrNumber	attnum = x + FirstLowInvalidHeapAttributeNumber;
		Form_pg_attribute att;

		if (attnum <= 0 || attnum > desc->natts)
			continue;
		att = TupleDescAttr(desc, attnum - 1);
		if (isnull[attnum - 1] != slot->tts_isnull[attnum - 1])
			continue;
		if (isnull[attnum - 1] ||
			datum_image_eq(values[attnum - 1], slot->tts_values[attnum - 1],
						   att->attbyval, att->attlen))
			equal = bms_add_member(equal, x);
	}
	pfree(values);
	pfree(isnull);
	heap_freetuple(plain);
	heap_freetuple(stored);
	return equal;
}

/*
 * heap_update, with heap told which indexed columns really changed.  Every
 * version has fresh ciphertext, so heap's own byte comparison would see all
 * indexed columns as modified: no HOT update, and the key-exclusive row
 * lock even when no key changed (which blocks foreign-key checks).  We
 * compare the plaintexts ourselves and, for the duration of heap_update,
 * let the relcache's index attribute bitmaps leave out the columns that did
 * not change.  heap_update copies those bitmaps before it takes any lock;
 * if the relcache entry is rebuilt meanwhile, the rebuild frees our
 * substitutes and we keep its fresh state.
 */
static TM_Result
update_with_plain_bitmaps(Relation rel, ItemPointer otid, HeapTuple tup,
						  TupleTableSlot *slot, CommandId cid, Snapshot crosscheck,
						  bool wait, TM_FailureData *tmfd, LockTupleMode *lockmode)
{
	Bitmapset  *all = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_ALL);
	Bitmapset  *key;
	Bitmapset  *id;
	Bitmapset  *equal;
	Bitmapset  *saved_all;
	Bitmapset  *saved_key;
	Bitmapset  *saved_id;
	Bitmapset  *fake_all;
	Bitmapset  *fake_key;
	Bitmapset  *fake_id;
	MemoryContext old;
	volatile TM_Result r = TM_Ok;

	Bitmapset  *cols;

	if (all == NULL || rel->rd_indexattr == NULL)
	{
		bms_free(all);
		return heap_update(rel, otid, tup, cid, crosscheck, wait, tmfd, lockmode);
	}
	key = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_KEY);
	id = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
	cols = bms_union(all, key);
	cols = bms_add_members(cols, id);
	equal = unchanged_columns(rel, otid, slot, cols);
	bms_free(cols);
	if (equal == NULL || rel->rd_indexattr == NULL)
	{
		bms_free(all);
		bms_free(key);
		bms_free(id);
		bms_free(equal);
		return heap_update(rel, otid, tup, cid, crosscheck, wait, tmfd, lockmode);
	}

	old = MemoryContextSwitchTo(CacheMemoryContext);
	fake_all = bms_add_member(bms_difference(all, equal),
							  TableOidAttributeNumber - FirstLowInvalidHeapAttributeNumber);
	fake_key = bms_difference(key, equal);
	fake_id = bms_difference(id, equal);
	MemoryContextSwitchTo(old);
	bms_free(all);
	bms_free(key);
	bms_free(id);
	bms_free(equal);

	saved_all = rel->rd_indexattr;
	saved_key = rel->rd_keyattr;
	saved_id = rel->rd_idattr;
	rel->rd_indexattr = fake_all;
	rel->rd_keyattr = fake_key;
	rel->rd_idattr = fake_id;
	PG_TRY();
	{
		r = heap_update(rel, otid, tup, cid, crosscheck, wait, tmfd, lockmode);
	}
	PG_FINALLY();
	{
		if (rel->rd_indexattr == fake_all)
		{
			rel->rd_indexattr = saved_all;
			rel->rd_keyattr = saved_key;
			rel->rd_idattr = saved_id;
			bms_free(fake_all);
			bms_free(fake_key);
			bms_free(fake_id);
		}
		else
		{
			/* rebuilt meanwhile: it freed our substitutes, ours are orphans */
			bms_free(saved_all);
			bms_free(saved_key);
			bms_free(saved_id);
		}
	}
	PG_END_TRY();
	return r;
}

static TM_Result
fc_tuple_update(Relation rel, ItemPointer otid, TupleTableSlot *slot, CommandId cid,
				Snapshot snapshot, Snapshot crosscheck, bool wait,
				TM_FailureData *tmfd, LockTupleMode *lockmode, bool *update_indexes)
{
	HeapTuple	tup = fc_tam_form(rel, slot, 0);
	TM_Result	r;

	slot->tts_tableOid = RelationGetRelid(rel);
	tup->t_tableOid = slot->tts_tableOid;
	r = update_with_plain_bitmaps(rel, otid, tup, slot, cid, crosscheck, wait, tmfd, lockmode);
	slot->tts_tid = tup->t_self;
	if (r == TM_Ok)
		header_to_slot(slot, tup);
	*update_indexes = (r == TM_Ok && !HeapTupleIsHeapOnly(tup));
	if (r == TM_Ok)
		fc_tam_delete_blobs(rel, otid, false);
	else
		fc_tam_delete_blobs_of(rel, tup, true);
	pfree(tup);
	return r;
}

/*
 * Heap's row locking (with its READ COMMITTED chain following, waits,
 * NOWAIT and SKIP LOCKED) into a raw slot; the locked version, if heap
 * returned one, is decrypted into the caller's slot.
 */
static TM_Result
fc_tuple_lock(Relation rel, ItemPointer tid, Snapshot snapshot, TupleTableSlot *slot,
			  CommandId cid, LockTupleMode mode, LockWaitPolicy wait_policy,
			  uint8 flags, TM_FailureData *tmfd)
{
	TupleTableSlot *raw = MakeSingleTupleTableSlot(RelationGetDescr(rel),
												   &TTSOpsBufferHeapTuple);
	volatile TM_Result r = TM_Ok;

	PG_TRY();
	{
		r = fc_heap_routine->tuple_lock(rel, tid, snapshot, raw, cid, mode, wait_policy,
										flags, tmfd);
		if (!TTS_EMPTY(raw))
			fc_slot_store_raw(slot, rel, raw, false);	/* one row: no cache */
	}
	PG_FINALLY();
	{
		ExecDropSingleTupleTableSlot(raw);
	}
	PG_END_TRY();
	return r;
}

/* Install the write callbacks into r. */
void
fc_tam_modify_routine(TableAmRoutine *r)
{
	r->tuple_insert = fc_tuple_insert;
	r->tuple_insert_speculative = fc_tuple_insert_speculative;
	r->tuple_complete_speculative = fc_tuple_complete_speculative;
	r->multi_insert = fc_multi_insert;
	r->finish_bulk_insert = fc_finish_bulk_insert;
	r->tuple_delete = fc_tuple_delete;
	r->tuple_update = fc_tuple_update;
	r->tuple_lock = fc_tuple_lock;
}
