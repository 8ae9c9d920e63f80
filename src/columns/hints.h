/*-------------------------------------------------------------------------
 *
 * hints.h
 *	  A hint for errors about comparing encrypted columns.
 *
 * src/columns/hints.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_HINTS_H
#define FIELDCRYPT_HINTS_H

extern void fc_hints_init(void);

#endif
