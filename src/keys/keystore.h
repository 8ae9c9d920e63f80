/*-------------------------------------------------------------------------
 *
 * keystore.h
 *	  Key state of every database of the cluster, held in shared memory.
 *
 * src/keys/keystore.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYSTORE_H
#define FIELDCRYPT_KEYSTORE_H

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "keys/crypto.h"

#define FC_MAX_GENERATIONS	16
#define FC_MAX_PASSPHRASE	256
#define FC_INSTANCE_ID_LEN	8

/* How the current key of a database was set. */
typedef enum FcKeySource
{
	FC_SOURCE_GENERATED = 1,	/* random passphrase made at activation */
	FC_SOURCE_ADMIN = 2,		/* set_data_encryption_key on an active db */
	FC_SOURCE_RESTORED = 3		/* restored after import, verified by KCV */
} FcKeySource;

/* One key generation: the derived AES key and what is needed to re-derive. */
typedef struct FcGeneration
{
	uint32		gen;
	uint32		iterations;
	uint8		salt[FC_SALT_LEN];
	uint8		kcv[FC_KCV_LEN];
	uint8		key[FC_KEY_LEN];
} FcGeneration;

/* One generation of a database's TDE key (encrypted_heap tables). */
#define FC_MAX_TDE_GENERATIONS	16
typedef struct FcTdeGeneration
{
	uint32		gen;
	uint32		pad;
	TimestampTz created_at;
	uint8		key[FC_KEY_LEN];	/* random AES-256 key */
} FcTdeGeneration;

/* The TDE keys of one database: current generation and those still kept. */
typedef struct FcTdeKeys
{
	uint32		current;		/* 0: no TDE key yet */
	int32		ngens;
	FcTdeGeneration gens[FC_MAX_TDE_GENERATIONS];
} FcTdeKeys;

/*
 * Key state of one database; dboid == InvalidOid marks a free slot.  The
 * "field part" (everything but tde) is active when ngens > 0; the tde part
 * is owned by the TDE key functions and survives the field part's removal.
 */
typedef struct FcDbKeys
{
	Oid			dboid;
	uint32		current_gen;
	int32		source;			/* FcKeySource of the current generation */
	TimestampTz set_at;			/* when the current generation was set */
	TimestampTz activated_at;
	int32		ngens;
	char		passphrase[FC_MAX_PASSPHRASE + 1];	/* of current_gen */
	FcGeneration gens[FC_MAX_GENERATIONS];
	FcTdeKeys	tde;
} FcDbKeys;

/* Whether the keyring could be loaded at server start. */
typedef enum FcRingState
{
	FC_RING_OK = 0,
	FC_RING_PROVIDER_FAILED,	/* key provider gave no usable KEK */
	FC_RING_UNREADABLE			/* keyring file corrupt, truncated or foreign */
} FcRingState;

typedef struct FcShared
{
	LWLock	   *lock;			/* protects everything below but atomics */
	int32		ring_state;		/* FcRingState */
	char		ring_detail[256];	/* log-safe reason when not OK */
	uint8		kek[FC_KEY_LEN];	/* seals the keyring: the cluster key, or
									 * the data KEK of a tenant key (tenant.c) */
	uint8		instance_id[FC_INSTANCE_ID_LEN];	/* random per start */
	pg_atomic_uint64 version;	/* bumped on any key state change */
	pg_atomic_uint64 nonce_counter; /* next unreserved nonce counter */
	int32		max_dbs;
	/* dbs[0..max_dbs): published state; dbs[max_dbs..2*max_dbs): staged */
	FcDbKeys	dbs[FLEXIBLE_ARRAY_MEMBER];
} FcShared;

extern FcShared *fc_shared;

extern void fc_keystore_request(void);
extern void fc_keystore_startup(void);

extern void fc_check_ring_usable(void);
extern bool fc_db_lookup(Oid dboid, FcDbKeys *out);
extern void fc_db_stage(Oid dboid, const FcDbKeys *entry);
extern void fc_db_publish(Oid dboid, const FcDbKeys *entry);
extern void fc_keyring_resync(Oid dboid);
extern bool fc_db_lookup_tde(Oid dboid, FcTdeKeys *out);
extern uint32 fc_db_tde_add_generation(Oid dboid, const uint8 *key, bool only_if_none);
extern void fc_db_tde_copy(Oid src, Oid dst);
extern int	fc_db_tde_drop_generations(Oid dboid, const bool *used, uint32 keep_from);
extern void fc_keystore_redo_image(const uint8 *image, size_t len);
extern void fc_demote_error(MemoryContext cxt, const char *what, const char *hint);
extern void fc_db_remove(Oid dboid);
extern void fc_secure_region_alloc(void **ptr, Size size);
extern void fc_secure_region_free(void *ptr, Size size);
extern void fc_protect_region(void *ptr, Size size, const char *what);

/* Per-backend cache of derived keys, invalidated by fc_shared->version. */
extern const FcGeneration *fc_local_generation(uint32 gen, bool current);
extern const FcTdeGeneration *fc_local_tde_generation(uint32 gen, bool current);
extern FcCipher *fc_derived_cipher(const uint8 *key, const uint8 *instance,
								   const char *info, bool encrypt);
extern uint64 fc_next_nonce_counter(void);
extern const uint8 *fc_instance_id(void);

#endif
