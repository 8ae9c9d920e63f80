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

#include "keys/keystate.h"
#include "keys/policy.h"

/* settings (guc.c registers them) */
extern bool fc_auto_activate;
extern int	fc_kdf_iterations;

extern void fc_keyapi_init(void);
extern void fc_key_missing_error(void) pg_attribute_noreturn();
extern void fc_meta_forget_generations(uint32 keep_gen);

/* for the other key functions of this layer (keyport.c) */
extern void fc_derive_generation(const char *pass, uint32 gen, const uint8 *salt,
								 uint32 iterations, FcGeneration *out);
extern void fc_meta_insert(const FcGeneration *g, const char *source, TimestampTz at);
extern FcDbKeys *fc_key_change_prepare(void);
extern void fc_key_change_stage(void);

#endif
