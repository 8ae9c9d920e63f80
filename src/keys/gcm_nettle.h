/*-------------------------------------------------------------------------
 *
 * gcm_nettle.h
 *	  AES-256-GCM through GNU Nettle, for short messages (see crypto.c).
 *
 * src/keys/gcm_nettle.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_GCM_NETTLE_H
#define FIELDCRYPT_GCM_NETTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct FcNettleGcm FcNettleGcm;

extern FcNettleGcm *fc_nettle_gcm_new(const uint8_t *key);
extern void fc_nettle_gcm_free(FcNettleGcm *ctx);
extern void fc_nettle_gcm_seal(FcNettleGcm *ctx, const uint8_t *nonce,
							   const uint8_t *aad, size_t aadlen,
							   const uint8_t *in, size_t len,
							   uint8_t *out, uint8_t *tag);
extern bool fc_nettle_gcm_open(FcNettleGcm *ctx, const uint8_t *nonce,
							   const uint8_t *aad, size_t aadlen,
							   const uint8_t *in, size_t len,
							   uint8_t *out, const uint8_t *tag);

#endif
