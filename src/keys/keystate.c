/*-------------------------------------------------------------------------
 *
 * keystate.c
 *	  The shared memory segment of the key store (struct FcShared: see
 *	  keystate.h for what its lock protects), memory for key material that
 *	  stays out of core dumps and swap, nonce counters and the cipher
 *	  contexts derived per server instance.  What loads and changes the
 *	  keys is keystore.c, above the tenant layer.
 *
 *	  Nonces: a 64-bit counter in shared memory, handed out to backends in
 *	  blocks, plus an instance id drawn at every shared memory
 *	  initialization.  See docs/security.md "Nonces" for why this never
 *	  repeats.
 *
 * src/keys/keystate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/pg_shmem.h"
#include "storage/shmem.h"

#include "keys/keystate.h"

#define NONCE_BLOCK		1024

FcShared   *fc_shared = NULL;
int			fc_max_databases = 64;

static uint64 nonce_next = 0;
static uint64 nonce_end = 0;

static Size keystore_size(void);

/* Bytes of shared memory we need, with slack for page alignment. */
static Size
keystore_size(void)
{
	Size		sz = add_size(offsetof(FcShared, dbs),
							  mul_size(sizeof(FcDbKeys), mul_size(2, fc_max_databases)));

	return add_size(TYPEALIGN(fc_shmem_page_size(), sz), fc_shmem_page_size());
}

/*
 * The page size of the main shared memory segment as far as madvise() is
 * concerned: the huge page size when the segment may be made of huge pages
 * (huge_pages = try or on), else the page size.  Regions of the segment
 * kept out of core dumps are aligned to it and sized in multiples of it:
 * madvise() of a huge-page mapping fails (EINVAL) on any other range.
 */
Size
fc_shmem_page_size(void)
{
	static Size size = 0;

	if (size != 0)
		return size;
	size = getpagesize();
#ifdef __linux__
	if (huge_pages != HUGE_PAGES_OFF)
	{
		Size		huge = (Size) huge_page_size * 1024;	/* huge_page_size: kB */

		if (huge == 0)
		{
			FILE	   *f = fopen("/proc/meminfo", "r");
			char		line[128];
			unsigned long kb;

			while (f != NULL && fgets(line, sizeof(line), f) != NULL)
				if (sscanf(line, "Hugepagesize: %lu kB", &kb) == 1)
				{
					huge = (Size) kb * 1024;
					break;
				}
			if (f != NULL)
				fclose(f);
		}
		if (huge > size)
			size = huge;
	}
#endif
	return size;
}

/* shmem_request_hook: the segment and its lock. */
void
fc_keystate_request(void)
{
	RequestAddinShmemSpace(keystore_size());
	RequestNamedLWLockTranche("fieldcrypt", 1);
}

/*
 * shmem_startup_hook, holding AddinShmemInitLock: attach to the segment, and
 * initialize it (no keys, ring state OK, a new instance id) if it is new.
 * Returns true if it existed already.
 */
bool
fc_keystate_attach(void)
{
	bool		found;
	char	   *raw = ShmemInitStruct("fieldcrypt keystore", keystore_size(), &found);
	Size		usable = keystore_size() - fc_shmem_page_size();

	fc_shared = (FcShared *) TYPEALIGN(fc_shmem_page_size(), raw);
	if (found)
		return true;
	memset(fc_shared, 0, usable);
	fc_shared->lock = &(GetNamedLWLockTranche("fieldcrypt"))->lock;
	fc_shared->max_dbs = fc_max_databases;
	pg_atomic_init_u64(&fc_shared->version, 1);
	pg_atomic_init_u64(&fc_shared->nonce_counter, 0);
	fc_protect_region(fc_shared, usable, "the shared key store");

	if (!fc_random_bytes(fc_shared->instance_id, FC_INSTANCE_ID_LEN))
		ereport(FATAL,
				(errmsg("fieldcrypt: random number generator failed: %s",
						fc_crypto_last_error())));
	return false;
}

/* Keep key memory out of core dumps and swap; degrade with a log line. */
void
fc_protect_region(void *ptr, Size size, const char *what)
{
#ifdef MADV_DONTDUMP
	if (madvise(ptr, size, MADV_DONTDUMP) != 0)
		ereport(LOG,
				(errmsg("fieldcrypt: could not exclude %s from core dumps: %m", what)));
#endif
	if (mlock(ptr, size) != 0)
		ereport(LOG,
				(errmsg("fieldcrypt: could not lock %s in memory: %m", what),
				 errhint("Raise the memlock limit (ulimit -l) of the server to keep keys out of swap.")));
}

/* Allocate a page-aligned region for key material outside palloc. */
void
fc_secure_region_alloc(void **ptr, Size size)
{
	void	   *p;

	size = TYPEALIGN(getpagesize(), size);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not map memory for fieldcrypt keys: %m")));
	fc_protect_region(p, size, "the backend key cache");
	*ptr = p;
}

/* Zero and unmap a region from fc_secure_region_alloc. */
void
fc_secure_region_free(void *ptr, Size size)
{
	size = TYPEALIGN(getpagesize(), size);
	explicit_bzero(ptr, size);
	munmap(ptr, size);
}

/* ERROR unless the keyring was loaded at start. */
void
fc_check_ring_usable(void)
{
	char		detail[256];
	int			state;

	LWLockAcquire(fc_shared->lock, LW_SHARED);
	state = fc_shared->ring_state;
	strlcpy(detail, fc_shared->ring_detail, sizeof(detail));
	LWLockRelease(fc_shared->lock);
	if (state != FC_RING_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("fieldcrypt keyring is not available"),
				 errdetail("%s", detail),
				 errhint("Check fieldcrypt.key_provider and the server log, then restart the server.")));
}

/*
 * In a PG_CATCH where the operation must not fail its caller: turn the
 * caught error into a WARNING "<what>: <message>" (with an optional hint).
 */
void
fc_demote_error(MemoryContext cxt, const char *what, const char *hint)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	ereport(WARNING,
			(errmsg("%s: %s", what, edata->message),
			 hint ? errhint("%s", hint) : 0));
	FreeErrorData(edata);
}

/*
 * An AES-256-GCM context under HKDF-SHA256(key, salt = instance id, info):
 * the per-instance subkey that column values and encrypted_heap rows are
 * sealed with (see docs/security.md "Nonces").  ERRORs on failure.
 */
FcCipher *
fc_derived_cipher(const uint8 *key, const uint8 *instance, const char *info, bool encrypt)
{
	uint8		subkey[FC_KEY_LEN];
	FcCipher   *ctx;

	if (!fc_hkdf_sha256(key, FC_KEY_LEN, instance, FC_INSTANCE_ID_LEN, info,
						subkey, FC_KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not derive a key: %s", fc_crypto_last_error())));
	ctx = fc_cipher_new(subkey, encrypt);
	explicit_bzero(subkey, sizeof(subkey));
	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a cipher context: %s", fc_crypto_last_error())));
	return ctx;
}

/* A nonce counter value never handed out before since shmem was created. */
uint64
fc_next_nonce_counter(void)
{
	if (nonce_next == nonce_end)
	{
		nonce_next = pg_atomic_fetch_add_u64(&fc_shared->nonce_counter, NONCE_BLOCK);
		nonce_end = nonce_next + NONCE_BLOCK;
	}
	return nonce_next++;
}

/* The random id of this shared memory lifetime (see docs/security.md "Nonces"). */
const uint8 *
fc_instance_id(void)
{
	return fc_shared->instance_id;
}
