/*-------------------------------------------------------------------------
 *
 * prepared.c
 *	  Key changes that survive PREPARE TRANSACTION, so that a key change
 *	  can take part in a two-phase commit (a Citus coordinator prepares it
 *	  on every worker, cluster_2pc.c).
 *
 *	  At PRE_PREPARE the change a transaction staged (keyapi.c's pending
 *	  entry) is sealed, in the keyring's own image format and under the
 *	  keyring's key (fc_shared->kek), into pg_fieldcrypt/prepared/<xid>
 *	  (fsync'd, renamed into place); the backend keeps nothing.  The
 *	  cluster-wide key change lock is a heavyweight lock, so the prepared
 *	  transaction keeps holding it and no other key change interleaves.
 *
 *	  A file is applied once its transaction committed: the keyring file
 *	  and a WAL record are written and shared memory published, exactly as
 *	  PRE_COMMIT and COMMIT do for an ordinary transaction; then the file is
 *	  removed.  A file whose transaction aborted (ROLLBACK PREPARED, or a
 *	  PREPARE that failed or crashed) is removed.  A file whose transaction
 *	  is still in progress (prepared) stays.  fc_prepared_recover does this
 *	  for every file; it runs after COMMIT PREPARED and ROLLBACK PREPARED
 *	  (hooks.c), whenever a backend takes the key change lock (policy.c: a
 *	  key change never starts from a state that misses a committed one), in
 *	  a one-shot background worker once recovery finished at server start
 *	  (a crash between COMMIT PREPARED and the apply), and in
 *	  fieldcrypt.recover_cluster_key_changes().
 *
 *	  Locking: appliers are serialized by flock() on the directory, taken
 *	  for the whole pass (short; every applier rechecks each file under it),
 *	  so a file is applied once.
 *
 *	  File: "FCPX" | u32 format (2) | u32 dboid | u32 kind (1: the sealed
 *	  field part of dboid follows; 0: dboid's field part is removed, key
 *	  metadata that came with a dump replaced the generated key) | the
 *	  stamp: u32 base generation | u32 target generation | i64 base set_at
 *	  | i64 target set_at.  Format 1 (no stamp) is still read and applied
 *	  as before.
 *
 *	  WAL: the file is WAL-logged when it is written (before the PREPARE
 *	  record: wal.c's XLOG_FC_PREPARED) and its removal when it is applied,
 *	  removed or set aside (XLOG_FC_PREPARED_DONE); replay
 *	  (fc_prepared_redo) writes or removes the file.  A standby promoted
 *	  while a key change is prepared therefore holds the file of the
 *	  prepared transaction it inherits, and COMMIT PREPARED there applies
 *	  the change; crash recovery and PITR end with the files the primary
 *	  had at that point.  The apply itself reaches standbys through the
 *	  keyring WAL record it writes.
 *
 *	  Stamp: the field part of dboid in the keyring when the change was
 *	  staged (base: its current generation and when it was set, 0 and 0
 *	  when there was none) and the state the change leads to (target).  A
 *	  file is applied only when the keyring still holds the base state (the
 *	  change lock, held by the prepared transaction, keeps every other
 *	  change out meanwhile); when it already holds the target the change
 *	  was applied before (a crash between the apply and the removal) and
 *	  the file is only removed; in any other state the file is older than
 *	  the keyring (a file restored from an old backup, copied from another
 *	  time) and applying it would replace newer key generations: it is set
 *	  aside as <xid>.stale with a WARNING, and nothing is applied.
 *
 * src/keys/prepared.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/transam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/procarray.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "keys/keyring.h"
#include "keys/keystore.h"
#include "keys/prepared.h"
#include "keys/rotstate.h"
#include "keys/wal.h"

#define PREP_MAGIC		"FCPX"
#define PREP_FORMAT_1	1		/* no stamp */
#define PREP_FORMAT		2
#define PREP_HDR1_LEN	16
#define PREP_HDR_LEN	40

bool		fc_test_prepared_skip_apply = false;

/* the file written at PRE_PREPARE by this backend, until PREPARE or abort */
static char saved_path[MAXPGPATH];

PGDLLEXPORT void fieldcrypt_prepared_worker_main(Datum arg);

static void put_u32(uint8 *p, uint32 v);
static uint32 get_u32(const uint8 *p);
static void apply_file(const char *path, TransactionId xid);
static void remove_file(const char *path, TransactionId xid, const char *why);
static void stamp_of(const FcDbKeys *e, uint32 *gen, int64 *set_at);
static void put_u64(uint8 *p, int64 v);
static int64 get_u64(const uint8 *p);

static void
put_u32(uint8 *p, uint32 v)
{
	memcpy(p, &v, 4);
}

static uint32
get_u32(const uint8 *p)
{
	uint32		v;

	memcpy(&v, p, 4);
	return v;
}

static void
put_u64(uint8 *p, int64 v)
{
	memcpy(p, &v, 8);
}

static int64
get_u64(const uint8 *p)
{
	int64		v;

	memcpy(&v, p, 8);
	return v;
}

/* The stamp of a field part (e NULL or without generations: 0, 0). */
static void
stamp_of(const FcDbKeys *e, uint32 *gen, int64 *set_at)
{
	*gen = (e && e->ngens > 0) ? e->current_gen : 0;
	*set_at = (e && e->ngens > 0) ? (int64) e->set_at : 0;
}

/*
 * At PRE_PREPARE: seal the change this transaction staged (entry, or NULL
 * for a removal of the field part) into pg_fieldcrypt/prepared/<xid>.
 * ERRORs (the PREPARE then fails and nothing changed) on any failure.
 */
void
fc_prepared_save(Oid dboid, const FcDbKeys *entry)
{
	TransactionId xid = GetTopTransactionId();
	uint8		kek[FC_KEY_LEN];
	uint8	   *image = NULL;
	size_t		ilen = 0;
	uint8	   *buf;
	FcDbKeys   *base;
	uint32		gen;
	int64		set_at;

	if (MakePGDirectory(FC_PREPARED_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", FC_PREPARED_DIR)));
	if (entry)
	{
		LWLockAcquire(fc_shared->lock, LW_SHARED);
		memcpy(kek, fc_shared->kek, FC_KEY_LEN);
		LWLockRelease(fc_shared->lock);
		image = fc_keyring_seal(kek, entry, 1, &ilen);
		explicit_bzero(kek, sizeof(kek));
	}
	buf = palloc(PREP_HDR_LEN + ilen);
	memcpy(buf, PREP_MAGIC, 4);
	put_u32(buf + 4, PREP_FORMAT);
	put_u32(buf + 8, dboid);
	put_u32(buf + 12, entry ? 1 : 0);
	/* the stamp: the published state this change was made against, and its own */
	fc_secure_region_alloc((void **) &base, sizeof(FcDbKeys));
	if (!fc_db_lookup(dboid, base))
		base->ngens = 0;
	stamp_of(base, &gen, &set_at);
	fc_secure_region_free(base, sizeof(FcDbKeys));
	put_u32(buf + 16, gen);
	put_u64(buf + 24, set_at);
	stamp_of(entry, &gen, &set_at);
	put_u32(buf + 20, gen);
	put_u64(buf + 32, set_at);
	if (ilen > 0)
		memcpy(buf + PREP_HDR_LEN, image, ilen);
	/*
	 * WAL first, flushed, then the file: the record carries xid, so after a
	 * crash in between, replay moves the next transaction id past it (and
	 * writes the file itself); a file on disk whose xid no WAL record
	 * holds could otherwise be taken for a later transaction's that
	 * committed.  Before the PREPARE record: a standby promoted later
	 * holds the file too.
	 */
	fc_wal_log_prepared(xid, buf, PREP_HDR_LEN + ilen);
	snprintf(saved_path, sizeof(saved_path), "%s/%u", FC_PREPARED_DIR, xid);
	fc_keyring_write_image(saved_path, buf, PREP_HDR_LEN + ilen);
	pfree(buf);
	if (image)
		pfree(image);
}

/*
 * After PREPARE (keep: the file now belongs to the prepared transaction)
 * or at abort (the PREPARE failed: remove the file).
 */
void
fc_prepared_saved_done(bool keep)
{
	if (saved_path[0] == '\0')
		return;
	if (!keep && unlink(saved_path) == 0)
		fsync_fname(FC_PREPARED_DIR, true);
	saved_path[0] = '\0';
}

/* Apply the change in path, whose transaction xid committed, then remove it. */
static void
apply_file(const char *path, TransactionId xid)
{
	char	   *data;
	size_t		len;
	Oid			dboid;
	bool		store;
	uint32		format;
	size_t		hdrlen;
	FcDbKeys   *entry = NULL;

	if (!fc_keyring_read_file(path, &data, &len))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", path)));
	format = len >= PREP_HDR1_LEN ? get_u32((uint8 *) data + 4) : 0;
	hdrlen = format == PREP_FORMAT_1 ? PREP_HDR1_LEN : PREP_HDR_LEN;
	if (len < hdrlen || memcmp(data, PREP_MAGIC, 4) != 0 ||
		(format != PREP_FORMAT && format != PREP_FORMAT_1))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("file \"%s\" is not a prepared key change", path)));
	dboid = get_u32((uint8 *) data + 8);
	store = get_u32((uint8 *) data + 12) == 1;
	if (format == PREP_FORMAT)
	{
		FcDbKeys   *now;
		uint32		gen;
		int64		set_at;

		fc_secure_region_alloc((void **) &now, sizeof(FcDbKeys));
		if (!fc_db_lookup(dboid, now))
			now->ngens = 0;
		stamp_of(now, &gen, &set_at);
		fc_secure_region_free(now, sizeof(FcDbKeys));
		if (gen == get_u32((uint8 *) data + 20) && set_at == get_u64((uint8 *) data + 32))
		{
			/* applied already: a stop between the apply and the removal */
			pfree(data);
			remove_file(path, xid, "it was applied before");
			return;
		}
		if (gen != get_u32((uint8 *) data + 16) || set_at != get_u64((uint8 *) data + 24))
		{
			char		aside[MAXPGPATH];

			snprintf(aside, sizeof(aside), "%s.stale", path);
			if (rename(path, aside) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not rename file \"%s\" to \"%s\": %m", path, aside)));
			fsync_fname(FC_PREPARED_DIR, true);
			fc_wal_log_prepared(xid, NULL, 0);
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("fieldcrypt: the key change of prepared transaction %u is older than the keyring and was not applied",
							xid),
					 errdetail("It was made when generation %u was current; the keyring holds generation %u. "
							   "The file was kept as \"%s\".",
							   get_u32((uint8 *) data + 16), gen, aside),
					 errhint("Remove that file once you have checked which key generations the database needs.")));
			pfree(data);
			return;
		}
	}
	if (store)
	{
		uint8		kek[FC_KEY_LEN];
		char		why[256];
		int			n = 0;
		FcRingState st;

		fc_secure_region_alloc((void **) &entry, sizeof(FcDbKeys));
		LWLockAcquire(fc_shared->lock, LW_SHARED);
		memcpy(kek, fc_shared->kek, FC_KEY_LEN);
		LWLockRelease(fc_shared->lock);
		st = fc_keyring_unseal(kek, (uint8 *) data + hdrlen, len - hdrlen,
							   entry, 1, &n, "a prepared key change", why, sizeof(why));
		explicit_bzero(kek, sizeof(kek));
		if (st != FC_RING_OK || n != 1 || entry->dboid != dboid)
		{
			fc_secure_region_free(entry, sizeof(FcDbKeys));
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("could not open the prepared key change in \"%s\"", path),
					 errdetail("%s.", st != FC_RING_OK ? why : "It holds no key entry of its database")));
		}
	}
	pfree(data);
	PG_TRY();
	{
		fc_db_stage(dboid, entry);
		fc_db_publish(dboid, entry);
		if (entry && entry->ngens > 1)
			fc_rotstate_wake();
	}
	PG_FINALLY();
	{
		if (entry)
			fc_secure_region_free(entry, sizeof(FcDbKeys));
	}
	PG_END_TRY();
	remove_file(path, xid, NULL);
	ereport(LOG,
			(errmsg("fieldcrypt: applied the key change of committed prepared transaction %u", xid)));
}

/* Remove the file of xid and WAL-log its removal; why: say so in the log. */
static void
remove_file(const char *path, TransactionId xid, const char *why)
{
	if (unlink(path) != 0 && errno != ENOENT)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not remove file \"%s\": %m", path)));
	fsync_fname(FC_PREPARED_DIR, true);
	fc_wal_log_prepared(xid, NULL, 0);
	if (why)
		ereport(LOG,
				(errmsg("fieldcrypt: removed the key change of transaction %u: %s", xid, why)));
}

/*
 * Replay of a prepared key change record (wal.c): write the file of xid
 * (file, len), or remove it (file NULL).
 */
void
fc_prepared_redo(TransactionId xid, const uint8 *file, size_t len)
{
	char		path[MAXPGPATH];

	snprintf(path, sizeof(path), "%s/%u", FC_PREPARED_DIR, xid);
	if (file == NULL)
	{
		if (unlink(path) == 0)
			fsync_fname(FC_PREPARED_DIR, true);
		return;
	}
	if (MakePGDirectory(FC_PREPARED_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", FC_PREPARED_DIR)));
	fc_keyring_write_image(path, file, len);
}

/*
 * Every file: committed → applied, aborted → removed, prepared → kept.
 * Returns how many were applied.  ERRORs on a file that cannot be applied
 * (it stays for the next try).
 */
int
fc_prepared_recover(void)
{
	DIR		   *dir;
	struct dirent *de;
	int			fd;
	volatile int applied = 0;

	if (fc_shared == NULL || fc_shared->ring_state != FC_RING_OK)
		return 0;
	/* every COMMIT/ROLLBACK PREPARED comes here: no lock when there is nothing */
	if (fc_prepared_count() == 0)
		return 0;
	fd = OpenTransientFile(FC_PREPARED_DIR, O_RDONLY | PG_BINARY);
	if (fd < 0)
		return 0;				/* no directory: nothing was ever prepared */
	if (flock(fd, LOCK_EX) != 0)
	{
		CloseTransientFile(fd);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not lock directory \"%s\": %m", FC_PREPARED_DIR)));
	}
	PG_TRY();
	{
		dir = AllocateDir(FC_PREPARED_DIR);
		while ((de = ReadDir(dir, FC_PREPARED_DIR)) != NULL)
		{
			char		path[MAXPGPATH];
			char	   *end;
			unsigned long v;
			TransactionId xid;

			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", FC_PREPARED_DIR, de->d_name);
			v = strtoul(de->d_name, &end, 10);
			if (*end != '\0' || !TransactionIdIsNormal((TransactionId) v))
			{
				/*
				 * A temporary file of a save that did not finish; a save
				 * still running (its PREPARE in progress) keeps its own.
				 */
				if (strcmp(end, ".tmp") == 0 &&
					!(TransactionIdIsNormal((TransactionId) v) &&
					  TransactionIdIsInProgress((TransactionId) v)))
					unlink(path);
				continue;
			}
			xid = (TransactionId) v;
			if (TransactionIdIsInProgress(xid))
				continue;		/* prepared, or PREPARE still running */
			if (TransactionIdDidCommit(xid))
			{
				apply_file(path, xid);
				applied++;
			}
			else
			{
				remove_file(path, xid, NULL);
				ereport(LOG,
						(errmsg("fieldcrypt: removed the key change of aborted transaction %u", xid)));
			}
		}
		FreeDir(dir);
	}
	PG_FINALLY();
	{
		flock(fd, LOCK_UN);
		CloseTransientFile(fd);
	}
	PG_END_TRY();
	return applied;
}

/*
 * fc_prepared_recover, where its failure must not fail the caller (after
 * COMMIT/ROLLBACK PREPARED, whose transaction is decided; under the key
 * change lock, so that one bad file cannot stop key management): its work
 * is undone by a subtransaction, a WARNING says so, and the file stays for
 * the next try.
 */
void
fc_prepared_recover_or_warn(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		(void) fc_prepared_recover();
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("fieldcrypt: could not apply the key change of a committed prepared transaction: %s",
						edata->message),
				 errhint("The next key change, fieldcrypt.recover_cluster_key_changes() or the next server start applies it.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/* How many prepared key changes are waiting (files in the directory). */
int
fc_prepared_count(void)
{
	DIR		   *dir;
	struct dirent *de;
	int			n = 0;

	dir = AllocateDir(FC_PREPARED_DIR);
	if (dir == NULL)
		return 0;
	while ((de = ReadDir(dir, FC_PREPARED_DIR)) != NULL)
		if (de->d_name[0] >= '1' && de->d_name[0] <= '9' && strchr(de->d_name, '.') == NULL)
			n++;
	FreeDir(dir);
	return n;
}

/* Register the one-shot worker that applies what a crash left; from _PG_init. */
void
fc_prepared_register_worker(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "fieldcrypt");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "fieldcrypt_prepared_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "fieldcrypt prepared key changes");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "fieldcrypt prepared key changes");
	RegisterBackgroundWorker(&bgw);
}

/* The one-shot worker: apply or remove what the last run left, then exit. */
void
fieldcrypt_prepared_worker_main(Datum arg)
{
	MemoryContext cxt;

	BackgroundWorkerUnblockSignals();
	/* no database: only to be in the proc array, which TransactionIdIsInProgress needs */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "fieldcrypt prepared key changes");
	cxt = AllocSetContextCreate(TopMemoryContext, "fieldcrypt prepared", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) fc_prepared_recover();
	}
	PG_CATCH();
	{
		fc_demote_error(cxt, "fieldcrypt: could not apply a prepared key change at start",
						"The next key change or fieldcrypt.recover_cluster_key_changes() retries.");
	}
	PG_END_TRY();
	proc_exit(0);
}
