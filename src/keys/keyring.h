/*-------------------------------------------------------------------------
 *
 * keyring.h
 *	  The sealed keyring in $PGDATA/pg_fieldcrypt and the cluster key
 *	  providers.
 *
 * src/keys/keyring.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYRING_H
#define FIELDCRYPT_KEYRING_H

#include "keys/keystate.h"

typedef enum FcKeyProvider
{
	FC_PROVIDER_FILE,
	FC_PROVIDER_COMMAND
} FcKeyProvider;

/* settings (guc.c registers them) */
extern int	fc_key_provider;
extern char *fc_key_file;
extern char *fc_key_command;
extern int	fc_key_command_timeout;

#define FC_KEYRING_DIR		"pg_fieldcrypt"
#define FC_KEYRING_FILE		FC_KEYRING_DIR "/keyring"
#define FC_KEYRING_PENDING	FC_KEYRING_DIR "/keyring.pending"
/* the key file in the data directory: 1.0's default, and where no better place is */
#define FC_LEGACY_KEY_FILE	FC_KEYRING_DIR "/cluster.key"
/* the default key file beside postgresql.conf, when that is outside the data directory */
#define FC_CONF_KEY_FILE_NAME "fieldcrypt_cluster.key"
/* the key file used when fieldcrypt.key_file is empty, chosen at start (keyring.c) */
#define FC_DEFAULT_KEY_FILE fc_default_key_file()

extern bool fc_kek_load(uint8 *kek, char *why, size_t whylen);
extern bool fc_keyring_read_file(const char *path, char **data, size_t *len);
extern const char *fc_kek_location(bool *inside_known, bool *inside);
extern const char *fc_default_key_file(void);
extern FcRingState fc_keyring_unseal(const uint8 *kek, const uint8 *image, size_t len,
									 FcDbKeys *dbs, int max_dbs, int *ndbs,
									 const char *what, char *why, size_t whylen);
extern uint8 *fc_keyring_seal(const uint8 *kek, const FcDbKeys *dbs, int n, size_t *len);
extern void fc_keyring_write_image(const char *path, const uint8 *image, size_t len);
extern void fc_keyring_check_writable(void);
extern bool fc_run_command(const char *command, const char *name, char *out, size_t outsize,
						   size_t *outlen, char *why, size_t whylen);

#endif
