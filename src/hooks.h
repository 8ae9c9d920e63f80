/*-------------------------------------------------------------------------
 *
 * hooks.h
 *	  Utility and object-access hooks of fieldcrypt.
 *
 * src/hooks.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_HOOKS_H
#define FIELDCRYPT_HOOKS_H

extern void fc_hooks_init(void);

#endif
