/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  The only file that talks to OpenSSL.  EVP interfaces only, FIPS 140-2
 *	  approved algorithms only: AES-256-GCM, PBKDF2-HMAC-SHA256,
 *	  HKDF-SHA256, HMAC-SHA256 and the default DRBG.
 *
 *	  AES-256-GCM per message size: a message whose AAD and text together
 *	  are at most FC_NETTLE_MAX_BYTES goes to GNU Nettle (gcm_nettle.c),
 *	  whose fixed cost per message is well below EVP's; longer ones go to
 *	  EVP, whose cost per byte is lower.  Same algorithm, same bytes: each
 *	  reads what the other wrote.  fieldcrypt.crypto_library = openssl, or
 *	  OpenSSL in FIPS mode, keeps every message on OpenSSL.
 *
 *	  Nothing here uses fmgr, palloc or ereport: callers turn a false return
 *	  into an error of their own, so this file is usable from the postmaster
 *	  (keyring load) as well as from backends.  Cipher contexts are meant to
 *	  be created once per key and reused: re-keying an EVP context costs
 *	  more than sealing a short message.
 *
 * src/keys/crypto.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "keys/crypto.h"
#include "keys/gcm_nettle.h"

/* A cipher context: OpenSSL's, and Nettle's for messages up to nettle_max. */
struct FcCipher
{
	EVP_CIPHER_CTX *evp;		/* NULL only when every message goes to Nettle */
	FcNettleGcm *nettle;		/* NULL: OpenSSL only */
	size_t		nettle_max;		/* AAD + message bytes that go to Nettle */
};

int			fc_crypto_library = FC_CRYPTO_AUTO;	/* fieldcrypt.crypto_library */
FcGcmUsage	fc_gcm_usage[FC_GCM_NLIBS];

/* Fill buf with bytes from OpenSSL's DRBG. */
bool
fc_random_bytes(uint8_t *buf, size_t len)
{
	return RAND_bytes(buf, (int) len) == 1;
}

/*
 * Whether short messages go to Nettle in this process: not when the
 * setting says openssl, nor when OpenSSL's default properties ask for FIPS
 * (a FIPS deployment must use only its validated provider).  Decided once:
 * the setting is PGC_POSTMASTER and the FIPS mode comes from OpenSSL's
 * configuration, read once per process.
 */
bool
fc_gcm_nettle_enabled(void)
{
	static int	enabled = -1;

	if (enabled < 0)
	{
		/* the default properties come from the configuration file */
		OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
		enabled = fc_crypto_library == FC_CRYPTO_AUTO &&
			!EVP_default_properties_is_fips_enabled(NULL);
	}
	return enabled == 1;
}

/* An EVP AES-256-GCM context keyed for one direction; NULL on failure. */
static EVP_CIPHER_CTX *
evp_new(const uint8_t *key, bool encrypt)
{
	static EVP_CIPHER *gcm = NULL;
	EVP_CIPHER_CTX *ctx;
	int			ok;

	/*
	 * The cipher is fetched from the provider once per process: contexts
	 * made from an explicitly fetched cipher re-initialise (new nonce) about
	 * 25% faster than from the EVP_aes_256_gcm() compatibility object.
	 */
	if (gcm == NULL && (gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) == NULL)
		return NULL;
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		return NULL;
	if (encrypt)
		ok = EVP_EncryptInit_ex2(ctx, gcm, key, NULL, NULL);
	else
		ok = EVP_DecryptInit_ex2(ctx, gcm, key, NULL, NULL);
	if (ok != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/*
 * Create an AES-256-GCM context keyed once for encryption or decryption:
 * an EVP context, plus a Nettle one for short messages when Nettle is
 * enabled (fc_gcm_nettle_enabled).
 */
FcCipher *
fc_cipher_new(const uint8_t *key, bool encrypt)
{
	return fc_cipher_new_using(key, encrypt,
							   fc_gcm_nettle_enabled() ? FC_GCM_AUTO : FC_GCM_OPENSSL);
}

/*
 * A context for one routing: FC_GCM_AUTO (by message size), or every
 * message through one library (FC_GCM_OPENSSL, FC_GCM_NETTLE: the
 * known-answer self test, whatever the setting).
 */
FcCipher *
fc_cipher_new_using(const uint8_t *key, bool encrypt, FcGcmLib lib)
{
	FcCipher   *c = calloc(1, sizeof(FcCipher));

	if (c == NULL)
		return NULL;
	if (lib != FC_GCM_NETTLE && (c->evp = evp_new(key, encrypt)) == NULL)
	{
		free(c);
		return NULL;
	}
	if (lib != FC_GCM_OPENSSL)
	{
		if ((c->nettle = fc_nettle_gcm_new(key)) == NULL)
		{
			fc_cipher_free(c);
			return NULL;
		}
		c->nettle_max = lib == FC_GCM_NETTLE ? SIZE_MAX : FC_NETTLE_MAX_BYTES;
	}
	return c;
}

/* Free a context; OpenSSL cleanses its key schedule, gcm_nettle.c wipes its own. */
void
fc_cipher_free(FcCipher *ctx)
{
	if (ctx == NULL)
		return;
	if (ctx->evp)
		EVP_CIPHER_CTX_free(ctx->evp);
	fc_nettle_gcm_free(ctx->nettle);
	free(ctx);
}

/* Count one message of a library (fc_gcm_usage). */
static inline void
count(FcGcmLib lib, bool seal, size_t bytes)
{
	if (seal)
		fc_gcm_usage[lib].seals++;
	else
		fc_gcm_usage[lib].opens++;
	fc_gcm_usage[lib].bytes += bytes;
}

/* Encrypt len bytes with a 96-bit nonce, authenticate aad; write the tag. */
bool
fc_gcm_seal(FcCipher *ctx, const uint8_t *nonce,
			const uint8_t *aad, size_t aadlen,
			const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
	int			n;
	OSSL_PARAM	params[2];
	EVP_CIPHER_CTX *evp = ctx->evp;

	if (ctx->nettle && aadlen + len <= ctx->nettle_max)
	{
		count(FC_GCM_NETTLE, true, aadlen + len);
		fc_nettle_gcm_seal(ctx->nettle, nonce, aad, aadlen, in, len, out, tag);
		return true;
	}
	count(FC_GCM_OPENSSL, true, aadlen + len);
	if (EVP_EncryptInit_ex2(evp, NULL, NULL, nonce, NULL) != 1)
		return false;
	if (aadlen > 0 && EVP_EncryptUpdate(evp, NULL, &n, aad, (int) aadlen) != 1)
		return false;
	if (len > 0 && EVP_EncryptUpdate(evp, out, &n, in, (int) len) != 1)
		return false;
	if (EVP_EncryptFinal_ex(evp, out + len, &n) != 1)
		return false;
	/* the OSSL_PARAM interface skips ctrl's translation layer (OpenSSL 3) */
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, FC_TAG_LEN);
	params[1] = OSSL_PARAM_construct_end();
	return EVP_CIPHER_CTX_get_params(evp, params) == 1;
}

/* Decrypt and verify; false means the input is not authentic. */
bool
fc_gcm_open(FcCipher *ctx, const uint8_t *nonce,
			const uint8_t *aad, size_t aadlen,
			const uint8_t *in, size_t len, uint8_t *out, const uint8_t *tag)
{
	int			n;
	OSSL_PARAM	params[2];
	EVP_CIPHER_CTX *evp = ctx->evp;

	if (ctx->nettle && aadlen + len <= ctx->nettle_max)
	{
		count(FC_GCM_NETTLE, false, aadlen + len);
		return fc_nettle_gcm_open(ctx->nettle, nonce, aad, aadlen, in, len, out, tag);
	}
	count(FC_GCM_OPENSSL, false, aadlen + len);
	/* the expected tag goes in with the nonce: one parameter pass, not two */
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG,
												  (void *) tag, FC_TAG_LEN);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_DecryptInit_ex2(evp, NULL, NULL, nonce, params) != 1)
		return false;
	if (aadlen > 0 && EVP_DecryptUpdate(evp, NULL, &n, aad, (int) aadlen) != 1)
		return false;
	if (len > 0 && EVP_DecryptUpdate(evp, out, &n, in, (int) len) != 1)
		return false;
	return EVP_DecryptFinal_ex(evp, out + len, &n) == 1;
}

/* Run one EVP_KDF by name with the given parameters. */
static bool
run_kdf(const char *name, OSSL_PARAM *params, uint8_t *out, size_t outlen)
{
	EVP_KDF    *kdf = EVP_KDF_fetch(NULL, name, NULL);
	EVP_KDF_CTX *kctx;
	bool		ok;

	if (kdf == NULL)
		return false;
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (kctx == NULL)
		return false;
	ok = EVP_KDF_derive(kctx, out, outlen, params) == 1;
	EVP_KDF_CTX_free(kctx);
	return ok;
}

/* PBKDF2-HMAC-SHA256 (SP 800-132) of a passphrase. */
bool
fc_pbkdf2_sha256(const char *pass, size_t passlen,
				 const uint8_t *salt, size_t saltlen,
				 uint32_t iterations, uint8_t *out, size_t outlen)
{
	OSSL_PARAM	params[5];
	unsigned int iter = iterations;

	params[0] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
												  (void *) pass, passlen);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
												  (void *) salt, saltlen);
	params[2] = OSSL_PARAM_construct_uint(OSSL_KDF_PARAM_ITER, &iter);
	params[3] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
												 (char *) "SHA256", 0);
	params[4] = OSSL_PARAM_construct_end();
	return run_kdf("PBKDF2", params, out, outlen);
}

/* HKDF-SHA256 (SP 800-56C) extract-and-expand. */
bool
fc_hkdf_sha256(const uint8_t *key, size_t keylen,
			   const uint8_t *salt, size_t saltlen,
			   const char *info, uint8_t *out, size_t outlen)
{
	OSSL_PARAM	params[5];

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
												 (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
												  (void *) key, keylen);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
												  (void *) salt, saltlen);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
												  (void *) info, strlen(info));
	params[4] = OSSL_PARAM_construct_end();
	return run_kdf("HKDF", params, out, outlen);
}

/* HMAC-SHA256 of msg; out receives 32 bytes. */
bool
fc_hmac_sha256(const uint8_t *key, size_t keylen,
			   const uint8_t *msg, size_t msglen, uint8_t *out)
{
	EVP_MAC    *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *mctx;
	OSSL_PARAM	params[2];
	size_t		outlen = 0;
	bool		ok;

	if (mac == NULL)
		return false;
	mctx = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac);
	if (mctx == NULL)
		return false;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
												 (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	ok = EVP_MAC_init(mctx, key, keylen, params) == 1 &&
		EVP_MAC_update(mctx, msg, msglen) == 1 &&
		EVP_MAC_final(mctx, out, &outlen, 32) == 1 && outlen == 32;
	EVP_MAC_CTX_free(mctx);
	return ok;
}

/*
 * HMAC-SHA-256 (RFC 2104, FIPS 198-1) under a key prepared once: the SHA-256
 * states after absorbing key XOR ipad and key XOR opad are kept, and each
 * fc_mac32 copies them (two EVP_MD_CTX_copy_ex) instead of re-keying, so a
 * short message costs two SHA-256 finalisations and no allocation: about
 * two thirds of EVP_MAC's re-initialisation.  Keys longer than a block are
 * not needed (callers pass 32 bytes) and are refused.
 */
struct FcMac
{
	EVP_MD_CTX *inner;
	EVP_MD_CTX *outer;
	EVP_MD_CTX *work;
};

#define SHA256_BLOCK	64

/* A prepared HMAC-SHA-256 key (keylen <= 64); NULL on failure. */
FcMac *
fc_mac_new(const uint8_t *key, size_t keylen)
{
	static EVP_MD *sha256 = NULL;
	uint8_t		pad[SHA256_BLOCK];
	FcMac	   *mac;
	bool		ok;

	if (keylen > SHA256_BLOCK)
		return NULL;
	if (sha256 == NULL && (sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		return NULL;
	mac = OPENSSL_zalloc(sizeof(FcMac));
	if (mac == NULL)
		return NULL;
	mac->inner = EVP_MD_CTX_new();
	mac->outer = EVP_MD_CTX_new();
	mac->work = EVP_MD_CTX_new();
	ok = mac->inner && mac->outer && mac->work;
	memset(pad, 0x36, sizeof(pad));
	for (size_t i = 0; i < keylen; i++)
		pad[i] ^= key[i];
	ok = ok && EVP_DigestInit_ex(mac->inner, sha256, NULL) == 1 &&
		EVP_DigestUpdate(mac->inner, pad, sizeof(pad)) == 1;
	memset(pad, 0x5c, sizeof(pad));
	for (size_t i = 0; i < keylen; i++)
		pad[i] ^= key[i];
	ok = ok && EVP_DigestInit_ex(mac->outer, sha256, NULL) == 1 &&
		EVP_DigestUpdate(mac->outer, pad, sizeof(pad)) == 1;
	OPENSSL_cleanse(pad, sizeof(pad));
	if (!ok)
	{
		fc_mac_free(mac);
		return NULL;
	}
	return mac;
}

/* The first 32 bits (big-endian) of HMAC-SHA-256(key of mac, msg). */
bool
fc_mac32(FcMac *mac, const uint8_t *msg, size_t len, uint32_t *out)
{
	uint8_t		md[32];
	unsigned int mdlen = 0;

	if (EVP_MD_CTX_copy_ex(mac->work, mac->inner) != 1 ||
		EVP_DigestUpdate(mac->work, msg, len) != 1 ||
		EVP_DigestFinal_ex(mac->work, md, &mdlen) != 1 || mdlen != 32 ||
		EVP_MD_CTX_copy_ex(mac->work, mac->outer) != 1 ||
		EVP_DigestUpdate(mac->work, md, 32) != 1 ||
		EVP_DigestFinal_ex(mac->work, md, &mdlen) != 1 || mdlen != 32)
		return false;
	*out = ((uint32_t) md[0] << 24) | ((uint32_t) md[1] << 16) |
		((uint32_t) md[2] << 8) | (uint32_t) md[3];
	return true;
}

/* Free a context of fc_mac_new (its key material with it); NULL is allowed. */
void
fc_mac_free(FcMac *mac)
{
	if (mac == NULL)
		return;
	EVP_MD_CTX_free(mac->inner);
	EVP_MD_CTX_free(mac->outer);
	EVP_MD_CTX_free(mac->work);
	OPENSSL_free(mac);
}

/* Constant-time comparison. */
bool
fc_equal_ct(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

/* The reason of OpenSSL's most recent failure, for log lines. */
const char *
fc_crypto_last_error(void)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		return "no OpenSSL error recorded";
	return ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unknown OpenSSL error";
}
