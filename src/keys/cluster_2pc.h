/*-------------------------------------------------------------------------
 *
 * cluster_2pc.h
 *	  Key changes on a Citus coordinator, prepared on every worker and
 *	  committed with the coordinator's transaction (cluster_2pc.c).
 *
 * src/keys/cluster_2pc.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_CLUSTER_2PC_H
#define FIELDCRYPT_CLUSTER_2PC_H

#include "libpq-fe.h"
#include "nodes/pg_list.h"

#include "keys/keystate.h"

/* One active primary worker of pg_dist_node (host and port as Citus has them). */
typedef struct FcClusterNode
{
	int32		nodeid;
	char	   *host;
	int32		port;
} FcClusterNode;

/* setting (guc.c registers it) */
extern bool fc_test_cluster_skip_commit_prepared;

extern void fc_cluster_key_change(const FcDbKeys *e, const char *pass);
extern int	fc_cluster_recover(bool strict);

/* helpers, also for cluster_tenant.c */
extern bool fc_cluster_is_coordinator(void);
extern List *fc_cluster_worker_nodes(void);
extern PGconn *fc_cluster_connect_node(const FcClusterNode *n, char **why);
extern char *fc_cluster_remote_error(PGconn *conn, PGresult *res, char **sqlstate);
extern bool fc_cluster_run(PGconn *conn, const char *sql, int nparams, const char *const *values,
						   const int *lengths, const int *formats, char **why, char **sqlstate);
extern bool fc_cluster_run_simple(PGconn *conn, const char *sql, char **why, char **sqlstate);
extern int	fc_cluster_errcode(const char *sqlstate);
extern void fc_cluster_refuse(const char *what, const char *host, int port, int code,
							  const char *why) pg_attribute_noreturn();

#endif
