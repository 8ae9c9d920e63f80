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
 *	  Layout.  An entry's header (key, table, usage, refcount, bytes used:
 *	  40 bytes) lives in a dense array; its data block (ENTRY_DATA bytes,
 *	  page aligned) starts with the row positions by offset and then holds
 *	  the rows, so a lookup touches the header, one line of positions and
 *	  the row itself.
 *
 *	  Locking.  The lookup table (key -> entry) is a shared dynahash split
 *	  into NUM_PARTITIONS partitions by key hash, each with its own LWLock,
 *	  as bufmgr's buffer mapping table: shared to find an entry and pin it
 *	  (refcount + 1), exclusive to add or remove a key.  Eviction needs no
 *	  global lock: the clock hand is an atomic counter, and an entry nobody
 *	  pins is claimed by compare-and-swap of its refcount from 0 to 1; only
 *	  the claimer changes the entry's key, table and validity, holding the
 *	  partition locks of the old and the new key (in address order) after
 *	  checking that no reader pinned it meanwhile through the table.  A
 *	  backend remembers the entry it found for a page (a direct-mapped memo
 *	  of MEMO_MAX slots at most) and pins it without walking the table when,
 *	  under the same shared partition lock, the entry still holds that key:
 *	  the same guarantee as a table lookup, without its memory misses.  A
 *	  pinned entry is never reused, so a pinner reads its rows without a
 *	  lock.  Rows are appended under the entry's spinlock and published by
 *	  a 2-byte store of their position after a write barrier; a row, once
 *	  written, never changes until the entry is reused.  A row replaced at
 *	  the same offset leaves the old bytes in place (readers of it stay
 *	  valid); a full entry is emptied when its filler is its only user, and
 *	  otherwise caches nothing more until eviction recycles it.
 *
 *	  Pins.  The shared refcount counts backends; tam_pins.c counts this
 *	  backend's pins per entry in a small array with an overflow hash (as
 *	  bufmgr's PrivateRefCount), so that neither a backend's memory nor its
 *	  work at transaction end grows with the cache's size.  Pins are taken
 *	  by lazy slots (tam_slot.c), which keep the entry of the page they read
 *	  until they move to another page or are cleared/released.  At the end
 *	  of the top-level transaction (commit or abort, so also after an ERROR)
 *	  every pin this backend still holds is dropped and the pin epoch
 *	  advances: slots that outlived it forget theirs.
 *
 *	  Cost.  A backend pays, per 4 kB page of the cache it touches for the
 *	  first time, what it pays for shared buffers: a page-table fill (large
 *	  on virtual machines with shadow paging; huge_pages makes it one per
 *	  2 MB, see docs/performance.md).  A scan pays one lookup per heap page
 *	  (through the memo when it read the page before) and, per row, a
 *	  compare of the stored trailer with the cached one; the lazy slot
 *	  prefetches the next rows' trailers and cached rows.  Single-row
 *	  fetches do not use the cache at all (tam_scan.c): for one row of about
 *	  100 bytes, a decryption costs less than the lookup, the pin and the
 *	  first touch of the entry's memory by the backend.
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

#include "keys/keystate.h"
#include "tde/tam.h"
#include "tde/tam_cache.h"
#include "tde/tam_pins.h"

#define ENTRY_DATA		(BLCKSZ + BLCKSZ / 2)	/* pos[] and plain rows of one page */
#define POS_BYTES		(sizeof(uint16) * (MaxHeapTuplesPerPage + 1))
#define FIRST_ROW		MAXALIGN(POS_BYTES)		/* position 0 means "absent" */
#define MAX_USAGE		5
#define FLUSH_EVERY		4096
#define NUM_PARTITIONS	128		/* of the lookup table, as bufmgr's */
#define MEMO_MAX		(1 << 17)	/* slots of a backend's memo (512 kB) */

/* an entry's row positions by offset, at the start of its data block */
#define ENTRY_BLOCK(i)	(cache_data + (Size) (i) * ENTRY_DATA)
#define ENTRY_POS(i)	((volatile uint16 *) ENTRY_BLOCK(i))

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

/*
 * key, relid and valid change only while the changer holds the pin it
 * claimed on an unpinned entry (refcount 0 -> 1) and the partition locks
 * of the old and new keys exclusively.
 */
typedef struct CacheEntry
{
	CacheKey	key;
	Oid			relid;
	bool		valid;
	volatile uint8 usage;
	slock_t		mutex;			/* appends: used */
	pg_atomic_uint32 refcount;	/* backends pinning it (and a claimer) */
	uint32		used;			/* bytes of the data block in use */
} CacheEntry;

typedef struct CacheShared
{
	LWLockPadded *locks;		/* NUM_PARTITIONS, by key hash */
	int			nentries;
	pg_atomic_uint32 hand;		/* clock */
	pg_atomic_uint64 hits;
	pg_atomic_uint64 misses;
	pg_atomic_uint64 evictions;
	CacheEntry	entries[FLEXIBLE_ARRAY_MEMBER];
} CacheShared;

static CacheShared *cache = NULL;
static HTAB *cache_hash = NULL;
static char *cache_data = NULL;	/* nentries * ENTRY_DATA, aligned to the
								 * segment's (huge) pages */
uint32		fc_tam_pin_epoch = 1;	/* advanced at every transaction end */
bool		fc_tam_cache_on = false;	/* the cache exists */
static uint64 local_hits = 0;
static uint64 local_misses = 0;
static int32 *memo = NULL;		/* this backend's last entry by page (hint) */
static uint32 memo_mask = 0;

static int	cache_entries(void);
static Size cache_header_size(void);
static Size cache_data_size(void);
static void flush_counts(void);
static void drop_shared(int entry);
static void release_all(void);
static void xact_callback(XactEvent event, void *arg);
static inline LWLock *partition_lock(uint32 hash);
static void pin_local(int entry, bool shared_taken);
static int	claim_unpinned(void);
static int	install(const CacheKey *key, uint32 hash, Oid relid, int victim);
static bool reset_if_alone(int entry);
static int32 *memo_slot(const CacheKey *key);

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

/*
 * The data area in whole pages of the segment (huge pages when it may use
 * them: fc_shmem_page_size), plus one to align it on.
 */
static Size
cache_data_size(void)
{
	return add_size(TYPEALIGN(fc_shmem_page_size(), mul_size(ENTRY_DATA, cache_entries())),
					fc_shmem_page_size());
}

/* shmem_request_hook: the cache's memory and locks. */
void
fc_tam_cache_request(void)
{
	if (cache_entries() == 0)
		return;
	RequestAddinShmemSpace(cache_header_size());
	RequestAddinShmemSpace(cache_data_size());
	RequestAddinShmemSpace(hash_estimate_size(cache_entries() + NUM_PARTITIONS,
											  sizeof(CacheLookup)));
	RequestNamedLWLockTranche("fieldcrypt tde cache", NUM_PARTITIONS);
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
	cache_data = (char *) TYPEALIGN(fc_shmem_page_size(), raw);
	fc_tam_cache_on = true;
	info.keysize = sizeof(CacheKey);
	info.entrysize = sizeof(CacheLookup);
	info.num_partitions = NUM_PARTITIONS;
	cache_hash = ShmemInitHash("fieldcrypt tde cache lookup",
							   n + NUM_PARTITIONS, n + NUM_PARTITIONS, &info,
							   HASH_ELEM | HASH_BLOBS | HASH_PARTITION);
	if (!found)
	{
		cache->locks = GetNamedLWLockTranche("fieldcrypt tde cache");
		cache->nentries = n;
		pg_atomic_init_u32(&cache->hand, 0);
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
		madvise(cache_data, TYPEALIGN(fc_shmem_page_size(), (Size) n * ENTRY_DATA),
				MADV_DONTDUMP) != 0)
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

/* Drop this backend's share of an entry's refcount. */
static void
drop_shared(int entry)
{
	pg_atomic_fetch_sub_u32(&cache->entries[entry].refcount, 1);
}

/*
 * Drop every pin of this backend (work in proportion to the pins held);
 * slots still holding one ignore it.
 */
static void
release_all(void)
{
	fc_pins_drop_all(drop_shared);
	fc_tam_pin_epoch++;
}

/* End of a top-level transaction: no pin survives it, even after an ERROR. */
static void
xact_callback(XactEvent event, void *arg)
{
	if (cache == NULL)
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

/* The lock of the lookup table's partition holding keys of this hash. */
static inline LWLock *
partition_lock(uint32 hash)
{
	return &cache->locks[hash % NUM_PARTITIONS].lock;
}

/*
 * Count one more pin of entry by this backend (fc_pins_reserve was called);
 * the first one takes a share of the refcount unless shared_taken says it
 * is already taken (a claim turned into a pin).
 */
static void
pin_local(int entry, bool shared_taken)
{
	FcPinCount *p = fc_pins_get(entry, true);

	if (p->count++ == 0)
	{
		if (!shared_taken)
			pg_atomic_fetch_add_u32(&cache->entries[entry].refcount, 1);
	}
	else if (shared_taken)
		drop_shared(entry);		/* cannot happen: claims need refcount 0 */
}

/*
 * Clock sweep without a lock: claim an entry nobody pins (refcount 0 -> 1
 * by compare-and-swap; pinners through the lookup table may still join
 * it), or -1 if none was found.
 */
static int
claim_unpinned(void)
{
	int			n = cache->nentries;

	for (int step = 0; step < n * (MAX_USAGE + 1); step++)
	{
		int			i = pg_atomic_fetch_add_u32(&cache->hand, 1) % n;
		CacheEntry *e = &cache->entries[i];
		uint32		expected = 0;

		if (pg_atomic_read_u32(&e->refcount) != 0)
			continue;
		if (e->valid && e->usage > 0)
		{
			e->usage--;			/* racy, as bufmgr's usage counts */
			continue;
		}
		if (pg_atomic_compare_exchange_u32(&e->refcount, &expected, 1))
			return i;
	}
	return -1;
}

/*
 * Holding a claim on victim: make it the entry of key (or pin the entry
 * another backend made for key meanwhile).  Returns the pinned entry, or
 * -1 if the victim was pinned meanwhile (the claim is dropped).
 */
static int
install(const CacheKey *key, uint32 hash, Oid relid, int victim)
{
	CacheEntry *e = &cache->entries[victim];
	LWLock	   *newlock = partition_lock(hash);
	LWLock	   *oldlock = NULL;
	CacheLookup *l;
	bool		found;
	int			i;
	uint32		oldhash = 0;

	if (e->valid)
	{
		oldhash = get_hash_value(cache_hash, &e->key);
		oldlock = partition_lock(oldhash);
	}
	/* both partitions, in address order, as bufmgr does */
	if (oldlock == NULL || oldlock == newlock)
		LWLockAcquire(newlock, LW_EXCLUSIVE);
	else if (oldlock < newlock)
	{
		LWLockAcquire(oldlock, LW_EXCLUSIVE);
		LWLockAcquire(newlock, LW_EXCLUSIVE);
	}
	else
	{
		LWLockAcquire(newlock, LW_EXCLUSIVE);
		LWLockAcquire(oldlock, LW_EXCLUSIVE);
	}
	if (e->valid)
	{
		if (pg_atomic_read_u32(&e->refcount) != 1)
		{
			/* a reader found it through the table meanwhile: keep it */
			i = -1;
			goto done;
		}
		hash_search_with_hash_value(cache_hash, &e->key, oldhash, HASH_REMOVE, NULL);
		e->valid = false;
		pg_atomic_fetch_add_u64(&cache->evictions, 1);
	}
	l = hash_search_with_hash_value(cache_hash, key, hash, HASH_ENTER_NULL, &found);
	if (l != NULL && found)
	{
		i = l->entry;			/* made by another backend meanwhile */
		pin_local(i, false);
		if (cache->entries[i].usage < MAX_USAGE)
			cache->entries[i].usage++;
	}
	else if (l != NULL)
	{
		l->entry = i = victim;
		e->key = *key;
		e->relid = relid;
		e->used = FIRST_ROW;
		memset((void *) ENTRY_POS(victim), 0, POS_BYTES);
		e->usage = 1;
		e->valid = true;
		pin_local(victim, true);	/* the claim becomes our pin */
		victim = -1;
	}
	else
		i = -1;
done:
	if (oldlock != NULL && oldlock != newlock)
		LWLockRelease(oldlock);
	LWLockRelease(newlock);
	if (victim >= 0)
		drop_shared(victim);	/* claim not used */
	return i;
}

/*
 * This backend's memo of the entry it last found for a page: a direct-mapped
 * array (MEMO_MAX slots at most, allocated on first use), indexed so that
 * consecutive blocks of one relation take consecutive slots.  A hint only:
 * fc_tam_cache_pin checks under the partition lock that the entry still
 * holds the key, so that a scan served from the cache does not walk the
 * lookup table (a memory miss per page) each time it reads a page again.
 */
static int32 *
memo_slot(const CacheKey *key)
{
	if (unlikely(memo == NULL))
	{
		uint32		n = 1024;

		while (n < (uint32) cache->nentries && n < MEMO_MAX)
			n <<= 1;
		memo = MemoryContextAlloc(TopMemoryContext, n * sizeof(int32));
		memset(memo, 0xff, n * sizeof(int32));	/* -1: nothing */
		memo_mask = n - 1;
	}
	return &memo[(key->blkno + key->node.relNode * 0x9E3779B1u) & memo_mask];
}

/* Whether entry is the valid entry of key (partition lock of key held). */
static inline bool
entry_holds(int entry, const CacheKey *key)
{
	CacheEntry *e = &cache->entries[entry];

	return e->valid && memcmp(&e->key, key, sizeof(CacheKey)) == 0;
}

/*
 * Pin the entry of (node, blkno), creating it if create (evicting another).
 * Returns its number, or -1 (none, or none free).  *epoch receives the pin
 * epoch to give back to fc_tam_cache_unpin.  The entry is found through the
 * backend's memo when it still holds the key (key and validity change only
 * under the exclusive partition lock, which the shared one excludes), else
 * through the lookup table.
 */
int
fc_tam_cache_pin(const RelFileNode *node, BlockNumber blkno, Oid relid, bool create,
				 uint32 *epoch)
{
	CacheKey	key;
	CacheLookup *l;
	uint32		hash;
	LWLock	   *lock;
	int32	   *m;
	int			i = -1;

	fc_pins_reserve();
	memset(&key, 0, sizeof(key));
	key.node = *node;
	key.blkno = blkno;
	*epoch = fc_tam_pin_epoch;
	hash = get_hash_value(cache_hash, &key);
	lock = partition_lock(hash);
	m = memo_slot(&key);

	LWLockAcquire(lock, LW_SHARED);
	if (*m >= 0 && entry_holds(*m, &key))
		i = *m;
	else if ((l = hash_search_with_hash_value(cache_hash, &key, hash, HASH_FIND, NULL)) != NULL)
		i = l->entry;
	if (i >= 0)
	{
		pin_local(i, false);
		if (cache->entries[i].usage < MAX_USAGE)
			cache->entries[i].usage++;	/* racy, as bufmgr's usage counts */
	}
	LWLockRelease(lock);
	for (int attempt = 0; i < 0 && create && attempt < 4; attempt++)
	{
		int			victim = claim_unpinned();

		if (victim < 0)
			break;
		i = install(&key, hash, relid, victim);
	}
	if (i >= 0)
		*m = i;
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
	FcPinCount *p;

	if (entry < 0 || epoch != fc_tam_pin_epoch)
		return;
	p = fc_pins_get(entry, false);
	Assert(p != NULL && p->count > 0);
	if (--p->count == 0)
	{
		fc_pins_forget(p);
		drop_shared(entry);
	}
}

/*
 * The cached plain row for the stored row at off of a pinned entry, or
 * NULL unless the stored row is exactly the one that was authenticated
 * (same length and fixed trailer, tag included).
 */
const FcCacheRow *
fc_tam_cache_probe(int entry, OffsetNumber off, HeapTuple stored)
{
	uint16		p;
	const FcCacheRow *row;

	if (off > MaxHeapTuplesPerPage)
		return NULL;
	p = ENTRY_POS(entry)[off];
	if (p == 0)
		return NULL;
	pg_read_barrier();
	row = (const FcCacheRow *) (ENTRY_BLOCK(entry) + p);
	if (row->stored_len != stored->t_len ||
		stored->t_len < FC_TAM_TRAILER_FIXED ||
		memcmp(row->trailer, (char *) stored->t_data + stored->t_len - FC_TAM_TRAILER_FIXED,
			   FC_TAM_TRAILER_FIXED) != 0)
		return NULL;
	return row;
}

/*
 * Start loading the cached row at off of a pinned entry, if there is one:
 * a scan reads it next.  A hint only: nothing is checked or returned.
 */
void
fc_tam_cache_prefetch(int entry, OffsetNumber off)
{
	uint16		p;

	if (off > MaxHeapTuplesPerPage)
		return;
	p = ENTRY_POS(entry)[off];
	if (p != 0)
	{
		const char *row = ENTRY_BLOCK(entry) + p;

		FC_PREFETCH(row);
		FC_PREFETCH(row + PG_CACHE_LINE_SIZE);
	}
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
	FcPinCount *mine = fc_pins_get(entry, false);
	LWLock	   *lock = partition_lock(get_hash_value(cache_hash, &e->key));
	bool		done = false;

	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (mine != NULL && mine->count == 1 && pg_atomic_read_u32(&e->refcount) == 1)
	{
		memset((void *) ENTRY_POS(entry), 0, POS_BYTES);
		e->used = FIRST_ROW;
		done = true;
	}
	LWLockRelease(lock);
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
	row = (FcCacheRow *) (ENTRY_BLOCK(entry) + p);
	row->stored_len = stored->t_len;
	row->plain_len = plain->t_len;
	memcpy(row->trailer, (char *) stored->t_data + stored->t_len - FC_TAM_TRAILER_FIXED,
		   FC_TAM_TRAILER_FIXED);
	memcpy(FC_CACHE_ROW_DATA(row), plain->t_data, plain->t_len);
	pg_write_barrier();
	ENTRY_POS(entry)[off] = (uint16) p;
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
		/* without a lock: a snapshot that may be off by entries changing now */
		for (int i = 0; i < cache->nentries; i++)
			used += cache->entries[i].valid ? 1 : 0;
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
