/*-------------------------------------------------------------------------
 *
 * policy.c
 *	  Rules every layer may check: role membership, TLS, the cluster-wide
 *	  key change lock, and whether encryption is active in this database
 *	  (the key metadata table, read as its owner).
 *
 *	  The metadata table is the truth for "is encryption active" (it travels
 *	  with the data); the keyring is the truth for the keys.
 *
 * src/keys/policy.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "access/xlog.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "keys/keystate.h"
#include "keys/keystore.h"
#include "keys/policy.h"
#include "keys/prepared.h"

#define LOCK_FIELD4		0x4643	/* "FC": distinct from pg_advisory_lock's 1 and 2 */

/* Whether the user is a superuser or has the privileges of role. */
bool
fc_has_role(const char *role)
{
	Oid			roleid = get_role_oid(role, true);

	return superuser() || (OidIsValid(roleid) && has_privs_of_role(GetUserId(), roleid));
}

/* ERROR 42501 unless the user is a superuser or has the privileges of role. */
void
fc_require_role(const char *role, const char *what)
{
	if (fc_has_role(role))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s", what),
			 errhint("Only superusers and members of role %s may do this.", role)));
}

/*
 * Key functions that write the key metadata table or the keyring: on a
 * standby they would fail deep inside with "cannot execute INSERT in a
 * read-only transaction".  (The tenant key functions say it themselves;
 * retrieve_data_encryption_key works on a standby.)
 */
static const char *const primary_only[] = {
	"fieldcrypt.set_data_encryption_key",
	"fieldcrypt.rotate_tde_key",
	"fieldcrypt.drop_unused_tde_keys",
};

/*
 * ERROR 28000 unless this backend's client connection uses TLS (saying so
 * when the server has TLS turned off); then, for the key functions that
 * change keys, ERROR 25006 on a standby.  Every key function calls this
 * first, after its role check.
 */
void
fc_require_tls(const char *what)
{
	if (MyProcPort == NULL || !MyProcPort->ssl_in_use)
	{
		if (!EnableSSL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("%s requires an SSL connection", what),
					 errdetail("The server has TLS turned off (ssl = off), so no connection can use it."),
					 errhint("Turn TLS on: set ssl = on, ssl_cert_file and ssl_key_file in postgresql.conf "
							 "and reload the server, then connect over TCP with sslmode=require or stronger.")));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("%s requires an SSL connection", what),
				 errdetail("This connection is not encrypted with TLS."),
				 errhint("Connect over TCP with sslmode=require or stronger.")));
	}
	if (!RecoveryInProgress())
		return;
	for (size_t i = 0; i < lengthof(primary_only); i++)
	{
		if (strcmp(what, primary_only[i]) != 0)
			continue;
		fc_check_ring_usable(); /* a keyring this server cannot open says so first */
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s cannot run during recovery", what),
				 errdetail("This server is a standby; key changes are written on the primary."),
				 errhint("Run %s on the primary; standbys follow every key change through WAL.", what)));
	}
}

/*
 * OID of the key metadata table, or InvalidOid: the configuration table
 * recorded in pg_extension.extconfig, so that renaming the schema or the
 * table does not hide it from the guards.
 */
Oid
fc_config_table_oid(void)
{
	Oid			extoid = get_extension_oid("fieldcrypt", true);
	Oid			result = InvalidOid;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	if (!OidIsValid(extoid))
		return InvalidOid;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extconfig,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			n;

			deconstruct_array(DatumGetArrayTypeP(d), OIDOID, sizeof(Oid), true,
							  TYPALIGN_INT, &elems, &nulls, &n);
			if (n >= 1 && !nulls[0])
				result = DatumGetObjectId(elems[0]);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

/*
 * Run the metadata table's SQL as the table's owner (the extension owner):
 * callers may be fieldcrypt_admin members or anyone reading key_status,
 * none of whom has privileges on the table itself.  Privileges were checked
 * as the caller before this.  Transaction abort restores the user.
 */
void
fc_meta_become_owner(Oid *save_user, int *save_sec)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(fc_config_table_oid()));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "fieldcrypt.key_generations does not exist");
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	GetUserIdAndSecContext(save_user, save_sec);
	SetUserIdAndSecContext(owner, *save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/* Schema-qualified, quoted name of the metadata table (it may be renamed). */
char *
fc_meta_table_name(void)
{
	Oid			relid = fc_config_table_oid();

	if (!OidIsValid(relid))
		elog(ERROR, "fieldcrypt key metadata table does not exist");
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * Connect to SPI as the metadata owner, with search_path pg_catalog,
 * pg_temp: the SQL run here names operators (=, <>) and functions that the
 * caller's search_path must not resolve to objects of its own, which would
 * run as the owner (a superuser).
 */
void
fc_meta_spi_connect(Oid *save_user, int *save_sec, int *save_nest)
{
	fc_meta_become_owner(save_user, save_sec);
	*save_nest = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
}

/* Disconnect from SPI and become the caller again, with its search_path. */
void
fc_meta_spi_finish(Oid save_user, int save_sec, int save_nest)
{
	SPI_finish();
	AtEOXact_GUC(true, save_nest);
	SetUserIdAndSecContext(save_user, save_sec);
}

/* The metadata row of the highest generation in key_generations. */
FcMetaRow
fc_meta_current(void)
{
	FcMetaRow		m = {0};
	bool		isnull;
	Oid			save_user;
	int			save_sec;
	int			save_nest;

	if (!OidIsValid(fc_config_table_oid()))
		return m;
	fc_meta_spi_connect(&save_user, &save_sec, &save_nest);
	if (SPI_execute(psprintf("SELECT generation, iterations, salt, kcv, key_source, set_at "
							 "FROM %s ORDER BY generation DESC LIMIT 1", fc_meta_table_name()),
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read fieldcrypt.key_generations");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bytea	   *salt = DatumGetByteaPP(SPI_getbinval(tup, td, 3, &isnull));
		bytea	   *kcv = DatumGetByteaPP(SPI_getbinval(tup, td, 4, &isnull));

		m.found = true;
		m.gen = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
		m.iterations = DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull));
		if (VARSIZE_ANY_EXHDR(salt) != FC_SALT_LEN || VARSIZE_ANY_EXHDR(kcv) != FC_KCV_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("fieldcrypt.key_generations row of generation %u is malformed", m.gen)));
		memcpy(m.salt, VARDATA_ANY(salt), FC_SALT_LEN);
		memcpy(m.kcv, VARDATA_ANY(kcv), FC_KCV_LEN);
		strlcpy(m.source, TextDatumGetCString(SPI_getbinval(tup, td, 5, &isnull)),
				sizeof(m.source));
		m.set_at = DatumGetTimestampTz(SPI_getbinval(tup, td, 6, &isnull));
	}
	fc_meta_spi_finish(save_user, save_sec, save_nest);
	return m;
}

/* True if encryption is active in the current database (keys loaded or not). */
bool
fc_db_is_active(void)
{
	if (fc_db_lookup(MyDatabaseId, NULL))
		return true;
	return fc_meta_current().found;
}

/*
 * Try the cluster-wide key change lock without waiting (DROP DATABASE
 * cleanup).  Whoever gets it first applies the key changes of prepared
 * transactions that committed (prepared.c), so that no change starts from
 * a state that misses one.
 */
bool
fc_try_change_lock(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, InvalidOid, 0, 0, LOCK_FIELD4);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;
	fc_prepared_recover_or_warn();
	return true;
}

/* Take the cluster-wide key change lock without waiting, or ERROR 55P03. */
void
fc_acquire_change_lock(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, InvalidOid, 0, 0, LOCK_FIELD4);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a data encryption key change is already in progress"),
				 errdetail("Only one key change can run at a time in the cluster."),
				 errhint("Retry when the other key change has finished.")));
	fc_prepared_recover_or_warn();
}
