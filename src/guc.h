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

/*
 * Each setting's variable is defined by the subsystem that reads it (its
 * header declares it); this file only registers them.
 */
extern void fc_define_gucs(void);

#endif
