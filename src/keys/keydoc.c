/*-------------------------------------------------------------------------
 *
 * keydoc.c
 *	  Writing the key generations document: what export_key_generations()
 *	  returns (keyport.c, which also parses it and describes the format)
 *	  and what a Citus coordinator sends to every node with a key change
 *	  (cluster_2pc.c).  Metadata only: numbers, iteration counts, salts and
 *	  key check values, never a key.
 *
 * src/keys/keydoc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "keys/keydoc.h"

/* The document of every generation of e, oldest first. */
char *
fc_key_generations_document(const FcDbKeys *e)
{
	const FcGeneration *order[FC_MAX_GENERATIONS];
	int			n = 0;
	StringInfoData buf;

	for (int i = 0; i < e->ngens && i < FC_MAX_GENERATIONS; i++)
	{
		int			j;

		order[n++] = &e->gens[i];
		/* insertion sort by generation */
		for (j = n - 1; j > 0 && order[j - 1]->gen > order[j]->gen; j--)
		{
			const FcGeneration *t = order[j];

			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, DOC_HEADER);
	for (int i = 0; i < n; i++)
	{
		appendStringInfo(&buf, "\ngeneration %u iterations %u salt ", order[i]->gen,
						 order[i]->iterations);
		for (int b = 0; b < FC_SALT_LEN; b++)
			appendStringInfo(&buf, "%02x", order[i]->salt[b]);
		appendStringInfoString(&buf, " kcv ");
		for (int b = 0; b < FC_KCV_LEN; b++)
			appendStringInfo(&buf, "%02x", order[i]->kcv[b]);
	}
	return buf.data;
}
