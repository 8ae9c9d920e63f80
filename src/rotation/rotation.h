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

#include "keys/rotstate.h"
#include "rotation/reencrypt.h"

#define BACKOFF_MIN_MS			5000
#define BACKOFF_MAX_MS			300000
#define STATE_TABLE				"reencryption"

/* Where a worker is; mirrors the row of fieldcrypt.reencryption. */
typedef struct Run
{
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
	bool		blocked;
	char		blocked_why[NAMEDATALEN * 3 + 64];
	TimestampTz throttle_base;
	int64		throttle_rows;
} Run;

/* This worker process (run.c). */
extern FcRotSlot *fc_rot_my_slot;
extern bool fc_rot_clean_exit;
extern bool fc_rot_blocked;
extern uint32 fc_rot_blocked_gen;
extern bool fc_rot_tde_retry;

/* run.c: what every pass of the worker uses */
extern int	fc_rot_db_generations(Oid dboid, uint32 *current, uint32 *highest_old, bool *ring_ok);
extern int	fc_rot_tde_generations(Oid dboid, uint32 *current, uint32 *highest_old);
extern void fc_rot_publish(const Run *r, Phase phase);
extern void fc_rot_worker_exit(int code, Datum arg);
extern void fc_rot_sleep(long ms);
extern void fc_rot_check_postponed(void);
extern void fc_rot_test_pause(Run *r, bool before_destroy);
extern void fc_rot_throttle(Run *r, int64 rows);
extern const char *fc_rot_extension_schema(void);
extern void fc_rot_begin_xact(void);
extern void fc_rot_end_xact(void);
extern void fc_rot_save_state(const Run *r, const char *state);
extern bool fc_rot_load_state(Run *r, char *state, Size statelen);
extern void fc_rot_wait_older_transactions(Run *r);

/* values.c: encrypted column values; tables.c: encrypted_heap tables */
extern void fc_reencrypt_values(void);
extern void fc_reencrypt_tde_tables(void);

#endif
