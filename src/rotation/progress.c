/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  The view fieldcrypt.rotation_progress: one row per database whose old
 *	  generations are not destroyed yet, from the key store and the slots.
 *
 * src/rotation/progress.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "access/xlog.h"
#include "funcapi.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "commands/dbcommands.h"

#include "keys/keystore.h"
#include "keys/policy.h"
#include "rotation/rotation.h"

PG_FUNCTION_INFO_V1(fieldcrypt_rotation_progress);
PG_FUNCTION_INFO_V1(fieldcrypt_rotation_problem);

/*
 * fieldcrypt._rotation_progress(): one row per database whose old
 * generations are not destroyed yet.  Nothing on a server in recovery (the
 * primary re-encrypts; WAL brings the result).
 */
Datum
fieldcrypt_rotation_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid		   *dbs;
	uint32	   *cur;
	uint32	   *old;
	bool	   *tde;
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();

	InitMaterializedSRF(fcinfo, 0);
	if (RecoveryInProgress())
		return (Datum) 0;

	dbs = palloc(sizeof(Oid) * fc_shared->max_dbs);
	cur = palloc(sizeof(uint32) * fc_shared->max_dbs);
	old = palloc(sizeof(uint32) * fc_shared->max_dbs);
	tde = palloc0(sizeof(bool) * fc_shared->max_dbs);
	for (int i = 0; i < fc_shared->max_dbs; i++)
	{
		bool		ring_ok;
		Oid			dboid;

		LWLockAcquire(fc_shared->lock, LW_SHARED);
		dboid = fc_shared->dbs[i].dboid;
		LWLockRelease(fc_shared->lock);
		if (OidIsValid(dboid) && fc_rot_db_generations(dboid, &cur[n], &old[n], &ring_ok) > 1 && ring_ok)
			dbs[n++] = dboid;
		else if (OidIsValid(dboid) && ring_ok && fc_rot_tde_generations(dboid, &cur[n], &old[n]) > 1)
		{
			tde[n] = true;		/* encrypted_heap rows under an older TDE generation */
			dbs[n++] = dboid;
		}
	}

	for (int i = 0; i < n; i++)
	{
		Datum		values[13];
		bool		nulls[13] = {0};
		FcRotSlot	s;
		char	   *dbname = get_database_name(dbs[i]);
		const char *phase;

		fc_rotstate_slot_copy(dbs[i], &s);

		/*
		 * A running worker of the same kind of generations; its target may
		 * be older than cur when a key change was accepted while another
		 * session held it up (tables.c goes on to cur at its next attempt;
		 * values.c ends its run without destroying anything, and the next
		 * worker goes on to cur).
		 */
		if (s.state == SLOT_RUNNING && s.tde == tde[i] && s.to_gen != 0)
			phase = fc_rot_phase_names[s.phase];
		else if (s.state == SLOT_BLOCKED && s.blocked_gen == cur[i])
			phase = "blocked";
		else if (s.state == SLOT_HELD && s.problem[0] != '\0')
			phase = "retrying";		/* counters of the last run, problem shown */
		else if (!fc_reencrypt_enabled)
		{
			memset(&s, 0, sizeof(s));
			phase = "postponed";
		}
		else
		{
			memset(&s, 0, sizeof(s));
			phase = "waiting to start";
		}

		/* database, from, to, phase, tables_done, tables_total, rows_done,
		 * rows_total, rows_per_second, started_at, estimated_end, pid, dboid */
		values[0] = dbname ? DirectFunctionCall1(namein, CStringGetDatum(dbname)) : (Datum) 0;
		nulls[0] = dbname == NULL;
		values[1] = Int32GetDatum(old[i]);
		values[2] = Int32GetDatum(cur[i]);
		values[3] = CStringGetTextDatum(phase);
		values[4] = Int32GetDatum(s.tables_done);
		values[5] = Int32GetDatum(s.tables_total);
		values[6] = Int64GetDatum(s.rows_done);
		values[7] = Int64GetDatum(s.rows_total);
		nulls[8] = nulls[9] = nulls[10] = nulls[11] = true;
		if (s.state == SLOT_RUNNING)
		{
			double		secs = (double) (now - s.attached_at) / USECS_PER_SEC;
			double		rate = secs > 0 ? (double) (s.rows_done - s.rows_at_attach) / secs : 0;

			values[8] = Float8GetDatum(rate);
			values[9] = TimestampTzGetDatum(s.started_at);
			nulls[8] = nulls[9] = false;
			if (rate > 0 && s.rows_total >= s.rows_done)
			{
				values[10] = TimestampTzGetDatum(now + (TimestampTz)
												 ((double) (s.rows_total - s.rows_done) / rate * USECS_PER_SEC));
				nulls[10] = false;
			}
			values[11] = Int32GetDatum(s.pid);
			nulls[11] = false;
		}
		values[12] = ObjectIdGetDatum(dbs[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * fieldcrypt._rotation_problem(datid): why the last re-encryption run of
 * the database did not finish (a table name and an SQLSTATE; the server log
 * has the message), or NULL.  It names tables and processes: shown for the
 * current database, and for every database to superusers and members of
 * fieldcrypt_admin (the view is readable by everyone).
 */
Datum
fieldcrypt_rotation_problem(PG_FUNCTION_ARGS)
{
	FcRotSlot	s;
	Oid			datid = PG_GETARG_OID(0);

	if (datid != MyDatabaseId && !fc_has_role(FC_ADMIN_ROLE))
		PG_RETURN_NULL();
	fc_rotstate_slot_copy(datid, &s);
	if (s.problem[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(s.problem));
}
