/*-------------------------------------------------------------------------
 *
 * rsakey.c
 *	  OpenSSL operations on tenant keys (see tenant.c): reading a PKCS#12
 *	  file and checking what it holds, RSA-OAEP key wrapping (SHA-256 and
 *	  MGF1-SHA256; SHA-1 only for HSMs that support nothing else), DER
 *	  import and export of private keys, public keys from their modulus and
 *	  exponent, SHA-256 fingerprints of public keys.
 *
 *	  OpenSSL 3 high-level APIs only (EVP, OSSL_PARAM); no fmgr, no ereport.
 *	  Buffers holding private key material are freed with
 *	  OPENSSL_clear_free.
 *
 * src/keys/rsakey.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "keys/rsakey.h"

static bool asn1_to_time(const ASN1_TIME *t, time_t *out);
static EVP_PKEY_CTX *oaep_ctx(FcPkey *key, int hash, bool encrypt);

/* Seconds since the epoch of an ASN.1 time. */
static bool
asn1_to_time(const ASN1_TIME *t, time_t *out)
{
	struct tm	tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return false;
	*out = timegm(&tm);
	return true;
}

/*
 * Read a DER PKCS#12 file: its private key and the certificate of that
 * key.  On FC_PFX_OK *key is set (caller frees) and *not_before is the
 * certificate's start of validity; keytype names the key type found when
 * it is not RSA.
 */
FcPfxResult
fc_pfx_read(const uint8_t *der, size_t len, const char *password,
			FcPkey **key, time_t *not_before, char *keytype, size_t keytypelen)
{
	const unsigned char *p = der;
	PKCS12	   *p12;
	EVP_PKEY   *pkey = NULL;
	X509	   *cert = NULL;
	STACK_OF(X509) *ca = NULL;
	FcPfxResult res = FC_PFX_OK;
	int			bits;
	bool		mac_ok;

	*key = NULL;
	keytype[0] = '\0';
	p12 = d2i_PKCS12(NULL, &p, (long) len);
	if (p12 == NULL || p != der + len)
	{
		PKCS12_free(p12);
		ERR_clear_error();
		return FC_PFX_CORRUPT;
	}
	mac_ok = PKCS12_mac_present(p12);
	if (mac_ok &&
		!PKCS12_verify_mac(p12, password, -1) &&
		!(password[0] == '\0' && PKCS12_verify_mac(p12, NULL, 0)))
	{
		PKCS12_free(p12);
		ERR_clear_error();
		return FC_PFX_BAD_PASSWORD;
	}
	if (!PKCS12_parse(p12, password, &pkey, &cert, &ca))
	{
		/* an intact file (MAC verified) that cannot be decrypted: RC2-40 etc. */
		PKCS12_free(p12);
		ERR_clear_error();
		return mac_ok ? FC_PFX_UNSUPPORTED : FC_PFX_CORRUPT;
	}
	PKCS12_free(p12);

	if (pkey == NULL)
		res = FC_PFX_NO_PRIVATE_KEY;
	else if (cert == NULL)
		res = FC_PFX_NO_CERT;
	else if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
	{
		strlcpy(keytype, OBJ_nid2sn(EVP_PKEY_get_base_id(pkey)), keytypelen);
		res = FC_PFX_NOT_RSA;
	}
	else if ((bits = EVP_PKEY_get_bits(pkey)) < FC_RSA_MIN_BITS)
		res = FC_PFX_TOO_SHORT;
	else if (bits > FC_RSA_MAX_BITS)
		res = FC_PFX_TOO_LONG;
	else if (X509_check_private_key(cert, pkey) != 1)
		res = FC_PFX_MISMATCH;
	else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
		res = FC_PFX_NOT_YET_VALID;
	else if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
		res = FC_PFX_EXPIRED;
	else if (!asn1_to_time(X509_get0_notBefore(cert), not_before))
		res = FC_PFX_CORRUPT;

	X509_free(cert);
	sk_X509_pop_free(ca, X509_free);
	ERR_clear_error();
	if (res != FC_PFX_OK)
	{
		EVP_PKEY_free(pkey);
		return res;
	}
	*key = pkey;
	return FC_PFX_OK;
}

/* DER encoding of a private key, in palloc'd memory the caller zeroes. */
uint8_t *
fc_pkey_private_der(FcPkey *key, size_t *len)
{
	unsigned char *buf = NULL;
	int			n = i2d_PrivateKey(key, &buf);
	uint8_t    *out;

	if (n <= 0)
		return NULL;
	out = palloc(n);
	memcpy(out, buf, n);
	OPENSSL_clear_free(buf, n);
	*len = n;
	return out;
}

/* A private key from its DER encoding, or NULL. */
FcPkey *
fc_pkey_from_private_der(const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	EVP_PKEY   *pkey = d2i_AutoPrivateKey(NULL, &p, (long) len);

	ERR_clear_error();
	return pkey;
}

/* An RSA public key from its big-endian modulus and public exponent. */
FcPkey *
fc_rsa_public_from_parts(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	BIGNUM	   *bn_n = BN_bin2bn(n, (int) nlen, NULL);
	BIGNUM	   *bn_e = BN_bin2bn(e, (int) elen, NULL);
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY   *pkey = NULL;

	if (bld && bn_n && bn_e && ctx &&
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) &&
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) &&
		(params = OSSL_PARAM_BLD_to_param(bld)) != NULL &&
		EVP_PKEY_fromdata_init(ctx) == 1 &&
		EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return pkey;
}

/* Size of the key in bits. */
int
fc_pkey_bits(FcPkey *key)
{
	return EVP_PKEY_get_bits(key);
}

/* SHA-256 of the DER SubjectPublicKeyInfo of a key (openssl pkey -pubout). */
bool
fc_pkey_fingerprint(FcPkey *key, uint8_t *out)
{
	unsigned char *spki = NULL;
	int			n = i2d_PUBKEY(key, &spki);
	unsigned int outlen = 0;
	bool		ok;

	if (n <= 0)
		return false;
	ok = EVP_Digest(spki, n, out, &outlen, EVP_sha256(), NULL) == 1 &&
		outlen == FC_FINGERPRINT_LEN;
	OPENSSL_free(spki);
	return ok;
}

/* An EVP_PKEY_CTX set up for RSA-OAEP with hash and MGF1 with the same hash. */
static EVP_PKEY_CTX *
oaep_ctx(FcPkey *key, int hash, bool encrypt)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	const EVP_MD *md = hash == FC_OAEP_SHA1 ? EVP_sha1() : EVP_sha256();

	if (ctx == NULL ||
		(encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
		EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
		EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 ||
		EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1)
	{
		EVP_PKEY_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* RSA-OAEP encryption of a short secret under a public key. */
bool
fc_rsa_oaep_wrap(FcPkey *key, int hash, const uint8_t *in, size_t inlen,
				 uint8_t *out, size_t outsize, size_t *outlen)
{
	EVP_PKEY_CTX *ctx = oaep_ctx(key, hash, true);
	size_t		n = outsize;
	bool		ok;

	ok = ctx && EVP_PKEY_encrypt(ctx, out, &n, in, inlen) == 1;
	EVP_PKEY_CTX_free(ctx);
	*outlen = ok ? n : 0;
	return ok;
}

/* RSA-OAEP decryption with a private key. */
bool
fc_rsa_oaep_unwrap(FcPkey *key, int hash, const uint8_t *in, size_t inlen,
				   uint8_t *out, size_t outsize, size_t *outlen)
{
	EVP_PKEY_CTX *ctx = oaep_ctx(key, hash, false);
	size_t		n = 0;
	size_t		bufsize;
	uint8_t    *buf;
	bool		ok = false;

	/* decrypt into a buffer of the modulus size, then copy what fits */
	if (ctx && EVP_PKEY_decrypt(ctx, NULL, &n, in, inlen) == 1)
	{
		bufsize = n;
		buf = palloc(bufsize);
		if (EVP_PKEY_decrypt(ctx, buf, &n, in, inlen) == 1 && n <= outsize)
		{
			memcpy(out, buf, n);
			*outlen = n;
			ok = true;
		}
		explicit_bzero(buf, bufsize);
		pfree(buf);
	}
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

/* Free a key (NULL is fine). */
void
fc_pkey_free(FcPkey *key)
{
	EVP_PKEY_free(key);
}
