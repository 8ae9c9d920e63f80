/*-------------------------------------------------------------------------
 *
 * cluster.c
 *	  fieldcrypt on a Citus cluster.  fieldcrypt does not link against
 *	  Citus, which is optional at run time: it is detected by the citus
 *	  extension being installed in the current database.
 *
 *	  A Citus peer session is a backend that Citus opened on this node from
 *	  another node to run a piece of a distributed query (Citus names it by
 *	  application_name "citus_internal gpid=<n>", and Citus itself trusts
 *	  that name).  Rows sent to a peer session stay inside the cluster: the
 *	  coordinator holds them in its executor and its own write-only layer
 *	  nulls encrypted values before its client.  So columns/writeonly.c
 *	  sends them envelopes, not NULL: a decrypt() that Citus evaluates on
 *	  the coordinator, a CTE or subquery pulled there, or INSERT ... SELECT
 *	  through the coordinator then sees the value itself.
 *
 *	  The name cannot be trusted against an attacker, and need not be: any
 *	  login may set it, and then gets envelopes (ciphertext) of what its
 *	  query reads, which is exactly what COPY (query) TO STDOUT gives the
 *	  same login on a single node (docs/security.md, "Threat model").
 *	  Plaintext still leaves a node only through fieldcrypt.decrypt(),
 *	  which checks the role on the node that evaluates it.
 *
 * src/keys/cluster.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/extension.h"
#include "utils/guc.h"

#include "keys/cluster.h"

#define CITUS_PEER_PREFIX	"citus_internal gpid="

/* Is the citus extension installed in the current database? */
bool
fc_citus_installed(void)
{
	return OidIsValid(get_extension_oid("citus", true));
}

/*
 * Is this session one that Citus opened from another node of the cluster,
 * in a database where Citus is installed?
 */
bool
fc_citus_peer_session(void)
{
	if (application_name == NULL ||
		strncmp(application_name, CITUS_PEER_PREFIX, strlen(CITUS_PEER_PREFIX)) != 0)
		return false;
	return fc_citus_installed();
}
