/*-------------------------------------------------------------------------
 *
 * enctypes.c
 *	  fieldcrypt.encrypted_text and fieldcrypt.encrypted_bytea: I/O,
 *	  assignment casts into them (encrypting) and fieldcrypt.decrypt.
 *
 *	  A stored value is an envelope:
 *
 *		version u8 | kind u8 ('t' or 'b') | generation u32 | instance[8] |
 *		counter u64 | ciphertext | GCM tag[16]
 *
 *	  all integers big-endian; the 22-byte header is the GCM associated
 *	  data.  The AES key is HKDF-SHA256(generation key, salt = instance,
 *	  info = "fieldcrypt column v1"); the 96-bit nonce is four zero bytes
 *	  and the counter.  Instance and counter come from the key store: the
 *	  instance is drawn at random each time shared memory is created and
 *	  the counter only grows during that lifetime, so a (key, nonce) pair
 *	  never repeats (docs/security.md "Nonces").
 *
 *	  Text form (output, and input accepted back without the key):
 *	  "fcenc:v1:" followed by the base64 of the envelope.  Binary form
 *	  (send/receive): "\0fcenc1" followed by the envelope.  Input that
 *	  starts with a prefix but is not a well-formed envelope is refused,
 *	  never encrypted as plaintext.
 *
 *	  Per-backend cache: one encrypting context for the current
 *	  (generation, instance) and a few decrypting contexts, rebuilt when
 *	  the key store version changes.
 *
 * src/columns/enctypes.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/base64.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "columns/enctypes.h"
#include "keys/policy.h"
#include "keys/keystore.h"
#include "keys/redact.h"

#define ENV_VERSION		1
#define ENV_HDR_LEN		22
#define ENV_MIN_LEN		(ENV_HDR_LEN + FC_TAG_LEN)
#define TEXT_PREFIX		"fcenc:v1:"
#define TEXT_PREFIX_LEN 9
#define BIN_PREFIX		"\0fcenc1"
#define BIN_PREFIX_LEN	7
#define HKDF_INFO		"fieldcrypt column v1"
#define DEC_SLOTS		8

PG_FUNCTION_INFO_V1(fieldcrypt_encrypted_text_in);
PG_FUNCTION_INFO_V1(fieldcrypt_encrypted_bytea_in);
PG_FUNCTION_INFO_V1(fieldcrypt_encrypted_out);
PG_FUNCTION_INFO_V1(fieldcrypt_encrypted_text_recv);
PG_FUNCTION_INFO_V1(fieldcrypt_encrypted_bytea_recv);
PG_FUNCTION_INFO_V1(fieldcrypt_encrypted_send);
PG_FUNCTION_INFO_V1(fieldcrypt_encrypt_text);
PG_FUNCTION_INFO_V1(fieldcrypt_encrypt_bytea);
PG_FUNCTION_INFO_V1(fieldcrypt_decrypt_text);
PG_FUNCTION_INFO_V1(fieldcrypt_decrypt_bytea);
PG_FUNCTION_INFO_V1(fieldcrypt_refuse_cast);

typedef struct CipherSlot
{
	uint32		gen;
	uint8		instance[FC_INSTANCE_ID_LEN];
	FcCipher   *ctx;			/* NULL = empty */
} CipherSlot;

static uint64 cache_version = 0;
static CipherSlot enc_slot;
static CipherSlot dec_slots[DEC_SLOTS];
static int	dec_next = 0;

/* OIDs of our types in this database, or InvalidOid; reset on invalidation. */
static Oid	text_oid = InvalidOid;
static Oid	bytea_oid = InvalidOid;
static bool oids_valid = false;

/* typid -> does it hold encrypted values; reset with the OIDs above. */
typedef struct HoldsEntry
{
	Oid			typid;
	bool		holds;
} HoldsEntry;
static HTAB *holds_cache = NULL;

static void type_cache_reset(Datum arg, int cacheid, uint32 hashvalue);
static void rel_cache_reset(Datum arg, Oid relid);
static void refresh_ciphers(void);
static FcCipher *make_cipher(const FcGeneration *g, const uint8 *instance, bool encrypt);
static bytea *encrypt_value(const char *data, Size len, char kind);
static bytea *envelope_from_bytes(const char *data, Size len, char kind);
static void no_key_error(bool reading) pg_attribute_noreturn();

/* Register the syscache callback that forgets our type OIDs. */
void
fc_enctypes_init(void)
{
	CacheRegisterSyscacheCallback(TYPEOID, type_cache_reset, (Datum) 0);
	/* a composite (table row) type gains columns without a pg_type change */
	CacheRegisterRelcacheCallback(rel_cache_reset, (Datum) 0);
}

static void
rel_cache_reset(Datum arg, Oid relid)
{
	if (holds_cache)
	{
		hash_destroy(holds_cache);
		holds_cache = NULL;
	}
}

static void
type_cache_reset(Datum arg, int cacheid, uint32 hashvalue)
{
	oids_valid = false;
	if (holds_cache)
	{
		hash_destroy(holds_cache);
		holds_cache = NULL;
	}
}

/* Look up fieldcrypt.encrypted_text/_bytea in this database. */
static void
load_type_oids(void)
{
	Oid			nsp;

	if (oids_valid)
		return;
	text_oid = bytea_oid = InvalidOid;
	if (IsTransactionState())
	{
		nsp = get_namespace_oid("fieldcrypt", true);
		if (OidIsValid(nsp))
		{
			text_oid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									   CStringGetDatum("encrypted_text"),
									   ObjectIdGetDatum(nsp));
			bytea_oid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
										CStringGetDatum("encrypted_bytea"),
										ObjectIdGetDatum(nsp));
		}
		oids_valid = true;
	}
}

/* True if the encrypted types exist in this database. */
bool
fc_enctypes_installed(void)
{
	load_type_oids();
	return OidIsValid(text_oid);
}

/* True if the relation has a column of an encrypted type. */
bool
fc_rel_has_encrypted(Oid relid)
{
	Relation	rel;
	bool		found = false;

	if (!OidIsValid(relid))
		return false;
	rel = RelationIdGetRelation(relid);
	if (!RelationIsValid(rel))
		return false;
	for (int i = 0; i < RelationGetDescr(rel)->natts && !found; i++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), i);

		found = !att->attisdropped && fc_is_encrypted_type(att->atttypid);
	}
	RelationClose(rel);
	return found;
}

/*
 * Fast paths compare OIDs with FirstGenbkiObjectId, not FirstNormalObjectId:
 * objects created in single-user mode (like those of initdb) get OIDs below
 * FirstNormalObjectId, and an extension may have been created there.
 */

/* True for encrypted_text, encrypted_bytea and domains over them. */
bool
fc_is_encrypted_type(Oid typid)
{
	if (typid < FirstGenbkiObjectId)
		return false;
	load_type_oids();
	if (!OidIsValid(text_oid))
		return false;
	typid = getBaseType(typid);
	return typid == text_oid || typid == bytea_oid;
}

/*
 * True if values of typid can carry an encrypted value: the types
 * themselves, domains, arrays and composites containing them.  RECORD is
 * answered false: its values are checked one by one.
 */
static bool
holds_encrypted_uncached(Oid typid)
{
	Oid			base;
	Oid			elem;
	TupleDesc	td;
	bool		found = false;

	if (fc_is_encrypted_type(typid))
		return true;
	base = getBaseType(typid);
	elem = get_element_type(base);
	if (OidIsValid(elem))
		return fc_type_holds_encrypted(elem);
	if (get_typtype(base) != TYPTYPE_COMPOSITE)
		return false;
	td = lookup_rowtype_tupdesc(base, -1);
	for (int i = 0; i < td->natts && !found; i++)
	{
		Form_pg_attribute att = TupleDescAttr(td, i);

		if (!att->attisdropped && fc_type_holds_encrypted(att->atttypid))
			found = true;
	}
	ReleaseTupleDesc(td);
	return found;
}

bool
fc_type_holds_encrypted(Oid typid)
{
	HoldsEntry *e;
	bool		found;
	bool		holds;

	if (typid < FirstGenbkiObjectId)
		return false;
	if (holds_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(HoldsEntry);
		ctl.hcxt = CacheMemoryContext;
		holds_cache = hash_create("fieldcrypt encrypted types", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(holds_cache, &typid, HASH_FIND, NULL);
	if (e)
		return e->holds;
	holds = holds_encrypted_uncached(typid);
	/* the recursion may have reset the cache through an invalidation */
	if (holds_cache == NULL)
		return holds;
	e = hash_search(holds_cache, &typid, HASH_ENTER, &found);
	e->holds = holds;
	return holds;
}

/*
 * ERROR: no key for this database.  Reading, the value may come from another
 * database (a logical subscriber before its first import): the hint says so,
 * since a key set here would make a generation of its own.
 */
static void
no_key_error(bool reading)
{
	fc_check_ring_usable();
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("no data encryption key is loaded for database \"%s\"",
					get_database_name(MyDatabaseId)),
			 errdetail("Encryption is not active here, or the database was imported "
					   "and its key was not restored yet."),
			 reading ?
			 errhint("An administrator must call fieldcrypt.set_data_encryption_key(key) over TLS; "
					 "for values replicated or copied from another database, "
					 "fieldcrypt.import_key_generations(document, passphrase) with that database's "
					 "fieldcrypt.export_key_generations() instead.") :
			 errhint("An administrator must call fieldcrypt.set_data_encryption_key(key) over TLS.")));
}

/* An AES-256-GCM context under HKDF(generation key, instance). */
static FcCipher *
make_cipher(const FcGeneration *g, const uint8 *instance, bool encrypt)
{
	return fc_derived_cipher(g->key, instance, HKDF_INFO, encrypt);
}

/* Drop every cached context when the key store changed. */
static void
refresh_ciphers(void)
{
	uint64		v = pg_atomic_read_u64(&fc_shared->version);

	if (v == cache_version)
		return;
	fc_cipher_free(enc_slot.ctx);
	enc_slot.ctx = NULL;
	for (int i = 0; i < DEC_SLOTS; i++)
	{
		fc_cipher_free(dec_slots[i].ctx);
		dec_slots[i].ctx = NULL;
	}
	cache_version = v;
}

/* Encrypt len bytes into a new envelope varlena under the current key. */
static bytea *
encrypt_value(const char *data, Size len, char kind)
{
	const FcGeneration *g;
	bytea	   *result;
	uint8	   *env;
	uint8		nonce[FC_NONCE_LEN] = {0};
	uint64		counter;

	/* no look-up per value while the key store is unchanged (its version) */
	if (enc_slot.ctx == NULL || pg_atomic_read_u64(&fc_shared->version) != cache_version)
	{
		refresh_ciphers();
		if ((g = fc_local_generation(0, true)) == NULL)
			no_key_error(false);
		if (enc_slot.ctx == NULL || enc_slot.gen != g->gen)
		{
			fc_cipher_free(enc_slot.ctx);
			enc_slot.ctx = NULL;
			enc_slot.ctx = make_cipher(g, fc_instance_id(), true);
			enc_slot.gen = g->gen;
			memcpy(enc_slot.instance, fc_instance_id(), FC_INSTANCE_ID_LEN);
		}
	}
	if (len > MaxAllocSize - VARHDRSZ - ENV_MIN_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value is too large to be encrypted")));

	result = palloc(VARHDRSZ + ENV_MIN_LEN + len);
	SET_VARSIZE(result, VARHDRSZ + ENV_MIN_LEN + len);
	env = (uint8 *) VARDATA(result);
	counter = fc_next_nonce_counter();
	env[0] = ENV_VERSION;
	env[1] = kind;
	for (int i = 0; i < 4; i++)
		env[2 + i] = (enc_slot.gen >> (24 - 8 * i)) & 0xff;
	memcpy(env + 6, enc_slot.instance, FC_INSTANCE_ID_LEN);
	for (int i = 0; i < 8; i++)
		env[14 + i] = nonce[4 + i] = (counter >> (56 - 8 * i)) & 0xff;
	if (!fc_gcm_seal(enc_slot.ctx, nonce, env, ENV_HDR_LEN,
					 (const uint8 *) data, len, env + ENV_HDR_LEN,
					 env + ENV_HDR_LEN + len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt value: %s", fc_crypto_last_error())));
	return result;
}

/*
 * Decrypt an envelope of the given kind; ERRORs unless authentic, or with
 * soft, returns NULL instead of raising the errors a value can cause
 * (malformed, unknown generation, not authentic).
 */
static char *
decrypt_value_ext(bytea *val, char kind, Size *outlen, bool soft)
{
	const uint8 *env = (const uint8 *) VARDATA_ANY(val);
	Size		envlen = VARSIZE_ANY_EXHDR(val);
	uint32		gen;
	const FcGeneration *g;
	CipherSlot *slot = NULL;
	uint8		nonce[FC_NONCE_LEN] = {0};
	Size		len;
	char	   *out;

	if (soft && (envlen < ENV_MIN_LEN || env[0] != ENV_VERSION || env[1] != kind))
		return NULL;
	if (envlen < ENV_MIN_LEN || env[0] != ENV_VERSION || env[1] != kind)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value is malformed"),
				 errdetail("The envelope is truncated or has an unknown format.")));
	gen = ((uint32) env[2] << 24) | ((uint32) env[3] << 16) | ((uint32) env[4] << 8) | env[5];

	refresh_ciphers();
	g = fc_local_generation(gen, false);
	if (g == NULL && soft)
		return NULL;
	if (g == NULL)
	{
		if (fc_local_generation(0, true) == NULL)
			no_key_error(true);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key generation %u is not held by this database", gen),
				 errdetail("The value was encrypted under generation %u, here before that generation was "
						   "destroyed, or in another database it was replicated or copied from.", gen),
				 errhint("For a value from another database, run fieldcrypt.export_key_generations() "
						 "there and fieldcrypt.import_key_generations(document, passphrase) here; "
						 "a generation destroyed after re-encryption can only be read by restoring "
						 "its key into a fresh cluster.")));
	}
	for (int i = 0; i < DEC_SLOTS; i++)
		if (dec_slots[i].ctx && dec_slots[i].gen == gen &&
			memcmp(dec_slots[i].instance, env + 6, FC_INSTANCE_ID_LEN) == 0)
			slot = &dec_slots[i];
	if (slot == NULL)
	{
		slot = &dec_slots[dec_next];
		dec_next = (dec_next + 1) % DEC_SLOTS;
		fc_cipher_free(slot->ctx);
		slot->ctx = NULL;
		slot->ctx = make_cipher(g, env + 6, false);
		slot->gen = gen;
		memcpy(slot->instance, env + 6, FC_INSTANCE_ID_LEN);
	}

	len = envlen - ENV_MIN_LEN;
	memcpy(nonce + 4, env + 14, 8);
	out = palloc(len + 1);
	if (!fc_gcm_open(slot->ctx, nonce, env, ENV_HDR_LEN, env + ENV_HDR_LEN, len,
					 (uint8 *) out, env + ENV_HDR_LEN + len))
	{
		pfree(out);
		if (soft)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value could not be authenticated"),
				 errdetail("It was modified, truncated, or encrypted with another key of generation %u.", gen),
				 errhint("A value replicated or copied from another database opens only where that "
						 "database's key generations were imported (fieldcrypt.import_key_generations).")));
	}
	out[len] = '\0';
	*outlen = len;
	return out;
}

/* Decrypt an envelope of the given kind; ERRORs unless authentic. */
static char *
decrypt_value(bytea *val, char kind, Size *outlen)
{
	return decrypt_value_ext(val, kind, outlen, false);
}

/* Validate raw envelope bytes and wrap them in a varlena (no key needed). */
static bytea *
envelope_from_bytes(const char *data, Size len, char kind)
{
	bytea	   *result;

	if (len < ENV_MIN_LEN || (uint8) data[0] != ENV_VERSION || data[1] != kind)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid fieldcrypt envelope"),
				 errdetail("Input beginning with \"%s\" is read as an encrypted envelope "
						   "and this one is not well-formed.", TEXT_PREFIX),
				 errhint("A plaintext cannot begin with \"%s\"; to store such a text, "
						 "cast it to text first.", TEXT_PREFIX)));
	result = palloc(VARHDRSZ + len);
	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), data, len);
	return result;
}

/*
 * COPY FROM (pg_restore, including --data-only) into a database that holds
 * a key: refuse an envelope that this database cannot decrypt, instead of
 * storing a value that fails at every later read.  Only under COPY FROM:
 * an INSERT of an envelope keeps taking it as is (decryption authenticates
 * it).  A database holding no key yet accepts it; the key set afterwards
 * is checked against the key metadata that came with the data.
 */
static void
check_envelope_loadable(bytea *val, char kind)
{
	const uint8 *env = (const uint8 *) VARDATA_ANY(val);
	uint32		gen;
	Size		len;
	char	   *plain;
	bool		held;

	if (!fc_redact_copy_from_active())
		return;
	refresh_ciphers();
	if (fc_local_generation(0, true) == NULL)
		return;
	plain = decrypt_value_ext(val, kind, &len, true);
	if (plain != NULL)
	{
		explicit_bzero(plain, len);
		pfree(plain);
		return;
	}
	gen = ((uint32) env[2] << 24) | ((uint32) env[3] << 16) | ((uint32) env[4] << 8) | env[5];
	held = fc_local_generation(gen, false) != NULL;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("encrypted value of key generation %u cannot be decrypted in this database", gen),
			 held ?
			 errdetail("Key generation %u of this database is another key: the value was written "
					   "in another database, or was modified.", gen) :
			 errdetail("This database holds no key generation %u: the value was written in another "
					   "database, or under a generation that was destroyed.", gen),
			 errhint("Load encrypted values only into the database they were written in; to copy a "
					 "database, restore its whole dump (not --data-only) into a new database and set "
					 "the original key there with fieldcrypt.set_data_encryption_key.")));
}

/* Decode the text form of an envelope. */
static bytea *
envelope_from_text(const char *str, char kind)
{
	const char *b64 = str + TEXT_PREFIX_LEN;
	int			b64len = strlen(b64);
	int			maxlen = pg_b64_dec_len(b64len);
	char	   *raw = palloc(maxlen + 1);
	int			n = pg_b64_decode(b64, b64len, raw, maxlen);
	bytea	   *result;

	if (n < 0)
		n = 0;					/* envelope_from_bytes refuses it */
	result = envelope_from_bytes(raw, n, kind);
	check_envelope_loadable(result, kind);
	return result;
}

/*
 * Remember a plaintext given to an input function for log redaction: it may
 * come from a statement text that something logs later (a DO body, EXECUTE
 * arguments, a data-modifying CTE).  Not for COPY FROM rows, which are only
 * quoted in error context lines (redacted separately), nor in the casts,
 * whose typed values come from parameters (hidden) or from the server.
 */
static void
remember_plaintext(const char *s, size_t len)
{
	if (!fc_redact_copy_from_active())
		fc_register_secret(s, len);
}

/* encrypted_text input: an envelope in text form, or a plaintext to encrypt. */
Datum
fieldcrypt_encrypted_text_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	Size		len = strlen(str);

	if (strncmp(str, TEXT_PREFIX, TEXT_PREFIX_LEN) == 0)
		PG_RETURN_BYTEA_P(envelope_from_text(str, 't'));
	remember_plaintext(str, len);
	PG_RETURN_BYTEA_P(encrypt_value(str, len, 't'));
}

/* encrypted_bytea input: an envelope, or bytea text syntax to encrypt. */
Datum
fieldcrypt_encrypted_bytea_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	bytea	   *plain;
	bytea	   *result;

	if (strncmp(str, TEXT_PREFIX, TEXT_PREFIX_LEN) == 0)
		PG_RETURN_BYTEA_P(envelope_from_text(str, 'b'));
	remember_plaintext(str, strlen(str));
	plain = DatumGetByteaPP(DirectFunctionCall1(byteain, CStringGetDatum(str)));
	result = encrypt_value(VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain), 'b');
	explicit_bzero(VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain));
	PG_RETURN_BYTEA_P(result);
}

/* Output of both types: the envelope's text form, never plaintext. */
Datum
fieldcrypt_encrypted_out(PG_FUNCTION_ARGS)
{
	bytea	   *val = PG_GETARG_BYTEA_PP(0);
	int			len = VARSIZE_ANY_EXHDR(val);
	int			enclen = pg_b64_enc_len(len);
	char	   *out = palloc(TEXT_PREFIX_LEN + enclen + 1);
	int			n;

	memcpy(out, TEXT_PREFIX, TEXT_PREFIX_LEN);
	n = pg_b64_encode(VARDATA_ANY(val), len, out + TEXT_PREFIX_LEN, enclen);
	if (n < 0)
		elog(ERROR, "could not encode envelope");
	out[TEXT_PREFIX_LEN + n] = '\0';
	PG_RETURN_CSTRING(out);
}

/* Binary input shared by both types. */
static bytea *
recv_common(StringInfo buf, char kind)
{
	const char *data = buf->data + buf->cursor;
	Size		len = buf->len - buf->cursor;
	bytea	   *result;

	if (len >= BIN_PREFIX_LEN && memcmp(data, BIN_PREFIX, BIN_PREFIX_LEN) == 0)
	{
		result = envelope_from_bytes(data + BIN_PREFIX_LEN, len - BIN_PREFIX_LEN, kind);
		check_envelope_loadable(result, kind);
	}
	else if (kind == 't')
	{
		int			nbytes;
		char	   *str = pq_getmsgtext(buf, len, &nbytes);

		remember_plaintext(str, nbytes);
		result = encrypt_value(str, nbytes, kind);
		explicit_bzero(str, nbytes);
		return result;
	}
	else
		result = encrypt_value(data, len, kind);
	buf->cursor = buf->len;
	return result;
}

Datum
fieldcrypt_encrypted_text_recv(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(recv_common((StringInfo) PG_GETARG_POINTER(0), 't'));
}

Datum
fieldcrypt_encrypted_bytea_recv(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(recv_common((StringInfo) PG_GETARG_POINTER(0), 'b'));
}

/* Binary output of both types: the prefix and the envelope. */
Datum
fieldcrypt_encrypted_send(PG_FUNCTION_ARGS)
{
	bytea	   *val = PG_GETARG_BYTEA_PP(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbytes(&buf, BIN_PREFIX, BIN_PREFIX_LEN);
	pq_sendbytes(&buf, VARDATA_ANY(val), VARSIZE_ANY_EXHDR(val));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* Assignment cast text/varchar -> encrypted_text: always encrypts. */
Datum
fieldcrypt_encrypt_text(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BYTEA_P(encrypt_value(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), 't'));
}

/* Assignment cast bytea -> encrypted_bytea: always encrypts. */
Datum
fieldcrypt_encrypt_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_BYTEA_P(encrypt_value(VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), 'b'));
}

/*
 * The fieldcrypt_reader check, done once per calling expression and user
 * (decrypt runs once per row).
 */
static void
require_reader(FunctionCallInfo fcinfo)
{
	Oid		   *checked = (Oid *) fcinfo->flinfo->fn_extra;

	if (checked != NULL && *checked == GetUserId())
		return;
	fc_require_role(FC_READER_ROLE, "decrypt encrypted values");
	if (checked == NULL)
		checked = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(Oid));
	*checked = GetUserId();
	fcinfo->flinfo->fn_extra = checked;
}

/* fieldcrypt.decrypt(encrypted_text): superusers and fieldcrypt_reader only. */
Datum
fieldcrypt_decrypt_text(PG_FUNCTION_ARGS)
{
	bytea	   *val;
	Size		len;
	char	   *plain;
	text	   *result;

	require_reader(fcinfo);
	val = PG_GETARG_BYTEA_PP(0);
	plain = decrypt_value(val, 't', &len);
	/* an envelope restored from a database of another encoding */
	if (!pg_verify_mbstr(GetDatabaseEncoding(), plain, len, true))
	{
		explicit_bzero(plain, len);
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("decrypted value is not valid in the database encoding \"%s\"",
						GetDatabaseEncodingName())));
	}
	result = cstring_to_text_with_len(plain, len);
	explicit_bzero(plain, len);
	pfree(plain);
	PG_RETURN_TEXT_P(result);
}

/* fieldcrypt.decrypt(encrypted_bytea): superusers and fieldcrypt_reader only. */
Datum
fieldcrypt_decrypt_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *val;
	Size		len;
	char	   *plain;
	bytea	   *result;

	require_reader(fcinfo);
	val = PG_GETARG_BYTEA_PP(0);
	plain = decrypt_value(val, 'b', &len);
	result = palloc(VARHDRSZ + len);
	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), plain, len);
	explicit_bzero(plain, len);
	pfree(plain);
	PG_RETURN_BYTEA_P(result);
}

/* Backs the explicit casts to text types, which exist only to refuse. */
Datum
fieldcrypt_refuse_cast(PG_FUNCTION_ARGS)
{
	ereport(ERROR,
			(errcode(ERRCODE_CANNOT_COERCE),
			 errmsg("encrypted values cannot be cast to text"),
			 errdetail("Encrypted columns are write-only."),
			 errhint("Members of fieldcrypt_reader can read the plaintext with fieldcrypt.decrypt().")));
	PG_RETURN_NULL();
}

/*
 * Re-encryption helpers (used by reencrypt.c) -------------------------------
 */

/* The generation recorded in an envelope's header, or 0 if malformed. */
uint32
fc_envelope_generation(Datum value)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(value);
	const uint8 *env;

	/* only toasted values need a copy of their first bytes */
	if (VARATT_IS_EXTERNAL(v) || VARATT_IS_COMPRESSED(v))
		v = (struct varlena *) DatumGetByteaPSlice(value, 0, 6);
	env = (const uint8 *) VARDATA_ANY(v);
	if (VARSIZE_ANY_EXHDR(v) < 6 || env[0] != ENV_VERSION)
		return 0;
	return ((uint32) env[2] << 24) | ((uint32) env[3] << 16) | ((uint32) env[4] << 8) | env[5];
}

/*
 * A new envelope holding the plaintext of val under the current generation,
 * or NULL when val cannot be decrypted here (its generation is gone, or it
 * is not authentic): such a value is left as it is, it was unreadable
 * before and stays so.  The plaintext is zeroed before returning.
 */
bytea *
fc_reencrypt_envelope(bytea *val, char kind)
{
	char	   *plain;
	Size		len = 0;
	bytea	   *result;

	plain = decrypt_value_ext(val, kind, &len, true);
	if (plain == NULL)
		return NULL;
	result = encrypt_value(plain, len, kind);
	explicit_bzero(plain, len);
	pfree(plain);
	return result;
}
