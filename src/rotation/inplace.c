/*-------------------------------------------------------------------------
 *
 * inplace.c
 *	  How the re-encryption worker rewrites stored rows without running
 *	  anybody's code: a storage operation, like VACUUM.
 *
 *	  In place.  A re-encrypted value has the length of the old one and the
 *	  same plaintext, so a row version is rewritten where it is, on its
 *	  page: no new row version, no index entry, no trigger, rule, constraint,
 *	  policy or default runs, and every row version (live, dead, not yet
 *	  committed) is done at once.  The page is rewritten under a buffer
 *	  cleanup lock (no other backend holds a pin, so nobody is reading a
 *	  value while it changes) inside a critical section, and WAL-logged as a
 *	  full page image of fieldcrypt's resource manager (keys/wal.c), which
 *	  replay restores under a cleanup lock too.  A page is first read under
 *	  a share lock; only pages with something to rewrite are locked for
 *	  cleanup.
 *
 *	  Updated.  A row whose stale values are compressed or out of line (or,
 *	  in an encrypted_heap table, whose new generation needs new encrypted
 *	  TOAST blobs) cannot be rewritten in place.  Its newest version is
 *	  updated at the table access method level, with no executor: still no
 *	  trigger, rule, constraint, policy or default.  Only when the update
 *	  cannot be HOT do the table's indexes get entries for the new version,
 *	  and their expressions and predicates then run as the table's owner
 *	  under SECURITY_RESTRICTED_OPERATION, exactly as in VACUUM FULL,
 *	  CLUSTER and REINDEX.  A row updated concurrently is left to the next
 *	  pass.  Pages another backend keeps pinned are handled the same way in
 *	  check passes (in the first pass they are left to the next pass).
 *
 * src/rotation/inplace.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/procarray.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "keys/wal.h"
#include "rotation/reencrypt.h"
#include "rotation/rotation.h"

/* Tuples of one page that fn rewrote, kept until they are written back. */
typedef struct PageWork
{
	OffsetNumber maxoff;
	char	  **copies;			/* by offset; NULL: unchanged */
	int			nrewritten;
	int			nmvcc;
	OffsetNumber mvcc[MaxHeapTuplesPerPage];	/* cannot be done in place */
	int			nwant;
	OffsetNumber want[MaxHeapTuplesPerPage];	/* can, and need it */
} PageWork;

static void walk_page(Relation rel, Page page, BlockNumber blk, FcRewriteTuple fn,
					  void *arg, bool write, PageWork *w);
static void forget_page(PageWork *w, Page page);
static void apply_page(Relation rel, Buffer buf, PageWork *w);
static int	update_rows(Relation rel, BlockNumber blk, OffsetNumber *offs, int n,
						FcBuildRow build, void *arg, bool *blocked);

/*
 * Run fn over every stored tuple of page: with write, on private copies
 * kept in w for apply_page.  Offsets of tuples fn cannot rewrite in place
 * go to w->mvcc.
 */
static void
walk_page(Relation rel, Page page, BlockNumber blk, FcRewriteTuple fn, void *arg,
		  bool write, PageWork *w)
{
	w->maxoff = PageGetMaxOffsetNumber(page);
	w->copies = palloc0(sizeof(char *) * (w->maxoff + 1));
	w->nrewritten = 0;
	w->nmvcc = 0;
	w->nwant = 0;
	for (OffsetNumber off = FirstOffsetNumber; off <= w->maxoff; off++)
	{
		ItemId		id = PageGetItemId(page, off);
		uint32		len;
		char	   *copy;
		ItemPointerData tid;
		int			k;

		if (!ItemIdIsNormal(id))
			continue;
		len = ItemIdGetLength(id);
		copy = palloc(len);
		memcpy(copy, PageGetItem(page, id), len);
		ItemPointerSet(&tid, blk, off);
		k = fn(rel, (HeapTupleHeader) copy, len, &tid, write, arg);
		if (k > 0)
			w->want[w->nwant++] = off;
		if (k > 0)
			w->nrewritten++;
		else if (k < 0)
			w->mvcc[w->nmvcc++] = off;
		if (k > 0 && write)
			w->copies[off] = copy;
		else
		{
			explicit_bzero(copy, len);
			pfree(copy);
		}
	}
}

/* Zero and free the copies of w. */
static void
forget_page(PageWork *w, Page page)
{
	for (OffsetNumber off = FirstOffsetNumber; off <= w->maxoff; off++)
		if (w->copies[off] != NULL)
		{
			explicit_bzero(w->copies[off], ItemIdGetLength(PageGetItemId(page, off)));
			pfree(w->copies[off]);
		}
	pfree(w->copies);
	w->copies = NULL;
}

/* Write the rewritten tuples of w back, WAL-logged; cleanup lock held. */
static void
apply_page(Relation rel, Buffer buf, PageWork *w)
{
	Page		page = BufferGetPage(buf);

	START_CRIT_SECTION();
	for (OffsetNumber off = FirstOffsetNumber; off <= w->maxoff; off++)
		if (w->copies[off] != NULL)
		{
			ItemId		id = PageGetItemId(page, off);

			memcpy(PageGetItem(page, id), w->copies[off], ItemIdGetLength(id));
		}
	MarkBufferDirty(buf);
	if (RelationNeedsWAL(rel))
		PageSetLSN(page, fc_wal_log_page(buf));
	END_CRIT_SECTION();
}

/*
 * Re-encrypt block blk of rel: in place what can be, by update the rest
 * (see the file header).  In a transaction holding RowExclusiveLock on rel.
 * pinned_ok: a page another backend pins is updated row by row instead of
 * being left for later.  Returns the rows rewritten or updated; *left is
 * set if the page was pinned, or a row to update was locked by another
 * transaction or changed meanwhile, and left (in part) for a later pass.
 */
int
fc_rewrite_block(Relation rel, BlockNumber blk, FcRewriteTuple fn, FcBuildRow build,
				 void *arg, bool pinned_ok, BufferAccessStrategy strategy, bool *left)
{
	Buffer		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blk, RBM_NORMAL, strategy);
	PageWork   *w = palloc(sizeof(PageWork));
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "fieldcrypt page rewrite",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	int			done = 0;

	/* look first: most pages of a check pass have nothing to do */
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	walk_page(rel, BufferGetPage(buf), blk, fn, arg, false, w);
	forget_page(w, BufferGetPage(buf));
	LockBuffer(buf, BUFFER_LOCK_UNLOCK);

	if (w->nrewritten > 0)
	{
		if (ConditionalLockBufferForCleanup(buf))
		{
			walk_page(rel, BufferGetPage(buf), blk, fn, arg, true, w);
			if (w->nrewritten > 0)
				apply_page(rel, buf, w);
			forget_page(w, BufferGetPage(buf));
			LockBuffer(buf, BUFFER_LOCK_UNLOCK);
			done = w->nrewritten;
		}
		else if (pinned_ok)
		{
			/* the stored tuples of the page that need work: by update */
			memcpy(w->mvcc + w->nmvcc, w->want, w->nwant * sizeof(OffsetNumber));
			w->nmvcc += w->nwant;
		}
		else
			*left = true;		/* pinned */
	}
	ReleaseBuffer(buf);
	if (w->nmvcc > 0)
		done += update_rows(rel, blk, w->mvcc, w->nmvcc, build, arg, left);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	pfree(w);
	return done;
}

/*
 * The stored tuples of block blk that need re-encryption (in place or by
 * update), looked at under a share lock.
 */
int
fc_count_block(Relation rel, BlockNumber blk, FcRewriteTuple fn, void *arg,
			   BufferAccessStrategy strategy)
{
	Buffer		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blk, RBM_NORMAL, strategy);
	PageWork   *w = palloc(sizeof(PageWork));
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "fieldcrypt page count",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	int			n;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	walk_page(rel, BufferGetPage(buf), blk, fn, arg, false, w);
	forget_page(w, BufferGetPage(buf));
	UnlockReleaseBuffer(buf);
	n = w->nrewritten + w->nmvcc;
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	pfree(w);
	return n;
}

/*
 * True if the stored tuple at tid was inserted by a transaction still in
 * progress (false for one whose inserter aborted: it is dead).
 */
static bool
inserted_in_progress(Relation rel, ItemPointer tid)
{
	Buffer		buf = ReadBuffer(rel, ItemPointerGetBlockNumber(tid));
	Page		page;
	OffsetNumber off = ItemPointerGetOffsetNumber(tid);
	bool		result = false;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (off <= PageGetMaxOffsetNumber(page) && ItemIdIsNormal(PageGetItemId(page, off)))
	{
		HeapTupleHeader td = (HeapTupleHeader) PageGetItem(page, PageGetItemId(page, off));

		result = TransactionIdIsInProgress(HeapTupleHeaderGetRawXmin(td));
	}
	UnlockReleaseBuffer(buf);
	return result;
}

char	   *fc_test_reencrypt_pause_before_update = NULL;	/* setting */

/* Test only: stay here while fieldcrypt.test_reencrypt_pause_before_update names rel. */
static void
test_pause_before_update(Relation rel, BlockNumber blk)
{
	bool		logged = false;

	while (fc_test_reencrypt_pause_before_update != NULL &&
		   strcmp(fc_test_reencrypt_pause_before_update, RelationGetRelationName(rel)) == 0)
	{
		if (!logged)
			ereport(LOG,
					(errmsg("fieldcrypt: re-encryption paused for testing before updating rows of block %u of table %s",
							blk, RelationGetRelationName(rel))));
		logged = true;
		fc_rot_sleep(100);
	}
}

/*
 * Update the newest versions of rows (blk, offs[i]) of rel whose stored
 * tuple could not be rewritten in place: build gives the new values (false:
 * nothing to change).  A row updated since is followed to its newest
 * version; a deleted one is left.  A row that another transaction keeps
 * locked (SELECT ... FOR UPDATE, an UPDATE not committed yet) is not waited
 * for, which could last for ever: it is left for a later pass and *blocked
 * set, so that the pass is not clean.  Returns rows updated.
 */
static int
update_rows(Relation rel, BlockNumber blk, OffsetNumber *offs, int n,
			FcBuildRow build, void *arg, bool *blocked)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	TupleTableSlot *oldslot = table_slot_create(rel, NULL);
	TupleTableSlot *newslot = table_slot_create(rel, NULL);
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	int			updated = 0;

	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	test_pause_before_update(rel, blk);
	for (int i = 0; i < n; i++)
	{
		ItemPointerData tid;
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		bool		update_indexes;
		TM_Result	res;

		ItemPointerSet(&tid, blk, offs[i]);

		/*
		 * Lock the newest version of the row (an update that committed since
		 * the page was looked at may have copied the stale value into it,
		 * maybe on a page this pass has already done), without waiting; our
		 * own lock then lets the update through.
		 */
		res = table_tuple_lock(rel, &tid, snap, oldslot, GetCurrentCommandId(true),
							   LockTupleNoKeyExclusive, LockWaitSkip,
							   TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (res == TM_WouldBlock || (res == TM_Invisible && inserted_in_progress(rel, &tid)))
		{
			/* locked, or being updated or inserted: this pass is not clean */
			*blocked = true;
			continue;
		}
		if (res != TM_Ok)
			continue;			/* deleted: nothing left to re-encrypt */
		slot_getallattrs(oldslot);
		ExecClearTuple(newslot);
		if (!build(rel, oldslot, newslot, arg))
			continue;
		ExecStoreVirtualTuple(newslot);
		res = table_tuple_update(rel, &tid, newslot, GetCurrentCommandId(true), snap,
								 InvalidSnapshot, true, &tmfd, &lockmode, &update_indexes);
		if (res != TM_Ok)
		{
			*blocked = true;	/* (we hold its lock: not expected) a later pass */
			continue;
		}
		updated++;
		if (update_indexes && rri->ri_NumIndices > 0)
		{
			Oid			save_userid;
			int			save_sec;
			int			save_nestlevel;
			List	   *recheck;

			/* index expressions and predicates: as the owner, restricted */
			GetUserIdAndSecContext(&save_userid, &save_sec);
			SetUserIdAndSecContext(rel->rd_rel->relowner,
								   save_sec | SECURITY_RESTRICTED_OPERATION);
			save_nestlevel = NewGUCNestLevel();
			recheck = ExecInsertIndexTuples(rri, newslot, estate, false, false, NULL, NIL);
			AtEOXact_GUC(false, save_nestlevel);
			SetUserIdAndSecContext(save_userid, save_sec);
			list_free(recheck);
		}
		ResetPerTupleExprContext(estate);
	}
	UnregisterSnapshot(snap);
	ExecDropSingleTupleTableSlot(oldslot);
	ExecDropSingleTupleTableSlot(newslot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	CommandCounterIncrement();
	return updated;
}
