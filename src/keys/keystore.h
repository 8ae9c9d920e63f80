/*-------------------------------------------------------------------------
 *
 * keystore.h
 *	  Key state of every database of the cluster, held in shared memory.
 *
 * src/keys/keystore.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYSTORE_H
#define FIELDCRYPT_KEYSTORE_H

#include "keys/keystate.h"


extern void fc_keystore_request(void);
extern void fc_keystore_startup(void);

extern bool fc_db_lookup(Oid dboid, FcDbKeys *out);
extern void fc_db_stage(Oid dboid, const FcDbKeys *entry);
extern void fc_db_publish(Oid dboid, const FcDbKeys *entry);
extern void fc_keyring_resync(Oid dboid);
extern bool fc_db_lookup_tde(Oid dboid, FcTdeKeys *out);
extern uint32 fc_db_tde_add_generation(Oid dboid, const uint8 *key, bool only_if_none);
extern void fc_db_tde_copy(Oid src, Oid dst);
extern int	fc_db_tde_drop_generations(Oid dboid, const bool *used, uint32 keep_from);
extern void fc_keystore_redo_image(const uint8 *image, size_t len);
extern void fc_db_remove(Oid dboid);

/* Per-backend cache of derived keys, invalidated by fc_shared->version. */
extern const FcGeneration *fc_local_generation(uint32 gen, bool current);
extern const FcTdeGeneration *fc_local_tde_generation(uint32 gen, bool current);

#endif
