/*-------------------------------------------------------------------------
 *
 * rotstate.h
 *	  Re-encryption state shared by key changes and the rotation worker:
 *	  one slot per database in shared memory, and the launcher's latch.
 *	  Key changes read it (55P03 while a re-encryption runs) and wake the
 *	  launcher through it; they never call into src/rotation/.
 *
 * src/keys/rotstate.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_ROTSTATE_H
#define FIELDCRYPT_ROTSTATE_H

#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "keys/keystore.h"

typedef enum SlotState
{
	SLOT_FREE = 0,				/* no worker */
	SLOT_STARTING,				/* launcher registered a worker */
	SLOT_RUNNING,				/* worker attached (pid) */
	SLOT_BLOCKED,				/* finished, old generations kept (blocked_gen) */
	SLOT_HELD					/* failed or stopped: not before hold_until */
} SlotState;

typedef enum Phase
{
	PHASE_STARTING = 0,
	PHASE_COUNTING,
	PHASE_REENCRYPTING,
	PHASE_WAITING,
	PHASE_DESTROYING,
	PHASE_PAUSED,
	PHASE_CLUSTER				/* done here, waiting for the other Citus nodes */
} Phase;

/* Stage of a re-encryption that waits for the Citus cluster (FcRotSlot.cluster_stage). */
#define FC_CLUSTER_STAGE_VALUES	1	/* old column-key generations */
#define FC_CLUSTER_STAGE_TDE	2	/* old TDE generations */

typedef struct FcRotSlot
{
	Oid			dboid;			/* InvalidOid: unused */
	int32		state;			/* SlotState */
	int32		pid;
	TimestampTz since;			/* STARTING: launched at */
	TimestampTz hold_until;		/* HELD */
	uint32		blocked_gen;	/* BLOCKED: current generation then */
	int32		failures;
	/* progress, while RUNNING */
	int32		phase;
	bool		tde;			/* the generations are TDE ones (else column keys') */
	uint32		from_gen;
	uint32		to_gen;
	int32		pass;
	int32		tables_done;
	int32		tables_total;
	int64		rows_done;
	int64		rows_total;
	int64		rows_at_attach; /* rows_done when this process attached */
	TimestampTz started_at;		/* of the whole re-encryption */
	TimestampTz attached_at;	/* of this process */
	char		problem[192];	/* why the last run did not finish ("" if none) */
	bool		held;			/* RUNNING, but held up by another session (a table it
								 * keeps locked, a snapshot it keeps open): key changes
								 * are accepted meanwhile, problem says why */
	/* PHASE_CLUSTER (rotation/clusterwide.c) */
	int32		cluster_stage;	/* FC_CLUSTER_STAGE_*, 0 if not waiting */
	bool		cluster_go;		/* the coordinator released this wait */
} FcRotSlot;

typedef struct FcRotState
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	int32		nslots;
	FcRotSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} FcRotState;

extern FcRotState *fc_rotstate;
extern const char *const fc_rot_phase_names[];
extern bool fc_reencrypt_enabled;	/* setting fieldcrypt.reencrypt */

extern void fc_rotstate_request(void);
extern void fc_rotstate_startup(void);
extern FcRotSlot *fc_rotstate_find_slot(Oid dboid, bool create);
extern void fc_rotstate_slot_copy(Oid dboid, FcRotSlot *out);
extern void fc_rotstate_set_launcher(Latch *latch);
extern void fc_rotstate_wake(void);
extern void fc_rotstate_check_idle(const FcDbKeys *cur);
extern void fc_rotstate_check_tde_idle(const FcTdeKeys *tde);
extern void fc_rotstate_stop(Oid dboid);
extern void fc_rotstate_resume(Oid dboid);
extern void fc_rot_sleep(long ms);
extern bool fc_xact_to_wait_for(VirtualTransactionId vxid, int *pid, bool *snapshot);

#endif
