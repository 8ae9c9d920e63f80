/*-------------------------------------------------------------------------
 *
 * keyed.h
 *	  Keyed hash operator classes (keyed_hash.c) and what index creation
 *	  does about indexes of encrypted_heap tables (index_guard.c).
 *
 * src/tde/keyed.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_KEYED_H
#define FIELDCRYPT_KEYED_H

#include "nodes/pg_list.h"

/* fieldcrypt.tde_plain_indexes */
typedef enum FcPlainIndexes
{
	FC_PLAIN_INDEXES_ALLOW,
	FC_PLAIN_INDEXES_WARN,
	FC_PLAIN_INDEXES_REFUSE
} FcPlainIndexes;

extern int	fc_tde_plain_indexes;

/* A keyed hash index of this database and its generation (fc_keyed_indexes). */
typedef struct FcKeyedIndex
{
	Oid			indexoid;
	Oid			tableoid;
	uint32		generation;
	bool		exclusion;		/* backs an exclusion constraint */
	bool		valid;			/* indisvalid */
	bool		other_temp;		/* another session's temporary index */
} FcKeyedIndex;

/* keyed_hash.c */
extern void fc_keyed_generation_missing(uint32 gen) pg_attribute_noreturn();
extern void fc_keyed_check_collation(Oid collid);

/* index_guard.c */
extern void fc_index_post_create(Oid indexoid);
extern void fc_index_rebuild_begin(bool *save);
extern void fc_index_rebuild_end(bool save);
extern List *fc_keyed_indexes(void);
extern void fc_keyed_index_generations(bool *used);
extern void fc_keyed_index_set_generation(Oid indexoid, uint32 gen);

/* tam_settings.c */
struct Node;
extern void fc_tam_check_settings(struct Node *parsetree);

#endif
