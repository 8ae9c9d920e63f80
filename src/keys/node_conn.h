/*-------------------------------------------------------------------------
 *
 * node_conn.h
 *	  Interruptible libpq connections to other nodes, closed on abort
 *	  (node_conn.c).
 *
 * src/keys/node_conn.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_NODE_CONN_H
#define FIELDCRYPT_NODE_CONN_H

#include "libpq-fe.h"

/* setting (guc.c registers it) */
extern int	fc_cluster_command_timeout;

extern PGconn *fc_node_connect(const char *conninfo, bool bounded, char **why);
extern PGresult *fc_node_exec(PGconn *conn, const char *sql, int nparams,
							  const char *const *values, bool bounded, char **why);
extern PGresult *fc_node_exec_params(PGconn *conn, const char *sql, int nparams,
									 const char *const *values, const int *lengths,
									 const int *formats, bool bounded, char **why);
extern void fc_node_close(PGconn *conn);

#endif
