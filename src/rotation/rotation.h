/*-------------------------------------------------------------------------
 *
 * rotation.h
 *	  Shared declarations of the re-encryption launcher and worker
 *	  (internal to src/rotation/).
 *
 * src/rotation/rotation.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_ROTATION_H
#define FIELDCRYPT_ROTATION_H

#include "access/htup.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "utils/relcache.h"

#include "keys/rotstate.h"
#include "rotation/reencrypt.h"

#define BACKOFF_MIN_MS			5000
#define BACKOFF_MAX_MS			300000
#define HELD_AFTER_MS			5000	/* a wait for another session that holds the worker up */
#define STATE_TABLE				"reencryption"

/* Where a worker is; mirrors the row of fieldcrypt.reencryption. */
typedef struct Run
{
	bool		tde;			/* of TDE generations (tables.c), else column keys' */
	uint32		from_gen;		/* highest old generation */
	uint32		to_gen;
	int32		pass;
	bool		pass_clean;		/* this pass started after the wait */
	int64		pass_reencrypted;	/* values rewritten in this pass */
	Oid			relid;			/* table being processed; Invalid = none yet */
	int64		next_block;
	int32		tables_done;
	int32		tables_total;
	int64		rows_done;
	int64		rows_total;
	TimestampTz started_at;
	/* not persisted */
	int64		batches;		/* of this process */
	int32		failed;			/* tables that failed in this pass */
	TimestampTz throttle_base;
	int64		throttle_rows;
	Oid			held_relid;		/* table found locked or with a pinned page, this pass */
	int32		npass_gens;		/* the generations when this pass started (values) */
	uint32		pass_gens[16];
} Run;

/* This worker process (run.c). */
extern FcRotSlot *fc_rot_my_slot;
extern bool fc_rot_clean_exit;
extern bool fc_rot_blocked;
extern uint32 fc_rot_blocked_gen;
extern bool fc_rot_tde_retry;
extern bool fc_rot_failed;

/* run.c: what every pass of the worker uses */
extern int	fc_rot_db_generations(Oid dboid, uint32 *current, uint32 *highest_old, bool *ring_ok);
extern int	fc_rot_tde_generations(Oid dboid, uint32 *current, uint32 *highest_old);
extern void fc_rot_publish(const Run *r, Phase phase);
extern void fc_rot_worker_exit(int code, Datum arg);
extern void fc_rot_check_postponed(void);
extern void fc_rot_test_pause(Run *r, bool before_destroy);
extern void fc_rot_throttle(Run *r, int64 rows);
extern const char *fc_rot_extension_schema(void);
extern void fc_rot_begin_xact(void);
extern void fc_rot_end_xact(void);
extern void fc_rot_save_state(const Run *r, const char *state);
extern bool fc_rot_load_state(Run *r, char *state, Size statelen);
extern void fc_rot_wait_older_transactions(Run *r);
#define FC_ROT_NAME_LEN (NAMEDATALEN * 2 + 8)	/* a qualified relation name, quoted */
#define FC_ROT_PROBLEM_LEN sizeof(((FcRotSlot *) NULL)->problem)
extern ErrorData *fc_rot_catch_error(Oid relid, MemoryContext cxt, char *name);
extern void fc_rot_table_name(Oid relid, char *name);
extern void fc_rot_table_failed(Run *r, Oid relid, MemoryContext cxt);
extern void fc_rot_set_problem(const char *problem);
extern void fc_rot_set_held(const char *problem);
extern void fc_rot_get_problem(char *out);	/* FC_ROT_PROBLEM_LEN bytes */
extern Relation fc_rot_open_table(Run *r, Oid relid);

/*
 * inplace.c: how a stored tuple is rewritten.  FcRewriteTuple gets a private
 * copy of the tuple's len bytes (tid for messages) and returns >0 if it
 * rewrote (with write) or would rewrite it, 0 if there is nothing to do,
 * -1 if it cannot be done in place.  FcBuildRow fills newslot's values from
 * oldslot's (all attributes fetched), false if nothing changes.
 */
typedef int (*FcRewriteTuple) (Relation rel, HeapTupleHeader td, uint32 len,
							   ItemPointer tid, bool write, void *arg);
typedef bool (*FcBuildRow) (Relation rel, TupleTableSlot *oldslot,
							TupleTableSlot *newslot, void *arg);

extern int	fc_rewrite_block(Relation rel, BlockNumber blk, FcRewriteTuple fn,
							 FcBuildRow build, void *arg, bool pinned_ok,
							 BufferAccessStrategy strategy, bool *left);
extern int	fc_count_block(Relation rel, BlockNumber blk, FcRewriteTuple fn, void *arg,
						   BufferAccessStrategy strategy);

/* What a pass does to a table, for fc_rot_batch (run.c). */
typedef struct FcBatchOps
{
	bool		(*eligible) (Relation rel);	/* does the pass concern rel? */
	FcRewriteTuple rewrite;
	FcBuildRow	build;
	bool		save_state;		/* record the position (resumable pass) */
} FcBatchOps;

extern bool fc_rot_batch(Run *r, Oid relid, BlockNumber stop, const FcBatchOps *ops);

/* values.c: encrypted column values; tables.c: encrypted_heap tables */
extern void fc_reencrypt_values(void);
extern void fc_reencrypt_tde_tables(void);

/* clusterwide.c: destruction of old generations only when a Citus cluster is done */
typedef enum FcClusterRole
{
	FC_CLUSTER_NONE,			/* no Citus in this database */
	FC_CLUSTER_COORDINATOR,
	FC_CLUSTER_WORKER
} FcClusterRole;

extern FcClusterRole fc_rot_cluster_role(void);
/* What fc_rot_cluster_wait found: destroy alone, destroy after the cluster, or stop. */
#define FC_WAIT_ALONE		0	/* no Citus here */
#define FC_WAIT_CLUSTER		1	/* every node is done (released, or the coordinator) */
#define FC_WAIT_STOP		(-1)	/* the wait ended otherwise: destroy nothing */
extern int	fc_rot_cluster_wait(Run *r, int stage);

/* keyed_rebuild.c: keyed hash indexes moved to the current TDE generation */
extern int	fc_rekey_keyed_indexes(Run *r, uint32 current);

#endif
