/*-------------------------------------------------------------------------
 *
 * keydoc.h
 *	  The key generations document (keydoc.c writes it, keyport.c reads it).
 *
 * src/keys/keydoc.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYDOC_H
#define FIELDCRYPT_KEYDOC_H

#include "keys/keystate.h"

#define DOC_HEADER		"fieldcrypt key generations 1"

extern char *fc_key_generations_document(const FcDbKeys *e);

#endif
