/*-------------------------------------------------------------------------
 *
 * enctypes.h
 *	  The write-only encrypted column types.
 *
 * src/columns/enctypes.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_ENCTYPES_H
#define FIELDCRYPT_ENCTYPES_H

extern bool fc_enctypes_installed(void);
extern bool fc_is_encrypted_type(Oid typid);
extern bool fc_rel_has_encrypted(Oid relid);
extern bool fc_type_holds_encrypted(Oid typid);
extern void fc_enctypes_init(void);

/* re-encryption (reencrypt.c) */
extern uint32 fc_envelope_generation(Datum value);
extern bytea *fc_reencrypt_envelope(bytea *val, char kind);

#endif
