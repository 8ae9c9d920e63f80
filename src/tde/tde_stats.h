/*-------------------------------------------------------------------------
 *
 * tde_stats.h
 *	  Planner statistics of encrypted_heap tables, kept encrypted in the
 *	  extension's table fieldcrypt.tde_statistic instead of pg_statistic.
 *
 * src/tde/tde_stats.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TDE_STATS_H
#define FIELDCRYPT_TDE_STATS_H

#include "nodes/nodes.h"
#include "access/htup.h"

/* tde_stats.c: storage, the planner's hooks, cleanup */
extern void fc_tde_stats_init(void);
extern Oid	fc_tde_stats_table(void);
extern bool fc_tde_stats_available(void);
extern void fc_tde_stats_store(Oid relid, int16 attnum, bool inherit, Oid atttypid,
							   HeapTuple stat);
extern void fc_tde_stats_forget(Oid relid, int16 attnum, int inherit);

/* tam_analyze.c: the sample and the statistics of an ANALYZE scan */
struct TableScanDescData;
extern void fc_analyze_begin(struct TableScanDescData *scan);
extern void fc_analyze_block(struct TableScanDescData *scan);
extern void fc_analyze_offer(struct TableScanDescData *scan, HeapTuple stored,
							 double liverows);
extern void fc_analyze_end(struct TableScanDescData *scan);
extern bool fc_analyze_wants_rows(struct TableScanDescData *scan);
extern void fc_tde_stats_check_utility(Node *parsetree);

#endif
