/*-------------------------------------------------------------------------
 *
 * writeonly.h
 *	  Query results carry NULL in place of encrypted values.
 *
 * src/columns/writeonly.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_WRITEONLY_H
#define FIELDCRYPT_WRITEONLY_H

extern void fc_writeonly_init(void);

#endif
