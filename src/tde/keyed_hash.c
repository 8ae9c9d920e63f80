/*-------------------------------------------------------------------------
 *
 * keyed_hash.c
 *	  The support functions of the keyed hash operator classes
 *	  (fieldcrypt.<type>_keyed_ops): a hash index built with them stores
 *	  HMAC-SHA-256(K, value) truncated to 32 bits instead of the type's
 *	  plain hash, so its pages and WAL hold nothing a dictionary reverses.
 *
 *	  K = HKDF-SHA256(TDE key generation g of the database, fixed salt,
 *	  info "fieldcrypt keyed hash v1"): per database, kept, replicated and
 *	  carried like every TDE key (keystore.c), and distinct from the keys
 *	  that encrypt rows.  g is the index's opclass option "generation",
 *	  which index_guard.c fills in when the index is created: an index is
 *	  always read with the key it was built with.
 *
 *	  Only an index passes opclass options (index_getprocinfo).  Called
 *	  without them -- the planner may take a hash function for a hash join,
 *	  hash aggregate or Memoize from any hash family holding the operator --
 *	  the functions return the type's own hash, which is all a query needs
 *	  (both sides hash with the same function).
 *
 *	  Per backend, one prepared HMAC context per generation (MAC_SLOTS),
 *	  dropped when the key store changes (fc_shared->version); per call
 *	  site (fn_extra), the context last used.
 *
 * src/tde/keyed_hash.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "catalog/pg_collation.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

#include "keys/crypto.h"
#include "keys/keystore.h"
#include "keys/policy.h"
#include "tde/keyed.h"

#define HKDF_INFO_KEYED	"fieldcrypt keyed hash v1"
#define HKDF_SALT_KEYED	"fieldcrypt index"	/* 16 bytes, fixed: the key is random */
#define MAC_SLOTS		4

PG_FUNCTION_INFO_V1(fieldcrypt_keyed_hash_options);
PG_FUNCTION_INFO_V1(fieldcrypt_keyed_hash_text);
PG_FUNCTION_INFO_V1(fieldcrypt_keyed_hash_bpchar);
PG_FUNCTION_INFO_V1(fieldcrypt_keyed_hash_bytea);
PG_FUNCTION_INFO_V1(fieldcrypt_keyed_hash_int4);
PG_FUNCTION_INFO_V1(fieldcrypt_keyed_hash_int8);
PG_FUNCTION_INFO_V1(fieldcrypt_keyed_hash_uuid);

/* The parsed opclass options. */
typedef struct FcKeyedOpts
{
	int32		vl_len_;
	int			generation;
} FcKeyedOpts;

/* Per call site (flinfo->fn_extra): the context of its generation. */
typedef struct FcKeyedSite
{
	uint64		version;		/* of mac_version when mac was taken */
	FcMac	   *mac;
	Oid			collid;			/* checked deterministic (text, bpchar) */
} FcKeyedSite;

static struct
{
	uint32		gen;
	FcMac	   *mac;
} macs[MAC_SLOTS];
static int	mac_next = 0;
static uint64 mac_version = 0;

/* The prepared HMAC context of generation gen; ERROR if it is not loaded. */
static FcMac *
mac_for(uint32 gen)
{
	uint64		v = pg_atomic_read_u64(&fc_shared->version);
	const FcTdeGeneration *g;
	uint8		k[FC_KEY_LEN];
	FcMac	   *mac;
	bool		ok;

	if (v != mac_version)
	{
		for (int i = 0; i < MAC_SLOTS; i++)
		{
			fc_mac_free(macs[i].mac);
			macs[i].mac = NULL;
		}
		mac_version = v;
	}
	for (int i = 0; i < MAC_SLOTS; i++)
		if (macs[i].mac != NULL && macs[i].gen == gen)
			return macs[i].mac;

	g = (gen != 0) ? fc_local_tde_generation(gen, false) : NULL;
	if (g == NULL)
		fc_keyed_generation_missing(gen);
	ok = fc_hkdf_sha256(g->key, FC_KEY_LEN, (const uint8 *) HKDF_SALT_KEYED,
						strlen(HKDF_SALT_KEYED), HKDF_INFO_KEYED, k, sizeof(k));
	mac = ok ? fc_mac_new(k, sizeof(k)) : NULL;
	explicit_bzero(k, sizeof(k));
	if (mac == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not prepare the keyed hash: %s", fc_crypto_last_error())));
	fc_mac_free(macs[mac_next].mac);
	macs[mac_next].gen = gen;
	macs[mac_next].mac = mac;
	mac_next = (mac_next + 1) % MAC_SLOTS;
	return mac;
}

/* ERROR for a keyed index whose generation this server does not hold. */
void
fc_keyed_generation_missing(uint32 gen)
{
	fc_check_ring_usable();
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("TDE key generation %u of a keyed hash index is not loaded", gen),
			 errdetail("The index's hash codes are keyed by that generation of the database's TDE key, "
					   "which this server does not hold."),
			 errhint("Rebuild the index with REINDEX INDEX CONCURRENTLY: it is then keyed with "
					 "the current generation.")));
}

/* The context for an index's call site, or NULL when not called by an index. */
static FcKeyedSite *
site_for(FunctionCallInfo fcinfo, bool is_text)
{
	FcKeyedSite *site = (FcKeyedSite *) fcinfo->flinfo->fn_extra;
	Oid			collid = PG_GET_COLLATION();

	if (!PG_HAS_OPCLASS_OPTIONS())
		return NULL;
	if (site == NULL)
	{
		site = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(FcKeyedSite));
		fcinfo->flinfo->fn_extra = site;
	}
	if (is_text && site->collid != collid)
	{
		if (!OidIsValid(collid))
			ereport(ERROR,
					(errcode(ERRCODE_INDETERMINATE_COLLATION),
					 errmsg("could not determine which collation to use for string hashing"),
					 errhint("Use the COLLATE clause to set the collation explicitly.")));
		fc_keyed_check_collation(collid);
		site->collid = collid;
	}
	if (site->mac == NULL || site->version != mac_version ||
		pg_atomic_read_u64(&fc_shared->version) != mac_version)
	{
		FcKeyedOpts *opts = (FcKeyedOpts *) PG_GET_OPCLASS_OPTIONS();

		site->mac = mac_for((uint32) opts->generation);
		site->version = mac_version;
	}
	return site;
}

/* ERROR unless collid is deterministic: keyed hashes compare bytes. */
void
fc_keyed_check_collation(Oid collid)
{
	if (OidIsValid(collid) && !get_collation_isdeterministic(collid))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("keyed hash operator classes do not support nondeterministic collations"),
				 errdetail("Collation \"%s\" treats strings with different bytes as equal, "
						   "which a keyed hash of the bytes cannot.", get_collation_name(collid)),
				 errhint("Index the column with a deterministic collation, such as \"C\" or \"default\".")));
}

/* The keyed hash of len bytes. */
static Datum
keyed(FcKeyedSite *site, const void *data, size_t len)
{
	uint32		h;

	if (!fc_mac32(site->mac, data, len, &h))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("keyed hash failed: %s", fc_crypto_last_error())));
	return UInt32GetDatum(h);
}

/* HASHOPTIONS_PROC: the option "generation" (0: filled in at creation). */
Datum
fieldcrypt_keyed_hash_options(PG_FUNCTION_ARGS)
{
	local_relopts *relopts = (local_relopts *) PG_GETARG_POINTER(0);

	init_local_reloptions(relopts, sizeof(FcKeyedOpts));
	add_local_int_reloption(relopts, "generation",
							"TDE key generation the hash codes are keyed with",
							0, 0, 65535, offsetof(FcKeyedOpts, generation));
	PG_RETURN_VOID();
}

Datum
fieldcrypt_keyed_hash_text(PG_FUNCTION_ARGS)
{
	FcKeyedSite *site = site_for(fcinfo, true);
	text	   *t;
	Datum		result;

	if (site == NULL)
		return DirectFunctionCall1Coll(hashtext, PG_GET_COLLATION(), PG_GETARG_DATUM(0));
	t = PG_GETARG_TEXT_PP(0);
	result = keyed(site, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	PG_FREE_IF_COPY(t, 0);
	return result;
}

/* bpchar: trailing spaces do not count, as in bpchar equality. */
Datum
fieldcrypt_keyed_hash_bpchar(PG_FUNCTION_ARGS)
{
	FcKeyedSite *site = site_for(fcinfo, true);
	BpChar	   *b;
	const char *s;
	int			len;
	Datum		result;

	if (site == NULL)
		return DirectFunctionCall1Coll(hashbpchar, PG_GET_COLLATION(), PG_GETARG_DATUM(0));
	b = PG_GETARG_BPCHAR_PP(0);
	s = VARDATA_ANY(b);
	len = VARSIZE_ANY_EXHDR(b);
	while (len > 0 && s[len - 1] == ' ')
		len--;
	result = keyed(site, s, len);
	PG_FREE_IF_COPY(b, 0);
	return result;
}

Datum
fieldcrypt_keyed_hash_bytea(PG_FUNCTION_ARGS)
{
	FcKeyedSite *site = site_for(fcinfo, false);
	bytea	   *b;
	Datum		result;

	if (site == NULL)
		return DirectFunctionCall1(hashvarlena, PG_GETARG_DATUM(0));
	b = PG_GETARG_BYTEA_PP(0);
	result = keyed(site, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
	PG_FREE_IF_COPY(b, 0);
	return result;
}

Datum
fieldcrypt_keyed_hash_int4(PG_FUNCTION_ARGS)
{
	FcKeyedSite *site = site_for(fcinfo, false);
	int32		v = PG_GETARG_INT32(0);

	if (site == NULL)
		return DirectFunctionCall1(hashint4, PG_GETARG_DATUM(0));
	return keyed(site, &v, sizeof(v));
}

Datum
fieldcrypt_keyed_hash_int8(PG_FUNCTION_ARGS)
{
	FcKeyedSite *site = site_for(fcinfo, false);
	int64		v = PG_GETARG_INT64(0);

	if (site == NULL)
		return DirectFunctionCall1(hashint8, PG_GETARG_DATUM(0));
	return keyed(site, &v, sizeof(v));
}

Datum
fieldcrypt_keyed_hash_uuid(PG_FUNCTION_ARGS)
{
	FcKeyedSite *site = site_for(fcinfo, false);
	pg_uuid_t  *u = PG_GETARG_UUID_P(0);

	if (site == NULL)
		return DirectFunctionCall1(uuid_hash, PG_GETARG_DATUM(0));
	return keyed(site, u->data, UUID_LEN);
}
