/*-------------------------------------------------------------------------
 *
 * node_conn.c
 *	  libpq connections from this backend to other nodes (a Citus
 *	  coordinator to its workers, cluster_2pc.c) that never block the
 *	  backend beyond its control and never outlive an error.
 *
 *	  Waiting: a connection is opened with PQconnectStartParams and
 *	  PQconnectPoll, a command sent with PQsendQuery / PQsendQueryParams,
 *	  and every wait for the socket is a WaitLatchOrSocket on MyLatch with
 *	  WL_EXIT_ON_PM_DEATH.  Each wait is bounded by
 *	  fieldcrypt.cluster_command_timeout (connecting included: libpq's own
 *	  connect_timeout only applies to its blocking calls).  Two modes:
 *
 *	  - interruptible (bounded = false): between waits the latch is reset
 *	    and CHECK_FOR_INTERRUPTS runs, so pg_cancel_backend,
 *	    pg_terminate_backend and statement_timeout end the wait with their
 *	    usual ERROR or FATAL.  A timeout returns failure with a reason.
 *	  - bounded (bounded = true, where an ERROR is not allowed: the COMMIT
 *	    and ABORT callbacks, after the local decision): no CHECK_FOR_INTERRUPTS
 *	    (interrupts are held there anyway); the wait gives up at the
 *	    timeout, or at once when a cancel or terminate request is pending,
 *	    and returns failure, never an ERROR.  The caller leaves the work to
 *	    recovery with a WARNING.
 *
 *	  Registry: every connection opened here is remembered with the
 *	  transaction resource owner current when it was opened
 *	  (CurTransactionResourceOwner).  A resource-release callback closes
 *	  the connections of an owner released on abort (an ERROR or an
 *	  interrupt anywhere between connect and close leaks nothing: the
 *	  worker sees its session end); on commit of a subtransaction they pass
 *	  to the parent's owner; at the end of the top transaction every one
 *	  left is closed.  Transaction callbacks (cluster_2pc.c's ROLLBACK
 *	  PREPARED at abort) run before resource owners are released, so they
 *	  still find their connections open.
 *
 *	  A command abandoned mid-flight (interrupt, timeout) is not cancelled
 *	  on the node: libpq 15 only cancels by a blocking call with no time
 *	  limit, which a stalled node would turn into the very hang this file
 *	  avoids.  The connection is closed instead; the node's backend ends
 *	  its transaction (not prepared: nothing changes there) when it next
 *	  reads from its socket.
 *
 * src/keys/node_conn.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "keys/node_conn.h"

int			fc_cluster_command_timeout = 30000;

/* One open connection and the resource owner it belongs to. */
typedef struct NodeConn
{
	PGconn	   *conn;
	ResourceOwner owner;
} NodeConn;

static NodeConn *conns = NULL;	/* in TopMemoryContext */
static int	nconns = 0;
static int	maxconns = 0;
static bool callback_registered = false;

static void release_callback(ResourceReleasePhase phase, bool isCommit,
							 bool isTopLevel, void *arg);
static void remember(PGconn *conn);
static bool wait_socket(PGconn *conn, int events, TimestampTz deadline,
						bool bounded, char **why);

/* Remember conn under the current transaction's resource owner. */
static void
remember(PGconn *conn)
{
	if (!callback_registered)
	{
		RegisterResourceReleaseCallback(release_callback, NULL);
		callback_registered = true;
	}
	if (nconns == maxconns)
	{
		int			n = maxconns ? maxconns * 2 : 8;

		conns = conns ? repalloc(conns, sizeof(NodeConn) * n)
			: MemoryContextAlloc(TopMemoryContext, sizeof(NodeConn) * n);
		maxconns = n;
	}
	conns[nconns].conn = conn;
	conns[nconns].owner = CurTransactionResourceOwner;
	nconns++;
}

/* Close and forget conn (PQfinish); NULL is allowed. */
void
fc_node_close(PGconn *conn)
{
	if (conn == NULL)
		return;
	for (int i = 0; i < nconns; i++)
		if (conns[i].conn == conn)
		{
			conns[i] = conns[--nconns];
			break;
		}
	PQfinish(conn);
}

/*
 * Resource owner released: on abort its connections are closed; on commit
 * of a subtransaction they go to the parent owner; at the top level's end
 * none is left open.
 */
static void
release_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	ResourceOwner owner = CurrentResourceOwner;
	ResourceOwner parent;

	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || nconns == 0)
		return;
	parent = owner ? ResourceOwnerGetParent(owner) : NULL;
	for (int i = nconns - 1; i >= 0; i--)
	{
		if (conns[i].owner != owner)
			continue;
		if (isCommit && owner != TopTransactionResourceOwner && parent != NULL)
			conns[i].owner = parent;	/* a committed subtransaction */
		else
		{
			PGconn	   *c = conns[i].conn;

			conns[i] = conns[--nconns];
			PQfinish(c);
		}
	}
}

/*
 * Wait until conn's socket has events, the deadline passes, or (bounded)
 * an interrupt is pending.  False with *why on timeout or on an interrupt
 * in bounded mode; in interruptible mode an interrupt throws.
 */
static bool
wait_socket(PGconn *conn, int events, TimestampTz deadline, bool bounded, char **why)
{
	for (;;)
	{
		long		ms;
		int			rc;

		if (bounded && (ProcDiePending || QueryCancelPending))
		{
			*why = pstrdup("the wait was interrupted");
			return false;
		}
		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (ms <= 0)
		{
			*why = psprintf("no answer within fieldcrypt.cluster_command_timeout (%d ms)",
							fc_cluster_command_timeout);
			return false;
		}
		rc = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | events,
							   PQsocket(conn), ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			if (!bounded)
				CHECK_FOR_INTERRUPTS();
		}
		if (rc & events)
			return true;
	}
}

/*
 * Open a connection (conninfo: a libpq connection string), waiting as the
 * file header says.  NULL and *why on failure; interrupts throw unless
 * bounded.
 */
PGconn *
fc_node_connect(const char *conninfo, bool bounded, char **why)
{
	const char *keywords[2] = {"dbname", NULL};
	const char *values[2] = {conninfo, NULL};
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   fc_cluster_command_timeout);
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	PGconn	   *conn = PQconnectStartParams(keywords, values, 1);

	if (conn == NULL)
	{
		*why = pstrdup("out of memory");
		return NULL;
	}
	remember(conn);				/* from here an ERROR closes it */
	if (PQstatus(conn) == CONNECTION_BAD)
		st = PGRES_POLLING_FAILED;
	while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED)
	{
		if (!wait_socket(conn, st == PGRES_POLLING_READING ? WL_SOCKET_READABLE
						 : WL_SOCKET_WRITEABLE, deadline, bounded, why))
		{
			fc_node_close(conn);
			return NULL;
		}
		st = PQconnectPoll(conn);
	}
	if (st == PGRES_POLLING_FAILED)
	{
		*why = pchomp(PQerrorMessage(conn));
		fc_node_close(conn);
		return NULL;
	}
	return conn;
}

/*
 * Run sql (with nparams text parameters, or none) and return its last
 * result, an error result in preference (as PQexec does); the caller
 * PQclears it.  NULL and *why when the command could not be sent or its
 * answer did not come (connection lost, timeout, bounded interrupt).
 */
PGresult *
fc_node_exec(PGconn *conn, const char *sql, int nparams, const char *const *values,
			 bool bounded, char **why)
{
	return fc_node_exec_params(conn, sql, nparams, values, NULL, NULL, bounded, why);
}

/* fc_node_exec with parameter lengths and formats (binary ones), as PQexecParams takes. */
PGresult *
fc_node_exec_params(PGconn *conn, const char *sql, int nparams, const char *const *values,
					const int *lengths, const int *formats, bool bounded, char **why)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   fc_cluster_command_timeout);
	PGresult   *last = NULL;
	int			sent;
	int			fl;

	if (PQstatus(conn) != CONNECTION_OK)
	{
		*why = pchomp(PQerrorMessage(conn));
		return NULL;
	}
	sent = nparams > 0
		? PQsendQueryParams(conn, sql, nparams, NULL, values, lengths, formats, 0)
		: PQsendQuery(conn, sql);
	if (!sent)
	{
		*why = pchomp(PQerrorMessage(conn));
		return NULL;
	}
	while ((fl = PQflush(conn)) == 1)
		if (!wait_socket(conn, WL_SOCKET_WRITEABLE, deadline, bounded, why))
			return NULL;
	if (fl < 0)
	{
		*why = pchomp(PQerrorMessage(conn));
		return NULL;
	}
	for (;;)
	{
		PGresult   *res;

		while (PQisBusy(conn))
		{
			if (!wait_socket(conn, WL_SOCKET_READABLE, deadline, bounded, why))
			{
				PQclear(last);
				return NULL;
			}
			if (!PQconsumeInput(conn))
			{
				*why = pchomp(PQerrorMessage(conn));
				PQclear(last);
				return NULL;
			}
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		if (last != NULL && PQresultStatus(last) == PGRES_FATAL_ERROR)
			PQclear(res);		/* keep the error */
		else
		{
			PQclear(last);
			last = res;
		}
	}
	if (last == NULL)
		*why = pchomp(PQerrorMessage(conn));
	return last;
}
