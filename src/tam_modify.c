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
 *	  Updates are never HOT on tables with indexes: every version has a new
 *	  nonce, so heap sees all indexed columns as modified (and takes the
 *	  key-exclusive row lock).
 *
 * src/tam_modify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "tam.h"

static void
fc_tuple_insert(Relation rel, TupleTableSlot *slot, CommandId cid, int options,
				BulkInsertState bistate)
{
	HeapTuple	tup = fc_tam_form(rel, slot, options);

	slot->tts_tableOid = RelationGetRelid(rel);
	tup->t_tableOid = slot->tts_tableOid;
	heap_insert(rel, tup, cid, options, bistate);
	slot->tts_tid = tup->t_self;
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
		fc_tam_delete_blobs(rel, &slot->tts_tid);
		heap_abort_speculative(rel, &slot->tts_tid);
	}
}

/*
 * COPY's batches: encrypt every row into a heap slot of our own, so that
 * heap_multi_insert finds materialized heap tuples and copies nothing.
 */
static void
fc_multi_insert(Relation rel, TupleTableSlot **slots, int nslots, CommandId cid,
				int options, BulkInsertState bistate)
{
	static TupleTableSlot **priv = NULL;
	static int	npriv = 0;

	if (npriv < nslots)
	{
		for (int i = 0; i < npriv; i++)
			ExecDropSingleTupleTableSlot(priv[i]);
		if (priv)
			pfree(priv);
		npriv = Max(nslots, 64);
		priv = MemoryContextAlloc(TopMemoryContext, sizeof(TupleTableSlot *) * npriv);
		for (int i = 0; i < npriv; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			priv[i] = MakeSingleTupleTableSlot(NULL, &TTSOpsHeapTuple);
			MemoryContextSwitchTo(old);
		}
	}
	PG_TRY();
	{
		for (int i = 0; i < nslots; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
			HeapTuple	tup = fc_tam_form(rel, slots[i], options);

			MemoryContextSwitchTo(old);
			ExecStoreHeapTuple(tup, priv[i], true);
		}
		heap_multi_insert(rel, priv, nslots, cid, options, bistate);
		for (int i = 0; i < nslots; i++)
		{
			slots[i]->tts_tid = priv[i]->tts_tid;
			slots[i]->tts_tableOid = RelationGetRelid(rel);
			ExecClearTuple(priv[i]);
		}
	}
	PG_CATCH();
	{
		for (int i = 0; i < nslots; i++)
			ExecClearTuple(priv[i]);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

static TM_Result
fc_tuple_delete(Relation rel, ItemPointer tid, CommandId cid, Snapshot snapshot,
				Snapshot crosscheck, bool wait, TM_FailureData *tmfd, bool changingPart)
{
	TM_Result	r = heap_delete(rel, tid, cid, crosscheck, wait, tmfd, changingPart);

	if (r == TM_Ok)
		fc_tam_delete_blobs(rel, tid);
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
	r = heap_update(rel, otid, tup, cid, crosscheck, wait, tmfd, lockmode);
	slot->tts_tid = tup->t_self;
	*update_indexes = (r == TM_Ok && !HeapTupleIsHeapOnly(tup));
	if (r == TM_Ok)
		fc_tam_delete_blobs(rel, otid);
	else
		fc_tam_delete_blobs_of(rel, tup);
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
			fc_tam_store(rel, ((BufferHeapTupleTableSlot *) raw)->base.tuple, slot);
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
	r->tuple_delete = fc_tuple_delete;
	r->tuple_update = fc_tuple_update;
	r->tuple_lock = fc_tuple_lock;
}
