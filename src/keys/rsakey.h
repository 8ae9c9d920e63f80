/*-------------------------------------------------------------------------
 *
 * rsakey.h
 *	  OpenSSL operations on tenant keys: PKCS#12 files, RSA-OAEP-SHA256 key
 *	  wrapping, public key fingerprints.
 *
 * src/keys/rsakey.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_RSAKEY_H
#define FIELDCRYPT_RSAKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FC_RSA_MIN_BITS		2048
#define FC_RSA_MAX_BITS		8192
#define FC_FINGERPRINT_LEN	32	/* SHA-256 */

/* hash of RSA-OAEP (and of its MGF1) */
#define FC_OAEP_SHA256		256
#define FC_OAEP_SHA1		1

typedef struct evp_pkey_st FcPkey;	/* opaque EVP_PKEY */

/* Outcome of reading a PKCS#12 file, in the order the checks run. */
typedef enum FcPfxResult
{
	FC_PFX_OK = 0,
	FC_PFX_CORRUPT,				/* not DER PKCS#12, or undecryptable content */
	FC_PFX_BAD_PASSWORD,		/* integrity MAC does not verify */
	FC_PFX_UNSUPPORTED,			/* intact, but its encryption is unavailable */
	FC_PFX_NO_PRIVATE_KEY,
	FC_PFX_NO_CERT,
	FC_PFX_NOT_RSA,
	FC_PFX_TOO_SHORT,
	FC_PFX_TOO_LONG,
	FC_PFX_MISMATCH,			/* certificate of another key */
	FC_PFX_NOT_YET_VALID,
	FC_PFX_EXPIRED
} FcPfxResult;

extern FcPfxResult fc_pfx_read(const uint8_t *der, size_t len, const char *password,
							   FcPkey **key, time_t *not_before,
							   char *keytype, size_t keytypelen);
extern uint8_t *fc_pkey_private_der(FcPkey *key, size_t *len);
extern FcPkey *fc_pkey_from_private_der(const uint8_t *der, size_t len);
extern FcPkey *fc_rsa_public_from_parts(const uint8_t *n, size_t nlen,
										const uint8_t *e, size_t elen);
extern int	fc_pkey_bits(FcPkey *key);
extern bool fc_pkey_fingerprint(FcPkey *key, uint8_t *out);
extern bool fc_rsa_oaep_wrap(FcPkey *key, int hash, const uint8_t *in, size_t inlen,
							 uint8_t *out, size_t outsize, size_t *outlen);
extern bool fc_rsa_oaep_unwrap(FcPkey *key, int hash, const uint8_t *in, size_t inlen,
							   uint8_t *out, size_t outsize, size_t *outlen);
extern void fc_pkey_free(FcPkey *key);

#endif
