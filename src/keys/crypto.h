/*-------------------------------------------------------------------------
 *
 * crypto.h
 *	  Cryptographic primitives used by fieldcrypt (AES-256-GCM through
 *	  OpenSSL or, for short messages, Nettle; PBKDF2, HKDF, HMAC).
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

typedef struct FcCipher FcCipher;	/* opaque, crypto.c */

/*
 * Messages (AAD + text) up to this many bytes go to Nettle when it is
 * enabled.  Measured with a reused context, 40 bytes of AAD, on an AMD EPYC
 * (AES-NI, PCLMUL), OpenSSL 3.0.19 vs Nettle 3.8.1, sealing: 32 bytes 178
 * vs 76 ns, 100: 239 vs 130, 256: 242 vs 195, 384: 247 vs 256, 512: 282
 * vs 312, 1024: 447 vs 747 (docs/performance.md).
 */
#define FC_NETTLE_MAX_BYTES	384

/* fieldcrypt.crypto_library */
typedef enum FcCryptoLibrary
{
	FC_CRYPTO_AUTO = 0,			/* Nettle for short messages unless FIPS */
	FC_CRYPTO_OPENSSL = 1		/* OpenSSL only */
} FcCryptoLibrary;

/* Which library runs a context's messages (fc_cipher_new_using). */
typedef enum FcGcmLib
{
	FC_GCM_OPENSSL = 0,
	FC_GCM_NETTLE = 1,
	FC_GCM_NLIBS = 2,
	FC_GCM_AUTO = 3				/* by message size */
} FcGcmLib;

/* Messages this process sealed and opened with one library. */
typedef struct FcGcmUsage
{
	uint64_t	seals;
	uint64_t	opens;
	uint64_t	bytes;			/* AAD + text */
} FcGcmUsage;

extern int	fc_crypto_library;
extern FcGcmUsage fc_gcm_usage[FC_GCM_NLIBS];	/* indexed by FcGcmLib */

extern bool fc_random_bytes(uint8_t *buf, size_t len);

extern bool fc_gcm_nettle_enabled(void);
extern FcCipher *fc_cipher_new(const uint8_t *key, bool encrypt);
extern FcCipher *fc_cipher_new_using(const uint8_t *key, bool encrypt, FcGcmLib lib);
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
