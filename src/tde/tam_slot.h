/*-------------------------------------------------------------------------
 *
 * tam_slot.h
 *	  The lazy slot of encrypted_heap: rows decrypted on first access.
 *
 * src/tde/tam_slot.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TAM_SLOT_H
#define FIELDCRYPT_TAM_SLOT_H

#include "executor/tuptable.h"
#include "utils/relcache.h"

extern PGDLLIMPORT const TupleTableSlotOps FcTTSOpsLazy;

#define FC_IS_LAZY_SLOT(slot)	((slot)->tts_ops == &FcTTSOpsLazy)

extern void fc_slot_store_raw(TupleTableSlot *slot, Relation rel, TupleTableSlot *raw,
							  bool usecache);
extern HeapTupleHeader fc_slot_header(TupleTableSlot *slot);
extern HeapTuple fc_slot_owned_tuple(TupleTableSlot *slot);

#endif
