/*-------------------------------------------------------------------------
 *
 * tdekeys.c
 *	  TDE keys of encrypted_heap: the per-database key generations and the
 *	  backend's cipher contexts under them (the SQL functions on them are
 *	  in tdekeyapi.c).
 *
 *	  The keys themselves live in shared memory and the sealed keyring
 *	  (keystore.c).  A database gets its first TDE key when its first
 *	  encrypted_heap table is created or written; rotate_tde_key adds a
 *	  generation that new writes use at once.  Both are written to the
 *	  keyring and WAL before any data can use them, and are not undone if
 *	  the calling transaction aborts.
 *
 *	  Cipher contexts are derived per (generation, instance id) with HKDF
 *	  and cached per backend; any change of the key store (version counter)
 *	  drops them.
 *
 * src/tde/tdekeys.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/cluster.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/itemptr.h"

#include "catalog/namespace.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "utils/timestamp.h"

#include "keys/cluster.h"
#include "keys/policy.h"
#include "keys/rotstate.h"
#include "tde/tam.h"
#include "tde/tam_crypt.h"

#define HKDF_INFO_TDE	"fieldcrypt tde v1"
#define DEC_SLOTS		8

static FcTdeCtx enc_slot;
static FcTdeCtx dec_slots[DEC_SLOTS];
static int	dec_next = 0;
static uint64 cache_version = 0;

static void refresh(void);
static void make_ctx(FcTdeCtx *slot, const FcTdeGeneration *g, const uint8 *instance,
					 bool encrypt);
static void ensure_tde_key(void);

/* Drop every cached context when the key store changed. */
static void
refresh(void)
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

/* Key slot with a context under HKDF(TDE key g, instance). */
static void
make_ctx(FcTdeCtx *slot, const FcTdeGeneration *g, const uint8 *instance, bool encrypt)
{
	fc_cipher_free(slot->ctx);
	slot->ctx = NULL;
	slot->ctx = fc_derived_cipher(g->key, instance, HKDF_INFO_TDE, encrypt);
	slot->gen = g->gen;
	memcpy(slot->instance, instance, FC_INSTANCE_ID_LEN);
}

/* ERROR unless this database may get a TDE key (keyring loaded, active). */
void
fc_tde_require_active(void)
{
	fc_check_ring_usable();
	if (!fc_db_is_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("data encryption is not active in database \"%s\"",
						get_database_name(MyDatabaseId)),
				 errdetail("encrypted_heap tables need the database's data encryption to be active."),
				 fc_citus_peer_session()
				 ? errhint("This node takes its key from the Citus coordinator: create the extension here "
						   "with fieldcrypt.auto_activate = off, run fieldcrypt.cluster_sync_keys('host', port) "
						   "on the coordinator, then add the node.")
				 : errhint("An administrator must call fieldcrypt.set_data_encryption_key(key) over TLS.")));
}

/* Give the database its first TDE key if it has none. */
static void
ensure_tde_key(void)
{
	uint8		key[FC_KEY_LEN];

	if (fc_local_tde_generation(0, true) != NULL)
		return;
	fc_tde_require_active();
	if (!fc_random_bytes(key, FC_KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("random number generator failed: %s", fc_crypto_last_error())));
	PG_TRY();
	{
		uint32		gen = fc_db_tde_add_generation(MyDatabaseId, key, true);

		if (gen == 1)
			ereport(DEBUG1, (errmsg("fieldcrypt: created the TDE key of this database")));
	}
	PG_FINALLY();
	{
		explicit_bzero(key, sizeof(key));
	}
	PG_END_TRY();
}

/* The context new tuples and blobs are sealed with (current generation). */
FcTdeCtx *
fc_tde_encrypt_ctx(void)
{
	const FcTdeGeneration *g;

	/* no look-up per row while the key store is unchanged (its version) */
	if (enc_slot.ctx != NULL && pg_atomic_read_u64(&fc_shared->version) == cache_version)
		return &enc_slot;
	refresh();
	g = fc_local_tde_generation(0, true);
	if (g == NULL)
	{
		ensure_tde_key();
		refresh();
		g = fc_local_tde_generation(0, true);
		if (g == NULL)
			elog(ERROR, "TDE key missing after its creation");
	}
	if (enc_slot.ctx == NULL || enc_slot.gen != g->gen ||
		memcmp(enc_slot.instance, fc_instance_id(), FC_INSTANCE_ID_LEN) != 0)
		make_ctx(&enc_slot, g, fc_instance_id(), true);
	return &enc_slot;
}

/*
 * A context to open data sealed under (gen, instance) of rel; NULL if this
 * database has no such generation.
 */
FcTdeCtx *
fc_tde_decrypt_ctx(uint32 gen, const uint8 *instance, Relation rel)
{
	const FcTdeGeneration *g;
	FcTdeCtx   *slot;

	refresh();
	for (int i = 0; i < DEC_SLOTS; i++)
		if (dec_slots[i].ctx && dec_slots[i].gen == gen &&
			memcmp(dec_slots[i].instance, instance, FC_INSTANCE_ID_LEN) == 0)
			return &dec_slots[i];
	g = fc_local_tde_generation(gen, false);
	if (g == NULL)
	{
		/*
		 * Without a keyring nothing is readable (58000).  Otherwise the
		 * generation comes from bytes not authenticated yet: the caller
		 * reports the row or value as failing authentication.
		 */
		fc_check_ring_usable();
		return NULL;
	}
	slot = &dec_slots[dec_next];
	dec_next = (dec_next + 1) % DEC_SLOTS;
	make_ctx(slot, g, instance, false);
	return slot;
}
