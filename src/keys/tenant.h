/*-------------------------------------------------------------------------
 *
 * tenant.h
 *	  The tenant key: who holds the key that seals the keyring (managed
 *	  cluster key, a generated key, a PKCS#12 key pair or an HSM key).
 *
 * src/keys/tenant.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TENANT_H
#define FIELDCRYPT_TENANT_H

#include "keys/keystate.h"
#include "keys/rsakey.h"

#define FC_TENANT_MAGIC		"FCKT"

typedef enum FcTenantMode
{
	FC_TENANT_DEFAULT = 0,		/* keyring sealed under the cluster key itself */
	FC_TENANT_GENERATED = 1,	/* random KEK wrapped under the cluster key */
	FC_TENANT_PFX = 2,			/* random KEK wrapped under an uploaded RSA key */
	FC_TENANT_HSM = 3			/* random KEK wrapped under an RSA key in an HSM */
} FcTenantMode;

/* What fieldcrypt.tenant_key_status shows; nothing secret. */
typedef struct FcTenantStatus
{
	int			mode;			/* FcTenantMode */
	char		key_id[2 * FC_FINGERPRINT_LEN + 1];
	int			key_bits;		/* RSA modulus size, 0 otherwise */
	int			oaep_hash;		/* FC_OAEP_SHA256 or FC_OAEP_SHA1 */
	TimestampTz created_at;		/* 0 = unknown */
	TimestampTz installed_at;	/* 0 = unknown */
	char		module[MAXPGPATH];
	char		token[64];
	char		label[256];
} FcTenantStatus;

/* for keystore.c */
extern void fc_tenant_request(void);
extern void fc_tenant_shmem_init(void);
extern void fc_tenant_startup(const uint8 *cluster_kek);
extern const uint8 *fc_tenant_managed_kek(void);
extern FcRingState fc_tenant_unseal(const uint8 *image, size_t len, FcDbKeys *dbs,
									int max_dbs, int *ndbs, const char *what,
									char *why, size_t whylen);
extern FcRingState fc_tenant_open_image(const uint8 *kek, const uint8 *p, size_t len,
										FcDbKeys *dbs, int max_dbs, int *ndbs,
										const char *what, char *why, size_t whylen);
extern FcRingState fc_tenant_read_keyring(const uint8 *kek, FcDbKeys *dbs, int max_dbs,
										  char *why, size_t whylen);
extern void fc_tenant_adopt_pending(const uint8 *kek, int max_dbs);
extern void fc_tenant_adopt_opened(void);
extern uint8 *fc_tenant_seal_image(const FcDbKeys *dbs, int n, size_t *len);

/* changes, for tenantapi.c; each returns the new key id */
extern char *fc_tenant_install_pfx(FcPkey *key, time_t not_before);
extern FcPkey *fc_tenant_hsm_key(const char *module, const char *token, const char *label);
extern char *fc_tenant_install_hsm(const char *module, const char *token, const char *label);
extern char *fc_tenant_install_generated(void);
extern char *fc_tenant_install_default(void);
extern void fc_tenant_status(FcTenantStatus *st);

#endif
