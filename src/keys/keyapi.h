/*-------------------------------------------------------------------------
 *
 * keyapi.h
 *	  Checks shared by the SQL entry points of fieldcrypt.
 *
 * src/keys/keyapi.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYAPI_H
#define FIELDCRYPT_KEYAPI_H

#define FC_ADMIN_ROLE	"fieldcrypt_admin"
#define FC_READER_ROLE	"fieldcrypt_reader"

extern void fc_require_role(const char *role, const char *what);
extern void fc_require_tls(const char *what);
extern bool fc_db_is_active(void);
extern Oid	fc_config_table_oid(void);
extern void fc_keyapi_init(void);
extern bool fc_try_change_lock(void);
extern void fc_meta_forget_generations(uint32 keep_gen);

#endif
