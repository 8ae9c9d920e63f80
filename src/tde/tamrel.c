/*-------------------------------------------------------------------------
 *
 * tamrel.c
 *	  Which relations are encrypted_heap tables, and heap's routine that the
 *	  access method delegates to.  The bottom of src/tde/: every file of the
 *	  access method may use it; the handler (tam.c) fills it in.
 *
 * src/tde/tamrel.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/defrem.h"

#include "tde/tam.h"

const TableAmRoutine *fc_heap_routine = NULL;	/* heap's */
const TableAmRoutine *fc_tam_routine = NULL;	/* ours, once the handler ran */

/* Whether rel uses encrypted_heap. */
bool
fc_is_encrypted_heap(Relation rel)
{
	return fc_tam_routine != NULL && rel->rd_tableam == fc_tam_routine;
}

/* OID of the encrypted_heap access method here (InvalidOid if absent). */
Oid
fc_tam_oid(void)
{
	return get_table_am_oid("encrypted_heap", true);
}
