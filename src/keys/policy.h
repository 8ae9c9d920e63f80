/*-------------------------------------------------------------------------
 *
 * policy.h
 *	  Checks every layer may call: roles, TLS, the key change lock, "is
 *	  encryption active here", and access to the key metadata table.
 *
 * src/keys/policy.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_POLICY_H
#define FIELDCRYPT_POLICY_H

#include "utils/timestamp.h"

#include "keys/crypto.h"

#define FC_ADMIN_ROLE	"fieldcrypt_admin"
#define FC_READER_ROLE	"fieldcrypt_reader"

/* The newest row of the key metadata table (fieldcrypt.key_generations). */
typedef struct FcMetaRow
{
	bool		found;
	uint32		gen;
	uint32		iterations;
	uint8		salt[FC_SALT_LEN];
	uint8		kcv[FC_KCV_LEN];
	char		source[16];
	TimestampTz set_at;
} FcMetaRow;

extern bool fc_has_role(const char *role);
extern void fc_require_role(const char *role, const char *what);
extern void fc_require_tls(const char *what);
extern bool fc_db_is_active(void);
extern Oid	fc_config_table_oid(void);
extern bool fc_try_change_lock(void);
extern void fc_acquire_change_lock(void);

/* the metadata table, as its owner */
extern void fc_meta_become_owner(Oid *save_user, int *save_sec);
extern char *fc_meta_table_name(void);
extern void fc_meta_spi_connect(Oid *save_user, int *save_sec, int *save_nest);
extern void fc_meta_spi_finish(Oid save_user, int save_sec, int save_nest);
extern FcMetaRow fc_meta_current(void);

#endif
