/*-------------------------------------------------------------------------
 *
 * restrict.h
 *	  Encrypted columns cannot be indexed, audited or customized.
 *
 * src/columns/restrict.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_RESTRICT_H
#define FIELDCRYPT_RESTRICT_H

#include "nodes/parsenodes.h"

extern void fc_restrict_before(Node *parsetree);
extern void fc_restrict_after(Node *parsetree);

#endif
