/*-------------------------------------------------------------------------
 *
 * restrict.h
 *	  Encrypted columns cannot be indexed, audited or customized.
 *	  fc_lookup_relid: a RangeVar's relation, or InvalidOid; never an error.
 *
 * src/columns/restrict.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_RESTRICT_H
#define FIELDCRYPT_RESTRICT_H

#include "nodes/parsenodes.h"

extern void fc_restrict_before(Node *parsetree, const char *text);
extern void fc_restrict_after(Node *parsetree, const char *text);
extern Oid	fc_lookup_relid(const Node *node);

#endif
