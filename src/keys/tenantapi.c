/*-------------------------------------------------------------------------
 *
 * tenantapi.c
 *	  SQL functions for self-managed tenant keys, after the "manage keys"
 *	  page of Dynamics 365: upload a PKCS#12 key pair, use a key in an HSM,
 *	  generate a new managed key, revert to the managed default; and the
 *	  view fieldcrypt.tenant_key_status.
 *
 *	  Only superusers and fieldcrypt_admin members, only over TLS, never on
 *	  a standby.  A change is not transactional: it re-seals the keyring
 *	  at once (tenant.c), so it is refused inside a transaction block.  It
 *	  takes the cluster-wide key change lock, so it never interleaves with
 *	  a database key change.  Every check runs before anything is written:
 *	  a refusal changes nothing.
 *
 *	  On a Citus coordinator each change, once its own checks passed, is
 *	  checked on every worker by fieldcrypt._tenant_key_check (the same
 *	  checks, nothing written), then applied on every worker, then here
 *	  (cluster_tenant.c): a refusal anywhere changes nothing anywhere.
 *
 *	  The PFX password is registered for log redaction before any check
 *	  can fail; the statement text, with its literals, is redacted by the
 *	  write-only hooks like any call of a volatile extension function.
 *
 * src/keys/tenantapi.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "keys/cluster_tenant.h"
#include "keys/policy.h"
#include "keys/keyring.h"
#include "keys/keystore.h"
#include "keys/pkcs11.h"
#include "keys/redact.h"
#include "keys/tenant.h"

PG_FUNCTION_INFO_V1(fieldcrypt_upload_tenant_key);
PG_FUNCTION_INFO_V1(fieldcrypt_use_hsm_tenant_key);
PG_FUNCTION_INFO_V1(fieldcrypt_generate_tenant_key);
PG_FUNCTION_INFO_V1(fieldcrypt_revert_tenant_key);
PG_FUNCTION_INFO_V1(fieldcrypt_tenant_key_status);
PG_FUNCTION_INFO_V1(fieldcrypt_tenant_key_check);

static void check_change_allowed(const char *fname);
static Datum report_change(const char *mode, char *id);
static void refuse_pfx(FcPfxResult res, const char *keytype);
static bool module_allowed(const char *module);
static FcPkey *pfx_checked(FunctionCallInfo fcinfo, int argpfx, int argpw, char **password,
						   time_t *not_before);
static void hsm_checked(FunctionCallInfo fcinfo, int arg, char **module, char **token,
						char **label);

/* Checks shared by every tenant key change, in the order they apply. */
static void
check_change_allowed(const char *fname)
{
	fc_require_role(FC_ADMIN_ROLE, "change the tenant key");
	fc_require_tls(fname);
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot change the tenant key during recovery"),
				 errhint("Change it on the primary; standbys follow through WAL.")));
	PreventInTransactionBlock(true, fname);
	fc_check_ring_usable();
	fc_keyring_check_writable();
	if (!fc_try_change_lock())
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("a data encryption key change is already in progress"),
				 errdetail("Only one key change can run at a time in the cluster."),
				 errhint("Retry when the other key change has finished.")));
}

/* Log the change (never a secret) and return the key id as text. */
static Datum
report_change(const char *mode, char *id)
{
	ereport(LOG,
			(errmsg("fieldcrypt: tenant key changed to %s key %s; keyring re-sealed", mode, id)));
	return CStringGetTextDatum(id);
}

/* ERROR for a PKCS#12 file that cannot be used. */
static void
refuse_pfx(FcPfxResult res, const char *keytype)
{
	switch (res)
	{
		case FC_PFX_OK:
			return;
		case FC_PFX_CORRUPT:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("the tenant key file is not a valid PKCS#12 file"),
					 errdetail("It is truncated, corrupted or not in DER PKCS#12 (PFX) format.")));
			break;
		case FC_PFX_BAD_PASSWORD:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PASSWORD),
					 errmsg("wrong password for the PKCS#12 file"),
					 errdetail("The integrity check of the file fails with the password given: "
							   "the password is wrong or the file is corrupted.")));
			break;
		case FC_PFX_UNSUPPORTED:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the PKCS#12 file is encrypted with an algorithm this server does not support"),
					 errdetail("Legacy algorithms such as RC2 and single DES are not available."),
					 errhint("Export the key pair again with AES-256 (the default of openssl pkcs12 -export in OpenSSL 3).")));
			break;
		case FC_PFX_NO_PRIVATE_KEY:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("both the public and the private key are required"),
					 errdetail("The PKCS#12 file holds no private key."),
					 errhint("Export the key pair with its private key (openssl pkcs12 -export -inkey).")));
			break;
		case FC_PFX_NO_CERT:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the PKCS#12 file holds no certificate for its private key"),
					 errdetail("Both the public key, in a certificate, and the private key are required.")));
			break;
		case FC_PFX_NOT_RSA:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the tenant key must be an RSA key"),
					 errdetail("The PKCS#12 file holds a key of type %s.", keytype)));
			break;
		case FC_PFX_TOO_SHORT:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the RSA key is too short"),
					 errdetail("A tenant key needs at least %d bits.", FC_RSA_MIN_BITS)));
			break;
		case FC_PFX_TOO_LONG:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the RSA key is too long"),
					 errdetail("A tenant key may have at most %d bits.", FC_RSA_MAX_BITS)));
			break;
		case FC_PFX_MISMATCH:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the certificate does not belong to the private key")));
			break;
		case FC_PFX_NOT_YET_VALID:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the certificate of the tenant key is not valid yet")));
			break;
		case FC_PFX_EXPIRED:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the certificate of the tenant key has expired"),
					 errhint("Upload a key pair whose certificate is currently valid.")));
			break;
	}
}

/*
 * The checks of an upload, on the arguments argpfx and argpw of fcinfo:
 * the password registered for redaction, the change allowed, the PKCS#12
 * file parsed into a usable key pair (returned; *password, still to be
 * zeroed by the caller, and *not_before set), or ERROR.
 */
static FcPkey *
pfx_checked(FunctionCallInfo fcinfo, int argpfx, int argpw, char **password, time_t *not_before)
{
	bytea	   *pfx;
	FcPkey	   *key = NULL;
	char		keytype[64];
	FcPfxResult res;

	*password = NULL;
	if (!PG_ARGISNULL(argpw))
	{
		*password = text_to_cstring(PG_GETARG_TEXT_PP(argpw));
		fc_register_secret(*password, strlen(*password));
	}
	fc_redact_activity();
	check_change_allowed("fieldcrypt.upload_tenant_key()");
	if (PG_ARGISNULL(argpfx) || *password == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the PKCS#12 file and its password must not be null")));
	pfx = PG_GETARG_BYTEA_PP(argpfx);
	res = fc_pfx_read((const uint8 *) VARDATA_ANY(pfx), VARSIZE_ANY_EXHDR(pfx), *password,
					  &key, not_before, keytype, sizeof(keytype));
	if (res != FC_PFX_OK)
	{
		explicit_bzero(*password, strlen(*password));
		refuse_pfx(res, keytype);
	}
	return key;
}

/*
 * fieldcrypt.upload_tenant_key(pfx bytea, password text) RETURNS text
 */
Datum
fieldcrypt_upload_tenant_key(PG_FUNCTION_ARGS)
{
	char	   *password;
	time_t		not_before = 0;
	FcPkey	   *key = pfx_checked(fcinfo, 0, 1, &password, &not_before);
	char	   *volatile id = NULL;

	PG_TRY();
	{
		bytea	   *pfx = PG_GETARG_BYTEA_PP(0);

		/* on a Citus coordinator: checked, then applied on every worker */
		fc_cluster_tenant_change("pfx", VARDATA_ANY(pfx), VARSIZE_ANY_EXHDR(pfx), password,
								 NULL, NULL, NULL);
		explicit_bzero(password, strlen(password));
		id = fc_tenant_install_pfx(key, not_before);
		fc_cluster_applied_done();
	}
	PG_FINALLY();
	{
		explicit_bzero(password, strlen(password));
		fc_pkey_free(key);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(report_change("an uploaded", id));
}

/* Is module listed in fieldcrypt.hsm_modules? */
static bool
module_allowed(const char *module)
{
	char	   *list = pstrdup(fc_hsm_modules ? fc_hsm_modules : "");
	List	   *elems;
	ListCell   *lc;
	bool		ok = false;

	if (!SplitDirectoriesString(list, ',', &elems))
		return false;
	foreach(lc, elems)
		if (strcmp((char *) lfirst(lc), module) == 0)
			ok = true;
	return ok;
}

/*
 * The checks of a switch to an HSM key, on the arguments arg, arg + 1 and
 * arg + 2 of fcinfo: the change allowed, the module allowed, the key found
 * in the HSM and usable; or ERROR.
 */
static void
hsm_checked(FunctionCallInfo fcinfo, int arg, char **module, char **token, char **label)
{
	check_change_allowed("fieldcrypt.use_hsm_tenant_key()");
	if (PG_ARGISNULL(arg) || PG_ARGISNULL(arg + 1) || PG_ARGISNULL(arg + 2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("module path, token label and key label must not be null")));
	*module = text_to_cstring(PG_GETARG_TEXT_PP(arg));
	*token = text_to_cstring(PG_GETARG_TEXT_PP(arg + 1));
	*label = text_to_cstring(PG_GETARG_TEXT_PP(arg + 2));
	if (!is_absolute_path(*module))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the PKCS#11 module path must be absolute")));
	if (!superuser() && !module_allowed(*module))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to load PKCS#11 module \"%s\"", *module),
				 errhint("Only superusers may name a module that is not listed in fieldcrypt.hsm_modules.")));
	if ((*token)[0] == '\0' || (*label)[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token label and key label must not be empty")));
	fc_pkey_free(fc_tenant_hsm_key(*module, *token, *label));
}

/*
 * fieldcrypt.use_hsm_tenant_key(module_path text, token_label text,
 *								 key_label text) RETURNS text
 */
Datum
fieldcrypt_use_hsm_tenant_key(PG_FUNCTION_ARGS)
{
	char	   *module,
			   *token,
			   *label;
	char	   *id;

	hsm_checked(fcinfo, 0, &module, &token, &label);
	fc_cluster_tenant_change("hsm", NULL, 0, NULL, module, token, label);
	id = fc_tenant_install_hsm(module, token, label);
	fc_cluster_applied_done();
	PG_RETURN_DATUM(report_change("an HSM", id));
}

/*
 * fieldcrypt.generate_tenant_key() RETURNS text
 */
Datum
fieldcrypt_generate_tenant_key(PG_FUNCTION_ARGS)
{
	char	   *id;

	check_change_allowed("fieldcrypt.generate_tenant_key()");
	fc_cluster_tenant_change("generate", NULL, 0, NULL, NULL, NULL, NULL);
	id = fc_tenant_install_generated();
	fc_cluster_applied_done();
	PG_RETURN_DATUM(report_change("a new managed", id));
}

/*
 * fieldcrypt.revert_tenant_key() RETURNS text
 */
Datum
fieldcrypt_revert_tenant_key(PG_FUNCTION_ARGS)
{
	char	   *id;

	check_change_allowed("fieldcrypt.revert_tenant_key()");
	fc_cluster_tenant_change("revert", NULL, 0, NULL, NULL, NULL, NULL);
	id = fc_tenant_install_default();
	fc_cluster_applied_done();
	PG_RETURN_DATUM(report_change("the default managed", id));
}

/*
 * fieldcrypt._tenant_key_check(mode text, pfx bytea, password text,
 *								module text, token text, label text) RETURNS void
 *
 * Every check of the tenant-key change mode ("pfx": upload_tenant_key(pfx,
 * password); "hsm": use_hsm_tenant_key(module, token, label); "generate";
 * "revert"), with the same errors, and nothing written: a Citus
 * coordinator runs it on every worker before any node changes
 * (cluster_tenant.c).  The change lock it takes goes with its transaction.
 */
Datum
fieldcrypt_tenant_key_check(PG_FUNCTION_ARGS)
{
	char	   *mode = PG_ARGISNULL(0) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(mode, "pfx") == 0)
	{
		char	   *password;
		time_t		not_before;
		FcPkey	   *key = pfx_checked(fcinfo, 1, 2, &password, &not_before);

		explicit_bzero(password, strlen(password));
		fc_pkey_free(key);
	}
	else if (strcmp(mode, "hsm") == 0)
	{
		char	   *module,
				   *token,
				   *label;

		hsm_checked(fcinfo, 3, &module, &token, &label);
	}
	else if (strcmp(mode, "generate") == 0)
		check_change_allowed("fieldcrypt.generate_tenant_key()");
	else if (strcmp(mode, "revert") == 0)
		check_change_allowed("fieldcrypt.revert_tenant_key()");
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown tenant key change \"%s\"", mode),
				 errhint("The mode is one of pfx, hsm, generate and revert.")));
	PG_RETURN_VOID();
}

/*
 * fieldcrypt._tenant_key_status(): one row for the view
 * fieldcrypt.tenant_key_status.
 */
Datum
fieldcrypt_tenant_key_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11] = {0};
	FcTenantStatus st;
	struct stat sb;
	const char *mode;
	bool		loaded = fc_shared->ring_state == FC_RING_OK;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	fc_tenant_status(&st);

	/*
	 * mode, key_id, algorithm, key_bits, created_at, installed_at,
	 * keyring_resealed_at, hsm_token, hsm_key_label, keyring, detail
	 */
	switch (st.mode)
	{
		case FC_TENANT_PFX:
			mode = "pfx";
			break;
		case FC_TENANT_HSM:
			mode = "hsm";
			break;
		default:
			mode = fc_key_provider == FC_PROVIDER_COMMAND ? "command" : "managed";
			break;
	}
	values[0] = CStringGetTextDatum(mode);
	if (st.key_id[0])
		values[1] = CStringGetTextDatum(st.key_id);
	else
		nulls[1] = true;
	if (st.mode == FC_TENANT_PFX || st.mode == FC_TENANT_HSM)
	{
		values[2] = CStringGetTextDatum(psprintf("RSA-%d OAEP-%s", st.key_bits,
												 st.oaep_hash == FC_OAEP_SHA1 ? "SHA1" : "SHA256"));
		values[3] = Int32GetDatum(st.key_bits);
	}
	else
	{
		values[2] = CStringGetTextDatum("AES-256-GCM");
		values[3] = Int32GetDatum(256);
	}
	if (st.mode == FC_TENANT_DEFAULT)
	{
		const char *kf = (fc_key_file && fc_key_file[0]) ? fc_key_file : FC_DEFAULT_KEY_FILE;

		if (fc_key_provider == FC_PROVIDER_FILE && stat(kf, &sb) == 0)
			values[4] = TimestampTzGetDatum(time_t_to_timestamptz(sb.st_mtime));
		else
			nulls[4] = true;
		nulls[5] = true;
	}
	else
	{
		values[4] = TimestampTzGetDatum(st.created_at);
		nulls[4] = st.created_at == 0;
		values[5] = TimestampTzGetDatum(st.installed_at);
	}
	if (stat(FC_KEYRING_FILE, &sb) == 0)
		values[6] = TimestampTzGetDatum(time_t_to_timestamptz(sb.st_mtime));
	else
		nulls[6] = true;
	if (st.mode == FC_TENANT_HSM)
	{
		values[7] = CStringGetTextDatum(st.token);
		values[8] = CStringGetTextDatum(st.label);
	}
	else
		nulls[7] = nulls[8] = true;
	values[9] = CStringGetTextDatum(loaded ? "loaded" : "unavailable");
	if (loaded)
	{
		nulls[9 + 1] = true;
		if (!st.key_id[0])
			nulls[1] = true;
	}
	else
	{
		char		detail[256];

		LWLockAcquire(fc_shared->lock, LW_SHARED);
		strlcpy(detail, fc_shared->ring_detail, sizeof(detail));
		LWLockRelease(fc_shared->lock);
		values[10] = CStringGetTextDatum(detail);
		/* what the keyring file's header says, unauthenticated */
		if (st.mode == FC_TENANT_DEFAULT)
			nulls[1] = nulls[4] = true;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
