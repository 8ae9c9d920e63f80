/*-------------------------------------------------------------------------
 *
 * prepared.h
 *	  Key changes of prepared transactions (prepared.c).
 *
 * src/keys/prepared.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_PREPARED_H
#define FIELDCRYPT_PREPARED_H

#include "keys/keystate.h"

#define FC_PREPARED_DIR		"pg_fieldcrypt/prepared"

/* setting (guc.c registers it) */
extern bool fc_test_prepared_skip_apply;

extern void fc_prepared_save(Oid dboid, const FcDbKeys *entry);
extern void fc_prepared_saved_done(bool keep);
extern int	fc_prepared_recover(void);
extern void fc_prepared_recover_or_warn(void);
extern int	fc_prepared_count(void);
extern void fc_prepared_register_worker(void);
extern void fc_prepared_redo(TransactionId xid, const uint8 *file, size_t len);

#endif
