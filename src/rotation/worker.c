/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Online re-encryption of a database after a key change: the main of a
 *	  worker, then destruction of the old key generations.
 *
 *	  Processes.  A launcher (static background worker, no database, started
 *	  once recovery has finished, so also after a promotion) looks every few
 *	  seconds, and at once when a key change commits (keys/rotstate.c), for
 *	  databases whose keys in shared memory hold more than one generation:
 *	  such a database has values to re-encrypt.  The keyring is therefore the
 *	  durable record of "work to do" and survives any crash; nothing else
 *	  has to be persisted to find the work again.  For each one it starts a
 *	  dynamic worker connected to that database, unless one runs already.
 *	  A worker that fails is started again after a back-off (5 s doubling,
 *	  at most 5 minutes).
 *
 *	  Algorithm of a worker (one database):
 *	  1. Passes.  A pass visits every table and materialized view with a
 *		 column whose values can hold an envelope, in OID order, and
 *		 rewrites its stale values in batches of
 *		 fieldcrypt.reencrypt_batch_pages pages (inplace.c: in place on the
 *		 page where it can, else by an update of the newest row version).
 *		 Each batch is one transaction that also records where the pass is
 *		 (table, next block, counters) in fieldcrypt.reencryption, so a
 *		 crash at any point resumes at the last committed batch; a page
 *		 rewritten twice is rewritten the same way.  A row version a
 *		 concurrent transaction changed after the batch read it is left to
 *		 the next pass, never overwritten.
 *	  2. A pass that re-encrypted anything is followed by a wait for every
 *		 transaction of this database that holds a snapshot (they may still
 *		 copy old row versions elsewhere, e.g. INSERT ... SELECT), and by
 *		 another pass.  A pass that started after such a wait (a check pass)
 *		 first looks for a stale value in each table and rewrites only
 *		 tables where it finds one; a check pass that re-encrypted nothing
 *		 (and found no page pinned by another backend) ends the loop.
 *	  3. The old generations are destroyed (on a Citus cluster only once
 *		 every node is done: clusterwide.c), under the cluster-wide key change
 *		 lock: their metadata rows go, the keyring is rewritten without them
 *		 (fc_db_stage: written, fsynced and WAL-logged) before the commit,
 *		 and shared memory follows after it.
 *
 *	  A value is stale when it is under a generation that is not current and
 *	  that this database still holds; values under a generation it no longer
 *	  has, and values that cannot be authenticated, are left as they are
 *	  (they were unreadable before and stay so).  Values inside arrays,
 *	  composites and domains, at any depth, in tables and materialized
 *	  views, are re-encrypted too (columns/restamp.c).  Temporary tables of
 *	  other sessions are invisible to it.
 *
 *	  Whose code runs: none.  Rows are rewritten in place on their page, or
 *	  updated at the table access method level without the executor
 *	  (inplace.c): no trigger, rule, constraint, policy or default of any
 *	  role fires; index expressions, when an update needs new index
 *	  entries, run as the table's owner under SECURITY_RESTRICTED_OPERATION,
 *	  as in VACUUM FULL.  A table that fails anyway (say, it is corrupt) is
 *	  logged by name and shown in rotation_progress, the other tables go on,
 *	  and the old generations are kept until a later run succeeds.
 *
 *	  Foreground traffic: the worker sleeps between batches so that it
 *	  rewrites at most fieldcrypt.reencrypt_rows_per_second rows per second.
 *	  It runs no statement on user tables and logs no value.
 *
 *	  Shared memory: one slot per database (fieldcrypt.max_databases, in
 *	  keys/rotstate.c); it tells the launcher whether a worker runs and feeds
 *	  fieldcrypt.rotation_progress.
 *
 *	  Files: launcher.c, this file (the worker's main), run.c (what every
 *	  pass uses), values.c (step 1-3 for column values), tables.c (the
 *	  encrypted_heap tables after rotate_tde_key), progress.c (the view),
 *	  clusterwide.c (on Citus: destruction only once every node is done).
 *
 * src/rotation/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

#include "rotation/rotation.h"

PGDLLEXPORT void fieldcrypt_reencrypt_worker_main(Datum arg);

/* Main of a worker: re-encrypt the database given as argument. */
void
fieldcrypt_reencrypt_worker_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	FcRotSlot  *slot;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	slot = fc_rotstate_find_slot(dboid, false);
	if (slot == NULL || slot->state != SLOT_STARTING)
	{
		LWLockRelease(fc_rotstate->lock);
		proc_exit(0);			/* stopped before it started */
	}
	slot->state = SLOT_RUNNING;
	slot->pid = MyProcPid;
	slot->phase = PHASE_STARTING;
	slot->tde = false;
	slot->from_gen = slot->to_gen = 0;	/* none until its first fc_rot_publish */
	slot->tables_done = slot->tables_total = 0;
	slot->rows_done = slot->rows_total = 0;
	slot->rows_at_attach = 0;
	slot->attached_at = GetCurrentTimestamp();	/* rows_per_second of this process */
	slot->problem[0] = '\0';
	slot->held = false;
	slot->cluster_stage = 0;
	slot->cluster_go = false;
	fc_rot_my_slot = slot;
	LWLockRelease(fc_rotstate->lock);
	before_shmem_exit(fc_rot_worker_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("session_replication_role", "replica", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_OVERRIDE);
	/* a batch lost in a crash is redone: its progress row commits with it */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/* READ COMMITTED is what keeps concurrent writes (EvalPlanQual, see above) */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("fieldcrypt re-encryption");
	/* Citus hides the shards on a node from pg_class queries: this worker lists them */
	if (GetConfigOption("citus.override_table_visibility", true, false) != NULL)
		SetConfigOption("citus.override_table_visibility", "off", PGC_SUSET, PGC_S_OVERRIDE);

	fc_reencrypt_values();
	if (!fc_rot_blocked)
		fc_reencrypt_tde_tables();
	/* not done: exit as a failed worker, so the launcher retries after a back-off */
	fc_rot_clean_exit = !fc_rot_tde_retry && !fc_rot_failed;
	proc_exit(0);
}
