/*-------------------------------------------------------------------------
 *
 * keystore.c
 *	  The key state of every database: loading the keyring at start,
 *	  looking keys up, staging and publishing changes (keyring file, WAL,
 *	  shared memory), WAL replay of changes, and the per-backend cache.
 *	  The segment itself and key memory are keystate.c's; sealing goes
 *	  through the tenant layer (tenant.c).
 *
 *	  Locking: fc_shared->lock (one LWLock of tranche "fieldcrypt") protects
 *	  ring_state, kek and dbs[].  Readers take it shared and copy what they
 *	  need; a key change takes it exclusively, writes the keyring to disk
 *	  first and only then updates shared memory, so shared memory never
 *	  holds a state that a restart would lose.  fc_shared->version is
 *	  bumped (under the exclusive lock) after every change: backends compare
 *	  it with the version of their cache without taking the lock.
 *
 *	  Key lifetime: the shared segment part holding keys and every backend
 *	  cache are page-aligned, excluded from core dumps (MADV_DONTDUMP) and
 *	  locked in memory where RLIMIT_MEMLOCK allows; copies on the stack or
 *	  in palloc'd memory are zeroed with explicit_bzero when released.
 *
 *	  Every change is also WAL-logged as a whole sealed keyring image
 *	  (wal.c), so standbys, crash recovery and PITR follow it.
 *
 * src/keys/keystore.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/fd.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "keys/keyring.h"
#include "keys/keystore.h"
#include "keys/tenant.h"
#include "keys/wal.h"

/* Backend-local cache of this database's entry, in a secure region. */
typedef struct LocalCache
{
	uint64		version;		/* fc_shared->version it reflects; 0 = none */
	bool		present;
	FcDbKeys	entry;
} LocalCache;

static LocalCache *local_cache = NULL;

/*
 * The postmaster's own copy of the KEK (secure region), so that a crash
 * reinitialization of shared memory does not run the key provider again
 * inside the postmaster's child-exit handling.
 */
static uint8 *pm_kek = NULL;


/* Called from the shmem_request_hook. */
void
fc_keystore_request(void)
{
	fc_keystate_request();
	fc_tenant_request();
}

/*
 * shmem_startup_hook: create the segment and load the keyring.  Runs in the
 * postmaster at start and after every crash reinitialization.
 */
void
fc_keystore_startup(void)
{
	bool		found;
	char		why[256] = "";

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	found = fc_keystate_attach();
	fc_tenant_shmem_init();
	if (found)
	{
		LWLockRelease(AddinShmemInitLock);
		return;
	}

	if (mkdir(FC_KEYRING_DIR, S_IRWXU) != 0 && errno != EEXIST)
	{
		fc_shared->ring_state = FC_RING_PROVIDER_FAILED;
		snprintf(why, sizeof(why), "could not create directory \"%s\": %m", FC_KEYRING_DIR);
	}
	else
	{
		bool		have_kek = true;

		if (pm_kek != NULL)
			memcpy(fc_shared->kek, pm_kek, FC_KEY_LEN);
		else if (fc_kek_load(fc_shared->kek, why, sizeof(why)))
		{
			if (!IsUnderPostmaster)
			{
				fc_secure_region_alloc((void **) &pm_kek, FC_KEY_LEN);
				memcpy(pm_kek, fc_shared->kek, FC_KEY_LEN);
			}
		}
		else
		{
			fc_shared->ring_state = FC_RING_PROVIDER_FAILED;
			have_kek = false;
		}
		if (have_kek)
		{
			/* the cluster key; fc_tenant_adopt_opened sets the data KEK */
			fc_tenant_startup(fc_shared->kek);
			fc_tenant_adopt_pending(fc_shared->kek, fc_shared->max_dbs);
			fc_shared->ring_state = fc_tenant_read_keyring(fc_shared->kek, fc_shared->dbs,
														 fc_shared->max_dbs, why, sizeof(why));
			if (fc_shared->ring_state == FC_RING_OK)
				fc_tenant_adopt_opened();
		}
	}

	if (fc_shared->ring_state != FC_RING_OK)
	{
		explicit_bzero(fc_shared->kek, FC_KEY_LEN);
		memset(fc_shared->dbs, 0, sizeof(FcDbKeys) * fc_shared->max_dbs);
		strlcpy(fc_shared->ring_detail, why, sizeof(fc_shared->ring_detail));
		ereport(WARNING,
				(errmsg("fieldcrypt: keyring not loaded, encrypted data is inaccessible"),
				 errdetail("%s", why),
				 errhint("Fix the key provider (fieldcrypt.key_provider), or the HSM and "
						 "fieldcrypt.hsm_pin_command for a tenant key in an HSM, or restore "
						 "the keyring, then restart the server. Nothing was changed on disk.")));
	}
	else
	{
		int			n = 0;

		for (int i = 0; i < fc_shared->max_dbs; i++)
			if (OidIsValid(fc_shared->dbs[i].dboid))
				n++;
		ereport(LOG,
				(errmsg("fieldcrypt: keyring loaded with keys of %d database(s)", n)));
	}
	LWLockRelease(AddinShmemInitLock);
}

#define STAGED(i)	(&fc_shared->dbs[fc_shared->max_dbs + (i)])

/* Index of dboid's published slot, or -1.  Caller holds the lock. */
static int
published_slot(Oid dboid)
{
	for (int i = 0; i < fc_shared->max_dbs; i++)
		if (OidIsValid(dboid) && fc_shared->dbs[i].dboid == dboid)
			return i;
	return -1;
}

/* Index of dboid's staged (written, not yet committed) entry, or -1. */
static int
staged_slot(Oid dboid)
{
	for (int i = 0; i < fc_shared->max_dbs; i++)
		if (OidIsValid(dboid) && STAGED(i)->dboid == dboid)
			return i;
	return -1;
}

/* Copy everything but the TDE part of src into dst. */
static void
copy_field_part(FcDbKeys *dst, const FcDbKeys *src)
{
	FcTdeKeys	tde = dst->tde;

	memcpy(dst, src, sizeof(FcDbKeys));
	dst->tde = tde;
	explicit_bzero(&tde, sizeof(tde));
}

/* Whether an entry holds any key. */
static bool
entry_in_use(const FcDbKeys *e)
{
	return e->ngens > 0 || e->tde.ngens > 0;
}

/*
 * Copy the entry of dboid into *out; false if the database has no active
 * field encryption key (a TDE-only entry counts as absent).
 */
bool
fc_db_lookup(Oid dboid, FcDbKeys *out)
{
	bool		found = false;
	int			i;

	LWLockAcquire(fc_shared->lock, LW_SHARED);
	i = published_slot(dboid);
	if (i >= 0 && fc_shared->dbs[i].ngens > 0)
	{
		if (out)
			memcpy(out, &fc_shared->dbs[i], sizeof(FcDbKeys));
		found = true;
	}
	LWLockRelease(fc_shared->lock);
	return found;
}

/* Copy the TDE keys of dboid into *out; false if it has none yet. */
bool
fc_db_lookup_tde(Oid dboid, FcTdeKeys *out)
{
	bool		found = false;
	int			i;

	LWLockAcquire(fc_shared->lock, LW_SHARED);
	i = published_slot(dboid);
	if (i >= 0 && fc_shared->dbs[i].tde.ngens > 0)
	{
		if (out)
			memcpy(out, &fc_shared->dbs[i].tde, sizeof(FcTdeKeys));
		found = true;
	}
	LWLockRelease(fc_shared->lock);
	return found;
}

/*
 * Build in out[] the keyring as it must be on disk: for every database the
 * field part staged by a committing transaction (or else the published
 * one) and the published TDE part.  For target, field (may be NULL: none)
 * replaces the field part when set_field, tde the TDE part when non-NULL;
 * drop leaves target out.  Caller holds the lock exclusively.
 */
static int
compose_locked(FcDbKeys *out, Oid target, bool set_field, const FcDbKeys *field,
			   const FcTdeKeys *tde, bool drop)
{
	int			n = 0;
	bool		target_seen = false;

	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = 0; i < fc_shared->max_dbs; i++)
		{
			const FcDbKeys *src = pass == 0 ? &fc_shared->dbs[i] : STAGED(i);
			FcDbKeys   *e = &out[n];
			int			st;

			if (!OidIsValid(src->dboid))
				continue;
			/* staged entries without a published slot are added in pass 1 */
			if (pass == 1 && published_slot(src->dboid) >= 0)
				continue;
			if (drop && src->dboid == target)
				continue;
			memset(e, 0, sizeof(FcDbKeys));
			if (pass == 0)
				e->tde = src->tde;
			st = staged_slot(src->dboid);
			copy_field_part(e, st >= 0 ? STAGED(st) : src);
			if (src->dboid == target)
			{
				target_seen = true;
				if (set_field)
				{
					memset(e, 0, offsetof(FcDbKeys, tde));
					if (field)
						copy_field_part(e, field);
				}
				if (tde)
					e->tde = *tde;
			}
			e->dboid = src->dboid;
			if (entry_in_use(e))
				n++;
		}
	}
	if (!target_seen && OidIsValid(target) && !drop)
	{
		FcDbKeys   *e = &out[n];

		memset(e, 0, sizeof(FcDbKeys));
		if (set_field && field)
			copy_field_part(e, field);
		if (tde)
			e->tde = *tde;
		e->dboid = target;
		if (entry_in_use(e))
			n++;
	}
	return n;
}

/*
 * Seal out[0..n) and make it the keyring (file, then WAL).  Caller holds
 * the lock exclusively; on ERROR the lock is released here (during abort
 * LWLockReleaseAll may have run already and the caller swallows the error).
 */
static void
write_image_locked(FcDbKeys *out, int n)
{
	PG_TRY();
	{
		size_t		len;
		uint8	   *image = fc_tenant_seal_image(out, n, &len);

		fc_keyring_write_image(FC_KEYRING_FILE, image, len);
		fc_wal_log_keyring(image, len);
		pfree(image);
	}
	PG_CATCH();
	{
		explicit_bzero(out, sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));
		if (LWLockHeldByMe(fc_shared->lock))
			LWLockRelease(fc_shared->lock);
		PG_RE_THROW();
	}
	PG_END_TRY();
	explicit_bzero(out, sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));
}

/* Take the lock exclusively, ERROR (unlocked) unless the keyring is usable. */
static void
lock_usable_ring(void)
{
	LWLockAcquire(fc_shared->lock, LW_EXCLUSIVE);
	if (fc_shared->ring_state != FC_RING_OK)
	{
		LWLockRelease(fc_shared->lock);
		fc_check_ring_usable();
	}
}

/* ERROR (unlocked) if a new database entry would not fit. */
static void
check_capacity_locked(Oid dboid)
{
	int			used = 0;

	if (published_slot(dboid) >= 0)
		return;
	for (int i = 0; i < fc_shared->max_dbs; i++)
		if (OidIsValid(fc_shared->dbs[i].dboid))
			used++;
	if (used >= fc_shared->max_dbs)
	{
		LWLockRelease(fc_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("fieldcrypt cannot hold keys for more than %d databases",
						fc_shared->max_dbs),
				 errhint("Raise fieldcrypt.max_databases and restart the server.")));
	}
}

/*
 * Write the keyring with the field part of dboid replaced by entry (NULL:
 * removed), and remember it as staged so that keyring writes of other
 * transactions before our commit keep it.  Shared memory keys are not
 * changed.  ERRORs, leaving the old keyring, on any failure.
 */
void
fc_db_stage(Oid dboid, const FcDbKeys *entry)
{
	FcDbKeys   *copy;
	int			n;
	int			st;

	copy = palloc(sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));
	lock_usable_ring();
	if (entry)
		check_capacity_locked(dboid);
	n = compose_locked(copy, dboid, true, entry, NULL, false);
	write_image_locked(copy, n);

	st = staged_slot(dboid);
	for (int i = 0; st < 0 && i < fc_shared->max_dbs; i++)
		if (!OidIsValid(STAGED(i)->dboid))
			st = i;
	if (st >= 0)
	{
		memset(STAGED(st), 0, sizeof(FcDbKeys));
		if (entry)
			copy_field_part(STAGED(st), entry);
		STAGED(st)->dboid = dboid;
	}
	LWLockRelease(fc_shared->lock);
	pfree(copy);
}

/*
 * Add a TDE key generation (key) to dboid and make it current, on disk (and
 * WAL) and in shared memory at once: TDE key changes are not
 * transactional.  With only_if_none, a database that already has a TDE key
 * is left alone (two backends racing to create the first key agree on
 * one).  Returns the current generation afterwards.
 */
uint32
fc_db_tde_add_generation(Oid dboid, const uint8 *key, bool only_if_none)
{
	FcDbKeys   *copy;
	FcTdeKeys	tde;
	int			n;
	int			slot;
	uint32		gen = 0;

	copy = palloc(sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));
	lock_usable_ring();
	slot = published_slot(dboid);
	memset(&tde, 0, sizeof(tde));
	if (slot >= 0)
		tde = fc_shared->dbs[slot].tde;
	if (only_if_none && tde.ngens > 0)
	{
		gen = tde.current;
		LWLockRelease(fc_shared->lock);
		explicit_bzero(&tde, sizeof(tde));
		pfree(copy);
		return gen;
	}
	if (tde.ngens >= FC_MAX_TDE_GENERATIONS)
	{
		LWLockRelease(fc_shared->lock);
		explicit_bzero(&tde, sizeof(tde));
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("database already has %d TDE key generations", FC_MAX_TDE_GENERATIONS),
				 errhint("Re-encrypt tables still using old generations (fieldcrypt.reencrypt_table) "
						 "so that they can be dropped.")));
	}
	for (int i = 0; i < tde.ngens; i++)
		gen = Max(gen, tde.gens[i].gen);
	if (gen >= 65535)			/* row trailers hold 16 bits */
	{
		LWLockRelease(fc_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("this database has used all 65535 TDE key generations")));
	}
	gen++;
	tde.gens[tde.ngens].gen = gen;
	tde.gens[tde.ngens].created_at = GetCurrentTimestamp();
	memcpy(tde.gens[tde.ngens].key, key, FC_KEY_LEN);
	tde.ngens++;
	tde.current = gen;

	check_capacity_locked(dboid);
	n = compose_locked(copy, dboid, false, NULL, &tde, false);
	write_image_locked(copy, n);

	slot = published_slot(dboid);
	for (int i = 0; slot < 0 && i < fc_shared->max_dbs; i++)
		if (!OidIsValid(fc_shared->dbs[i].dboid))
		{
			slot = i;
			memset(&fc_shared->dbs[i], 0, sizeof(FcDbKeys));
			fc_shared->dbs[i].dboid = dboid;
		}
	memcpy(&fc_shared->dbs[slot].tde, &tde, sizeof(FcTdeKeys));
	pg_atomic_fetch_add_u64(&fc_shared->version, 1);
	LWLockRelease(fc_shared->lock);
	explicit_bzero(&tde, sizeof(tde));
	pfree(copy);
	return gen;
}

/*
 * Give database dst the TDE keys of src (CREATE DATABASE ... TEMPLATE src
 * copied src's encrypted_heap files).  No-op if src has none.
 */
void
fc_db_tde_copy(Oid src, Oid dst)
{
	FcDbKeys   *copy;
	FcTdeKeys	tde;
	int			slot;
	int			n;

	copy = palloc(sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));
	lock_usable_ring();
	slot = published_slot(src);
	if (slot < 0 || fc_shared->dbs[slot].tde.ngens == 0)
	{
		LWLockRelease(fc_shared->lock);
		pfree(copy);
		return;
	}
	tde = fc_shared->dbs[slot].tde;
	check_capacity_locked(dst);
	n = compose_locked(copy, dst, false, NULL, &tde, false);
	write_image_locked(copy, n);
	slot = published_slot(dst);
	for (int i = 0; slot < 0 && i < fc_shared->max_dbs; i++)
		if (!OidIsValid(fc_shared->dbs[i].dboid))
		{
			slot = i;
			memset(&fc_shared->dbs[i], 0, sizeof(FcDbKeys));
			fc_shared->dbs[i].dboid = dst;
		}
	fc_shared->dbs[slot].tde = tde;
	pg_atomic_fetch_add_u64(&fc_shared->version, 1);
	LWLockRelease(fc_shared->lock);
	explicit_bzero(&tde, sizeof(tde));
	pfree(copy);
}

/*
 * Destroy the TDE key generations of dboid that are older than keep_from
 * and not marked in used[] (indexed by generation): on disk, in WAL and in
 * shared memory.  The current generation always stays.  Returns how many
 * were destroyed.
 */
int
fc_db_tde_drop_generations(Oid dboid, const bool *used, uint32 keep_from)
{
	FcDbKeys   *copy;
	FcTdeKeys	tde;
	FcTdeKeys	kept;
	int			slot;
	int			n;
	int			dropped;

	copy = palloc(sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));
	lock_usable_ring();
	slot = published_slot(dboid);
	if (slot < 0 || fc_shared->dbs[slot].tde.ngens == 0)
	{
		LWLockRelease(fc_shared->lock);
		pfree(copy);
		return 0;
	}
	tde = fc_shared->dbs[slot].tde;
	memset(&kept, 0, sizeof(kept));
	kept.current = tde.current;
	for (int i = 0; i < tde.ngens; i++)
	{
		uint32		g = tde.gens[i].gen;

		if (g == tde.current || g >= keep_from || g > 65535 || used[g])
			kept.gens[kept.ngens++] = tde.gens[i];
	}
	dropped = tde.ngens - kept.ngens;
	if (dropped > 0)
	{
		n = compose_locked(copy, dboid, false, NULL, &kept, false);
		write_image_locked(copy, n);
		fc_shared->dbs[slot].tde = kept;
		pg_atomic_fetch_add_u64(&fc_shared->version, 1);
	}
	LWLockRelease(fc_shared->lock);
	explicit_bzero(&tde, sizeof(tde));
	explicit_bzero(&kept, sizeof(kept));
	pfree(copy);
	return dropped;
}

/* Keep an image we cannot apply in keyring.pending; never fails recovery. */
static void
keep_pending(const uint8 *image, size_t len)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		fc_keyring_write_image(FC_KEYRING_PENDING, image, len);
	}
	PG_CATCH();
	{
		fc_demote_error(cxt, "fieldcrypt: could not keep a key change for later", NULL);
	}
	PG_END_TRY();
}

/*
 * WAL replay of a key state change: unseal the image with this server's
 * cluster key, then replace the keyring file and shared memory.  A server
 * that cannot unseal it keeps its previous keys.
 */
void
fc_keystore_redo_image(const uint8 *image, size_t len)
{
	FcDbKeys   *tmp;
	int			n;
	char		why[256];

	LWLockAcquire(fc_shared->lock, LW_EXCLUSIVE);
	if (fc_shared->ring_state != FC_RING_OK)
	{
		/* keep the image: it is the newest state, for when the key is back */
		LWLockRelease(fc_shared->lock);
		keep_pending(image, len);
		ereport(WARNING,
				(errmsg("fieldcrypt: skipped a key change from WAL: this server's keyring is not loaded"),
				 errdetail("The change is kept in \"%s\" and installed at the next start "
						   "that has the right cluster key.", FC_KEYRING_PENDING),
				 errhint("Fix the key provider (fieldcrypt.key_provider) and restart.")));
		return;
	}
	tmp = palloc(sizeof(FcDbKeys) * fc_shared->max_dbs);
	if (fc_tenant_open_image(fc_tenant_managed_kek(), image, len, tmp, fc_shared->max_dbs, &n,
						  "a key change record in WAL", why, sizeof(why)) != FC_RING_OK)
	{
		LWLockRelease(fc_shared->lock);
		pfree(tmp);
		keep_pending(image, len);
		ereport(WARNING,
				(errmsg("fieldcrypt: could not apply a key change from WAL, keeping the previous keys"),
				 errdetail("%s. The change is kept in \"%s\" and installed at the next start "
						   "that has the right cluster key.", why, FC_KEYRING_PENDING),
				 errhint("A standby needs the same cluster key as its primary (fieldcrypt.key_provider), "
						 "and access to its tenant key if that is in an HSM.")));
		return;
	}
	fc_keyring_write_image(FC_KEYRING_FILE, image, len);
	if (unlink(FC_KEYRING_PENDING) == 0)
		fsync_fname(FC_KEYRING_DIR, true);
	memset(fc_shared->dbs, 0, sizeof(FcDbKeys) * 2 * fc_shared->max_dbs);
	memcpy(fc_shared->dbs, tmp, sizeof(FcDbKeys) * n);
	fc_tenant_adopt_opened();
	pg_atomic_fetch_add_u64(&fc_shared->version, 1);
	LWLockRelease(fc_shared->lock);
	explicit_bzero(tmp, sizeof(FcDbKeys) * fc_shared->max_dbs);
	pfree(tmp);
}

/*
 * Make shared memory hold entry as the field part of dboid (or none) after
 * the keyring was staged with the same change.  No I/O and no ERROR: runs
 * at commit.
 */
void
fc_db_publish(Oid dboid, const FcDbKeys *entry)
{
	int			slot;
	int			st;

	LWLockAcquire(fc_shared->lock, LW_EXCLUSIVE);
	slot = published_slot(dboid);
	for (int i = 0; slot < 0 && entry && i < fc_shared->max_dbs; i++)
		if (!OidIsValid(fc_shared->dbs[i].dboid))
		{
			slot = i;
			memset(&fc_shared->dbs[i], 0, sizeof(FcDbKeys));
		}
	if (slot >= 0)
	{
		FcDbKeys   *e = &fc_shared->dbs[slot];

		memset(e, 0, offsetof(FcDbKeys, tde));
		if (entry)
			copy_field_part(e, entry);
		e->dboid = dboid;
		if (!entry_in_use(e))
			explicit_bzero(e, sizeof(FcDbKeys));
	}
	st = staged_slot(dboid);
	if (st >= 0)
		explicit_bzero(STAGED(st), sizeof(FcDbKeys));
	pg_atomic_fetch_add_u64(&fc_shared->version, 1);
	LWLockRelease(fc_shared->lock);
	if (entry && slot < 0)
		elog(WARNING, "fieldcrypt: no free key slot at commit; restart to reload the keyring");
}

/*
 * Forget the staged change of dboid and rewrite the keyring from shared
 * memory, undoing a change whose transaction aborted after PRE_COMMIT.
 * Runs during abort: failures become a WARNING.
 */
void
fc_keyring_resync(Oid dboid)
{
	MemoryContext cxt = CurrentMemoryContext;
	FcDbKeys   *copy = palloc(sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));

	PG_TRY();
	{
		int			st;
		int			n;

		lock_usable_ring();
		st = staged_slot(dboid);
		if (st >= 0)
			explicit_bzero(STAGED(st), sizeof(FcDbKeys));
		n = compose_locked(copy, InvalidOid, false, NULL, NULL, false);
		write_image_locked(copy, n);
		LWLockRelease(fc_shared->lock);
	}
	PG_CATCH();
	{
		fc_demote_error(cxt, "fieldcrypt: could not restore the keyring after an aborted key change",
						"The keyring on disk may hold a generation that was never committed; "
						"the next key change rewrites it.");
	}
	PG_END_TRY();
	pfree(copy);
}

/* Forget every key of a dropped database, on disk and in memory. */
void
fc_db_remove(Oid dboid)
{
	FcDbKeys   *copy;
	int			n;
	int			slot;

	LWLockAcquire(fc_shared->lock, LW_SHARED);
	slot = published_slot(dboid);
	LWLockRelease(fc_shared->lock);
	if (slot < 0)
		return;
	copy = palloc(sizeof(FcDbKeys) * (2 * fc_shared->max_dbs + 1));
	lock_usable_ring();
	n = compose_locked(copy, dboid, false, NULL, NULL, true);
	write_image_locked(copy, n);
	slot = published_slot(dboid);
	if (slot >= 0)
		explicit_bzero(&fc_shared->dbs[slot], sizeof(FcDbKeys));
	slot = staged_slot(dboid);
	if (slot >= 0)
		explicit_bzero(STAGED(slot), sizeof(FcDbKeys));
	pg_atomic_fetch_add_u64(&fc_shared->version, 1);
	LWLockRelease(fc_shared->lock);
	pfree(copy);
}

/* Refresh the backend cache of MyDatabaseId if shared memory changed. */
static void
refresh_local_cache(void)
{
	uint64		v = pg_atomic_read_u64(&fc_shared->version);

	if (local_cache == NULL)
		fc_secure_region_alloc((void **) &local_cache, sizeof(LocalCache));
	if (local_cache->version == v)
		return;
	/* read the version before the entry: a concurrent change re-triggers */
	explicit_bzero(&local_cache->entry, sizeof(FcDbKeys));
	LWLockAcquire(fc_shared->lock, LW_SHARED);
	{
		int			i = published_slot(MyDatabaseId);

		if (i >= 0)
			memcpy(&local_cache->entry, &fc_shared->dbs[i], sizeof(FcDbKeys));
		local_cache->present = (i >= 0 && fc_shared->dbs[i].ngens > 0);
	}
	LWLockRelease(fc_shared->lock);
	local_cache->version = v;
}

/*
 * The generation gen of the current database (or its current generation if
 * current is true), from the backend cache; NULL if not loaded.
 */
const FcGeneration *
fc_local_generation(uint32 gen, bool current)
{
	refresh_local_cache();
	if (!local_cache->present)
		return NULL;
	if (current)
		gen = local_cache->entry.current_gen;
	for (int i = 0; i < local_cache->entry.ngens; i++)
		if (local_cache->entry.gens[i].gen == gen)
			return &local_cache->entry.gens[i];
	return NULL;
}

/*
 * The TDE key generation gen of the current database (or its current one),
 * from the backend cache; NULL if it has none.
 */
const FcTdeGeneration *
fc_local_tde_generation(uint32 gen, bool current)
{
	const FcTdeKeys *t;

	refresh_local_cache();
	t = &local_cache->entry.tde;
	if (current)
		gen = t->current;
	for (int i = 0; i < t->ngens; i++)
		if (t->gens[i].gen == gen && gen != 0)
			return &t->gens[i];
	return NULL;
}
