/*-------------------------------------------------------------------------
 *
 * literal.h
 *	  The contents of an SQL string literal, for redaction.
 *
 * src/keys/literal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_LITERAL_H
#define FIELDCRYPT_LITERAL_H

#include "lib/stringinfo.h"

extern bool fc_decode_literal(const char *start, const char *end, StringInfo out);

#endif
