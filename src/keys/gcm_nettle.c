/*-------------------------------------------------------------------------
 *
 * gcm_nettle.c
 *	  AES-256-GCM through GNU Nettle (gcm_aes256_*): the same algorithm and
 *	  the same bytes as OpenSSL's, cheaper per message for short messages.
 *	  crypto.c decides which messages come here (by size, and never when
 *	  fieldcrypt.crypto_library = openssl or OpenSSL runs in FIPS mode).
 *
 *	  A context holds the AES-256 key schedule and GCM's hash subkey table,
 *	  both key material: it lives in its own anonymous mapping, excluded
 *	  from core dumps (MADV_DONTDUMP) and locked out of swap where the
 *	  memlock limit allows, and is zeroed before it is unmapped.  Like
 *	  crypto.c, nothing here uses palloc or ereport: a NULL return is the
 *	  caller's to report.  One context serves both directions (GCM only
 *	  ever runs the block cipher forwards) and is reused for every message
 *	  under its key: the per-message state is reset by the nonce.
 *
 * src/keys/gcm_nettle.c
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <nettle/gcm.h>
#include <nettle/memops.h>

#include "keys/crypto.h"
#include "keys/gcm_nettle.h"

struct FcNettleGcm
{
	struct gcm_aes256_ctx gcm;	/* key schedule, hash table, message state */
	size_t		mapped;			/* bytes of the mapping holding this struct */
};

/* A context keyed once, in memory kept out of core dumps; NULL on failure. */
FcNettleGcm *
fc_nettle_gcm_new(const uint8_t *key)
{
	size_t		page = (size_t) sysconf(_SC_PAGESIZE);
	size_t		size = (sizeof(FcNettleGcm) + page - 1) / page * page;
	FcNettleGcm *ctx;

	ctx = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ctx == MAP_FAILED)
		return NULL;
#ifdef MADV_DONTDUMP
	if (madvise(ctx, size, MADV_DONTDUMP) != 0)
	{
		munmap(ctx, size);
		return NULL;
	}
#endif
	/* best effort, as for the backend key cache: swap is not a core file */
	(void) mlock(ctx, size);
	ctx->mapped = size;
	gcm_aes256_set_key(&ctx->gcm, key);
	return ctx;
}

/* Wipe and unmap a context. */
void
fc_nettle_gcm_free(FcNettleGcm *ctx)
{
	size_t		size;

	if (ctx == NULL)
		return;
	size = ctx->mapped;
	explicit_bzero(ctx, size);
	munmap(ctx, size);
}

/* Encrypt len bytes (in may equal out) under a 96-bit nonce; write the tag. */
void
fc_nettle_gcm_seal(FcNettleGcm *ctx, const uint8_t *nonce,
				   const uint8_t *aad, size_t aadlen,
				   const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
	gcm_aes256_set_iv(&ctx->gcm, FC_NONCE_LEN, nonce);
	if (aadlen > 0)
		gcm_aes256_update(&ctx->gcm, aadlen, aad);
	if (len > 0)
		gcm_aes256_encrypt(&ctx->gcm, len, out, in);
	gcm_aes256_digest(&ctx->gcm, FC_TAG_LEN, tag);
}

/*
 * Decrypt and verify (in may equal out); false means the input is not
 * authentic.  As with EVP, out holds unauthenticated bytes on false: the
 * caller wipes it.
 */
bool
fc_nettle_gcm_open(FcNettleGcm *ctx, const uint8_t *nonce,
				   const uint8_t *aad, size_t aadlen,
				   const uint8_t *in, size_t len, uint8_t *out, const uint8_t *tag)
{
	uint8_t		computed[FC_TAG_LEN];
	bool		ok;

	gcm_aes256_set_iv(&ctx->gcm, FC_NONCE_LEN, nonce);
	if (aadlen > 0)
		gcm_aes256_update(&ctx->gcm, aadlen, aad);
	if (len > 0)
		gcm_aes256_decrypt(&ctx->gcm, len, out, in);
	gcm_aes256_digest(&ctx->gcm, FC_TAG_LEN, computed);
	ok = memeql_sec(computed, tag, FC_TAG_LEN) != 0;
	explicit_bzero(computed, sizeof(computed));
	return ok;
}
