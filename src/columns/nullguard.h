/*-------------------------------------------------------------------------
 *
 * nullguard.h
 *	  fieldcrypt.keep_on_null_update (ORM write-back of NULL).
 *
 * src/columns/nullguard.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_NULLGUARD_H
#define FIELDCRYPT_NULLGUARD_H

extern bool fc_keep_on_null_update;	/* setting (guc.c registers it) */
extern void fc_nullguard_init(void);

#endif
