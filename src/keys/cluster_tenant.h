/*-------------------------------------------------------------------------
 *
 * cluster_tenant.h
 *	  Key changes that are not transactional (tenant keys, rotate_tde_key)
 *	  on a Citus coordinator: checked on every worker, then applied on
 *	  every worker (cluster_tenant.c).
 *
 * src/keys/cluster_tenant.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_CLUSTER_TENANT_H
#define FIELDCRYPT_CLUSTER_TENANT_H

/* One function to run on every worker: its check, then the function itself. */
typedef struct FcClusterCall
{
	const char *what;			/* "the tenant key", for messages */
	const char *check_sql;		/* changes nothing; ERRORs as the change would */
	const char *apply_sql;		/* the change */
	int			nparams;		/* bind parameters of both, never in the text */
	const char *const *values;
	const int  *lengths;
	const int  *formats;
	const char *retry_hint;		/* more of the hint of a partial apply, or NULL */
} FcClusterCall;

extern bool fc_cluster_check_then_apply(const FcClusterCall *call);
extern void fc_cluster_applied_done(void);
extern bool fc_cluster_tenant_change(const char *mode, const char *pfx, int pfxlen,
									 const char *password, const char *module,
									 const char *token, const char *label);

#endif
