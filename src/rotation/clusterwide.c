/*-------------------------------------------------------------------------
 *
 * clusterwide.c
 *	  Re-encryption on a Citus cluster: old generations are destroyed on
 *	  every node only once every node has re-encrypted its own shards.
 *
 *	  Why: a shard moved from a node that still holds values (or rows) under
 *	  an old generation to a node that already destroyed that generation
 *	  could not be read there.  So no node destroys alone:
 *
 *	  - A worker node (citus installed, citus_is_coordinator() false) whose
 *		re-encryption is done stops before destroying and waits in phase
 *		"waiting for the cluster" (its slot: PHASE_CLUSTER, cluster_stage)
 *		until the coordinator releases it (cluster_go); then it looks once
 *		more for stale values (a shard moved in from a node that was not
 *		done brings old-generation values) and destroys as a single node
 *		does.  (encrypted_heap rows need no second look: a moved shard's
 *		rows are sealed anew under the receiving node's TDE key.)  A new key change, or fieldcrypt.reencrypt =
 *		off, ends the wait without destroying.
 *	  - The coordinator, after its own passes, asks every other primary node
 *		of pg_dist_node (active or not) for its state through Citus's
 *		master_run_on_worker, which connects as the current user with
 *		citus.node_conninfo (TLS).  When no node is behind, it releases the
 *		waiting ones, waits until every node reports "done" (only the
 *		current generation left), and only then looks once more at its own
 *		tables and destroys its own.  A node
 *		that is behind, down or refusing (no TLS, no privilege) delays it:
 *		the reason is shown in rotation_progress.problem and logged, and the
 *		round is retried (1 s doubling to 10 s).  Nothing is skipped.
 *
 *	  Whose privileges: the coordinator's worker runs as the bootstrap
 *	  superuser (as every re-encryption worker), with a fixed command text
 *	  and search_path pg_catalog; nothing a login writes is evaluated.  The
 *	  node side takes no heavyweight lock and never waits, so no session
 *	  can hold a round back; a node that does not answer is just behind.
 *	  The same round runs on demand from fieldcrypt.finish_cluster_reencryption()
 *	  (fieldcrypt_admin, TLS), for a worker node waiting after a change the
 *	  coordinator had no re-encryption for (say rotate_tde_key on that node).
 *
 * src/rotation/clusterwide.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "keys/cluster.h"
#include "keys/keyapi.h"
#include "keys/policy.h"
#include "rotation/rotation.h"

PG_FUNCTION_INFO_V1(fieldcrypt_cluster_reencryption_node);
PG_FUNCTION_INFO_V1(fieldcrypt_finish_cluster_reencryption);

#define ROUND_MIN_MS	1000
#define ROUND_MAX_MS	10000

/* What the other nodes answered in one round. */
typedef struct Round
{
	int			behind;			/* nodes neither done nor waiting */
	int			waiting;		/* nodes waiting for the release */
	List	   *nodes;			/* of NodeAnswer */
	char	   *problem;		/* the first node behind, for rotation_progress */
} Round;

typedef struct NodeAnswer
{
	char	   *name;
	int32		port;
	char	   *state;			/* its answer, or the error */
} NodeAnswer;

static const char *stage_name(int stage);
static void cluster_round(int stage, uint32 gen, bool release, Round *out, MemoryContext cxt);
static bool wait_for_release(Run *r, int stage);
static bool coordinate(Run *r, int stage);
static bool still_current(const Run *r, int stage);

/* The name of a stage in node commands and in finish_cluster_reencryption(). */
static const char *
stage_name(int stage)
{
	return stage == FC_CLUSTER_STAGE_TDE ? "tde" : "values";
}

/* This node's part in a Citus cluster; runs in its own transaction. */
FcClusterRole
fc_rot_cluster_role(void)
{
	FcClusterRole role = FC_CLUSTER_NONE;

	fc_rot_begin_xact();
	if (fc_citus_installed())
	{
		bool		isnull;

		if (SPI_execute("SELECT pg_catalog.citus_is_coordinator()", true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not ask Citus whether this node is its coordinator");
		role = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))
			? FC_CLUSTER_COORDINATOR : FC_CLUSTER_WORKER;
	}
	fc_rot_end_xact();
	return role;
}

/*
 * One round: run _cluster_reencryption_node(stage, gen, release) on every
 * other primary node; count those behind and those waiting.  In a
 * transaction with SPI connected; answers are allocated in cxt.
 */
static void
cluster_round(int stage, uint32 gen, bool release, Round *out, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	memset(out, 0, sizeof(Round));
	values[0] = CStringGetTextDatum(psprintf("SELECT %s._cluster_reencryption_node('%s', %u, %s)",
											 fc_rot_extension_schema(), stage_name(stage), gen,
											 release ? "true" : "false"));
	if (SPI_execute_with_args("SELECT r.node_name::text, r.node_port, r.success, r.result "
							  "FROM (SELECT pg_catalog.array_agg(n.nodename ORDER BY n.nodeid) AS h, "
							  "pg_catalog.array_agg(n.nodeport ORDER BY n.nodeid) AS p, "
							  "pg_catalog.array_agg($1 ORDER BY n.nodeid) AS c "
							  "FROM pg_catalog.pg_dist_node n WHERE n.noderole = 'primary' "
							  "AND n.nodecluster = pg_catalog.current_setting('citus.cluster_name') "
							  "AND n.groupid <> (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g)) a, "
							  "LATERAL pg_catalog.master_run_on_worker(a.h, a.p, a.c, true) r "
							  "WHERE a.h IS NOT NULL ORDER BY 1, 2",
							  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not ask the nodes of the cluster for their re-encryption");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		NodeAnswer *a = palloc0(sizeof(NodeAnswer));
		bool		isnull;
		bool		ok;
		char	   *res = SPI_getvalue(tup, td, 4);

		a->name = SPI_getvalue(tup, td, 1);
		a->port = DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull));
		ok = DatumGetBool(SPI_getbinval(tup, td, 3, &isnull));
		a->state = pstrdup(res ? res : "");
		if (!ok)
		{
			/* the remote error as "ERROR:  message": keep the message */
			if (strncmp(a->state, "ERROR:  ", 8) == 0)
				a->state += 8;
			a->state = psprintf("not reachable: %s", a->state);
		}
		if (ok && strcmp(a->state, "waiting") == 0)
			out->waiting++;
		else if (!ok || (strcmp(a->state, "done") != 0 && strcmp(a->state, "released") != 0))
		{
			if (out->behind++ == 0)
				out->problem = psprintf("node %s:%d: %s", a->name, a->port, a->state);
		}
		out->nodes = lappend(out->nodes, a);
		MemoryContextSwitchTo(old);
	}
}

/* Whether r->to_gen is still this database's current generation of the stage. */
static bool
still_current(const Run *r, int stage)
{
	uint32		cur;
	uint32		old;
	bool		ring_ok = true;
	int			n;

	if (stage == FC_CLUSTER_STAGE_TDE)
		n = fc_rot_tde_generations(MyDatabaseId, &cur, &old);
	else
		n = fc_rot_db_generations(MyDatabaseId, &cur, &old, &ring_ok);
	return ring_ok && n > 1 && cur == r->to_gen;
}

/*
 * Show this worker in phase "waiting for the cluster" of stage (the stage
 * first: whoever sees the phase finds the stage set, and may release it).
 */
static void
publish_waiting(Run *r, int stage)
{
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rot_my_slot->cluster_stage = stage;
	LWLockRelease(fc_rotstate->lock);
	fc_rot_publish(r, PHASE_CLUSTER);
}

/* A worker node: wait for the coordinator's release; false if the wait ended otherwise. */
static bool
wait_for_release(Run *r, int stage)
{
	bool		go = false;

	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rot_my_slot->cluster_go = false;
	LWLockRelease(fc_rotstate->lock);
	publish_waiting(r, stage);
	ereport(LOG,
			(errmsg("fieldcrypt: re-encryption of this node is done; its old %s generation(s) are kept "
					"until the Citus coordinator finds every node done",
					stage == FC_CLUSTER_STAGE_TDE ? "TDE key" : "key")));
	while (!go)
	{
		fc_rot_sleep(200);
		fc_rot_check_postponed();
		if (!still_current(r, stage))
			break;
		LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
		go = fc_rot_my_slot->cluster_go;
		LWLockRelease(fc_rotstate->lock);
	}
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rot_my_slot->cluster_stage = 0;
	fc_rot_my_slot->cluster_go = false;
	LWLockRelease(fc_rotstate->lock);
	if (go)
		ereport(LOG,
				(errmsg("fieldcrypt: the Citus coordinator found every node done: destroying the old %s generation(s)",
						stage == FC_CLUSTER_STAGE_TDE ? "TDE key" : "key")));
	return go;
}

/*
 * The coordinator: rounds until every other node is done (releasing the
 * waiting ones once none is behind); false if the wait ended otherwise.
 */
static bool
coordinate(Run *r, int stage)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "fieldcrypt cluster round",
											  ALLOCSET_DEFAULT_SIZES);
	long		delay = ROUND_MIN_MS;
	char		last[FC_ROT_PROBLEM_LEN] = "";
	bool		result = false;

	publish_waiting(r, stage);
	for (;;)
	{
		Round		rd;
		char		problem[FC_ROT_PROBLEM_LEN];

		fc_rot_check_postponed();
		if (!still_current(r, stage))
			break;
		MemoryContextReset(cxt);
		PG_TRY();
		{
			fc_rot_begin_xact();
			cluster_round(stage, stage == FC_CLUSTER_STAGE_TDE ? 0 : r->to_gen, false, &rd, cxt);
			if (rd.behind == 0 && rd.waiting > 0)
				cluster_round(stage, stage == FC_CLUSTER_STAGE_TDE ? 0 : r->to_gen, true, &rd, cxt);
			fc_rot_end_xact();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			memset(&rd, 0, sizeof(rd));
			rd.behind = 1;
			rd.problem = psprintf("the nodes could not be asked: %s", edata->message);
		}
		PG_END_TRY();

		if (rd.behind == 0 && rd.waiting == 0)
		{
			result = true;
			break;
		}
		if (rd.behind == 0)
		{
			/* released: they destroy now; ask again soon */
			delay = ROUND_MIN_MS;
			fc_rot_set_problem("");
			fc_rot_sleep(delay / 2);
			continue;
		}
		snprintf(problem, sizeof(problem), "old generations kept: %s", rd.problem);
		if (strcmp(problem, last) != 0)
		{
			ereport(LOG,
					(errmsg("fieldcrypt: the old %s generation(s) are kept until every node of the Citus cluster is done",
							stage == FC_CLUSTER_STAGE_TDE ? "TDE key" : "key"),
					 errdetail("%d node(s) not done yet; %s.", rd.behind, rd.problem)));
			strlcpy(last, problem, sizeof(last));
		}
		/* published after the LOG line: whoever sees the problem finds it in the log */
		fc_rot_set_problem(problem);
		fc_rot_sleep(delay);
		delay = Min(delay * 2, ROUND_MAX_MS);
	}
	fc_rot_set_problem("");
	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	fc_rot_my_slot->cluster_stage = 0;
	LWLockRelease(fc_rotstate->lock);
	MemoryContextDelete(cxt);
	return result;
}

/*
 * Before a worker destroys the old generations of stage: on a Citus node,
 * wait until the cluster is done (see the file header).  FC_WAIT_ALONE
 * without Citus, FC_WAIT_CLUSTER when it may destroy now, FC_WAIT_STOP when
 * the wait ended without that (a new key change).
 */
int
fc_rot_cluster_wait(Run *r, int stage)
{
	switch (fc_rot_cluster_role())
	{
		case FC_CLUSTER_NONE:
			return FC_WAIT_ALONE;
		case FC_CLUSTER_WORKER:
			return wait_for_release(r, stage) ? FC_WAIT_CLUSTER : FC_WAIT_STOP;
		case FC_CLUSTER_COORDINATOR:
			return coordinate(r, stage) ? FC_WAIT_CLUSTER : FC_WAIT_STOP;
	}
	return FC_WAIT_STOP;
}

/*
 * fieldcrypt._cluster_reencryption_node(stage, generation, release): where
 * this node is for the coordinator: "done" (only the current generation
 * left), "waiting" (done, old generations kept for the cluster), "released"
 * (was waiting, and release was asked), or "not done: ..." with the reason.
 * For stage 'values', generation is the coordinator's current one.
 */
Datum
fieldcrypt_cluster_reencryption_node(PG_FUNCTION_ARGS)
{
	char	   *stage_s = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		gen = PG_GETARG_INT32(1);
	bool		release = PG_GETARG_BOOL(2);
	int			stage;
	uint32		cur;
	uint32		old;
	bool		ring_ok = true;
	int			n;
	char	   *result;
	FcRotSlot	s;

	fc_require_role(FC_ADMIN_ROLE, "ask for the re-encryption of this node");
	fc_require_tls("fieldcrypt._cluster_reencryption_node");
	if (strcmp(stage_s, "values") == 0)
		stage = FC_CLUSTER_STAGE_VALUES;
	else if (strcmp(stage_s, "tde") == 0)
		stage = FC_CLUSTER_STAGE_TDE;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown re-encryption stage \"%s\"", stage_s),
				 errhint("The stage is \"values\" or \"tde\".")));

	if (stage == FC_CLUSTER_STAGE_TDE)
		n = fc_rot_tde_generations(MyDatabaseId, &cur, &old);
	else
	{
		n = fc_rot_db_generations(MyDatabaseId, &cur, &old, &ring_ok);
		if (!ring_ok)
			PG_RETURN_TEXT_P(cstring_to_text("not done: the keyring of this node is not loaded"));
		if (n == 0)
			PG_RETURN_TEXT_P(cstring_to_text("not done: no key in this database"));
		if (gen <= 0 || cur != (uint32) gen)
			PG_RETURN_TEXT_P(cstring_to_text(psprintf("not done: this node is on generation %u, "
													  "the coordinator on %d", cur, gen)));
	}
	if (n <= 1)
		PG_RETURN_TEXT_P(cstring_to_text("done"));

	LWLockAcquire(fc_rotstate->lock, LW_EXCLUSIVE);
	{
		FcRotSlot  *slot = fc_rotstate_find_slot(MyDatabaseId, false);

		if (slot)
			memcpy(&s, slot, sizeof(s));
		else
			memset(&s, 0, sizeof(s));
		if (slot && s.state == SLOT_RUNNING && s.phase == PHASE_CLUSTER &&
			s.cluster_stage == stage && s.to_gen == cur && release)
			slot->cluster_go = true;
	}
	LWLockRelease(fc_rotstate->lock);

	if (s.state == SLOT_RUNNING && s.phase == PHASE_CLUSTER && s.cluster_stage == stage && s.to_gen == cur)
		result = release ? "released" : "waiting";
	else if (s.state == SLOT_RUNNING)
		result = psprintf("not done: %s, %lld of %lld rows", fc_rot_phase_names[s.phase],
						  (long long) s.rows_done, (long long) s.rows_total);
	else if (s.problem[0] != '\0')
		result = psprintf("not done: %s", s.problem);
	else if (!fc_reencrypt_enabled)
		result = "not done: postponed (fieldcrypt.reencrypt = off)";
	else
		result = "not done: waiting to start";
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*
 * fieldcrypt.finish_cluster_reencryption(): on the coordinator, one round
 * of each stage now, releasing the waiting nodes when none is behind; one
 * row per node and stage with its answer.
 */
Datum
fieldcrypt_finish_cluster_reencryption(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt = CurrentMemoryContext;
	uint32		cur;
	uint32		old;
	bool		ring_ok;
	bool		coordinator;

	fc_require_role(FC_ADMIN_ROLE, "finish a re-encryption on the cluster");
	fc_require_tls("fieldcrypt.finish_cluster_reencryption");
	if (!fc_citus_installed())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the citus extension is not installed in this database"),
				 errhint("fieldcrypt.finish_cluster_reencryption() runs on a Citus coordinator.")));
	InitMaterializedSRF(fcinfo, 0);
	(void) fc_rot_db_generations(MyDatabaseId, &cur, &old, &ring_ok);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT pg_catalog.citus_is_coordinator()", true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not ask Citus whether this node is its coordinator");
	{
		bool		isnull;

		coordinator = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (!coordinator)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this node is not the coordinator of its Citus cluster"),
				 errhint("Run fieldcrypt.finish_cluster_reencryption() on the coordinator.")));
	if (fc_rot_extension_schema() == NULL)
		elog(ERROR, "fieldcrypt is not installed in this database");

	for (int stage = FC_CLUSTER_STAGE_VALUES; stage <= FC_CLUSTER_STAGE_TDE; stage++)
	{
		Round		rd;
		ListCell   *lc;

		cluster_round(stage, cur, false, &rd, cxt);
		if (rd.behind == 0 && rd.waiting > 0)
			cluster_round(stage, cur, true, &rd, cxt);
		foreach(lc, rd.nodes)
		{
			NodeAnswer *a = lfirst(lc);
			Datum		values[4];
			bool		nulls[4] = {0};

			values[0] = CStringGetTextDatum(a->name);
			values[1] = Int32GetDatum(a->port);
			values[2] = CStringGetTextDatum(stage_name(stage));
			values[3] = CStringGetTextDatum(a->state);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	SPI_finish();
	return (Datum) 0;
}
