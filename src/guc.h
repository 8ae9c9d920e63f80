/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  fieldcrypt's configuration parameters.
 *
 * src/guc.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_GUC_H
#define FIELDCRYPT_GUC_H

typedef enum FcKeyProvider
{
	FC_PROVIDER_FILE,
	FC_PROVIDER_COMMAND
} FcKeyProvider;

extern int	fc_key_provider;
extern char *fc_key_file;
extern char *fc_key_command;
extern int	fc_key_command_timeout;
extern int	fc_max_databases;
extern bool fc_auto_activate;
extern int	fc_kdf_iterations;
extern char *fc_hsm_pin_command;
extern char *fc_hsm_modules;
extern bool fc_reencrypt_enabled;
extern int	fc_reencrypt_rows_per_second;
extern int	fc_reencrypt_batch_pages;
extern int	fc_test_reencrypt_pause_after_batches;
extern bool fc_test_reencrypt_pause_before_destroy;

extern void fc_define_gucs(void);

#endif
