/*-------------------------------------------------------------------------
 *
 * keyapi.h
 *	  The key-management SQL API (keyapi.c): what other files call.
 *
 * src/keys/keyapi.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYAPI_H
#define FIELDCRYPT_KEYAPI_H

#include "keys/policy.h"

/* settings (guc.c registers them) */
extern bool fc_auto_activate;
extern int	fc_kdf_iterations;

extern void fc_keyapi_init(void);
extern void fc_meta_forget_generations(uint32 keep_gen);

#endif
