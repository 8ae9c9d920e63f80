/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  The tenant key layer: which key seals the keyring.
 *
 *	  By default (managed mode) the keyring is sealed directly under the
 *	  cluster key of fieldcrypt.key_provider, exactly as keyring.c writes
 *	  it ("FCKR").  In the other modes it is sealed under a random AES-256
 *	  key-encryption key (the "data KEK"), and a tenant header in front of
 *	  it says how that data KEK is wrapped:
 *
 *		"FCKT" | format u32 | body length u32 | body | HMAC-SHA256 | FCKR image
 *
 *		body: mode u32 | key bits u32 | OAEP hash u32 | created_at i64 |
 *			  installed_at i64 |
 *			  key id[32] | wrapped KEK | sealed private key |
 *			  module path | token label | key label	(each u32 length + bytes)
 *
 *	  generated: the data KEK sealed with AES-256-GCM under a key derived
 *	  (HKDF) from the cluster key.  pfx: the data KEK wrapped with
 *	  RSA-OAEP-SHA256 under the uploaded public key, and the private key
 *	  (DER) sealed with AES-256-GCM under another key derived from the
 *	  cluster key, so the server restarts unattended.  hsm: the data KEK
 *	  wrapped under the HSM's public key; only the HSM can unwrap it
 *	  (pkcs11.c).  The HMAC, keyed with the data KEK, authenticates the
 *	  header.
 *
 *	  Header and sealed keyring are one file, replaced whole with
 *	  durable_rename() and WAL-logged as one image: a crash at any point
 *	  leaves the old or the new sealing, each with its own header, and
 *	  standbys replay tenant key changes like any key change.  A change of
 *	  tenant key re-seals the keyring (one entry per database) and never
 *	  touches encrypted data.
 *
 *	  Locking: TenantShared (cluster key and current header) is protected
 *	  by fc_shared->lock like the rest of the key store; fc_shared->kek is
 *	  the data KEK (the cluster key itself in managed mode).
 *
 *	  Every process also remembers the last header it unwrapped and its
 *	  data KEK (a secure region), so that replaying key changes under an
 *	  unchanged tenant key, or a crash reinitialization of the postmaster,
 *	  needs neither the HSM nor an RSA operation.
 *
 * src/keys/tenant.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "keys/keyring.h"
#include "keys/pkcs11.h"
#include "keys/tenant.h"
#include "keys/tenant_header.h"
#include "keys/wal.h"



typedef struct TenantShared
{
	uint8		cluster_kek[FC_KEY_LEN];	/* from fieldcrypt.key_provider */
	int32		hdrlen;			/* 0: managed default, plain keyring */
	uint8		hdr[TENANT_MAX_HDR];
} TenantShared;

/* Process-local: the last header unwrapped and its data KEK. */
typedef struct TenantMemo
{
	bool		valid;
	bool		current;		/* the last image unsealed had this header */
	int32		hdrlen;
	uint8		hdr[TENANT_MAX_HDR];
	uint8		kek[FC_KEY_LEN];
} TenantMemo;


static TenantShared *tenant = NULL;
static TenantMemo *memo = NULL;

static Size tenant_size(void);
static void write_locked(const uint8 *hdr, size_t hdrlen, const uint8 *kek,
						 FcDbKeys *copy, int n);
static void copy_cluster_kek(uint8 *out);
static void new_kek(uint8 *kek);
static void wrap_rsa(TenantInfo *ti, FcPkey *pub, uint8 *kek);
static void hsm_wrap_checked(TenantInfo *ti, FcPkey *pub, uint8 *kek);
static char *install(const TenantInfo *ti, const uint8 *kek);

/* Bytes of shared memory, with slack for page alignment. */
static Size
tenant_size(void)
{
	return add_size(TYPEALIGN(fc_shmem_page_size(), sizeof(TenantShared)), fc_shmem_page_size());
}

/* From the shmem_request_hook (via keystore.c). */
void
fc_tenant_request(void)
{
	RequestAddinShmemSpace(tenant_size());
}

/* From the shmem_startup_hook (via keystore.c), holding AddinShmemInitLock. */
void
fc_tenant_shmem_init(void)
{
	bool		found;
	char	   *raw = ShmemInitStruct("fieldcrypt tenant key", tenant_size(), &found);

	tenant = (TenantShared *) TYPEALIGN(fc_shmem_page_size(), raw);
	if (!found)
	{
		memset(tenant, 0, sizeof(TenantShared));
		fc_protect_region(tenant, TYPEALIGN(fc_shmem_page_size(), sizeof(TenantShared)),
						  "the tenant key store");
	}
	if (memo == NULL)
		fc_secure_region_alloc((void **) &memo, sizeof(TenantMemo));
}

/* At start, once the key provider gave the cluster key. */
void
fc_tenant_startup(const uint8 *cluster_kek)
{
	memcpy(tenant->cluster_kek, cluster_kek, FC_KEY_LEN);
	tenant->hdrlen = 0;
}

/* The cluster key of fieldcrypt.key_provider (seals plain keyrings). */
const uint8 *
fc_tenant_managed_kek(void)
{
	return tenant->cluster_kek;
}


/*
 * fc_tenant_open_image for an image with a tenant header: recover
 * the data KEK (remembered, or unwrapped), check the header, unseal the
 * keyring behind it.  On success the header is remembered as the one of
 * the image opened last (fc_tenant_adopt_opened).
 */
FcRingState
fc_tenant_unseal(const uint8 *p, size_t len, FcDbKeys *dbs, int max_dbs, int *ndbs,
				 const char *what, char *why, size_t whylen)
{
	TenantInfo	ti;
	uint8		kek[FC_KEY_LEN];
	uint8		mac[TENANT_MAC_LEN];
	char		reason[256];
	FcRingState st;

	*ndbs = 0;
	memo->current = false;
	if (!fc_tenant_parse_header(p, len, &ti) ||
		(len - ti.hdrlen >= 4 && memcmp(p + ti.hdrlen, FC_TENANT_MAGIC, 4) == 0))
	{
		snprintf(why, whylen, "%s has a malformed tenant key header", what);
		return FC_RING_UNREADABLE;
	}
	if (memo->valid && memo->hdrlen == (int32) ti.hdrlen &&
		memcmp(memo->hdr, p, ti.hdrlen) == 0)
		memcpy(kek, memo->kek, FC_KEY_LEN);
	else if (!fc_tenant_unwrap_kek(&ti, tenant->cluster_kek, kek, reason, sizeof(reason)))
	{
		snprintf(why, whylen, "%s is sealed under a tenant key this server cannot use: %s",
				 what, reason);
		return FC_RING_UNREADABLE;
	}
	if (!fc_hmac_sha256(kek, FC_KEY_LEN, p, ti.hdrlen - TENANT_MAC_LEN, mac) ||
		!fc_equal_ct(mac, p + ti.hdrlen - TENANT_MAC_LEN, TENANT_MAC_LEN))
	{
		explicit_bzero(kek, sizeof(kek));
		snprintf(why, whylen, "the tenant key header of %s could not be authenticated", what);
		return FC_RING_UNREADABLE;
	}
	st = fc_keyring_unseal(kek, p + ti.hdrlen, len - ti.hdrlen, dbs, max_dbs, ndbs,
						   what, why, whylen);
	if (st == FC_RING_OK)
	{
		memo->valid = true;
		memo->current = true;
		memo->hdrlen = ti.hdrlen;
		memcpy(memo->hdr, p, ti.hdrlen);
		memcpy(memo->kek, kek, FC_KEY_LEN);
	}
	explicit_bzero(kek, sizeof(kek));
	return st;
}

/*
 * The keyring image unsealed last is now the keyring (at start, or after
 * replaying it): make its tenant header and data KEK current.  Caller holds
 * fc_shared->lock exclusively, or runs alone at start.
 */
void
fc_tenant_adopt_opened(void)
{
	if (memo->current)
	{
		memcpy(fc_shared->kek, memo->kek, FC_KEY_LEN);
		tenant->hdrlen = memo->hdrlen;
		memcpy(tenant->hdr, memo->hdr, memo->hdrlen);
	}
	else
	{
		memcpy(fc_shared->kek, tenant->cluster_kek, FC_KEY_LEN);
		tenant->hdrlen = 0;
	}
	memo->current = false;
}

/*
 * Seal dbs[0..n) under the current data KEK, behind the current tenant
 * header if any.  Caller holds fc_shared->lock exclusively.
 */
uint8 *
fc_tenant_seal_image(const FcDbKeys *dbs, int n, size_t *len)
{
	size_t		ilen;
	uint8	   *inner = fc_keyring_seal(fc_shared->kek, dbs, n, &ilen);
	uint8	   *out;

	if (tenant->hdrlen == 0)
	{
		*len = ilen;
		return inner;
	}
	out = palloc(tenant->hdrlen + ilen);
	memcpy(out, tenant->hdr, tenant->hdrlen);
	memcpy(out + tenant->hdrlen, inner, ilen);
	pfree(inner);
	*len = tenant->hdrlen + ilen;
	return out;
}

/*
 * Seal copy[0..n) under kek behind hdr, replace the keyring file and
 * WAL-log the image.  Caller holds fc_shared->lock exclusively; on ERROR it
 * is released and copy zeroed, the keyring file unchanged.
 */
static void
write_locked(const uint8 *hdr, size_t hdrlen, const uint8 *kek, FcDbKeys *copy, int n)
{
	PG_TRY();
	{
		size_t		ilen;
		uint8	   *inner = fc_keyring_seal(kek, copy, n, &ilen);
		uint8	   *image = palloc(hdrlen + ilen);

		if (hdrlen > 0)
			memcpy(image, hdr, hdrlen);
		memcpy(image + hdrlen, inner, ilen);
		fc_keyring_write_image(FC_KEYRING_FILE, image, hdrlen + ilen);
		fc_wal_log_keyring(image, hdrlen + ilen);
		pfree(image);
		pfree(inner);
	}
	PG_CATCH();
	{
		explicit_bzero(copy, sizeof(FcDbKeys) * fc_shared->max_dbs);
		if (LWLockHeldByMe(fc_shared->lock))
			LWLockRelease(fc_shared->lock);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Re-seal the keyring under kek behind the header of ti (ti == NULL: the
 * managed default, under the cluster key), write it in one durable rename,
 * WAL-log it, and make it current.  Encrypted data is not touched.  Returns
 * the key id in hex.
 */
static char *
install(const TenantInfo *ti, const uint8 *kek)
{
	FcDbKeys   *copy;
	int			n = 0;
	uint8	   *hdr = NULL;
	size_t		hdrlen = 0;
	char	   *id = palloc(2 * FC_FINGERPRINT_LEN + 1);

	if (ti)
	{
		hdr = fc_tenant_build_header(ti, kek, &hdrlen);
		fc_hex_encode(ti->key_id, FC_FINGERPRINT_LEN, id);
	}

	LWLockAcquire(fc_shared->lock, LW_EXCLUSIVE);
	if (fc_shared->ring_state != FC_RING_OK)
	{
		LWLockRelease(fc_shared->lock);
		fc_check_ring_usable();
	}
	if (ti == NULL)
	{
		uint8		mac[32];

		kek = tenant->cluster_kek;
		if (!fc_hmac_sha256(kek, FC_KEY_LEN, (const uint8 *) INFO_KEY_ID,
							strlen(INFO_KEY_ID), mac))
			elog(ERROR, "HMAC failed");
		fc_hex_encode(mac, 16, id);
		explicit_bzero(mac, sizeof(mac));
	}
	copy = palloc(sizeof(FcDbKeys) * fc_shared->max_dbs);
	for (int i = 0; i < fc_shared->max_dbs; i++)
		if (OidIsValid(fc_shared->dbs[i].dboid))
			memcpy(&copy[n++], &fc_shared->dbs[i], sizeof(FcDbKeys));

	write_locked(hdr, hdrlen, kek, copy, n);

	memcpy(fc_shared->kek, kek, FC_KEY_LEN);
	tenant->hdrlen = hdrlen;
	if (hdrlen > 0)
	{
		memcpy(tenant->hdr, hdr, hdrlen);
		memo->valid = true;
		memo->hdrlen = hdrlen;
		memcpy(memo->hdr, hdr, hdrlen);
		memcpy(memo->kek, kek, FC_KEY_LEN);
	}
	memo->current = false;
	pg_atomic_fetch_add_u64(&fc_shared->version, 1);
	LWLockRelease(fc_shared->lock);
	explicit_bzero(copy, sizeof(FcDbKeys) * fc_shared->max_dbs);
	pfree(copy);
	return id;
}

/* A copy of the cluster key, read under the lock. */
static void
copy_cluster_kek(uint8 *out)
{
	LWLockAcquire(fc_shared->lock, LW_SHARED);
	memcpy(out, tenant->cluster_kek, FC_KEY_LEN);
	LWLockRelease(fc_shared->lock);
}

/* A fresh random data KEK, or ERROR. */
static void
new_kek(uint8 *kek)
{
	if (!fc_random_bytes(kek, FC_KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("random number generator failed: %s", fc_crypto_last_error())));
}

/*
 * Wrap a fresh data KEK under the RSA public key pub and check that
 * unwrap(wrapped) gives it back, then fill ti's common RSA fields.
 */
static void
wrap_rsa(TenantInfo *ti, FcPkey *pub, uint8 *kek)
{
	uint8	   *wrapped = palloc(FC_RSA_MAX_BITS / 8);
	size_t		wlen;

	ti->key_bits = fc_pkey_bits(pub);
	if (!fc_pkey_fingerprint(pub, ti->key_id))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the fingerprint of the tenant key")));
	new_kek(kek);
	if (!fc_rsa_oaep_wrap(pub, ti->oaep_hash, kek, FC_KEY_LEN, wrapped, FC_RSA_MAX_BITS / 8, &wlen))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not wrap the key-encryption key with RSA-OAEP: %s",
						fc_crypto_last_error())));
	ti->wrapped = wrapped;
	ti->wrapped_len = wlen;
}

/* Switch to an uploaded RSA key pair (checked by the caller). */
char *
fc_tenant_install_pfx(FcPkey *key, time_t not_before)
{
	TenantInfo	ti = {0};
	uint8		kek[FC_KEY_LEN];
	uint8		check[FC_KEY_LEN];
	uint8		cluster_kek[FC_KEY_LEN];
	uint8	   *der;
	size_t		derlen,
				n = 0,
				plen;
	char	   *id;

	ti.mode = FC_TENANT_PFX;
	ti.oaep_hash = FC_OAEP_SHA256;
	ti.created_at = time_t_to_timestamptz(not_before);
	ti.installed_at = GetCurrentTimestamp();
	wrap_rsa(&ti, key, kek);
	if (!fc_rsa_oaep_unwrap(key, ti.oaep_hash, ti.wrapped, ti.wrapped_len, check, sizeof(check), &n) ||
		n != FC_KEY_LEN || memcmp(check, kek, FC_KEY_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the private key of the PKCS#12 file cannot unwrap what its public key wraps")));
	explicit_bzero(check, sizeof(check));
	der = fc_pkey_private_der(key, &derlen);
	if (der == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encode the private key")));
	copy_cluster_kek(cluster_kek);
	ti.priv = fc_tenant_seal_under(cluster_kek, INFO_PRIVATE, ti.key_id, der, derlen, &plen);
	ti.priv_len = plen;
	explicit_bzero(der, derlen);
	explicit_bzero(cluster_kek, sizeof(cluster_kek));
	if (ti.priv == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not seal the private key: %s", fc_crypto_last_error())));
	id = install(&ti, kek);
	explicit_bzero(kek, sizeof(kek));
	return id;
}

/*
 * Wrap a fresh data KEK under the HSM's public key and have the HSM unwrap
 * it, with OAEP-SHA256, or OAEP-SHA1 if the module refuses SHA-256 (SoftHSM
 * 2.6).  ERRORs unless the HSM gives the same key back.
 */
static void
hsm_wrap_checked(TenantInfo *ti, FcPkey *pub, uint8 *kek)
{
	uint8		check[FC_KEY_LEN];
	char		why[512];
	size_t		n = 0;
	bool		unsupported = false;
	bool		ok;

	ti->oaep_hash = FC_OAEP_SHA256;
	wrap_rsa(ti, pub, kek);
	ok = fc_hsm_unwrap(ti->module, ti->token, ti->label, ti->oaep_hash, ti->wrapped,
					   ti->wrapped_len, check, sizeof(check), &n, &unsupported,
					   why, sizeof(why));
	if (!ok && unsupported)
	{
		ereport(NOTICE,
				(errmsg("the HSM does not support RSA-OAEP with SHA-256, using SHA-1")));
		ti->oaep_hash = FC_OAEP_SHA1;
		wrap_rsa(ti, pub, kek);
		ok = fc_hsm_unwrap(ti->module, ti->token, ti->label, ti->oaep_hash, ti->wrapped,
						   ti->wrapped_len, check, sizeof(check), &n, &unsupported,
						   why, sizeof(why));
	}
	if (!ok || n != FC_KEY_LEN || memcmp(check, kek, FC_KEY_LEN) != 0)
	{
		explicit_bzero(kek, FC_KEY_LEN);
		explicit_bzero(check, sizeof(check));
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("the HSM key could not unwrap a test key-encryption key"),
				 errdetail("%s.", ok ? "It unwrapped to a different key" : fc_sentence(why))));
	}
	explicit_bzero(check, sizeof(check));
}

/*
 * The public key of the HSM key label in token of module, checked (names
 * not too long, key found, RSA of an allowed size), or ERROR.  A key change
 * checks it before anything changes (tenantapi.c), then installs it.
 */
FcPkey *
fc_tenant_hsm_key(const char *module, const char *token, const char *label)
{
	TenantInfo	ti;
	FcPkey	   *pub;
	char		why[512];

	if (strlen(module) >= sizeof(ti.module) || strlen(token) > 32 ||
		strlen(label) >= sizeof(ti.label))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("module path, token label or key label is too long")));
	if (!fc_hsm_public_key(module, token, label, &pub, why, sizeof(why)))
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not use the HSM key"),
				 errdetail("%s.", fc_sentence(why))));
	if (fc_pkey_bits(pub) < FC_RSA_MIN_BITS || fc_pkey_bits(pub) > FC_RSA_MAX_BITS)
	{
		int			bits = fc_pkey_bits(pub);

		fc_pkey_free(pub);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the HSM key has %d bits", bits),
				 errdetail("A tenant key must be an RSA key of %d to %d bits.",
						   FC_RSA_MIN_BITS, FC_RSA_MAX_BITS)));
	}
	return pub;
}

/* Switch to an RSA key pair held in an HSM; it must unwrap what we wrap. */
char *
fc_tenant_install_hsm(const char *module, const char *token, const char *label)
{
	TenantInfo	ti = {0};
	uint8		kek[FC_KEY_LEN];
	FcPkey	   *pub = fc_tenant_hsm_key(module, token, label);
	char	   *id;

	strlcpy(ti.module, module, sizeof(ti.module));
	strlcpy(ti.token, token, sizeof(ti.token));
	strlcpy(ti.label, label, sizeof(ti.label));
	ti.mode = FC_TENANT_HSM;
	ti.installed_at = GetCurrentTimestamp();
	PG_TRY();
	{
		hsm_wrap_checked(&ti, pub, kek);
	}
	PG_FINALLY();
	{
		fc_pkey_free(pub);
	}
	PG_END_TRY();
	id = install(&ti, kek);
	explicit_bzero(kek, sizeof(kek));
	return id;
}

/* Switch to a new random key, wrapped under the cluster key. */
char *
fc_tenant_install_generated(void)
{
	TenantInfo	ti = {0};
	uint8		kek[FC_KEY_LEN];
	uint8		cluster_kek[FC_KEY_LEN];
	size_t		wlen;
	char	   *id;

	ti.mode = FC_TENANT_GENERATED;
	ti.installed_at = ti.created_at = GetCurrentTimestamp();
	if (!fc_random_bytes(ti.key_id, 16))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("random number generator failed: %s", fc_crypto_last_error())));
	new_kek(kek);
	copy_cluster_kek(cluster_kek);
	ti.wrapped = fc_tenant_seal_under(cluster_kek, INFO_GENERATED, ti.key_id, kek, FC_KEY_LEN, &wlen);
	ti.wrapped_len = wlen;
	explicit_bzero(cluster_kek, sizeof(cluster_kek));
	if (ti.wrapped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not wrap the new key: %s", fc_crypto_last_error())));
	id = install(&ti, kek);
	explicit_bzero(kek, sizeof(kek));
	/* generated key ids are 16 random bytes */
	id[32] = '\0';
	return id;
}

/* Back to the managed default: the keyring sealed under the cluster key. */
char *
fc_tenant_install_default(void)
{
	return install(NULL, NULL);
}

/* What the view shows. */
void
fc_tenant_status(FcTenantStatus *st)
{
	TenantInfo	ti;
	bool		have = false;

	memset(st, 0, sizeof(*st));
	LWLockAcquire(fc_shared->lock, LW_SHARED);
	if (fc_shared->ring_state == FC_RING_OK && tenant->hdrlen > 0)
		have = fc_tenant_parse_header(tenant->hdr, tenant->hdrlen, &ti);
	if (!have && fc_shared->ring_state == FC_RING_OK)
	{
		uint8		mac[32];

		if (fc_hmac_sha256(tenant->cluster_kek, FC_KEY_LEN, (const uint8 *) INFO_KEY_ID,
						   strlen(INFO_KEY_ID), mac))
			fc_hex_encode(mac, 16, st->key_id);
		explicit_bzero(mac, sizeof(mac));
	}
	LWLockRelease(fc_shared->lock);

	if (!have && fc_shared->ring_state != FC_RING_OK)
	{
		/* not loaded: what the header on disk says, for the view only */
		static uint8 buf[TENANT_MAX_HDR];
		FILE	   *f = AllocateFile(FC_KEYRING_FILE, PG_BINARY_R);
		size_t		n = 0;

		if (f)
		{
			n = fread(buf, 1, sizeof(buf), f);
			FreeFile(f);
		}
		have = fc_tenant_parse_header(buf, n, &ti);
	}
	if (!have)
	{
		st->mode = FC_TENANT_DEFAULT;
		return;
	}
	st->mode = ti.mode;
	st->key_bits = ti.key_bits;
	st->oaep_hash = ti.oaep_hash;
	st->created_at = ti.created_at;
	st->installed_at = ti.installed_at;
	fc_hex_encode(ti.key_id, ti.mode == FC_TENANT_GENERATED ? 16 : FC_FINGERPRINT_LEN, st->key_id);
	strlcpy(st->module, ti.module, sizeof(st->module));
	strlcpy(st->token, ti.token, sizeof(st->token));
	strlcpy(st->label, ti.label, sizeof(st->label));
}

/*
 * Unseal a keyring image as found in the file or in WAL: behind a tenant
 * header (fc_tenant_unseal), or plain, sealed under kek (the cluster key).
 */
FcRingState
fc_tenant_open_image(const uint8 *kek, const uint8 *p, size_t len, FcDbKeys *dbs,
					 int max_dbs, int *ndbs, const char *what, char *why, size_t whylen)
{
	if (len >= 4 && memcmp(p, FC_TENANT_MAGIC, 4) == 0)
		return fc_tenant_unseal(p, len, dbs, max_dbs, ndbs, what, why, whylen);
	if (memo)
		memo->current = false;	/* no tenant header: nothing to adopt */
	return fc_keyring_unseal(kek, p, len, dbs, max_dbs, ndbs, what, why, whylen);
}

/*
 * Read and unseal the keyring file (with or without a tenant header)
 * into dbs[].  A missing keyring is an
 * empty one.
 */
FcRingState
fc_tenant_read_keyring(const uint8 *kek, FcDbKeys *dbs, int max_dbs,
				char *why, size_t whylen)
{
	char	   *data;
	size_t		len;
	int			n;
	FcRingState st;

	if (!fc_keyring_read_file(FC_KEYRING_FILE, &data, &len))
	{
		if (errno == ENOENT)
			return FC_RING_OK;
		snprintf(why, whylen, "could not read \"%s\": %m", FC_KEYRING_FILE);
		return FC_RING_UNREADABLE;
	}
	st = fc_tenant_open_image(kek, (const uint8 *) data, len, dbs, max_dbs, &n,
						   "\"" FC_KEYRING_FILE "\"", why, whylen);
	pfree(data);
	return st;
}

/*
 * At start: a keyring image received through WAL that this server could not
 * unseal then (pg_fieldcrypt/keyring.pending) is newer than the keyring.
 * Install it if the cluster key now unseals it; otherwise keep it waiting.
 */
void
fc_tenant_adopt_pending(const uint8 *kek, int max_dbs)
{
	char	   *data;
	size_t		len;
	FcDbKeys   *tmp;
	int			n;
	char		why[256];

	if (!fc_keyring_read_file(FC_KEYRING_PENDING, &data, &len))
		return;
	tmp = palloc(sizeof(FcDbKeys) * max_dbs);
	if (fc_tenant_open_image(kek, (const uint8 *) data, len, tmp, max_dbs, &n,
						  "\"" FC_KEYRING_PENDING "\"", why, sizeof(why)) == FC_RING_OK)
	{
		if (durable_rename(FC_KEYRING_PENDING, FC_KEYRING_FILE, LOG) == 0)
			ereport(LOG,
					(errmsg("fieldcrypt: installed a key change received through WAL earlier")));
	}
	else
		ereport(WARNING,
				(errmsg("fieldcrypt: a key change received through WAL still waits for the right cluster key"),
				 errdetail("%s", why),
				 errhint("A standby needs the same cluster key as its primary (fieldcrypt.key_provider), "
						 "and access to its tenant key if that is in an HSM.")));
	explicit_bzero(tmp, sizeof(FcDbKeys) * max_dbs);
	pfree(tmp);
	pfree(data);
}
