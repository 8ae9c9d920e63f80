/*-------------------------------------------------------------------------
 *
 * tam_crypt.h
 *	  Cipher contexts under the TDE keys of the current database.
 *
 * src/tde/tam_crypt.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TAM_CRYPT_H
#define FIELDCRYPT_TAM_CRYPT_H

#include "utils/relcache.h"

#include "keys/crypto.h"
#include "keys/keystore.h"

/* An AES-256-GCM context under HKDF(TDE key of gen, instance). */
typedef struct FcTdeCtx
{
	uint32		gen;
	uint8		instance[FC_INSTANCE_ID_LEN];
	FcCipher   *ctx;
} FcTdeCtx;

extern FcTdeCtx *fc_tde_encrypt_ctx(void);
extern FcTdeCtx *fc_tde_decrypt_ctx(uint32 gen, const uint8 *instance, Relation rel);
extern void fc_tde_require_active(void);
extern void fc_tde_used_generations(bool *used, bool *others_temp);

#endif
