/*-------------------------------------------------------------------------
 *
 * cluster.h
 *	  fieldcrypt on a Citus cluster: is Citus here, and is this session one
 *	  of its node-to-node connections.
 *
 * src/keys/cluster.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_CLUSTER_H
#define FIELDCRYPT_CLUSTER_H

extern bool fc_citus_installed(void);
extern bool fc_citus_peer_session(void);

#endif							/* FIELDCRYPT_CLUSTER_H */
