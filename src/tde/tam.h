/*-------------------------------------------------------------------------
 *
 * tam.h
 *	  The encrypted_heap table access method: shared declarations.
 *
 *	  A stored tuple is a well-formed heap tuple whose attribute contents are
 *	  encrypted (header, null bitmap, varlena headers and padding stay clear
 *	  and are authenticated), followed by a trailer heap never looks at.
 *	  Large values live encrypted in the (plain heap) TOAST table; inside the
 *	  stored tuple they are "hidden pointers" heap does not recognise, in
 *	  decrypted tuples "exposed pointers" (standard external TOAST pointers
 *	  whose va_toastrelid is the main table, so that detoasting reaches
 *	  fc_tam_fetch_toast_slice).  See docs/encrypted_heap-design.md.
 *
 * src/tde/tam.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TAM_H
#define FIELDCRYPT_TAM_H

#include "access/heapam.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "utils/rel.h"

/* trailer: [hidden bitmap] flags(1) gen(2) instance(8) counter(8) tag(16) */
#define FC_TAM_TRAILER_FIXED	35
#define FC_TAM_FLAG_HIDDEN		0x01	/* a hidden bitmap precedes flags */
#define FC_TAM_FORMAT			0x10	/* high nibble of flags: format 1 */
#define FC_TAM_HIDDEN_LEN		13		/* 1B header + valueid, rawsize, extinfo */

/* tamrel.c */
extern const TableAmRoutine *fc_heap_routine;	/* heap's, for delegation */
extern const TableAmRoutine *fc_tam_routine;	/* encrypted_heap's (tam.c sets it) */
extern bool fc_is_encrypted_heap(Relation rel);
extern Oid	fc_tam_oid(void);

/* tam_format.c */
extern HeapTuple fc_tam_decrypt(Relation rel, HeapTuple stored);
extern HeapTuple fc_tam_decrypt_desc(Relation rel, TupleDesc desc, HeapTuple stored);
extern void fc_tam_store(Relation rel, HeapTuple stored, TupleTableSlot *slot);
extern HeapTuple fc_tam_form(Relation rel, TupleTableSlot *slot, int options);
extern HeapTuple fc_tam_form_plain(Relation rel, HeapTuple plain);
extern HeapTuple fc_tam_form_values(Relation rel, Datum *values, bool *isnull,
									int options);
extern int	fc_tam_tuple_generation(HeapTuple stored);
typedef int (*FcTamPatch) (TupleDesc desc, HeapTupleHeader plain, bool write, void *arg);
extern int	fc_tam_reseal(Relation rel, HeapTupleHeader td, uint32 len, ItemPointer tid,
						  bool write, bool reseal_old, FcTamPatch patch, void *arg);
extern void fc_tam_delete_blobs(Relation rel, ItemPointer tid, bool own_new);
extern void fc_tam_delete_blobs_of(Relation rel, HeapTuple stored, bool own_new);

/* tam_toast.c */
struct FcTdeCtx;
extern Datum fc_toast_save(Relation rel, struct varlena *value, int options,
						  struct FcTdeCtx *ctx);
extern void fc_toast_delete(Relation rel, Oid valueid, bool own_new);
extern void fc_tam_fetch_toast_slice(Relation rel, Oid valueid, int32 attrsize,
									 int32 sliceoffset, int32 slicelength,
									 struct varlena *result);

/* tam_build.c */
extern double fc_tam_index_build_range_scan(Relation table_rel, Relation index_rel,
											struct IndexInfo *index_info,
											bool allow_sync, bool anyvisible,
											bool progress, BlockNumber start_blockno,
											BlockNumber numblocks,
											IndexBuildCallback callback,
											void *callback_state,
											TableScanDesc scan);
extern void fc_tam_index_validate_scan(Relation table_rel, Relation index_rel,
									   struct IndexInfo *index_info,
									   Snapshot snapshot,
									   struct ValidateIndexState *state);

/* tam_rewrite.c */
extern void fc_tam_copy_for_cluster(Relation OldTable, Relation NewTable,
									Relation OldIndex, bool use_sort,
									TransactionId OldestXmin,
									TransactionId *xid_cutoff,
									MultiXactId *multi_cutoff,
									double *num_tuples, double *tups_vacuumed,
									double *tups_recently_dead);

/* tam_scan.c: our scan descriptor, exposed for tam_build.c / tam_rewrite.c */
typedef struct FcScanDescData
{
	TableScanDescData rs_base;	/* mirror of heap's rs_base */
	TableScanDesc hscan;		/* heap's own descriptor */
	TupleTableSlot *raw;		/* TTSOpsBufferHeapTuple: stored tuple + pin */
} FcScanDescData;
typedef FcScanDescData *FcScanDesc;

typedef struct FcIndexFetchData
{
	IndexFetchTableData base;
	IndexFetchTableData *h;		/* heap's */
	TupleTableSlot *raw;
	BlockNumber lastblk;		/* page of the previous fetch, or invalid */
} FcIndexFetchData;

extern void fc_tam_scan_routine(TableAmRoutine *r);
extern void fc_tam_modify_routine(TableAmRoutine *r);

/* tam_fence.c */
extern void fc_tam_check_publications(void);

/* tam_repack.c */
struct PlannedStmt;
extern void fc_tam_repack_rewrite(struct PlannedStmt **pstmt, bool *readOnlyTree);

/* GUC (defined in tam_analyze.c) */
extern bool fc_analyze_values;

#endif
