/*-------------------------------------------------------------------------
 *
 * tam_cache.h
 *	  The shared-memory cache of decrypted encrypted_heap rows.
 *
 * src/tde/tam_cache.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TAM_CACHE_H
#define FIELDCRYPT_TAM_CACHE_H

#include "access/htup.h"
#include "storage/block.h"
#include "storage/off.h"
#include "storage/relfilenode.h"
#include "utils/rel.h"

/* A cached row: what the stored row's trailer was, and its plaintext. */
typedef struct FcCacheRow
{
	uint16		stored_len;		/* t_len of the stored row */
	uint16		plain_len;		/* t_len of the plain row that follows */
	uint8		trailer[35];	/* FC_TAM_TRAILER_FIXED: flags gen instance counter tag */
	/* MAXALIGN'd plain HeapTupleHeader follows */
} FcCacheRow;

#define FC_CACHE_ROW_HDR	MAXALIGN(sizeof(FcCacheRow))
#define FC_CACHE_ROW_DATA(row)	((HeapTupleHeader) ((char *) (row) + FC_CACHE_ROW_HDR))

/* setting fieldcrypt.tde_cache_size (MB) */
extern int	fc_tde_cache_size_mb;

extern void fc_tam_cache_request(void);
extern void fc_tam_cache_startup(void);
extern void fc_tam_cache_init(void);

extern PGDLLIMPORT bool fc_tam_cache_on;

/* Whether rows of rel may be cached: a cache exists and rel is permanent. */
static inline bool
fc_tam_cache_usable(Relation rel)
{
	return fc_tam_cache_on && rel->rd_rel->relpersistence == RELPERSISTENCE_PERMANENT;
}
extern int	fc_tam_cache_pin(const RelFileNode *node, BlockNumber blkno, Oid relid,
							 bool create, uint32 *epoch);
extern void fc_tam_cache_unpin(int entry, uint32 epoch);
extern PGDLLIMPORT uint32 fc_tam_pin_epoch;

/* The current pin epoch: a pin taken in another one was dropped. */
static inline uint32
fc_tam_cache_epoch(void)
{
	return fc_tam_pin_epoch;
}
extern const FcCacheRow *fc_tam_cache_probe(int entry, OffsetNumber off, HeapTuple stored);
extern void fc_tam_cache_fill(int entry, OffsetNumber off, HeapTuple stored, HeapTuple plain);
extern void fc_tam_cache_count(bool hit);
extern void fc_tam_cache_prefetch(int entry, OffsetNumber off);

/* a hint to the CPU to start loading the cache line at p (never faults) */
#if defined(__GNUC__) || defined(__clang__)
#define FC_PREFETCH(p)	__builtin_prefetch((p))
#else
#define FC_PREFETCH(p)	((void) (p))
#endif

#endif
