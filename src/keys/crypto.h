/*-------------------------------------------------------------------------
 *
 * crypto.h
 *	  OpenSSL primitives used by fieldcrypt (AES-256-GCM, PBKDF2, HKDF, HMAC).
 *
 * src/keys/crypto.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_CRYPTO_H
#define FIELDCRYPT_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FC_KEY_LEN		32		/* AES-256 */
#define FC_NONCE_LEN	12		/* GCM 96-bit IV */
#define FC_TAG_LEN		16		/* GCM 128-bit tag */
#define FC_SALT_LEN		16
#define FC_KCV_LEN		16

typedef struct evp_cipher_ctx_st FcCipher;	/* opaque EVP_CIPHER_CTX */

extern bool fc_random_bytes(uint8_t *buf, size_t len);

extern FcCipher *fc_cipher_new(const uint8_t *key, bool encrypt);
extern void fc_cipher_free(FcCipher *ctx);
extern bool fc_gcm_seal(FcCipher *ctx, const uint8_t *nonce,
						const uint8_t *aad, size_t aadlen,
						const uint8_t *in, size_t len,
						uint8_t *out, uint8_t *tag);
extern bool fc_gcm_open(FcCipher *ctx, const uint8_t *nonce,
						const uint8_t *aad, size_t aadlen,
						const uint8_t *in, size_t len,
						uint8_t *out, const uint8_t *tag);

extern bool fc_pbkdf2_sha256(const char *pass, size_t passlen,
							 const uint8_t *salt, size_t saltlen,
							 uint32_t iterations, uint8_t *out, size_t outlen);
extern bool fc_hkdf_sha256(const uint8_t *key, size_t keylen,
						   const uint8_t *salt, size_t saltlen,
						   const char *info, uint8_t *out, size_t outlen);
extern bool fc_hmac_sha256(const uint8_t *key, size_t keylen,
						   const uint8_t *msg, size_t msglen, uint8_t *out);
/* HMAC-SHA-256 under a key prepared once (keyed hash index opclasses). */
typedef struct FcMac FcMac;		/* opaque: prepared SHA-256 states */
extern FcMac *fc_mac_new(const uint8_t *key, size_t keylen);
extern bool fc_mac32(FcMac *mac, const uint8_t *msg, size_t len, uint32_t *out);
extern void fc_mac_free(FcMac *mac);
extern bool fc_equal_ct(const void *a, const void *b, size_t len);
extern const char *fc_crypto_last_error(void);

#endif
