/*-------------------------------------------------------------------------
 *
 * tenant_header.h
 *	  The tenant key header: byte format and key wrapping (tenant_header.c).
 *
 * src/keys/tenant_header.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TENANT_HEADER_H
#define FIELDCRYPT_TENANT_HEADER_H

#include "keys/crypto.h"
#include "keys/rsakey.h"
#include "keys/tenant.h"

#define TENANT_FORMAT		1
#define TENANT_PREFIX		12	/* magic, format, body length */
#define TENANT_MAC_LEN		32
#define TENANT_MAX_HDR		16384
#define SEALED_OVERHEAD		(FC_NONCE_LEN + FC_TAG_LEN)

#define HKDF_SALT			"fieldcrypt tenant key layer"
#define INFO_GENERATED		"fieldcrypt tenant generated key"
#define INFO_PRIVATE		"fieldcrypt tenant private key"
#define INFO_KEY_ID			"fieldcrypt tenant key id"

/* A parsed tenant header; blobs point into the header bytes. */
typedef struct TenantInfo
{
	uint32		mode;
	uint32		key_bits;
	uint32		oaep_hash;		/* FC_OAEP_SHA256 or FC_OAEP_SHA1 */
	int64		created_at;
	int64		installed_at;
	uint8		key_id[FC_FINGERPRINT_LEN];
	const uint8 *wrapped;
	uint32		wrapped_len;
	const uint8 *priv;
	uint32		priv_len;
	char		module[MAXPGPATH];
	char		token[64];
	char		label[256];
	size_t		hdrlen;			/* prefix + body + MAC */
} TenantInfo;

extern bool fc_tenant_parse_header(const uint8 *p, size_t len, TenantInfo *ti);
extern uint8 *fc_tenant_build_header(const TenantInfo *ti, const uint8 *kek, size_t *len);
extern uint8 *fc_tenant_seal_under(const uint8 *cluster_kek, const char *info, const uint8 *aad,
								   const uint8 *in, size_t len, size_t *outlen);
extern bool fc_tenant_unwrap_kek(const TenantInfo *ti, const uint8 *cluster_kek, uint8 *kek,
								 char *why, size_t whylen);
extern void fc_hex_encode(const uint8 *in, size_t len, char *out);
extern char *fc_sentence(char *why);

#endif
