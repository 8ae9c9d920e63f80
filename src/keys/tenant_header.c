/*-------------------------------------------------------------------------
 *
 * tenant_header.c
 *	  The tenant key header's byte format (see tenant.c for the layout) and
 *	  how each tenant mode wraps the data KEK: parse, build, and unwrap.
 *	  Knows nothing of shared memory or of the keyring file.
 *
 * src/keys/tenant_header.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "keys/pkcs11.h"
#include "keys/tenant_header.h"

/* Bounded reader over a header body. */
typedef struct Reader
{
	const uint8 *p;
	size_t		left;
} Reader;

static bool read_bytes(Reader *r, void *out, size_t n);
static bool read_blob(Reader *r, const uint8 **out, uint32 *len);
static bool read_string(Reader *r, char *out, size_t outsize);
static void append_blob(StringInfo buf, const void *data, uint32 len);
static bool open_under(const uint8 *cluster_kek, const char *info, const uint8 *aad,
					   const uint8 *in, size_t len, uint8 *out);

/* Lower-case hex of len bytes into out (2 * len + 1 bytes). */
void
fc_hex_encode(const uint8 *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++)
	{
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* A reason (lower case, for log lines) as the start of a sentence. */
char *
fc_sentence(char *why)
{
	why[0] = pg_toupper((unsigned char) why[0]);
	return why;
}

/* Read n bytes; false past the end. */
static bool
read_bytes(Reader *r, void *out, size_t n)
{
	if (r->left < n)
		return false;
	memcpy(out, r->p, n);
	r->p += n;
	r->left -= n;
	return true;
}

/* A u32-length-prefixed blob, pointing into the body. */
static bool
read_blob(Reader *r, const uint8 **out, uint32 *len)
{
	if (!read_bytes(r, len, 4) || r->left < *len)
		return false;
	*out = r->p;
	r->p += *len;
	r->left -= *len;
	return true;
}

/* A u32-length-prefixed string without NUL, copied into out. */
static bool
read_string(Reader *r, char *out, size_t outsize)
{
	const uint8 *s;
	uint32		len;

	if (!read_blob(r, &s, &len) || len >= outsize || memchr(s, '\0', len) != NULL)
		return false;
	memcpy(out, s, len);
	out[len] = '\0';
	return true;
}

/* Parse the tenant header at the start of an image; false if malformed. */
bool
fc_tenant_parse_header(const uint8 *p, size_t len, TenantInfo *ti)
{
	uint32		format,
				bodylen;
	Reader		r;

	memset(ti, 0, sizeof(*ti));
	if (len < TENANT_PREFIX || memcmp(p, FC_TENANT_MAGIC, 4) != 0)
		return false;
	memcpy(&format, p + 4, 4);
	memcpy(&bodylen, p + 8, 4);
	if (format != TENANT_FORMAT || bodylen > TENANT_MAX_HDR ||
		(size_t) TENANT_PREFIX + bodylen + TENANT_MAC_LEN > len ||
		TENANT_PREFIX + bodylen + TENANT_MAC_LEN > TENANT_MAX_HDR)
		return false;
	r.p = p + TENANT_PREFIX;
	r.left = bodylen;
	if (!read_bytes(&r, &ti->mode, 4) || !read_bytes(&r, &ti->key_bits, 4) ||
		!read_bytes(&r, &ti->oaep_hash, 4) ||
		!read_bytes(&r, &ti->created_at, 8) || !read_bytes(&r, &ti->installed_at, 8) ||
		!read_bytes(&r, ti->key_id, FC_FINGERPRINT_LEN) ||
		!read_blob(&r, &ti->wrapped, &ti->wrapped_len) ||
		!read_blob(&r, &ti->priv, &ti->priv_len) ||
		!read_string(&r, ti->module, sizeof(ti->module)) ||
		!read_string(&r, ti->token, sizeof(ti->token)) ||
		!read_string(&r, ti->label, sizeof(ti->label)) ||
		r.left != 0)
		return false;
	if (ti->mode < FC_TENANT_GENERATED || ti->mode > FC_TENANT_HSM)
		return false;
	ti->hdrlen = TENANT_PREFIX + bodylen + TENANT_MAC_LEN;
	return true;
}

/* Append a u32-length-prefixed blob. */
static void
append_blob(StringInfo buf, const void *data, uint32 len)
{
	appendBinaryStringInfo(buf, (const char *) &len, 4);
	if (len > 0)
		appendBinaryStringInfo(buf, data, len);
}

/* Serialize a header, authenticated with the data KEK.  ERRORs if too large. */
uint8 *
fc_tenant_build_header(const TenantInfo *ti, const uint8 *kek, size_t *len)
{
	StringInfoData buf;
	uint32		format = TENANT_FORMAT;
	uint32		bodylen;
	uint8		mac[TENANT_MAC_LEN];

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, FC_TENANT_MAGIC, 4);
	appendBinaryStringInfo(&buf, (const char *) &format, 4);
	appendBinaryStringInfo(&buf, "\0\0\0\0", 4);
	appendBinaryStringInfo(&buf, (const char *) &ti->mode, 4);
	appendBinaryStringInfo(&buf, (const char *) &ti->key_bits, 4);
	appendBinaryStringInfo(&buf, (const char *) &ti->oaep_hash, 4);
	appendBinaryStringInfo(&buf, (const char *) &ti->created_at, 8);
	appendBinaryStringInfo(&buf, (const char *) &ti->installed_at, 8);
	appendBinaryStringInfo(&buf, (const char *) ti->key_id, FC_FINGERPRINT_LEN);
	append_blob(&buf, ti->wrapped, ti->wrapped_len);
	append_blob(&buf, ti->priv, ti->priv_len);
	append_blob(&buf, ti->module, strlen(ti->module));
	append_blob(&buf, ti->token, strlen(ti->token));
	append_blob(&buf, ti->label, strlen(ti->label));
	bodylen = buf.len - TENANT_PREFIX;
	memcpy(buf.data + 8, &bodylen, 4);
	if (buf.len + TENANT_MAC_LEN > TENANT_MAX_HDR)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("tenant key header would exceed %d bytes", TENANT_MAX_HDR)));
	if (!fc_hmac_sha256(kek, FC_KEY_LEN, (const uint8 *) buf.data, buf.len, mac))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not authenticate the tenant key header: %s",
						fc_crypto_last_error())));
	appendBinaryStringInfo(&buf, (const char *) mac, TENANT_MAC_LEN);
	*len = buf.len;
	return (uint8 *) buf.data;
}

/*
 * AES-256-GCM seal under a key derived from the cluster key (HKDF, info),
 * binding aad (a key id): nonce | tag | ciphertext, palloc'd; NULL on failure.
 */
uint8 *
fc_tenant_seal_under(const uint8 *cluster_kek, const char *info, const uint8 *aad,
		   const uint8 *in, size_t len, size_t *outlen)
{
	uint8		key[FC_KEY_LEN];
	uint8	   *out = palloc(SEALED_OVERHEAD + len);
	FcCipher   *ctx = NULL;
	bool		ok;

	ok = fc_hkdf_sha256(cluster_kek, FC_KEY_LEN, (const uint8 *) HKDF_SALT,
					   sizeof(HKDF_SALT) - 1, info, key, FC_KEY_LEN) &&
		(ctx = fc_cipher_new(key, true)) != NULL &&
		fc_random_bytes(out, FC_NONCE_LEN) &&
		fc_gcm_seal(ctx, out, aad, FC_FINGERPRINT_LEN, in, len,
					out + SEALED_OVERHEAD, out + FC_NONCE_LEN);
	fc_cipher_free(ctx);
	explicit_bzero(key, sizeof(key));
	if (!ok)
	{
		pfree(out);
		return NULL;
	}
	*outlen = SEALED_OVERHEAD + len;
	return out;
}

/* Open what seal_under sealed; out gets len - SEALED_OVERHEAD bytes. */
static bool
open_under(const uint8 *cluster_kek, const char *info, const uint8 *aad,
		   const uint8 *in, size_t len, uint8 *out)
{
	uint8		key[FC_KEY_LEN];
	FcCipher   *ctx = NULL;
	bool		ok;

	if (len < SEALED_OVERHEAD)
		return false;
	ok = fc_hkdf_sha256(cluster_kek, FC_KEY_LEN, (const uint8 *) HKDF_SALT,
					   sizeof(HKDF_SALT) - 1, info, key, FC_KEY_LEN) &&
		(ctx = fc_cipher_new(key, false)) != NULL &&
		fc_gcm_open(ctx, in, aad, FC_FINGERPRINT_LEN, in + SEALED_OVERHEAD,
					len - SEALED_OVERHEAD, out, in + FC_NONCE_LEN);
	fc_cipher_free(ctx);
	explicit_bzero(key, sizeof(key));
	return ok;
}

/* Recover the data KEK of a header; the reason in why on failure. */
bool
fc_tenant_unwrap_kek(const TenantInfo *ti, const uint8 *cluster_kek, uint8 *kek,
		   char *why, size_t whylen)
{
	size_t		n = 0;

	switch (ti->mode)
	{
		case FC_TENANT_GENERATED:
			if (ti->wrapped_len != SEALED_OVERHEAD + FC_KEY_LEN ||
				!open_under(cluster_kek, INFO_GENERATED, ti->key_id,
							ti->wrapped, ti->wrapped_len, kek))
			{
				snprintf(why, whylen, "the generated tenant key could not be unwrapped "
						 "with this server's cluster key");
				return false;
			}
			return true;
		case FC_TENANT_PFX:
			{
				uint8	   *der;
				FcPkey	   *key = NULL;
				bool		ok;

				if (ti->priv_len <= SEALED_OVERHEAD)
				{
					snprintf(why, whylen, "the tenant key header holds no private key");
					return false;
				}
				der = palloc(ti->priv_len);
				ok = open_under(cluster_kek, INFO_PRIVATE, ti->key_id, ti->priv,
								ti->priv_len, der) &&
					(key = fc_pkey_from_private_der(der, ti->priv_len - SEALED_OVERHEAD)) != NULL;
				explicit_bzero(der, ti->priv_len);
				pfree(der);
				if (!ok)
				{
					snprintf(why, whylen, "the private key of the uploaded tenant key could not "
							 "be unsealed with this server's cluster key");
					return false;
				}
				ok = fc_rsa_oaep_unwrap(key, ti->oaep_hash, ti->wrapped, ti->wrapped_len,
										kek, FC_KEY_LEN, &n) &&
					n == FC_KEY_LEN;
				fc_pkey_free(key);
				if (!ok)
					snprintf(why, whylen, "the uploaded tenant key could not unwrap the "
							 "key-encryption key");
				return ok;
			}
		case FC_TENANT_HSM:
			{
				char		reason[256];
				bool		unsupported;

				if (fc_hsm_unwrap(ti->module, ti->token, ti->label, ti->oaep_hash, ti->wrapped,
								  ti->wrapped_len, kek, FC_KEY_LEN, &n, &unsupported,
								  reason, sizeof(reason)) &&
					n == FC_KEY_LEN)
					return true;
				if (n != 0 && n != FC_KEY_LEN)
					strlcpy(reason, "the HSM returned a key of the wrong size", sizeof(reason));
				snprintf(why, whylen, "the tenant key in the HSM is not available: %s", reason);
				return false;
			}
	}
	snprintf(why, whylen, "unknown tenant key mode %u", ti->mode);
	return false;
}
