/*-------------------------------------------------------------------------
 *
 * cluster_tenant.c
 *	  Key changes that are not transactional, made on a Citus coordinator,
 *	  reach every worker: a tenant-key change (upload_tenant_key,
 *	  use_hsm_tenant_key, generate_tenant_key, revert_tenant_key) and
 *	  rotate_tde_key.
 *
 *	  They re-seal or extend the keyring at once and cannot be prepared, so
 *	  instead of two-phase commit (cluster_2pc.c) the coordinator, once its
 *	  own checks passed and while it holds its change lock:
 *	    1. connects to every active primary worker (one unreachable: 08006
 *	       naming it, nothing changed anywhere);
 *	    2. runs the check-only twin of the function on every worker
 *	       (fieldcrypt._tenant_key_check, fieldcrypt._rotate_tde_key_check:
 *	       every check the function makes, nothing written); a refusal is
 *	       an ERROR naming the node with its SQLSTATE and message, nothing
 *	       changed anywhere;
 *	    3. runs the function itself on every worker, and returns so that
 *	       the caller applies it on the coordinator (whose errors meanwhile
 *	       carry a CONTEXT line saying every worker took the change, until
 *	       the caller calls fc_cluster_applied_done).
 *	  What can still fail in 3 is what no check can foresee (a node that
 *	  crashed or lost its connection since step 2, a full disk): the ERROR
 *	  then lists the workers that took the change and those that did not;
 *	  the coordinator did not.  Running the same call on the coordinator
 *	  again converges: a node takes the same change again (an uploaded key
 *	  re-installed keeps its key id; a TDE rotation adds one more
 *	  generation).
 *
 *	  Secrets (PFX bytes, password) travel only as libpq bind parameters,
 *	  never in the query text, so no node's log or pg_stat_activity shows
 *	  them (the node registers the password for redaction, and redact.c
 *	  hides the "parameters:" detail of its log lines).
 *
 * src/keys/cluster_tenant.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"

#include "lib/stringinfo.h"

#include "keys/cluster_2pc.h"
#include "keys/cluster_tenant.h"
#include "keys/node_conn.h"

static bool run_call(PGconn *conn, const char *sql, const FcClusterCall *call,
					 char **why, char **sqlstate);
static void finish_conns(PGconn **conns, int n);
static void applied_context(void *arg);

/* pushed once every worker took a change, until the coordinator has it too */
static ErrorContextCallback applied_cb;

/* Run sql with the call's bind parameters (fc_cluster_run). */
static bool
run_call(PGconn *conn, const char *sql, const FcClusterCall *call, char **why, char **sqlstate)
{
	return fc_cluster_run(conn, sql, call->nparams, call->values, call->lengths, call->formats,
						  why, sqlstate);
}

/* Close the first n connections. */
static void
finish_conns(PGconn **conns, int n)
{
	for (int i = 0; i < n; i++)
		if (conns[i])
			fc_node_close(conns[i]);
}

/*
 * On a Citus coordinator: check call on every worker, then apply it on
 * every worker (see the file header); true once every worker took it.
 * Elsewhere (no Citus, a worker, a Citus peer session): false, nothing
 * done.  The caller has made its own checks and holds its change lock.
 */
bool
fc_cluster_check_then_apply(const FcClusterCall *call)
{
	List	   *nodes;
	PGconn	  **conns;
	int			n;
	ListCell   *lc;

	if (!fc_cluster_is_coordinator())
		return false;
	/*
	 * A two-phase key change left prepared on a worker holds that worker's
	 * change lock, and its check would refuse this change on every retry:
	 * finish it first, as a key change does.
	 */
	(void) fc_cluster_recover(false);
	nodes = fc_cluster_worker_nodes();
	conns = palloc0(sizeof(PGconn *) * (list_length(nodes) + 1));

	/* 1. every worker reachable */
	foreach(lc, nodes)
	{
		FcClusterNode *w = (FcClusterNode *) lfirst(lc);
		char	   *why = NULL;

		n = foreach_current_index(lc);
		conns[n] = fc_cluster_connect_node(w, &why);
		if (conns[n] == NULL)
		{
			finish_conns(conns, n);
			fc_cluster_refuse(call->what, w->host, w->port, ERRCODE_CONNECTION_FAILURE, why);
		}
	}

	/* 2. every worker accepts it */
	foreach(lc, nodes)
	{
		FcClusterNode *w = (FcClusterNode *) lfirst(lc);
		char	   *why = NULL;
		char	   *sqlstate = NULL;

		if (!run_call(conns[foreach_current_index(lc)], call->check_sql, call, &why, &sqlstate))
		{
			finish_conns(conns, list_length(nodes));
			fc_cluster_refuse(call->what, w->host, w->port, fc_cluster_errcode(sqlstate), why);
		}
	}

	/* 3. every worker takes it */
	foreach(lc, nodes)
	{
		FcClusterNode *w = (FcClusterNode *) lfirst(lc);
		char	   *why = NULL;
		char	   *sqlstate = NULL;
		StringInfoData took;
		StringInfoData missed;
		ListCell   *lc2;

		n = foreach_current_index(lc);
		if (run_call(conns[n], call->apply_sql, call, &why, &sqlstate))
			continue;
		finish_conns(conns, list_length(nodes));
		initStringInfo(&took);
		initStringInfo(&missed);
		foreach(lc2, nodes)
		{
			FcClusterNode *o = (FcClusterNode *) lfirst(lc2);
			StringInfo	into = foreach_current_index(lc2) < n ? &took : &missed;

			appendStringInfo(into, "%s%s:%d", into->len ? ", " : "", o->host, o->port);
		}
		ereport(ERROR,
				(errcode(fc_cluster_errcode(sqlstate)),
				 errmsg("could not change %s on node %s:%d", call->what, w->host, w->port),
				 errdetail("Every node accepted the change in its check, then this node did not take it. "
						   "Workers that took the change: %s. Workers that did not: %s. "
						   "The coordinator did not. The node reported: %s",
						   took.len ? took.data : "none", missed.data, why),
				 errhint("Fix that node and run the same function on the coordinator again: "
						 "the nodes that took the change take it again.%s%s",
						 call->retry_hint ? " " : "", call->retry_hint ? call->retry_hint : "")));
	}
	finish_conns(conns, list_length(nodes));

	/* a failure of the coordinator's own change now says the workers have it */
	applied_cb.callback = applied_context;
	applied_cb.arg = unconstify(char *, call->what);
	applied_cb.previous = error_context_stack;
	error_context_stack = &applied_cb;
	return true;
}

/* CONTEXT of what the coordinator reports while it applies a change every worker took. */
static void
applied_context(void *arg)
{
	errcontext("applying %s on the Citus coordinator, after every worker took the change; "
			   "if it fails, run the same call on the coordinator again", (const char *) arg);
}

/*
 * The coordinator has applied the change that fc_cluster_check_then_apply
 * sent to every worker: no more CONTEXT line (error recovery resets the
 * stack by itself).
 */
void
fc_cluster_applied_done(void)
{
	if (error_context_stack == &applied_cb)
		error_context_stack = applied_cb.previous;
}

/*
 * On a Citus coordinator: a tenant-key change of mode "pfx" (pfx, pfxlen,
 * password), "hsm" (module, token, label), "generate" or "revert" on every
 * worker, checked on every worker first.  The caller (tenantapi.c) made
 * every check of its own and applies the change on the coordinator after,
 * then calls fc_cluster_applied_done.  No-op elsewhere (false).
 */
bool
fc_cluster_tenant_change(const char *mode, const char *pfx, int pfxlen,
						 const char *password, const char *module,
						 const char *token, const char *label)
{
	FcClusterCall call = {.what = "the tenant key"};
	const char *values[3];
	int			lengths[3] = {0, 0, 0};
	int			formats[3] = {0, 0, 0};

	if (strcmp(mode, "pfx") == 0)
	{
		call.check_sql = "SELECT fieldcrypt._tenant_key_check('pfx', $1, $2, NULL, NULL, NULL)";
		call.apply_sql = "SELECT fieldcrypt.upload_tenant_key($1, $2)";
		call.nparams = 2;
		values[0] = pfx;
		lengths[0] = pfxlen;
		formats[0] = 1;			/* bytea, binary */
		values[1] = password;
	}
	else if (strcmp(mode, "hsm") == 0)
	{
		call.check_sql = "SELECT fieldcrypt._tenant_key_check('hsm', NULL, NULL, $1, $2, $3)";
		call.apply_sql = "SELECT fieldcrypt.use_hsm_tenant_key($1, $2, $3)";
		call.nparams = 3;
		values[0] = module;
		values[1] = token;
		values[2] = label;
	}
	else if (strcmp(mode, "generate") == 0)
	{
		call.check_sql = "SELECT fieldcrypt._tenant_key_check('generate', NULL, NULL, NULL, NULL, NULL)";
		call.apply_sql = "SELECT fieldcrypt.generate_tenant_key()";
	}
	else
	{
		Assert(strcmp(mode, "revert") == 0);
		call.check_sql = "SELECT fieldcrypt._tenant_key_check('revert', NULL, NULL, NULL, NULL, NULL)";
		call.apply_sql = "SELECT fieldcrypt.revert_tenant_key()";
	}
	call.values = values;
	call.lengths = lengths;
	call.formats = formats;
	return fc_cluster_check_then_apply(&call);
}
