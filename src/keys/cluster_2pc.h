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

#include "keys/keystate.h"

/* setting (guc.c registers it) */
extern bool fc_test_cluster_skip_commit_prepared;

extern void fc_cluster_key_change(const FcDbKeys *e, const char *pass);
extern int	fc_cluster_recover(bool strict);
extern void fc_cluster_run_on_workers(const char *sql);

#endif
