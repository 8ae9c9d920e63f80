/*-------------------------------------------------------------------------
 *
 * tam_cache.c
 *	  The shared-memory cache of decrypted encrypted_heap rows, so that a
 *	  row read again is not authenticated and decrypted again.
 *
 *	  Design.  fieldcrypt.tde_cache_size MB of shared memory (0: no cache)
 *	  hold entries, one per heap page (key: relfilenode, which names the
 *	  database, and block number).  An entry holds the plain rows of that
 *	  page by line pointer offset, each with the fixed trailer of the stored
 *	  row it came from (flags, generation, instance id, nonce counter, GCM
 *	  tag) and its length.  A row is put in only after fc_tam_decrypt
 *	  authenticated it, and a cached row is served only for a stored row
 *	  whose trailer and length are those recorded: nonces never repeat
 *	  under a key, so the same trailer means the very ciphertext that was
 *	  authenticated, whatever happened to the page since (UPDATE, DELETE,
 *	  pruning and reuse of the line pointer, in-place resealing by the
 *	  re-encryption worker).  Nothing on the write path touches the cache;
 *	  TRUNCATE, VACUUM FULL, CLUSTER and SET TABLESPACE write a new
 *	  relfilenode, so old entries are never looked up again and age out.
 *	  The entry also records the table's OID (plain rows hold TOAST
 *	  pointers naming it).  Only permanent tables are cached.
 *
 *	  Locking.  One LWLock protects the hash table and the clock hand:
 *	  shared to find an entry and pin it, exclusive to create one (clock
 *	  eviction of an unpinned entry).  A pinned entry is never reused, so a
 *	  pinner reads its rows without a lock.  Rows are appended under the
 *	  entry's spinlock and published by a 2-byte store of their position
 *	  after a write barrier; a row, once written, never changes until the
 *	  entry is reused.  A row replaced at the same offset leaves the old
 *	  bytes in place (readers of it stay valid); a full entry is emptied
 *	  when its filler is its only user, and otherwise caches nothing more
 *	  until eviction recycles it.
 *
 *	  Pins.  The shared refcount counts backends, a private array counts
 *	  this backend's pins per entry (as bufmgr does for buffers).  Pins are
 *	  taken by lazy slots (tam_slot.c), which keep the entry of the page
 *	  they read until they move to another page or are cleared/released.
 *	  At the end of the top-level transaction (commit or abort, so also
 *	  after an ERROR) every pin this backend still holds is dropped and the
 *	  pin epoch advances: slots that outlived it forget theirs.
 *
 *	  Exposure.  The entries' data area is plaintext in shared memory, as
 *	  shared buffers are under page-level TDE; it is excluded from core
 *	  dumps (MADV_DONTDUMP, page aligned) and never written to disk or WAL.
 *
 * src/tde/tam_cache.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/bufpage.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "tde/tam.h"
#include "tde/tam_cache.h"

#define ENTRY_DATA		(BLCKSZ + BLCKSZ / 2)	/* plain rows of one page */
#define FIRST_ROW		MAXALIGN(1)				/* position 0 means "absent" */
#define MAX_USAGE		5
#define FLUSH_EVERY		4096

int			fc_tde_cache_size_mb = 0;	/* setting fieldcrypt.tde_cache_size */

typedef struct CacheKey
{
	RelFileNode node;
	BlockNumber blkno;
} CacheKey;

typedef struct CacheLookup
{
	CacheKey	key;
	int			entry;
} CacheLookup;

typedef struct CacheEntry
{
	CacheKey	key;
	Oid			relid;
	bool		valid;
	volatile uint8 usage;
	pg_atomic_uint32 refcount;	/* backends pinning it */
	slock_t		mutex;			/* appends: used, pos */
	uint32		used;			/* bytes of the data area in use */
	volatile uint16 pos[MaxHeapTuplesPerPage + 1];	/* by offset; 0: absent */
} CacheEntry;

typedef struct CacheShared
{
	LWLock	   *lock;
	int			nentries;
	int			hand;			/* clock */
	pg_atomic_uint64 hits;
	pg_atomic_uint64 misses;
	pg_atomic_uint64 evictions;
	CacheEntry	entries[FLEXIBLE_ARRAY_MEMBER];
} CacheShared;

static CacheShared *cache = NULL;
static HTAB *cache_hash = NULL;
static char *cache_data = NULL;	/* nentries * ENTRY_DATA, page aligned */
static int32 *local_pins = NULL;	/* this backend's pins per entry */
static int	local_pinned = 0;	/* entries with local_pins > 0 */
static uint32 pin_epoch = 1;
static uint64 local_hits = 0;
static uint64 local_misses = 0;

static int	cache_entries(void);
static Size cache_header_size(void);
static Size cache_data_size(void);
static void flush_counts(void);
static void release_all(void);
static void xact_callback(XactEvent event, void *arg);
static int	evict_one(void);
static bool reset_if_alone(int entry);

PG_FUNCTION_INFO_V1(fieldcrypt_tde_cache_stats);

/* Number of entries the setting gives. */
static int
cache_entries(void)
{
	Size		per = sizeof(CacheEntry) + ENTRY_DATA + 2 * sizeof(CacheLookup);

	return (int) Min(((Size) fc_tde_cache_size_mb * 1024 * 1024) / per, (Size) INT_MAX / 2);
}

static Size
cache_header_size(void)
{
	return add_size(offsetof(CacheShared, entries),
					mul_size(sizeof(CacheEntry), cache_entries()));
}

/* The data area, plus a page to align it on. */
static Size
cache_data_size(void)
{
	return add_size(mul_size(ENTRY_DATA, cache_entries()), getpagesize());
}

/* shmem_request_hook: the cache's memory and lock. */
void
fc_tam_cache_request(void)
{
	if (cache_entries() == 0)
		return;
	RequestAddinShmemSpace(cache_header_size());
	RequestAddinShmemSpace(cache_data_size());
	RequestAddinShmemSpace(hash_estimate_size(cache_entries(), sizeof(CacheLookup)));
	RequestNamedLWLockTranche("fieldcrypt tde cache", 1);
}

/*
 * shmem_startup_hook, holding AddinShmemInitLock: attach to (or create)
 * the cache.  The data area is excluded from core dumps here, in the
 * postmaster, so every backend inherits the flag on its mapping.
 */
void
fc_tam_cache_startup(void)
{
	bool		found;
	bool		found_data;
	HASHCTL		info;
	int			n = cache_entries();
	char	   *raw;

	if (n == 0)
		return;
	cache = ShmemInitStruct("fieldcrypt tde cache", cache_header_size(), &found);
	raw = ShmemInitStruct("fieldcrypt tde cache data", cache_data_size(), &found_data);
	cache_data = (char *) TYPEALIGN(getpagesize(), raw);
	info.keysize = sizeof(CacheKey);
	info.entrysize = sizeof(CacheLookup);
	cache_hash = ShmemInitHash("fieldcrypt tde cache lookup", n, n, &info,
							   HASH_ELEM | HASH_BLOBS);
	if (!found)
	{
		cache->lock = &(GetNamedLWLockTranche("fieldcrypt tde cache"))->lock;
		cache->nentries = n;
		cache->hand = 0;
		pg_atomic_init_u64(&cache->hits, 0);
		pg_atomic_init_u64(&cache->misses, 0);
		pg_atomic_init_u64(&cache->evictions, 0);
		for (int i = 0; i < n; i++)
		{
			CacheEntry *e = &cache->entries[i];

			e->valid = false;
			e->usage = 0;
			pg_atomic_init_u32(&e->refcount, 0);
			SpinLockInit(&e->mutex);
		}
	}
#ifdef MADV_DONTDUMP
	if (!found_data &&
		madvise(cache_data, (Size) n * ENTRY_DATA, MADV_DONTDUMP) != 0)
		ereport(LOG,
				(errmsg("fieldcrypt: could not exclude the TDE cache from core dumps: %m")));
#endif
}

/* Backend-level setup from _PG_init: drop pins at the end of transactions. */
void
fc_tam_cache_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
}

/* Whether rows of rel may be cached: a cache exists and rel is permanent. */
bool
fc_tam_cache_usable(Relation rel)
{
	return cache != NULL && rel->rd_rel->relpersistence == RELPERSISTENCE_PERMANENT;
}

/* Add this backend's counts to the shared ones. */
static void
flush_counts(void)
{
	if (cache == NULL)
		return;
	if (local_hits)
		pg_atomic_fetch_add_u64(&cache->hits, local_hits);
	if (local_misses)
		pg_atomic_fetch_add_u64(&cache->misses, local_misses);
	local_hits = local_misses = 0;
}

/* Count a hit or a miss (a decryption of a cacheable row). */
void
fc_tam_cache_count(bool hit)
{
	if (hit)
		local_hits++;
	else
		local_misses++;
	if (local_hits + local_misses >= FLUSH_EVERY)
		flush_counts();
}

/* Drop every pin of this backend; slots still holding one ignore it. */
static void
release_all(void)
{
	if (local_pinned > 0)
	{
		for (int i = 0; i < cache->nentries; i++)
			if (local_pins[i] > 0)
			{
				local_pins[i] = 0;
				pg_atomic_fetch_sub_u32(&cache->entries[i].refcount, 1);
			}
		local_pinned = 0;
	}
	pin_epoch++;
}

/* End of a top-level transaction: no pin survives it, even after an ERROR. */
static void
xact_callback(XactEvent event, void *arg)
{
	if (cache == NULL || local_pins == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			release_all();
			flush_counts();
			break;
		default:
			break;
	}
}

/*
 * Clock sweep, holding the lock exclusively: an unpinned entry to reuse,
 * removed from the lookup table, or -1 if every entry is pinned.
 */
static int
evict_one(void)
{
	int			n = cache->nentries;

	for (int step = 0; step < n * (MAX_USAGE + 1); step++)
	{
		CacheEntry *e = &cache->entries[cache->hand];
		int			i = cache->hand;

		cache->hand = (cache->hand + 1) % n;
		if (pg_atomic_read_u32(&e->refcount) != 0)
			continue;
		if (e->valid && e->usage > 0)
		{
			e->usage--;
			continue;
		}
		if (e->valid)
		{
			hash_search(cache_hash, &e->key, HASH_REMOVE, NULL);
			e->valid = false;
			pg_atomic_fetch_add_u64(&cache->evictions, 1);
		}
		return i;
	}
	return -1;
}

/*
 * Pin the entry of (node, blkno), creating it if create (evicting another).
 * Returns its number, or -1 (none, or none free).  *epoch receives the pin
 * epoch to give back to fc_tam_cache_unpin.
 */
int
fc_tam_cache_pin(const RelFileNode *node, BlockNumber blkno, Oid relid, bool create,
				 uint32 *epoch)
{
	CacheKey	key;
	CacheLookup *l;
	int			i = -1;

	if (local_pins == NULL)
		local_pins = MemoryContextAllocZero(TopMemoryContext,
											sizeof(int32) * cache->nentries);
	memset(&key, 0, sizeof(key));
	key.node = *node;
	key.blkno = blkno;
	*epoch = pin_epoch;

	LWLockAcquire(cache->lock, LW_SHARED);
	l = hash_search(cache_hash, &key, HASH_FIND, NULL);
	if (l != NULL)
	{
		i = l->entry;
		if (local_pins[i]++ == 0)
		{
			pg_atomic_fetch_add_u32(&cache->entries[i].refcount, 1);
			local_pinned++;
		}
		if (cache->entries[i].usage < MAX_USAGE)
			cache->entries[i].usage++;	/* racy, as bufmgr's usage counts */
	}
	LWLockRelease(cache->lock);
	if (i >= 0 || !create)
		return i;

	LWLockAcquire(cache->lock, LW_EXCLUSIVE);
	l = hash_search(cache_hash, &key, HASH_FIND, NULL);
	if (l != NULL)
		i = l->entry;
	else if ((i = evict_one()) >= 0)
	{
		CacheEntry *e = &cache->entries[i];

		l = hash_search(cache_hash, &key, HASH_ENTER_NULL, NULL);
		if (l == NULL)
			i = -1;
		else
		{
			l->entry = i;
			e->key = key;
			e->relid = relid;
			e->used = FIRST_ROW;
			memset((void *) e->pos, 0, sizeof(e->pos));
			e->usage = 1;
			e->valid = true;
		}
	}
	if (i >= 0 && local_pins[i]++ == 0)
	{
		pg_atomic_fetch_add_u32(&cache->entries[i].refcount, 1);
		local_pinned++;
	}
	LWLockRelease(cache->lock);
	if (i >= 0 && cache->entries[i].relid != relid)
	{
		fc_tam_cache_unpin(i, *epoch);
		return -1;
	}
	return i;
}

/* Drop a pin taken in epoch (ignored if the transaction end dropped it). */
void
fc_tam_cache_unpin(int entry, uint32 epoch)
{
	if (entry < 0 || epoch != pin_epoch)
		return;
	Assert(local_pins[entry] > 0);
	if (--local_pins[entry] == 0)
	{
		pg_atomic_fetch_sub_u32(&cache->entries[entry].refcount, 1);
		local_pinned--;
	}
}

/* The current pin epoch: a pin taken in another one was dropped. */
uint32
fc_tam_cache_epoch(void)
{
	return pin_epoch;
}

/*
 * The cached plain row for the stored row at off of a pinned entry, or
 * NULL unless the stored row is exactly the one that was authenticated
 * (same length and fixed trailer, tag included).
 */
const FcCacheRow *
fc_tam_cache_probe(int entry, OffsetNumber off, HeapTuple stored)
{
	CacheEntry *e = &cache->entries[entry];
	uint16		p;
	const FcCacheRow *row;

	if (off > MaxHeapTuplesPerPage)
		return NULL;
	p = e->pos[off];
	if (p == 0)
		return NULL;
	pg_read_barrier();
	row = (const FcCacheRow *) (cache_data + (Size) entry * ENTRY_DATA + p);
	if (row->stored_len != stored->t_len ||
		stored->t_len < FC_TAM_TRAILER_FIXED ||
		memcmp(row->trailer, (char *) stored->t_data + stored->t_len - FC_TAM_TRAILER_FIXED,
			   FC_TAM_TRAILER_FIXED) != 0)
		return NULL;
	return row;
}

/*
 * Empty a full entry (rows replaced at the same offsets, by updates, pruning
 * or resealing, leave their old bytes behind) when the caller's pin is its
 * only one: the caller's slot is decoding a row, so it references none of
 * the entry's rows, and nobody else can pin it while the lock is held.
 */
static bool
reset_if_alone(int entry)
{
	CacheEntry *e = &cache->entries[entry];
	bool		done = false;

	LWLockAcquire(cache->lock, LW_EXCLUSIVE);
	if (local_pins[entry] == 1 && pg_atomic_read_u32(&e->refcount) == 1)
	{
		memset((void *) e->pos, 0, sizeof(e->pos));
		e->used = FIRST_ROW;
		done = true;
	}
	LWLockRelease(cache->lock);
	return done;
}

/*
 * Put into a pinned entry the plain row that fc_tam_decrypt just made from
 * (and authenticated for) the stored row at off.  Does nothing when the
 * entry is full and others use it.  The caller's slot must not reference
 * a row of the entry (it is decoding).
 */
void
fc_tam_cache_fill(int entry, OffsetNumber off, HeapTuple stored, HeapTuple plain)
{
	CacheEntry *e = &cache->entries[entry];
	Size		need = FC_CACHE_ROW_HDR + MAXALIGN(plain->t_len);
	uint32		p = 0;
	FcCacheRow *row;

	StaticAssertStmt(sizeof(((FcCacheRow *) 0)->trailer) == FC_TAM_TRAILER_FIXED,
					 "cached trailer size");
	if (off > MaxHeapTuplesPerPage || stored->t_len > PG_UINT16_MAX)
		return;
	if (need > ENTRY_DATA - FIRST_ROW)
		return;
	for (int attempt = 0; p == 0 && attempt < 2; attempt++)
	{
		SpinLockAcquire(&e->mutex);
		if (e->used + need <= ENTRY_DATA)
		{
			p = e->used;
			e->used += need;
		}
		SpinLockRelease(&e->mutex);
		if (p == 0 && attempt == 0 && !reset_if_alone(entry))
			return;
	}
	if (p == 0)
		return;
	row = (FcCacheRow *) (cache_data + (Size) entry * ENTRY_DATA + p);
	row->stored_len = stored->t_len;
	row->plain_len = plain->t_len;
	memcpy(row->trailer, (char *) stored->t_data + stored->t_len - FC_TAM_TRAILER_FIXED,
		   FC_TAM_TRAILER_FIXED);
	memcpy(FC_CACHE_ROW_DATA(row), plain->t_data, plain->t_len);
	pg_write_barrier();
	e->pos[off] = (uint16) p;
}

/*
 * SQL fieldcrypt.tde_cache_stats(): size and counters of the cache, for
 * the whole cluster (no row contents, no table names).
 */
Datum
fieldcrypt_tde_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[7];
	bool		nulls[7] = {0};
	int			used = 0;
	uint64		hits = 0;
	uint64		misses = 0;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	flush_counts();
	if (cache != NULL)
	{
		LWLockAcquire(cache->lock, LW_SHARED);
		for (int i = 0; i < cache->nentries; i++)
			used += cache->entries[i].valid ? 1 : 0;
		LWLockRelease(cache->lock);
		hits = pg_atomic_read_u64(&cache->hits);
		misses = pg_atomic_read_u64(&cache->misses);
	}
	values[0] = Int64GetDatum(cache ? (int64) cache->nentries * (sizeof(CacheEntry) + ENTRY_DATA) : 0);
	values[1] = Int32GetDatum(cache ? cache->nentries : 0);
	values[2] = Int32GetDatum(used);
	values[3] = Int64GetDatum((int64) hits);
	values[4] = Int64GetDatum((int64) misses);
	values[5] = Int64GetDatum(cache ? (int64) pg_atomic_read_u64(&cache->evictions) : 0);
	if (hits + misses > 0)
		values[6] = Float8GetDatum((double) hits / (double) (hits + misses));
	else
		nulls[6] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
