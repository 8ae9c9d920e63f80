/*-------------------------------------------------------------------------
 *
 * reencrypt.h
 *	  Online re-encryption after a key change (src/rotation/): what the
 *	  layers above use.  Key changes reach the worker through
 *	  keys/rotstate.h, never through this header.
 *
 * src/rotation/reencrypt.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_REENCRYPT_H
#define FIELDCRYPT_REENCRYPT_H

/* Default of fieldcrypt.reencrypt_rows_per_second (see docs/performance.md). */
#define FC_REENCRYPT_DEFAULT_RATE	20000

/* settings (guc.c registers them) */
extern int	fc_reencrypt_rows_per_second;
extern int	fc_reencrypt_batch_pages;
extern int	fc_test_reencrypt_pause_after_batches;
extern bool fc_test_reencrypt_pause_before_destroy;
extern bool fc_test_reencrypt_pause_before_rekey;
extern char *fc_test_reencrypt_pause_before_update;

extern void fc_reencrypt_register_launcher(void);

#endif
