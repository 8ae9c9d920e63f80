/*-------------------------------------------------------------------------
 *
 * keyapi.c
 *	  The key-management SQL API, after the Dynamics 365 messages
 *	  IsDataEncryptionActive, SetDataEncryptionKey and
 *	  RetrieveDataEncryptionKey, plus activation at CREATE EXTENSION and the
 *	  import of key metadata that travelled in a dump.
 *
 *	  A key change is transactional: the SQL functions insert the new
 *	  generation's metadata into fieldcrypt.key_generations (dumped with the
 *	  database) and prepare the new FcDbKeys entry; the keyring on disk is
 *	  written at PRE_COMMIT and shared memory follows at COMMIT, so an
 *	  aborted transaction changes nothing.  One key change at a time in the cluster: a
 *	  transaction-level lock on a private advisory tag, taken without
 *	  waiting.
 *
 *	  The metadata table is the truth for "is encryption active" (it travels
 *	  with the data); the keyring is the truth for the keys.  A database
 *	  with metadata but no keys was imported (or copied from a template)
 *	  and waits for its key to be restored.
 *
 * src/keys/keyapi.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/genam.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/libpq-be.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "keys/cluster.h"
#include "keys/cluster_2pc.h"
#include "keys/keyapi.h"
#include "keys/keyring.h"
#include "keys/keystore.h"
#include "keys/policy.h"
#include "keys/prepared.h"
#include "keys/redact.h"
#include "keys/rotstate.h"

#define MIN_KEY_CHARS	10

bool		fc_auto_activate = true;
int			fc_kdf_iterations = 600000;

PG_FUNCTION_INFO_V1(fieldcrypt_is_data_encryption_active);
PG_FUNCTION_INFO_V1(fieldcrypt_set_data_encryption_key);
PG_FUNCTION_INFO_V1(fieldcrypt_retrieve_data_encryption_key);
PG_FUNCTION_INFO_V1(fieldcrypt_key_status);
PG_FUNCTION_INFO_V1(fieldcrypt_cluster_key_location);
PG_FUNCTION_INFO_V1(fieldcrypt_activate_on_create);
PG_FUNCTION_INFO_V1(fieldcrypt_key_generations_guard);

/* The key change prepared by this transaction, applied at PRE_COMMIT. */
typedef enum PendingKind
{
	PENDING_NONE,
	PENDING_STORE,				/* install *pending_entry */
	PENDING_IMPORT				/* forget the generated key, metadata came in */
} PendingKind;

static PendingKind pending_kind = PENDING_NONE;
static SubTransactionId pending_subid = InvalidSubTransactionId;
static FcDbKeys *pending_entry = NULL;	/* secure region */
static bool pending_staged = false;	/* keyring already written at PRE_COMMIT */
static bool internal_write = false; /* our own writes to key_generations */


static void clear_pending(void);
static void xact_callback(XactEvent event, void *arg);
static void subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg);
static void check_key_policy(const char *key);
static void set_pending(PendingKind kind);

/* Register transaction callbacks; called from _PG_init. */
void
fc_keyapi_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}

/* Append the metadata of a new generation to key_generations. */
void
fc_meta_insert(const FcGeneration *g, const char *source, TimestampTz at)
{
	Oid			types[6] = {INT4OID, BYTEAOID, INT4OID, BYTEAOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[6];
	bytea	   *salt = palloc(VARHDRSZ + FC_SALT_LEN);
	bytea	   *kcv = palloc(VARHDRSZ + FC_KCV_LEN);
	int			rc;
	Oid			save_user;
	int			save_sec;
	int			save_nest;

	SET_VARSIZE(salt, VARHDRSZ + FC_SALT_LEN);
	memcpy(VARDATA(salt), g->salt, FC_SALT_LEN);
	SET_VARSIZE(kcv, VARHDRSZ + FC_KCV_LEN);
	memcpy(VARDATA(kcv), g->kcv, FC_KCV_LEN);
	values[0] = Int32GetDatum(g->gen);
	values[1] = PointerGetDatum(salt);
	values[2] = Int32GetDatum(g->iterations);
	values[3] = PointerGetDatum(kcv);
	values[4] = CStringGetTextDatum(source);
	values[5] = TimestampTzGetDatum(at);

	fc_meta_spi_connect(&save_user, &save_sec, &save_nest);
	internal_write = true;
	PG_TRY();
	{
		rc = SPI_execute_with_args(psprintf("INSERT INTO %s "
											"(generation, salt, iterations, kcv, key_source, set_at) "
											"VALUES ($1, $2, $3, $4, $5, $6)", fc_meta_table_name()),
								   6, types, values, NULL, false, 0);
	}
	PG_FINALLY();
	{
		internal_write = false;
	}
	PG_END_TRY();
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not insert into fieldcrypt.key_generations");
	fc_meta_spi_finish(save_user, save_sec, save_nest);
}

/* ERROR 22023 unless the key is a strong enough passphrase. */
static void
check_key_policy(const char *key)
{
	int			classes = 0;
	bool		lower = false,
				upper = false,
				digit = false,
				symbol = false;
	int			nchars = pg_mbstrlen(key);

	if (strlen(key) > FC_MAX_PASSPHRASE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("data encryption key is too long"),
				 errdetail("The key may be at most %d bytes long.", FC_MAX_PASSPHRASE)));
	for (const char *p = key; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c >= 'a' && c <= 'z')
			lower = true;
		else if (c >= 'A' && c <= 'Z')
			upper = true;
		else if (c >= '0' && c <= '9')
			digit = true;
		else
			symbol = true;
	}
	classes = lower + upper + digit + symbol;
	if (nchars < MIN_KEY_CHARS || classes < 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("data encryption key is too weak"),
				 errdetail("A key needs at least %d characters and at least three of: "
						   "lowercase letters, uppercase letters, digits, symbols.",
						   MIN_KEY_CHARS)));
}

/* Derive the AES key and key check value of one generation. */
void
fc_derive_generation(const char *pass, uint32 gen, const uint8 *salt,
				  uint32 iterations, FcGeneration *out)
{
	uint8		mac[32];
	static const char kcv_label[] = "fieldcrypt key check value";

	out->gen = gen;
	out->iterations = iterations;
	memcpy(out->salt, salt, FC_SALT_LEN);
	if (!fc_pbkdf2_sha256(pass, strlen(pass), salt, FC_SALT_LEN, iterations,
						  out->key, FC_KEY_LEN) ||
		!fc_hmac_sha256(out->key, FC_KEY_LEN, (const uint8 *) kcv_label,
						sizeof(kcv_label) - 1, mac))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not derive the data encryption key: %s",
						fc_crypto_last_error())));
	memcpy(out->kcv, mac, FC_KCV_LEN);
	explicit_bzero(mac, sizeof(mac));
}

/* Make a fresh generation from a passphrase with a random salt. */
static void
new_generation(const char *pass, uint32 gen, FcGeneration *out)
{
	uint8		salt[FC_SALT_LEN];

	if (!fc_random_bytes(salt, FC_SALT_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("random number generator failed: %s", fc_crypto_last_error())));
	fc_derive_generation(pass, gen, salt, fc_kdf_iterations, out);
}

/* Forget the change prepared by this transaction. */
static void
clear_pending(void)
{
	if (pending_entry)
		explicit_bzero(pending_entry, sizeof(FcDbKeys));
	pending_kind = PENDING_NONE;
	pending_subid = InvalidSubTransactionId;
	pending_staged = false;
}

/* Record the change to apply at commit; one per transaction. */
static void
set_pending(PendingKind kind)
{
	pending_kind = kind;
	pending_subid = GetCurrentSubTransactionId();
}

/*
 * Two steps around the commit record: at PRE_COMMIT the keyring on disk is
 * written with the change (an ERROR here still aborts the transaction); at
 * COMMIT shared memory follows, which cannot fail.  PREPARE TRANSACTION
 * seals the change into a file of its own instead (prepared.c), applied
 * when the prepared transaction commits.  A transaction that
 * aborts after PRE_COMMIT (a serialization failure at commit, say) gets
 * the keyring rewritten from the unchanged shared memory.  The change lock
 * is held throughout, so no other key change interleaves.
 */
static void
xact_callback(XactEvent event, void *arg)
{
	const FcDbKeys *entry;

	if (pending_kind == PENDING_NONE)
		return;
	entry = (pending_kind == PENDING_STORE) ? pending_entry : NULL;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			fc_db_stage(MyDatabaseId, entry);
			pending_staged = true;
			break;
		case XACT_EVENT_COMMIT:
			fc_db_publish(MyDatabaseId, entry);
			if (entry && entry->ngens > 1)
				fc_rotstate_wake();	/* re-encrypt values of older generations */
			clear_pending();
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* sealed to disk; applied when COMMIT PREPARED commits it (prepared.c) */
			fc_prepared_save(MyDatabaseId, entry);
			break;
		case XACT_EVENT_PREPARE:
			fc_prepared_saved_done(true);
			clear_pending();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			fc_prepared_saved_done(false);
			if (pending_staged)
				fc_keyring_resync(MyDatabaseId);
			clear_pending();
			break;
		default:
			break;
	}
}

/* A rolled-back savepoint takes the prepared change with it. */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (pending_kind == PENDING_NONE || pending_subid != mySubid)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		clear_pending();
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		pending_subid = parentSubid;
}

/* ERROR if this transaction already prepared a key change. */
static void
check_no_pending(void)
{
	if (pending_kind != PENDING_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("only one data encryption key change is allowed per transaction")));
	if (pending_entry == NULL)
		fc_secure_region_alloc((void **) &pending_entry, sizeof(FcDbKeys));
}

/*
 * For another key function of this layer (keyport.c): ERROR if this
 * transaction already prepared a key change, else the entry to fill, to be
 * handed back with fc_key_change_stage.  The caller holds the change lock
 * before filling it.
 */
FcDbKeys *
fc_key_change_prepare(void)
{
	check_no_pending();
	memset(pending_entry, 0, sizeof(FcDbKeys));
	return pending_entry;
}

/* Apply the entry filled after fc_key_change_prepare at commit. */
void
fc_key_change_stage(void)
{
	set_pending(PENDING_STORE);
}

/* Fill the parts of a fresh entry common to every path. */
static void
init_entry(FcDbKeys *e, const char *pass, FcKeySource source, TimestampTz now)
{
	e->dboid = MyDatabaseId;
	e->source = source;
	e->set_at = now;
	strlcpy(e->passphrase, pass, sizeof(e->passphrase));
}

/*
 * fieldcrypt.is_data_encryption_active() RETURNS boolean
 */
Datum
fieldcrypt_is_data_encryption_active(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(fc_db_is_active());
}

/*
 * fieldcrypt.set_data_encryption_key(key text) RETURNS void
 *
 * Activates, changes or restores the key of the current database.
 */
Datum
fieldcrypt_set_data_encryption_key(PG_FUNCTION_ARGS)
{
	char	   *pass;
	FcDbKeys   *cur;
	bool		have;
	FcMetaRow		meta;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	if (!PG_ARGISNULL(0))
	{
		pass = text_to_cstring(PG_GETARG_TEXT_PP(0));
		fc_register_secret(pass, strlen(pass));
		fc_redact_activity();
	}
	else
		pass = NULL;

	fc_require_role(FC_ADMIN_ROLE, "set the data encryption key");
	fc_require_tls("fieldcrypt.set_data_encryption_key");
	if (pass == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("data encryption key must not be null")));
	if (pass[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("data encryption key must not be empty")));
	check_key_policy(pass);
	fc_check_ring_usable();
	check_no_pending();
	fc_acquire_change_lock();

	fc_secure_region_alloc((void **) &cur, sizeof(FcDbKeys));
	PG_TRY();
	{
		have = fc_db_lookup(MyDatabaseId, cur);
		meta = fc_meta_current();
		memset(pending_entry, 0, sizeof(FcDbKeys));

		if (have)
		{
			/* key change: a new generation becomes current, older ones stay */
			uint32		gen = Max(cur->current_gen, meta.gen) + 1;

			fc_rotstate_check_idle(cur);
			if (strcmp(cur->passphrase, pass) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("the new data encryption key must differ from the current one")));
			if (cur->ngens >= FC_MAX_GENERATIONS)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("this database already keeps %d key generations", cur->ngens),
						 errdetail("Older generations are kept while values may still use them.")));
			memcpy(pending_entry, cur, sizeof(FcDbKeys));
			init_entry(pending_entry, pass, FC_SOURCE_ADMIN, now);
			new_generation(pass, gen, &pending_entry->gens[pending_entry->ngens]);
			pending_entry->ngens++;
			pending_entry->current_gen = gen;
			fc_meta_insert(&pending_entry->gens[pending_entry->ngens - 1], "administrator", now);
		}
		else if (meta.found)
		{
			/* restore after import: verify against the key check value */
			FcGeneration *g = &pending_entry->gens[0];

			fc_derive_generation(pass, meta.gen, meta.salt, meta.iterations, g);
			if (!fc_equal_ct(g->kcv, meta.kcv, FC_KCV_LEN))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PASSWORD),
						 errmsg("data encryption key does not match this database"),
						 errdetail("The key check value of generation %u differs; nothing was changed.",
								   meta.gen),
						 errhint("Supply the key that was current when the database was exported "
								 "(fieldcrypt.retrieve_data_encryption_key on the source).")));
			init_entry(pending_entry, pass, FC_SOURCE_RESTORED, now);
			pending_entry->activated_at = now;
			pending_entry->ngens = 1;
			pending_entry->current_gen = meta.gen;
		}
		else
		{
			/* first activation, with the administrator's key */
			init_entry(pending_entry, pass, FC_SOURCE_ADMIN, now);
			new_generation(pass, 1, &pending_entry->gens[0]);
			pending_entry->activated_at = now;
			pending_entry->ngens = 1;
			pending_entry->current_gen = 1;
			fc_meta_insert(&pending_entry->gens[0], "administrator", now);
		}
		set_pending(PENDING_STORE);
		/* on a Citus coordinator: prepared on every worker, or ERROR (cluster_2pc.c) */
		fc_cluster_key_change(pending_entry, pass);
	}
	PG_FINALLY();
	{
		explicit_bzero(cur, sizeof(FcDbKeys));
		fc_secure_region_free(cur, sizeof(FcDbKeys));
		explicit_bzero(pass, strlen(pass));
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/*
 * ERROR 55000: this database has no key loaded, because it was imported
 * without it (metadata present) or because encryption is not active.
 */
void
fc_key_missing_error(void)
{
	if (fc_meta_current().found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the data encryption key of this database has not been restored"),
				 errdetail("The database was imported or copied without its key."),
				 errhint("Restore it with fieldcrypt.set_data_encryption_key(key) over TLS.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("data encryption is not active in this database"),
			 errhint("Activate it with fieldcrypt.set_data_encryption_key(key) over TLS.")));
}

/*
 * fieldcrypt.retrieve_data_encryption_key() RETURNS text
 */
Datum
fieldcrypt_retrieve_data_encryption_key(PG_FUNCTION_ARGS)
{
	FcDbKeys   *cur;
	text	   *result;

	fc_require_role(FC_ADMIN_ROLE, "retrieve the data encryption key");
	fc_require_tls("fieldcrypt.retrieve_data_encryption_key");
	fc_check_ring_usable();

	fc_secure_region_alloc((void **) &cur, sizeof(FcDbKeys));
	if (pending_kind == PENDING_STORE)
		memcpy(cur, pending_entry, sizeof(FcDbKeys));
	else if (!fc_db_lookup(MyDatabaseId, cur))
	{
		fc_secure_region_free(cur, sizeof(FcDbKeys));
		fc_key_missing_error();
	}
	result = cstring_to_text(cur->passphrase);
	/* the key may yet reach a message (e.g. a failing cast of the result) */
	fc_register_secret(cur->passphrase, strlen(cur->passphrase));
	fc_secure_region_free(cur, sizeof(FcDbKeys));
	PG_RETURN_TEXT_P(result);
}

/*
 * fieldcrypt._key_status(): one row for the view fieldcrypt.key_status.
 */
Datum
fieldcrypt_key_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9] = {0};
	FcDbKeys   *cur;
	bool		have;
	FcMetaRow		meta = fc_meta_current();
	TimestampTz now = GetCurrentTimestamp();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	fc_secure_region_alloc((void **) &cur, sizeof(FcDbKeys));
	have = fc_db_lookup(MyDatabaseId, cur);

	/* active, key_loaded, generation, key_source, set_at, key_age, rotation_recommended, generations_kept, keyring */
	values[0] = BoolGetDatum(have || meta.found);
	values[1] = BoolGetDatum(have);
	if (meta.found)
	{
		Interval   *age = DatumGetIntervalP(DirectFunctionCall2(timestamp_mi,
																TimestampTzGetDatum(now),
																TimestampTzGetDatum(meta.set_at)));

		values[2] = Int32GetDatum(meta.gen);
		values[3] = CStringGetTextDatum(meta.source);
		values[4] = TimestampTzGetDatum(meta.set_at);
		values[5] = IntervalPGetDatum(age);
		values[6] = BoolGetDatum(strcmp(meta.source, "generated") == 0 ||
								 now - meta.set_at > (TimestampTz) 365 * USECS_PER_DAY);
	}
	else
	{
		for (int i = 2; i <= 6; i++)
			nulls[i] = true;
	}
	values[7] = Int32GetDatum(have ? cur->ngens : 0);
	fc_secure_region_free(cur, sizeof(FcDbKeys));
	values[8] = CStringGetTextDatum(fc_shared->ring_state == FC_RING_OK ? "loaded" : "unavailable");

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * fieldcrypt._cluster_key_location(): the last two columns of the view
 * fieldcrypt.key_status.  cluster_key is the key file the server took the
 * cluster key from at start (relative paths are in the data directory), or
 * "fieldcrypt.key_command"; cluster_key_in_data_directory says whether
 * that file travels with every backup of the data directory (NULL for a
 * command).  Both are NULL where the key file could not be chosen, and for
 * callers who may not read fieldcrypt.key_file (superuser only, like
 * pg_read_all_settings) and are not fieldcrypt_admin members.
 */
Datum
fieldcrypt_cluster_key_location(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2] = {0};
	bool		nulls[2] = {true, true};
	bool		inside_known;
	bool		inside;
	const char *where = fc_kek_location(&inside_known, &inside);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (where != NULL &&
		(fc_has_role(FC_ADMIN_ROLE) || has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_SETTINGS)))
	{
		values[0] = CStringGetTextDatum(where);
		nulls[0] = false;
		values[1] = BoolGetDatum(inside);
		nulls[1] = !inside_known;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * fieldcrypt._activate_on_create(): run by the extension script.  Unless
 * fieldcrypt.auto_activate is off, activates encryption with a random
 * system-generated passphrase, as a new Dynamics organization gets.
 *
 * Not when Citus creates the extension on this node from another one (a
 * CREATE EXTENSION propagated from the coordinator, or the objects Citus
 * copies to a node it adds): the node takes the coordinator's generations
 * (cluster_sync_keys() or the coordinator's next key change), which a
 * random generation 1 of its own would make it refuse.
 */
Datum
fieldcrypt_activate_on_create(PG_FUNCTION_ARGS)
{
	uint8		rnd[24];
	char		pass[64];
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	int			n;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	if (!fc_auto_activate || fc_citus_peer_session())
		PG_RETURN_VOID();
	fc_check_ring_usable();
	check_no_pending();
	fc_acquire_change_lock();

	if (!fc_random_bytes(rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("random number generator failed: %s", fc_crypto_last_error())));
	/* "Fc1." guarantees all four character classes */
	n = snprintf(pass, sizeof(pass), "Fc1.");
	for (int i = 0; i < (int) sizeof(rnd); i++)
		pass[n++] = b64[rnd[i] & 63];
	pass[n] = '\0';
	explicit_bzero(rnd, sizeof(rnd));

	/* a leftover entry of a dropped database with the same OID is stale */
	memset(pending_entry, 0, sizeof(FcDbKeys));
	init_entry(pending_entry, pass, FC_SOURCE_GENERATED, now);
	new_generation(pass, 1, &pending_entry->gens[0]);
	explicit_bzero(pass, sizeof(pass));
	pending_entry->activated_at = now;
	pending_entry->ngens = 1;
	pending_entry->current_gen = 1;
	fc_meta_insert(&pending_entry->gens[0], "generated", now);
	set_pending(PENDING_STORE);
	PG_RETURN_VOID();
}

/*
 * Trigger on fieldcrypt.key_generations.  Our own inserts pass.  An insert
 * from anywhere else is key metadata arriving with a dump (COPY or INSERT
 * from pg_dump): it replaces the key that CREATE EXTENSION generated, which
 * is only allowed while that key was never changed, and leaves the database
 * waiting for its key to be restored.  Updates, deletes and truncation are
 * refused: the metadata is what a restore is verified against.
 */
Datum
fieldcrypt_key_generations_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	FcDbKeys   *cur;
	bool		have;
	bool		replaceable;
	Oid			save_user;
	int			save_sec;
	int			save_nest;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "fieldcrypt_key_generations_guard: not called by trigger manager");
	if (internal_write)
		return PointerGetDatum(trigdata->tg_trigtuple);
	if (!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key metadata in fieldcrypt.key_generations cannot be modified"),
				 errdetail("It is needed to verify the key when the database is restored.")));
	if (pending_kind == PENDING_IMPORT)
		return PointerGetDatum(trigdata->tg_trigtuple);

	if (pending_kind == PENDING_STORE && pending_entry->source == FC_SOURCE_GENERATED &&
		pending_entry->ngens == 1)
	{
		/*
		 * CREATE EXTENSION and the metadata in one transaction (pg_restore
		 * -1).  Not inside a savepoint of it: rolling that back would lose
		 * the generated key as well as the import.
		 */
		if (GetCurrentSubTransactionId() != pending_subid)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot import key metadata in a savepoint of the transaction that created the extension")));
		clear_pending();
	}
	else
	{
		check_no_pending();
		fc_check_ring_usable();
		fc_secure_region_alloc((void **) &cur, sizeof(FcDbKeys));
		have = fc_db_lookup(MyDatabaseId, cur);
		replaceable = !have || (cur->source == FC_SOURCE_GENERATED && cur->ngens == 1);
		fc_secure_region_free(cur, sizeof(FcDbKeys));

		/*
		 * No key here: the database already waits for its key to be restored
		 * and its metadata arrives row by row (pg_dump --inserts).
		 */
		if (!have)
			return PointerGetDatum(trigdata->tg_trigtuple);
		if (!replaceable)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot import key metadata into a database that has its own data encryption key"),
					 errdetail("Key metadata can only be imported into a database whose key was "
							   "generated by CREATE EXTENSION and never changed.")));
		fc_acquire_change_lock();
	}

	/* drop the generated key's metadata; its key goes at commit */
	fc_meta_spi_connect(&save_user, &save_sec, &save_nest);
	internal_write = true;
	PG_TRY();
	{
		if (SPI_execute(psprintf("DELETE FROM %s", fc_meta_table_name()), false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not clear fieldcrypt.key_generations");
	}
	PG_FINALLY();
	{
		internal_write = false;
	}
	PG_END_TRY();
	fc_meta_spi_finish(save_user, save_sec, save_nest);
	set_pending(PENDING_IMPORT);
	return PointerGetDatum(trigdata->tg_trigtuple);
}

/*
 * Delete the metadata rows of every generation but keep_gen, once those
 * generations were destroyed (reencrypt.c); in the caller's transaction.
 */
void
fc_meta_forget_generations(uint32 keep_gen)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(keep_gen)};
	Oid			save_user;
	int			save_sec;
	int			save_nest;
	int			rc;

	fc_meta_spi_connect(&save_user, &save_sec, &save_nest);
	internal_write = true;
	PG_TRY();
	{
		rc = SPI_execute_with_args(psprintf("DELETE FROM %s WHERE generation <> $1",
											fc_meta_table_name()),
								   1, types, values, NULL, false, 0);
	}
	PG_FINALLY();
	{
		internal_write = false;
	}
	PG_END_TRY();
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not delete from fieldcrypt.key_generations");
	fc_meta_spi_finish(save_user, save_sec, save_nest);
}
