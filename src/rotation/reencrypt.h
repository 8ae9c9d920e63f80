/*-------------------------------------------------------------------------
 *
 * reencrypt.h
 *	  Online re-encryption of encrypted column values after a key change,
 *	  and destruction of the old key generations.
 *
 * src/rotation/reencrypt.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_REENCRYPT_H
#define FIELDCRYPT_REENCRYPT_H

#include "keys/keystore.h"

/* Default of fieldcrypt.reencrypt_rows_per_second (see README, Performance). */
#define FC_REENCRYPT_DEFAULT_RATE	20000

extern void fc_reencrypt_request(void);
extern void fc_reencrypt_startup(void);
extern void fc_reencrypt_register_launcher(void);
extern void fc_reencrypt_wake(void);
extern void fc_reencrypt_check_tde_idle(const FcTdeKeys *tde);
extern void fc_reencrypt_check_idle(const FcDbKeys *cur);
extern void fc_reencrypt_stop(Oid dboid);

#endif
