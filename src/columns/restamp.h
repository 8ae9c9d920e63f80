/*-------------------------------------------------------------------------
 *
 * restamp.h
 *	  Re-encrypting the stale envelopes inside stored values, in place.
 *
 * src/columns/restamp.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_RESTAMP_H
#define FIELDCRYPT_RESTAMP_H

#include "access/htup.h"
#include "access/tupdesc.h"

extern bool fc_generation_is_stale(uint32 gen);
extern int	fc_restamp_value(Oid typid, char *vl, bool write);
extern int	fc_restamp_tuple(TupleDesc desc, HeapTupleHeader td, bool write);
extern Datum fc_restamp_datum(Oid typid, Datum value, bool *changed);

#endif
