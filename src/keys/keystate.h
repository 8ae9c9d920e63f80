/*-------------------------------------------------------------------------
 *
 * keystate.h
 *	  Key state of every database of the cluster as held in shared memory
 *	  (the types), and the primitives of keystate.c.
 *
 *	  Locking: fc_shared->lock (one LWLock of tranche "fieldcrypt") protects
 *	  ring_state, kek and dbs[].  Readers take it shared and copy what they
 *	  need; a key change takes it exclusively, writes the keyring to disk
 *	  first and only then updates shared memory, so shared memory never
 *	  holds a state that a restart would lose.  fc_shared->version is
 *	  bumped (under the exclusive lock) after every change: backends compare
 *	  it with the version of their cache without taking the lock.
 *
 * src/keys/keystate.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYSTATE_H
#define FIELDCRYPT_KEYSTATE_H

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/palloc.h"
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
extern int	fc_max_databases;	/* setting fieldcrypt.max_databases */

extern void fc_keystate_request(void);
extern bool fc_keystate_attach(void);
extern void fc_check_ring_usable(void);
extern void fc_demote_error(MemoryContext cxt, const char *what, const char *hint);
extern void fc_secure_region_alloc(void **ptr, Size size);
extern void fc_secure_region_free(void *ptr, Size size);
extern void fc_protect_region(void *ptr, Size size, const char *what);
extern Size fc_shmem_page_size(void);
extern FcCipher *fc_derived_cipher(const uint8 *key, const uint8 *instance,
								   const char *info, bool encrypt);
extern uint64 fc_next_nonce_counter(void);
extern const uint8 *fc_instance_id(void);

#endif
