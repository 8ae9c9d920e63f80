/*-------------------------------------------------------------------------
 *
 * cluster_2pc.c
 *	  A key change on a Citus coordinator reaches every worker in the same
 *	  decision, by two-phase commit.
 *
 *	  In a database where Citus is installed and this node is the
 *	  coordinator (citus_is_coordinator()), set_data_encryption_key calls
 *	  fc_cluster_key_change once it staged the change, still inside the
 *	  caller's transaction.  For each active primary worker of
 *	  pg_dist_node (groupid <> 0) it opens a libpq connection (host and port
 *	  from pg_dist_node, the current database and user, sslmode=require,
 *	  then citus.node_conninfo, as Citus itself connects), runs BEGIN,
 *	  fieldcrypt.import_key_generations($1, $2) with the document of the
 *	  coordinator's new generations and the passphrase as bind parameters
 *	  (never in the query text: not in any node's log or pg_stat_activity),
 *	  and PREPARE TRANSACTION 'fieldcrypt_<system id>_<xid>_<nodeid>'; the
 *	  worker keeps the change sealed until COMMIT PREPARED (prepared.c).
 *	  Each gid is recorded in fieldcrypt.cluster_transactions in the
 *	  caller's transaction: that row commits with the coordinator's own
 *	  change and is the decision.  The import gives every node the same
 *	  generation (number, salt, key check value), so an envelope sealed on
 *	  any node opens on every node.
 *
 *	  Any failure (a node down, a node that refuses the import) rolls back
 *	  the nodes already prepared and raises an ERROR naming the node, so
 *	  nothing changed anywhere.  At COMMIT the coordinator sends COMMIT
 *	  PREPARED to every node (a failure is a WARNING: recovery finishes
 *	  it); at ABORT, or when the savepoint that made the change rolls back,
 *	  ROLLBACK PREPARED.
 *
 *	  Recovery (fc_cluster_recover: fieldcrypt.recover_cluster_key_changes()
 *	  and the start of every propagated key change): on each worker, a
 *	  prepared fieldcrypt_<our system id>_... transaction whose gid is
 *	  recorded is committed; one with no record whose coordinator
 *	  transaction is no longer in progress is rolled back; records of gids
 *	  that are no longer prepared are removed.  In-progress transactions are
 *	  judged before the records are read, so a coordinator transaction that
 *	  commits meanwhile is left alone.
 *
 *	  fieldcrypt does not link Citus: it reads Citus's catalog and calls
 *	  citus_is_coordinator() through SPI, and talks to workers with libpq
 *	  through node_conn.c: every wait is interruptible (pg_cancel_backend,
 *	  statement_timeout) and bounded by fieldcrypt.cluster_command_timeout,
 *	  and a connection never outlives the (sub)transaction that aborted.
 *	  COMMIT/ROLLBACK PREPARED in the transaction callbacks wait in bounded
 *	  mode: they never throw, and a node that does not answer in time is
 *	  left prepared for recovery, with a WARNING.  A cancel that arrives
 *	  while a node answers PREPARE TRANSACTION can leave that node's
 *	  transaction prepared without a record: recovery rolls it back.
 *
 * src/keys/cluster_2pc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "keys/cluster.h"
#include "keys/cluster_2pc.h"
#include "keys/keydoc.h"
#include "keys/keystore.h"
#include "keys/node_conn.h"
#include "keys/redact.h"
#include "keys/policy.h"

#define GID_PREFIX		"fieldcrypt_"
#define TXN_TABLE		"fieldcrypt.cluster_transactions"

bool		fc_test_cluster_skip_commit_prepared = false;

PG_FUNCTION_INFO_V1(fieldcrypt_recover_cluster_key_changes);
PG_FUNCTION_INFO_V1(fieldcrypt_cluster_sync_keys);

/* One worker node of pg_dist_node (cluster_2pc.h). */
typedef FcClusterNode WorkerNode;

/* One worker prepared by this transaction. */
typedef struct Prepared
{
	PGconn	   *conn;
	char		gid[NAMEDATALEN];
	char	   *host;
	int32		port;
	SubTransactionId subid;		/* the (sub)transaction that prepared it */
} Prepared;

static List *prepared = NIL;	/* of Prepared *, in TopTransactionContext */
static bool registered = false;

static void xact_callback(XactEvent event, void *arg);
static void subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg);
static void finish_all(bool commit);
static void finish_some(bool commit, SubTransactionId subid, int from);
static void record_gid(const char *gid, const WorkerNode *n);
static void key_change_on(List *nodes, const FcDbKeys *e, const char *pass);

/*
 * Is Citus here and this node its coordinator (SPI, as the caller)?  Every
 * caller is about to change keys, so a coordinator session named like a
 * Citus peer session is refused here (55000) rather than answered.
 */
bool
fc_cluster_is_coordinator(void)
{
	bool		result = false;
	bool		isnull;

	if (!fc_citus_installed())
		return false;
	SPI_connect();
	if (SPI_execute("SELECT pg_catalog.citus_is_coordinator()", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		result = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) &&
			!isnull;
	SPI_finish();

	/*
	 * A session named like one Citus opens between nodes (any client can
	 * take that application_name) must not change the coordinator's keys
	 * alone, leaving the workers on others.
	 */
	if (result && fc_citus_peer_session())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key changes cannot be made in a Citus internal session on the coordinator"),
				 errdetail("This session's application_name (\"%s\") is the one Citus gives the sessions it opens between nodes; "
						   "a key change here would not reach the workers.", application_name),
				 errhint("Connect with another application_name.")));
	return result;
}

/* The active primary workers of pg_dist_node, in the caller's memory context. */
List *
fc_cluster_worker_nodes(void)
{
	List	   *nodes = NIL;
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	if (SPI_execute("SELECT nodeid, nodename::text, nodeport FROM pg_catalog.pg_dist_node "
					"WHERE isactive AND noderole = 'primary' AND groupid <> 0 ORDER BY nodeid",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_node");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		WorkerNode	   *n = palloc(sizeof(WorkerNode));

		n->nodeid = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
		n->host = TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull));
		n->port = DatumGetInt32(SPI_getbinval(tup, td, 3, &isnull));
		nodes = lappend(nodes, n);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return nodes;
}

/* Append key = 'value' (quoted for a conninfo string). */
static void
append_param(StringInfo buf, const char *key, const char *value)
{
	appendStringInfo(buf, " %s='", key);
	for (const char *p = value; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '\'');
}

/* libpq notice processor that drops the notice. */
static void
ignore_notice(void *arg, const char *message)
{
}

/* Connect to node n as the current user, in the current database; NULL and *why on failure. */
PGconn *
fc_cluster_connect_node(const WorkerNode *n, char **why)
{
	StringInfoData ci;
	const char *extra = GetConfigOption("citus.node_conninfo", true, false);
	PGconn	   *conn;

	initStringInfo(&ci);
	appendStringInfoString(&ci, "sslmode=require");
	if (extra && extra[0])
		appendStringInfo(&ci, " %s", extra);
	append_param(&ci, "host", n->host);
	appendStringInfo(&ci, " port=%d", n->port);
	append_param(&ci, "dbname", get_database_name(MyDatabaseId));
	append_param(&ci, "user", GetUserNameFromId(GetUserId(), false));
	append_param(&ci, "application_name", "fieldcrypt key change");
	conn = fc_node_connect(ci.data, false, why);
	pfree(ci.data);
	if (conn == NULL)
		return NULL;
	/* a worker's NOTICEs (e.g. "already holds every key generation") are not ours to log */
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	return conn;
}

/* The primary message of a failed command (and its SQLSTATE), or the connection's error. */
char *
fc_cluster_remote_error(PGconn *conn, PGresult *res, char **sqlstate)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	/* five characters or none: the callers build an errcode from it */
	*sqlstate = st && strlen(st) == 5 ? pstrdup(st) : NULL;
	return msg ? pstrdup(msg) : pchomp(PQerrorMessage(conn));
}

/*
 * Run one command (with nparams bind parameters, lengths and formats as
 * PQexecParams takes them; NULL for text), interruptibly; false with *why
 * (and *sqlstate) on failure.
 */
bool
fc_cluster_run(PGconn *conn, const char *sql, int nparams, const char *const *values,
			   const int *lengths, const int *formats, char **why, char **sqlstate)
{
	char	   *lost = NULL;
	PGresult   *res = fc_node_exec_params(conn, sql, nparams, values, lengths, formats,
										  false, &lost);
	bool		ok = res && (PQresultStatus(res) == PGRES_COMMAND_OK ||
							 PQresultStatus(res) == PGRES_TUPLES_OK);

	if (!ok)
		*why = res ? fc_cluster_remote_error(conn, res, sqlstate) : lost;
	PQclear(res);
	return ok;
}

/* Run one command without parameters (fc_cluster_run). */
bool
fc_cluster_run_simple(PGconn *conn, const char *sql, char **why, char **sqlstate)
{
	return fc_cluster_run(conn, sql, 0, NULL, NULL, NULL, why, sqlstate);
}

/* The errcode of a node's SQLSTATE (fc_cluster_remote_error's), 08006 without one. */
int
fc_cluster_errcode(const char *sqlstate)
{
	if (sqlstate == NULL)
		return ERRCODE_CONNECTION_FAILURE;
	return MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2], sqlstate[3], sqlstate[4]);
}

/*
 * ERROR: what could not be changed on node host:port, and nothing was
 * changed on any node; why is what the node reported, code its errcode.
 */
void
fc_cluster_refuse(const char *what, const char *host, int port, int code, const char *why)
{
	ereport(ERROR,
			(errcode(code),
			 errmsg("could not change %s on node %s:%d", what, host, port),
			 errdetail("Nothing was changed on any node. The node reported: %s", why),
			 errhint("Every active worker of the Citus cluster must take the change; "
					 "fix that node or remove it from the cluster, then retry.")));
}

/* Record gid (prepared on n) in the caller's transaction. */
static void
record_gid(const char *gid, const WorkerNode *n)
{
	Oid			types[4] = {TEXTOID, INT4OID, TEXTOID, INT4OID};
	Datum		values[4];
	Oid			save_user;
	int			save_sec;
	int			save_nest;

	values[0] = CStringGetTextDatum(gid);
	values[1] = Int32GetDatum(n->nodeid);
	values[2] = CStringGetTextDatum(n->host);
	values[3] = Int32GetDatum(n->port);
	fc_meta_spi_connect(&save_user, &save_sec, &save_nest);
	if (SPI_execute_with_args("INSERT INTO " TXN_TABLE " (gid, nodeid, nodename, nodeport) "
							  "VALUES ($1, $2, $3, $4)", 4, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into " TXN_TABLE);
	fc_meta_spi_finish(save_user, save_sec, save_nest);
}

/*
 * COMMIT PREPARED (commit) or ROLLBACK PREPARED on every node this
 * transaction prepared, then close the connections.  Never ERRORs.
 */
static void
finish_all(bool commit)
{
	finish_some(commit, InvalidSubTransactionId, 0);
}

/*
 * COMMIT or ROLLBACK PREPARED the workers' transactions from position from
 * of the list on, of subtransaction subid only unless it is invalid; the
 * others stay in the list.
 */
static void
finish_some(bool commit, SubTransactionId subid, int from)
{
	ListCell   *lc;
	List	   *keep = NIL;
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	foreach(lc, prepared)
	{
		Prepared   *p = (Prepared *) lfirst(lc);
		char	   *sql;
		char	   *why = NULL;
		PGresult   *res = NULL;

		if (foreach_current_index(lc) < from ||
			(subid != InvalidSubTransactionId && p->subid != subid))
		{
			keep = lappend(keep, p);
			continue;
		}
		if (commit && fc_test_cluster_skip_commit_prepared)
		{
			fc_node_close(p->conn);
			continue;
		}
		sql = psprintf("%s PREPARED '%s'", commit ? "COMMIT" : "ROLLBACK", p->gid);
		/* bounded: after the local decision an ERROR or a hang is not allowed */
		res = fc_node_exec(p->conn, sql, 0, NULL, true, &why);
		if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
			ereport(WARNING,
					(errmsg("could not %s the key change on node %s:%d",
							commit ? "commit" : "roll back", p->host, p->port),
					 errdetail("Transaction \"%s\" stays prepared on that node. The node reported: %s",
							   p->gid, res && PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
							   ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
							   : (why ? why : "no answer")),
					 errhint("Run fieldcrypt.recover_cluster_key_changes() on the coordinator "
							 "once the node is reachable.")));
		PQclear(res);
		fc_node_close(p->conn);
	}
	prepared = keep;
	MemoryContextSwitchTo(old);
}

/* Finish the workers' transactions with the coordinator's own. */
static void
xact_callback(XactEvent event, void *arg)
{
	if (prepared == NIL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot prepare a transaction that changed the data encryption key of a Citus cluster")));
			break;
		case XACT_EVENT_COMMIT:
			finish_all(true);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			finish_all(false);
			break;
		default:
			break;
	}
}

/* A rolled-back savepoint takes the workers' changes with it. */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (prepared == NIL)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		finish_some(false, mySubid, 0);
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		foreach(lc, prepared)
		{
			Prepared   *p = (Prepared *) lfirst(lc);

			if (p->subid == mySubid)
				p->subid = parentSubid;
		}
}

/*
 * On a Citus coordinator: prepare the key change e (just staged by the
 * caller, passphrase pass) on every worker, or ERROR naming the node that
 * could not take it, with nothing changed on any node.  No-op elsewhere.
 */
void
fc_cluster_key_change(const FcDbKeys *e, const char *pass)
{
	if (!fc_cluster_is_coordinator())
		return;
	(void) fc_cluster_recover(false);
	key_change_on(fc_cluster_worker_nodes(), e, pass);
}

/* Prepare the key change e on every node of nodes, or ERROR (see above). */
static void
key_change_on(List *nodes, const FcDbKeys *e, const char *pass)
{
	ListCell   *lc;
	char	   *doc;
	uint64		sysid = GetSystemIdentifier();
	TransactionId xid;
	int			first;

	if (!registered)
	{
		RegisterXactCallback(xact_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		registered = true;
	}
	doc = fc_key_generations_document(e);
	xid = GetTopTransactionId();
	first = list_length(prepared);	/* a failure rolls back this call's only */

	foreach(lc, nodes)
	{
		WorkerNode	   *n = (WorkerNode *) lfirst(lc);
		char	   *why = NULL;
		char	   *sqlstate = NULL;
		PGconn	   *conn = fc_cluster_connect_node(n, &why);
		char		gid[NAMEDATALEN];
		bool		ok = conn != NULL;

		snprintf(gid, sizeof(gid), GID_PREFIX UINT64_FORMAT "_%u_%d", sysid, xid, n->nodeid);
		if (ok)
			ok = fc_cluster_run_simple(conn, "BEGIN", &why, &sqlstate);
		if (ok)
		{
			const char *values[2] = {doc, pass};

			ok = fc_cluster_run(conn, "SELECT fieldcrypt.import_key_generations($1, $2)",
								2, values, NULL, NULL, &why, &sqlstate);
		}
		if (ok)
			ok = fc_cluster_run_simple(conn, psprintf("PREPARE TRANSACTION '%s'", gid), &why, &sqlstate);
		if (!ok)
		{
			if (conn)
				fc_node_close(conn);
			finish_some(false, InvalidSubTransactionId, first);
			fc_cluster_refuse("the data encryption key", n->host, n->port,
							  fc_cluster_errcode(sqlstate), why);
		}
		{
			MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
			Prepared   *p = palloc0(sizeof(Prepared));

			p->conn = conn;
			strlcpy(p->gid, gid, sizeof(p->gid));
			p->host = pstrdup(n->host);
			p->port = n->port;
			p->subid = GetCurrentSubTransactionId();
			prepared = lappend(prepared, p);
			MemoryContextSwitchTo(old);
		}
		record_gid(gid, n);
	}
}

/*
 * Whether gid is exactly one of ours: prefix (ours, with this coordinator's
 * system identifier), then <xid>_<node id> in digits and nothing else;
 * *xid receives the coordinator's transaction id.
 */
static bool
own_gid(const char *gid, const char *prefix, TransactionId *xid)
{
	const char *p;
	const char *digits;
	unsigned long v;

	if (strncmp(gid, prefix, strlen(prefix)) != 0)
		return false;
	p = gid + strlen(prefix);
	for (int part = 0; part < 2; part++)
	{
		digits = p;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p == digits || p - digits > 10)
			return false;
		if (part == 0)
		{
			v = strtoul(digits, NULL, 10);
			if (v > PG_UINT32_MAX || !TransactionIdIsNormal((TransactionId) v))
				return false;
			*xid = (TransactionId) v;
			if (*p++ != '_')
				return false;
		}
	}
	return *p == '\0';
}

/*
 * Finish what interrupted key changes left prepared on the workers (see the
 * file header).  Returns how many prepared transactions were committed or
 * rolled back.  A node that cannot be reached is skipped with a WARNING
 * when strict is false, an ERROR otherwise.
 */
int
fc_cluster_recover(bool strict)
{
	List	   *nodes = fc_cluster_worker_nodes();
	ListCell   *lc;
	char	   *prefix = psprintf(GID_PREFIX UINT64_FORMAT "_", GetSystemIdentifier());
	int			done = 0;

	foreach(lc, nodes)
	{
		WorkerNode	   *n = (WorkerNode *) lfirst(lc);
		char	   *why = NULL;
		char	   *sqlstate = NULL;
		PGconn	   *conn = fc_cluster_connect_node(n, &why);
		PGresult   *res;
		int			ngids;
		char	  **gids;
		bool	   *running;
		Oid			save_user;
		int			save_sec;
		int			save_nest;
		SPIPlanPtr	record_plan;

		if (conn == NULL)
		{
			ereport(strict ? ERROR : WARNING,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not connect to node %s:%d to recover key changes", n->host, n->port),
					 errdetail("%s", why)));
			continue;
		}
		{
			const char *values[1] = {prefix};

			res = fc_node_exec(conn, "SELECT gid FROM pg_catalog.pg_prepared_xacts "
							   "WHERE database = current_database() AND starts_with(gid, $1)",
							   1, values, false, &why);
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			if (res)
				why = fc_cluster_remote_error(conn, res, &sqlstate);
			PQclear(res);
			fc_node_close(conn);
			ereport(strict ? ERROR : WARNING,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not list the prepared transactions of node %s:%d", n->host, n->port),
					 errdetail("%s", why)));
			continue;
		}
		ngids = PQntuples(res);
		gids = palloc0(sizeof(char *) * (ngids + 1));
		running = palloc0(sizeof(bool) * (ngids + 1));
		for (int i = 0; i < ngids; i++)
		{
			TransactionId cx;

			/*
			 * Only gids of exactly our form are ours: any login on the
			 * worker may prepare a transaction under a name that starts
			 * with the prefix; such names are left alone (never quoted
			 * into SQL, never in the list of the records' gids).
			 */
			if (!own_gid(PQgetvalue(res, i, 0), prefix, &cx))
				continue;
			gids[i] = pstrdup(PQgetvalue(res, i, 0));
			/* judged before the records are read: see the file header */
			running[i] = TransactionIdIsInProgress(cx);
		}
		PQclear(res);

		fc_meta_spi_connect(&save_user, &save_sec, &save_nest);
		{
			Oid			types[1] = {TEXTOID};

			record_plan = SPI_prepare("SELECT 1 FROM " TXN_TABLE " WHERE gid = $1", 1, types);
			if (record_plan == NULL)
				elog(ERROR, "could not prepare a query of " TXN_TABLE);
		}
		for (int i = 0; i < ngids; i++)
		{
			Datum		values[1] = {gids[i] ? CStringGetTextDatum(gids[i]) : (Datum) 0};
			bool		recorded;
			char	   *sql;

			/*
			 * A coordinator transaction still running (this one included)
			 * has decided nothing yet: its record may still be rolled back.
			 */
			if (gids[i] == NULL || running[i])
				continue;
			/* the latest snapshot: a record committed after ours began counts */
			if (SPI_execute_snapshot(record_plan, values, NULL, GetLatestSnapshot(),
									 InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "could not read " TXN_TABLE);
			recorded = SPI_processed > 0;
			sql = psprintf("%s PREPARED %s", recorded ? "COMMIT" : "ROLLBACK",
						   quote_literal_cstr(gids[i]));
			if (fc_cluster_run_simple(conn, sql, &why, &sqlstate))
			{
				done++;
				ereport(LOG,
						(errmsg("fieldcrypt: %s the interrupted key change \"%s\" on node %s:%d",
								recorded ? "committed" : "rolled back", gids[i], n->host, n->port)));
				gids[i] = NULL; /* no longer prepared */
			}
			else
				ereport(WARNING,
						(errmsg("could not finish the interrupted key change \"%s\" on node %s:%d",
								gids[i], n->host, n->port),
						 errdetail("%s", why)));
		}
		/* records of this node whose gid is no longer prepared there are done */
		{
			Oid			types[3] = {TEXTOID, INT4OID, TEXTOID};
			Datum		values[3];
			StringInfoData arr;
			int			k = 0;

			initStringInfo(&arr);
			appendStringInfoChar(&arr, '{');
			for (int i = 0; i < ngids; i++)
				if (gids[i] != NULL)
					appendStringInfo(&arr, "%s\"%s\"", k++ ? "," : "", gids[i]);
			appendStringInfoChar(&arr, '}');
			/* by host and port: a node synchronized before citus_add_node has no node id then */
			values[0] = CStringGetTextDatum(n->host);
			values[1] = Int32GetDatum(n->port);
			values[2] = CStringGetTextDatum(arr.data);
			if (SPI_execute_with_args("DELETE FROM " TXN_TABLE " WHERE nodename = $1 AND nodeport = $2 "
									  "AND gid <> ALL ($3::text[])",
									  3, types, values, NULL, false, 0) != SPI_OK_DELETE)
				elog(ERROR, "could not delete from " TXN_TABLE);
		}
		fc_meta_spi_finish(save_user, save_sec, save_nest);
		fc_node_close(conn);
	}
	return done;
}

/*
 * fieldcrypt.recover_cluster_key_changes() RETURNS integer
 *
 * On a Citus coordinator: finish the key changes that a crash or an
 * unreachable node left prepared on workers; how many were finished.
 */
Datum
fieldcrypt_recover_cluster_key_changes(PG_FUNCTION_ARGS)
{
	fc_require_role(FC_ADMIN_ROLE, "recover key changes");
	if (!fc_cluster_is_coordinator())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is not the coordinator of a Citus cluster"),
				 errhint("Run fieldcrypt.recover_cluster_key_changes() on the Citus coordinator.")));
	PG_RETURN_INT32(fc_cluster_recover(true));
}

/*
 * fieldcrypt.cluster_sync_keys(nodename text DEFAULT NULL, nodeport integer
 * DEFAULT NULL) RETURNS void
 *
 * On a Citus coordinator: give every worker the coordinator's current key
 * generation, in one two-phase decision (a node added after a key change);
 * with nodename and nodeport, only that node, which need not be in
 * pg_dist_node yet (a node about to be added: Citus creates the shells of
 * encrypted_heap tables there at citus_add_node, which needs its key).
 * Workers that hold it already are left as they are (their import adds
 * nothing); a worker that holds another generation under the same number
 * refuses, and nothing changes anywhere.  Older generations are not sent:
 * each needs its own passphrase, which the coordinator no longer holds
 * (they go once re-encryption is done).
 */
Datum
fieldcrypt_cluster_sync_keys(PG_FUNCTION_ARGS)
{
	FcDbKeys   *cur;
	FcDbKeys   *one;

	fc_require_role(FC_ADMIN_ROLE, "synchronize the keys of a Citus cluster");
	fc_require_tls("fieldcrypt.cluster_sync_keys");
	if (!fc_cluster_is_coordinator())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database is not the coordinator of a Citus cluster"),
				 errhint("Run fieldcrypt.cluster_sync_keys() on the Citus coordinator.")));
	fc_check_ring_usable();
	fc_acquire_change_lock();
	fc_secure_region_alloc((void **) &cur, sizeof(FcDbKeys));
	fc_secure_region_alloc((void **) &one, sizeof(FcDbKeys));
	PG_TRY();
	{
		if (!fc_db_lookup(MyDatabaseId, cur))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("data encryption is not active in this database"),
					 errhint("Set the key with fieldcrypt.set_data_encryption_key(key) over TLS: "
							 "on a Citus coordinator that reaches every worker.")));
		fc_register_secret(cur->passphrase, strlen(cur->passphrase));
		memcpy(one, cur, sizeof(FcDbKeys));
		one->ngens = 0;
		for (int i = 0; i < cur->ngens; i++)
			if (cur->gens[i].gen == cur->current_gen)
				one->gens[one->ngens++] = cur->gens[i];
		if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		{
			(void) fc_cluster_recover(false);
			key_change_on(fc_cluster_worker_nodes(), one, cur->passphrase);
		}
		else
		{
			WorkerNode *w = palloc0(sizeof(WorkerNode));

			w->nodeid = 0;		/* not in pg_dist_node (yet) */
			w->host = text_to_cstring(PG_GETARG_TEXT_PP(0));
			w->port = PG_GETARG_INT32(1);
			key_change_on(list_make1(w), one, cur->passphrase);
		}
	}
	PG_FINALLY();
	{
		fc_secure_region_free(cur, sizeof(FcDbKeys));
		fc_secure_region_free(one, sizeof(FcDbKeys));
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}
