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
#include "utils/relcache.h"

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

extern bool fc_tam_cache_usable(Relation rel);
extern int	fc_tam_cache_pin(const RelFileNode *node, BlockNumber blkno, Oid relid,
							 bool create, uint32 *epoch);
extern void fc_tam_cache_unpin(int entry, uint32 epoch);
extern uint32 fc_tam_cache_epoch(void);
extern const FcCacheRow *fc_tam_cache_probe(int entry, OffsetNumber off, HeapTuple stored);
extern void fc_tam_cache_fill(int entry, OffsetNumber off, HeapTuple stored, HeapTuple plain);
extern void fc_tam_cache_count(bool hit);

#endif
