/*-------------------------------------------------------------------------
 *
 * tam_format.c
 *	  The stored tuple of encrypted_heap: forming (with our own toasting),
 *	  encrypting, authenticating and decrypting.
 *
 *	  A stored tuple is a heap tuple that heap can deform safely: the
 *	  header, null bitmap, varlena headers and alignment padding are clear,
 *	  the contents of every attribute are encrypted as one AES-256-GCM
 *	  message, and a trailer follows the last attribute:
 *		[hidden bitmap] flags(1) gen(2) instance(8) counter(8) tag(16)
 *	  The nonce is counter || 0 (32 bits) under HKDF(TDE key of gen,
 *	  instance); counters come from the shared nonce counter, which never
 *	  repeats within one instance id, and each server start draws a new
 *	  instance id.  The AAD covers the tuple's shape (t_hoff, natts, null
 *	  bitmap, HASNULL/HASVARWIDTH), every clear byte of the data area and
 *	  the trailer, so any modified byte fails authentication.
 *
 *	  Invariant towards heap: a stored tuple never has HEAP_HASEXTERNAL,
 *	  and if it is longer than TOAST_TUPLE_THRESHOLD no non-PLAIN varlena
 *	  longer than 24 bytes is inline, so heap's toaster, which runs on such
 *	  tuples, finds nothing to do and keeps our bytes (and trailer).  Values
 *	  moved out of line become 13-byte "hidden pointers" (tam_toast.c),
 *	  marked in the hidden bitmap; decryption turns them into standard
 *	  external pointers naming the main table.
 *
 *	  Memory: temporary data lives in a private context reset after each
 *	  call; results are allocated in the caller's context.
 *
 *	  Rows are formed from values (with our toaster) or, on the insert
 *	  paths, from the plain heap tuple a slot already holds, as the same
 *	  bytes without forming them again.
 *
 *	  The file is longer than 800 lines because forming (both ways),
 *	  decrypting and resealing in place (for the re-encryption worker) share
 *	  the layout walk, the AAD, the sealing and the gather buffers, which
 *	  stay private to it.
 *
 * src/tde/tam_format.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/heaptoast.h"
#include "access/htup_details.h"
#include "access/toast_internals.h"
#include "storage/bufmgr.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/rel.h"

#include "tde/tam.h"
#include "tde/tam_crypt.h"

#define INLINE_LIMIT	MAXALIGN(TOAST_POINTER_SIZE)	/* heap's toaster ignores <= this */

typedef struct Range
{
	uint32		off;
	uint32		len;
} Range;

/* Reusable work areas (TopMemoryContext). */
static Range *ranges = NULL;
static int	ranges_cap = 0;
static int	nranges;
static uint8 *aad = NULL;
static Size aad_cap = 0;
static Size aad_len;
static uint8 *gather = NULL;
static Size gather_cap = 0;
static MemoryContext scratch = NULL;
static Datum *form_values = NULL;	/* fc_tam_form_values work arrays */
static bool *form_isnull = NULL;
static bool *form_tried = NULL;
static uint8 form_hidden[BITMAPLEN(MaxTupleAttributeNumber)];
static int	form_cap = 0;

static inline void aad_add(const void *p, Size n);
static inline void range_add(uint32 off, uint32 len);
static void ensure_gather(Size n);
static Size move_ranges(char *base, bool gather_in);
static bool seal_ranges(FcCipher *cipher, const uint8 *nonce, char *base, uint8 *tag);
static bool walk_layout(TupleDesc desc, HeapTupleHeader td, uint32 data_len);
static void begin_aad(HeapTupleHeader td, uint32 data_len, const uint8 *trailer,
					  Size trailer_aad_len);
static void corrupt(Relation rel, HeapTuple stored, const char *detail) pg_attribute_noreturn();
static HeapTuple decrypt_raw(Relation rel, TupleDesc desc, HeapTuple stored, uint8 *hidden,
							 bool *anyhidden);
static HeapTuple decrypt_with(Relation rel, TupleDesc desc, HeapTuple stored);
static Size stored_size(TupleDesc desc, Datum *values, bool *isnull, bool anyhidden);
static MemoryContext scratch_context(void);
static void seal_formed(TupleDesc desc, HeapTupleHeader td, uint32 data_len, const uint8 *hidden,
						FcTdeCtx *ctx);

/* The private temporary context, created on first use. */
static MemoryContext
scratch_context(void)
{
	if (scratch == NULL)
		scratch = AllocSetContextCreate(TopMemoryContext, "fieldcrypt tuple scratch",
										ALLOCSET_DEFAULT_SIZES);
	return scratch;
}

/* Make the AAD buffer hold at least n bytes (the slow path of aad_add). */
static void pg_noinline
aad_grow(Size n)
{
	Size		cap = Max(aad_cap * 2, Max(n, 1024));

	aad = aad ? repalloc(aad, cap) : MemoryContextAlloc(TopMemoryContext, cap);
	aad_cap = cap;
}

/*
 * Append n bytes to the AAD buffer.  Inline: the layout walk calls it once
 * per attribute, mostly for the 0 or 1 header byte before its contents.
 */
static inline void
aad_add(const void *p, Size n)
{
	if (n == 0)
		return;
	if (unlikely(aad_len + n > aad_cap))
		aad_grow(aad_len + n);
	memcpy(aad + aad_len, p, n);
	aad_len += n;
}

/* Make room for one more range (the slow path of range_add). */
static void pg_noinline
ranges_grow(void)
{
	int			cap = Max(ranges_cap * 2, 64);

	ranges = ranges ? repalloc(ranges, cap * sizeof(Range)) :
		MemoryContextAlloc(TopMemoryContext, cap * sizeof(Range));
	ranges_cap = cap;
}

/* Add a content range, merging it with the previous one when adjacent. */
static inline void
range_add(uint32 off, uint32 len)
{
	if (len == 0)
		return;
	if (nranges > 0 && ranges[nranges - 1].off + ranges[nranges - 1].len == off)
	{
		ranges[nranges - 1].len += len;
		return;
	}
	if (unlikely(nranges == ranges_cap))
		ranges_grow();
	ranges[nranges].off = off;
	ranges[nranges].len = len;
	nranges++;
}

/*
 * Copy the content ranges of the data area at base into the gather buffer
 * (gather) or back from it; returns their total length.
 */
static Size
move_ranges(char *base, bool gather_in)
{
	Size		total = 0;
	Size		pos = 0;

	for (int i = 0; i < nranges; i++)
		total += ranges[i].len;
	if (gather_in)
		ensure_gather(total + 1);
	for (int i = 0; i < nranges; i++)
	{
		if (gather_in)
			memcpy(gather + pos, base + ranges[i].off, ranges[i].len);
		else
			memcpy(base + ranges[i].off, gather + pos, ranges[i].len);
		pos += ranges[i].len;
	}
	return total;
}

/*
 * Encrypt the content ranges of the data area at base (found by
 * walk_layout) as one GCM message under the AAD built with them; the tag
 * goes to tag.  Contents in one range (fixed-width columns only, or a
 * single varlena after them) are sealed where they lie; otherwise they are
 * gathered, sealed and scattered back, and the gathered plaintext wiped.
 */
static bool
seal_ranges(FcCipher *cipher, const uint8 *nonce, char *base, uint8 *tag)
{
	Size		total;
	bool		ok;

	if (nranges == 1)
	{
		uint8	   *p = (uint8 *) base + ranges[0].off;

		return fc_gcm_seal(cipher, nonce, aad, aad_len, p, ranges[0].len, p, tag);
	}
	total = move_ranges(base, true);
	ok = fc_gcm_seal(cipher, nonce, aad, aad_len, gather, total, gather, tag);
	if (ok)
		(void) move_ranges(base, false);
	explicit_bzero(gather, total);
	return ok;
}

/* Make the gather buffer hold at least n bytes. */
static void
ensure_gather(Size n)
{
	if (n > gather_cap)
	{
		if (gather)
			pfree(gather);
		gather = MemoryContextAlloc(TopMemoryContext, n);
		gather_cap = n;
	}
}

/*
 * Walk the data area (data_len bytes after t_hoff) by the descriptor, as
 * heap deforms it: collect content ranges and append every other byte
 * (varlena headers, padding) to the AAD.  False if the layout does not fit
 * data_len exactly or holds something we never write (external varlenas).
 */
static bool
walk_layout(TupleDesc desc, HeapTupleHeader td, uint32 data_len)
{
	char	   *tp = (char *) td + td->t_hoff;
	bool		hasnulls = ((td)->t_infomask & HEAP_HASNULL) != 0;
	int			natts = Min(HeapTupleHeaderGetNatts(td), desc->natts);
	uint32		off = 0;
	uint32		gap = 0;

	nranges = 0;
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		uint32		cstart;
		uint32		clen;

		if (hasnulls && att_isnull(i, td->t_bits))
			continue;
		if (att->attlen > 0)
		{
			off = att_align_nominal(off, att->attalign);
			if (off > data_len || (uint32) att->attlen > data_len - off)
				return false;
			cstart = off;
			clen = att->attlen;
			off += att->attlen;
		}
		else if (att->attlen == -1)
		{
			char	   *ptr;
			uint32		size;
			uint32		hdr;

			if (off >= data_len)
				return false;
			off = att_align_pointer(off, att->attalign, -1, tp + off);
			if (off >= data_len)
				return false;
			ptr = tp + off;
			if (VARATT_IS_1B_E(ptr))
				return false;
			if (VARATT_IS_1B(ptr))
			{
				size = VARSIZE_1B(ptr);
				hdr = 1;
			}
			else
			{
				if (data_len - off < 4)
					return false;
				size = VARSIZE_4B(ptr);
				hdr = 4;
			}
			if (size < hdr || size > data_len - off)
				return false;
			cstart = off + hdr;
			clen = size - hdr;
			off += size;
		}
		else
			return false;
		aad_add(tp + gap, cstart - gap);
		range_add(cstart, clen);
		gap = off;
	}
	return off == data_len;
}

/* Start the AAD: the tuple's shape, then (after the walk) the trailer. */
static void
begin_aad(HeapTupleHeader td, uint32 data_len, const uint8 *trailer, Size trailer_aad_len)
{
	uint8		fixed[12];
	uint16		natts = HeapTupleHeaderGetNatts(td);
	uint16		mask = td->t_infomask & (HEAP_HASNULL | HEAP_HASVARWIDTH);

	aad_len = 0;
	fixed[0] = 'F';
	fixed[1] = 'C';
	fixed[2] = 'T';
	fixed[3] = td->t_hoff;
	memcpy(fixed + 4, &natts, 2);
	memcpy(fixed + 6, &mask, 2);
	memcpy(fixed + 8, &data_len, 4);
	aad_add(fixed, sizeof(fixed));
	aad_add(trailer, trailer_aad_len);
	if (((td)->t_infomask & HEAP_HASNULL) != 0)
		aad_add(td->t_bits, BITMAPLEN(natts));
}

/* Raise the authentication failure of a stored tuple. */
static void
corrupt(Relation rel, HeapTuple stored, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("encrypted tuple (%u,%u) in table \"%s\" failed authentication",
					ItemPointerGetBlockNumberNoCheck(&stored->t_self),
					ItemPointerGetOffsetNumberNoCheck(&stored->t_self),
					RelationGetRelationName(rel)),
			 errdetail("%s", detail),
			 errtable(rel)));
}

/* Bytes of the stored tuple for these (already toasted) values. */
static Size
stored_size(TupleDesc desc, Datum *values, bool *isnull, bool anyhidden)
{
	bool		hasnull = false;
	Size		hoff;

	for (int i = 0; i < desc->natts; i++)
		if (isnull[i])
			hasnull = true;
	hoff = MAXALIGN(SizeofHeapTupleHeader + (hasnull ? BITMAPLEN(desc->natts) : 0));
	return hoff + heap_compute_data_size(desc, values, isnull) + FC_TAM_TRAILER_FIXED +
		(anyhidden ? BITMAPLEN(desc->natts) : 0);
}

/*
 * Form the stored tuple of values/isnull for rel: detoast incoming
 * external values, compress or move out of line what does not fit (as
 * heap would, but into encrypted blobs), encrypt.  The result is palloc'd
 * in the caller's context; t_self is invalid.
 */
HeapTuple
fc_tam_form_values(Relation rel, Datum *in_values, bool *in_isnull, int options)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			natts = desc->natts;
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext tmp = scratch_context();
	Datum	   *values;
	bool	   *isnull;
	bool	   *tried;
	uint8	   *hidden;
	bool		anyhidden = false;
	bool		hasnull = false;
	Size		len;
	Size		hoff;
	Size		data_len;
	Size		trailer_len;
	HeapTuple	tuple;
	HeapTupleHeader td;
	FcTdeCtx   *ctx;

	if (natts > form_cap)
	{
		if (form_values)
		{
			pfree(form_values);
			pfree(form_isnull);
			pfree(form_tried);
		}
		form_values = MemoryContextAlloc(TopMemoryContext, natts * sizeof(Datum));
		form_isnull = MemoryContextAlloc(TopMemoryContext, natts * sizeof(bool));
		form_tried = MemoryContextAlloc(TopMemoryContext, natts * sizeof(bool));
		form_cap = natts;
	}
	values = form_values;
	isnull = form_isnull;
	tried = form_tried;
	hidden = form_hidden;
	memset(tried, 0, natts * sizeof(bool));
	memset(hidden, 0, BITMAPLEN(natts));
	MemoryContextSwitchTo(tmp);
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		values[i] = in_values[i];
		isnull[i] = in_isnull[i] || att->attisdropped;
		if (isnull[i])
		{
			values[i] = (Datum) 0;
			hasnull = true;
			continue;
		}
		if (att->attlen == -2)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("column \"%s\" of type cstring cannot be stored in an encrypted_heap table",
							NameStr(att->attname))));
		if (att->attlen == -1 && VARATT_IS_EXTERNAL(DatumGetPointer(values[i])))
			values[i] = PointerGetDatum(detoast_external_attr((struct varlena *) DatumGetPointer(values[i])));
	}

	/*
	 * The key context, taken after every detoasting above (reading our own
	 * out-of-line values may refresh the backend's contexts) and used for the
	 * row and all its new out-of-line values alike: nothing below decrypts,
	 * so it stays valid and the whole row is under one generation.
	 */
	ctx = fc_tde_encrypt_ctx();

	/* our toaster: heap's order, but nothing non-PLAIN > 24 bytes stays
	 * inline in a tuple over the threshold */
	len = stored_size(desc, values, isnull, anyhidden);
	if (len > TOAST_TUPLE_THRESHOLD)
	{
		Size		target = (Size) RelationGetToastTupleTarget(rel, (int) TOAST_TUPLE_TARGET);

		for (int phase = 0; phase < 4; phase++)
		{
			char		want = (phase < 2) ? TYPSTORAGE_EXTENDED : TYPSTORAGE_MAIN;
			bool		compress = (phase == 0 || phase == 2);
			Size		limit = (phase < 3) ? target : TOAST_TUPLE_THRESHOLD;

			while (len > limit)
			{
				int			best = -1;
				Size		best_size = INLINE_LIMIT;

				for (int i = 0; i < natts; i++)
				{
					Form_pg_attribute att = TupleDescAttr(desc, i);
					Size		sz;

					if (isnull[i] || att->attlen != -1 || att_isnull(i, hidden) == false)
						continue;
					if (att->attstorage != want &&
						!(phase == 1 && att->attstorage == TYPSTORAGE_EXTERNAL) &&
						!(phase == 3 && att->attstorage != TYPSTORAGE_PLAIN))
						continue;
					if (compress && (tried[i] || VARATT_IS_COMPRESSED(DatumGetPointer(values[i]))))
						continue;
					sz = VARSIZE_ANY(DatumGetPointer(values[i]));
					if (sz > best_size)
					{
						best = i;
						best_size = sz;
					}
				}
				if (best < 0)
					break;
				if (compress)
				{
					Datum		c = toast_compress_datum(values[best],
														 TupleDescAttr(desc, best)->attcompression);

					tried[best] = true;
					if (DatumGetPointer(c) != NULL)
						values[best] = c;
				}
				else
				{
					values[best] = fc_toast_save(rel, (struct varlena *) DatumGetPointer(values[best]),
												 options, ctx);
					hidden[best >> 3] |= (1 << (best & 7));
					anyhidden = true;
				}
				len = stored_size(desc, values, isnull, anyhidden);
			}
		}
	}
	/*
	 * The invariant heap's toaster relies on us for (see the file header):
	 * checked, not assumed, since a violation would be re-formed by heap
	 * without our trailer and could never be decrypted again.
	 */
	if (len > TOAST_TUPLE_THRESHOLD)
		for (int i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!isnull[i] && att->attlen == -1 && att->attstorage != TYPSTORAGE_PLAIN &&
				att_isnull(i, hidden) &&
				VARSIZE_ANY(DatumGetPointer(values[i])) > INLINE_LIMIT)
				elog(ERROR, "encrypted_heap: a row over the TOAST threshold keeps column \"%s\" inline",
					 NameStr(att->attname));
		}
	if (len > MaxHeapTupleSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("row is too big: size %zu, maximum size %zu",
						len, (Size) MaxHeapTupleSize)));

	/* form it, leaving room for the trailer */
	MemoryContextSwitchTo(caller);
	hoff = MAXALIGN(SizeofHeapTupleHeader + (hasnull ? BITMAPLEN(natts) : 0));
	trailer_len = FC_TAM_TRAILER_FIXED + (anyhidden ? BITMAPLEN(natts) : 0);
	data_len = len - hoff - trailer_len;
	tuple = (HeapTuple) palloc0(HEAPTUPLESIZE + len);
	tuple->t_len = len;
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = RelationGetRelid(rel);
	tuple->t_data = td = (HeapTupleHeader) ((char *) tuple + HEAPTUPLESIZE);
	HeapTupleHeaderSetDatumLength(td, len);
	HeapTupleHeaderSetTypeId(td, desc->tdtypeid);
	HeapTupleHeaderSetTypMod(td, desc->tdtypmod);
	HeapTupleHeaderSetNatts(td, natts);
	td->t_hoff = hoff;
	heap_fill_tuple(desc, values, isnull, (char *) td + hoff, data_len,
					&td->t_infomask, hasnull ? td->t_bits : NULL);
	if (td->t_infomask & HEAP_HASEXTERNAL)
		elog(ERROR, "encrypted_heap: external value left in a stored tuple");

	seal_formed(desc, td, data_len, anyhidden ? hidden : NULL, ctx);
	MemoryContextReset(tmp);
	return tuple;
}

/*
 * Write the trailer of a formed stored tuple (its data area holds the
 * plaintext, data_len bytes after t_hoff; hidden: the hidden bitmap, or
 * NULL) and encrypt its contents in place as one GCM message.
 */
static void
seal_formed(TupleDesc desc, HeapTupleHeader td, uint32 data_len, const uint8 *hidden,
			FcTdeCtx *ctx)
{
	uint32		hoff = td->t_hoff;
	int			natts = HeapTupleHeaderGetNatts(td);
	bool		anyhidden = (hidden != NULL);
	Size		trailer_len = FC_TAM_TRAILER_FIXED + (anyhidden ? BITMAPLEN(natts) : 0);
	uint8	   *trailer;
	uint64		counter;
	uint8		nonce[FC_NONCE_LEN] = {0};

	trailer = (uint8 *) td + hoff + data_len;
	if (anyhidden)
	{
		memcpy(trailer, hidden, BITMAPLEN(natts));
		trailer += BITMAPLEN(natts);
	}
	trailer[0] = FC_TAM_FORMAT | (anyhidden ? FC_TAM_FLAG_HIDDEN : 0);
	trailer[1] = (ctx->gen >> 8) & 0xff;
	trailer[2] = ctx->gen & 0xff;
	memcpy(trailer + 3, ctx->instance, FC_INSTANCE_ID_LEN);
	counter = fc_next_nonce_counter();
	for (int i = 0; i < 8; i++)
		trailer[11 + i] = nonce[i] = (counter >> (56 - 8 * i)) & 0xff;

	/* AAD, ranges, one GCM message over the contents */
	begin_aad(td, data_len, (uint8 *) td + hoff + data_len, trailer_len - 16 - 8);
	if (!walk_layout(desc, td, data_len))
		elog(ERROR, "encrypted_heap: formed tuple does not match its descriptor");
	if (!seal_ranges(ctx->ctx, nonce, (char *) td + hoff, trailer + 19))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt a tuple: %s", fc_crypto_last_error())));
}

/*
 * The stored tuple of a plain heap tuple of rel's descriptor (a slot's
 * materialized row: COPY materializes every row it batches), without
 * deforming and forming it again: the same bytes fc_tam_form_values would
 * write, since it fills the data area as heap_form_tuple did.  NULL when
 * that is not certain or the row needs our toaster: external values, a
 * dropped column not null, fewer attributes than the descriptor, or a row
 * over the TOAST threshold.
 */
HeapTuple
fc_tam_form_plain(Relation rel, HeapTuple plain)
{
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTupleHeader ptd = plain->t_data;
	uint32		hoff = ptd->t_hoff;
	uint32		data_len;
	Size		len;
	HeapTuple	tuple;
	HeapTupleHeader td;
	FcTdeCtx   *ctx;
	bool		hasnull = (ptd->t_infomask & HEAP_HASNULL) != 0;

	if ((ptd->t_infomask & HEAP_HASEXTERNAL) || HeapTupleHeaderGetNatts(ptd) != desc->natts ||
		plain->t_len < hoff ||
		hoff != MAXALIGN(SizeofHeapTupleHeader + (hasnull ? BITMAPLEN(desc->natts) : 0)))
		return NULL;
	data_len = plain->t_len - hoff;
	len = (Size) hoff + data_len + FC_TAM_TRAILER_FIXED;
	if (len > TOAST_TUPLE_THRESHOLD)
		return NULL;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if ((att->attisdropped || att->attlen == -2) &&
			!(hasnull && att_isnull(i, ptd->t_bits)))
			return NULL;
	}
	ctx = fc_tde_encrypt_ctx();

	tuple = (HeapTuple) palloc(HEAPTUPLESIZE + len);
	tuple->t_len = len;
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = RelationGetRelid(rel);
	tuple->t_data = td = (HeapTupleHeader) ((char *) tuple + HEAPTUPLESIZE);
	memset(td, 0, SizeofHeapTupleHeader);
	HeapTupleHeaderSetDatumLength(td, len);
	HeapTupleHeaderSetTypeId(td, desc->tdtypeid);
	HeapTupleHeaderSetTypMod(td, desc->tdtypmod);
	HeapTupleHeaderSetNatts(td, desc->natts);
	td->t_hoff = hoff;
	td->t_infomask = ptd->t_infomask & (HEAP_HASNULL | HEAP_HASVARWIDTH);
	/* null bitmap, its padding and the data area, as heap_fill_tuple wrote them */
	memcpy((char *) td + SizeofHeapTupleHeader, (char *) ptd + SizeofHeapTupleHeader,
		   hoff - SizeofHeapTupleHeader + data_len);
	seal_formed(desc, td, data_len, NULL, ctx);
	return tuple;
}

/* Form the stored tuple of a slot's values. */
HeapTuple
fc_tam_form(Relation rel, TupleTableSlot *slot, int options)
{
	slot_getallattrs(slot);
	return fc_tam_form_values(rel, slot->tts_values, slot->tts_isnull, options);
}

/*
 * Decrypt and verify a stored tuple into a palloc'd copy (caller's
 * context) whose attributes are plaintext, hidden pointers still hidden;
 * hidden (BITMAPLEN(natts) bytes) receives the hidden bitmap.
 */
static HeapTuple
decrypt_raw(Relation rel, TupleDesc desc, HeapTuple stored, uint8 *hidden, bool *anyhidden)
{
	HeapTupleHeader std = stored->t_data;
	uint32		len = stored->t_len;
	const uint8 *tr;
	uint32		trailer_len;
	uint32		hoff;
	uint32		data_len;
	uint16		natts;
	uint32		gen;
	HeapTuple	plain;
	HeapTupleHeader td;
	FcTdeCtx   *ctx;
	uint8		nonce[FC_NONCE_LEN] = {0};
	Size		total;

	hoff = std->t_hoff;
	natts = HeapTupleHeaderGetNatts(std);
	if (len < hoff + FC_TAM_TRAILER_FIXED || hoff < SizeofHeapTupleHeader ||
		natts > desc->natts)
		corrupt(rel, stored, "The tuple is too short or its header is invalid.");
	tr = (const uint8 *) std + len - FC_TAM_TRAILER_FIXED;
	if ((tr[0] & 0xf0) != FC_TAM_FORMAT)
		corrupt(rel, stored, "The tuple has an unknown format.");
	trailer_len = FC_TAM_TRAILER_FIXED;
	*anyhidden = (tr[0] & FC_TAM_FLAG_HIDDEN) != 0;
	if (*anyhidden)
	{
		trailer_len += BITMAPLEN(natts);
		if (len < hoff + trailer_len)
			corrupt(rel, stored, "The tuple is too short.");
		memcpy(hidden, tr - BITMAPLEN(natts), BITMAPLEN(natts));
	}
	data_len = len - hoff - trailer_len;
	gen = ((uint32) tr[1] << 8) | tr[2];
	ctx = fc_tde_decrypt_ctx(gen, tr + 3, rel);
	if (ctx == NULL)
		corrupt(rel, stored, psprintf("It names TDE key generation %u, which this database does not have: "
									  "it was modified on disk, or the keyring is older than the data.", gen));
	memcpy(nonce, tr + 11, 8);

	plain = (HeapTuple) palloc(HEAPTUPLESIZE + hoff + data_len);
	plain->t_len = hoff + data_len;
	plain->t_self = stored->t_self;
	plain->t_tableOid = RelationGetRelid(rel);
	plain->t_data = td = (HeapTupleHeader) ((char *) plain + HEAPTUPLESIZE);
	memcpy(td, std, hoff + data_len);

	begin_aad(td, data_len, (const uint8 *) std + hoff + data_len, trailer_len - 16 - 8);
	if (!walk_layout(desc, td, data_len))
		corrupt(rel, stored, "The tuple's layout does not match the table.");
	total = move_ranges((char *) td + hoff, true);
	if (!fc_gcm_open(ctx->ctx, nonce, aad, aad_len, gather, total, gather,
					 (const uint8 *) std + len - FC_TAG_LEN))
	{
		explicit_bzero(gather, total);
		explicit_bzero(plain->t_data, plain->t_len);
		pfree(plain);
		corrupt(rel, stored, "The tuple was modified or truncated on disk, or written with another key.");
	}
	(void) move_ranges((char *) td + hoff, false);
	explicit_bzero(gather, total);
	return plain;
}

/*
 * Decrypt a stored tuple into a palloc'd plain tuple (caller's context):
 * same header and t_self, hidden pointers replaced by external pointers
 * naming rel.  ERROR (XX001) unless authentic.
 */
HeapTuple
fc_tam_decrypt(Relation rel, HeapTuple stored)
{
	return decrypt_with(rel, RelationGetDescr(rel), stored);
}

/* fc_tam_decrypt under a given descriptor (a slot's; see decrypt_with). */
HeapTuple
fc_tam_decrypt_desc(Relation rel, TupleDesc desc, HeapTuple stored)
{
	return decrypt_with(rel, desc, stored);
}

/*
 * fc_tam_decrypt with the descriptor the tuple was stored under: ALTER
 * TABLE's rewrite reads the old rows through a slot of the old descriptor
 * while the relcache already has the new one.
 */
static HeapTuple
decrypt_with(Relation rel, TupleDesc desc, HeapTuple stored)
{
	uint8		hidden[BITMAPLEN(MaxTupleAttributeNumber)];
	bool		anyhidden;
	HeapTuple	plain;
	HeapTuple	result;
	MemoryContext caller = CurrentMemoryContext;
	Datum	   *values;
	bool	   *isnull;
	int			natts;

	plain = decrypt_raw(rel, desc, stored, hidden, &anyhidden);
	if (!anyhidden)
		return plain;

	natts = HeapTupleHeaderGetNatts(plain->t_data);
	MemoryContextSwitchTo(scratch_context());
	values = palloc(desc->natts * sizeof(Datum));
	isnull = palloc(desc->natts * sizeof(bool));
	heap_deform_tuple(plain, desc, values, isnull);
	for (int i = 0; i < natts; i++)
	{
		struct varatt_external ext;
		uint8	   *h;
		char	   *ptr;

		if (isnull[i] || att_isnull(i, hidden))
			continue;
		h = (uint8 *) DatumGetPointer(values[i]);
		if (!VARATT_IS_1B(h) || VARSIZE_1B(h) != FC_TAM_HIDDEN_LEN)
			corrupt(rel, stored, "An out-of-line value reference is malformed.");
		memcpy(&ext.va_valueid, h + 1, 4);
		memcpy(&ext.va_rawsize, h + 5, 4);
		memcpy(&ext.va_extinfo, h + 9, 4);
		ext.va_toastrelid = RelationGetRelid(rel);
		ptr = palloc(TOAST_POINTER_SIZE);
		SET_VARTAG_EXTERNAL(ptr, VARTAG_ONDISK);
		memcpy(VARDATA_EXTERNAL(ptr), &ext, sizeof(ext));
		values[i] = PointerGetDatum(ptr);
	}
	MemoryContextSwitchTo(caller);
	result = heap_form_tuple(desc, values, isnull);
	{
		HeapTupleHeader o = plain->t_data;
		HeapTupleHeader n = result->t_data;
		uint16		keep = HEAP_HASNULL | HEAP_HASVARWIDTH | HEAP_HASEXTERNAL;

		n->t_choice = o->t_choice;
		n->t_ctid = o->t_ctid;
		n->t_infomask = (n->t_infomask & keep) | (o->t_infomask & ~keep);
		n->t_infomask2 = (n->t_infomask2 & HEAP_NATTS_MASK) | (o->t_infomask2 & ~HEAP_NATTS_MASK);
	}
	result->t_self = plain->t_self;
	result->t_tableOid = plain->t_tableOid;
	explicit_bzero(plain->t_data, plain->t_len);
	pfree(plain);
	MemoryContextReset(scratch);
	return result;
}

/* Decrypt a stored tuple into slot (any slot type). */
void
fc_tam_store(Relation rel, HeapTuple stored, TupleTableSlot *slot)
{
	HeapTuple	plain;
	MemoryContext old = MemoryContextSwitchTo(slot->tts_mcxt);

	ItemPointerData tid;

	plain = decrypt_with(rel, slot->tts_tupleDescriptor ? slot->tts_tupleDescriptor :
						 RelationGetDescr(rel), stored);
	MemoryContextSwitchTo(old);
	tid = plain->t_self;
	if (TTS_IS_HEAPTUPLE(slot))
		ExecStoreHeapTuple(plain, slot, true);
	else
		ExecForceStoreHeapTuple(plain, slot, true);	/* frees plain */
	slot->tts_tableOid = RelationGetRelid(rel);
	slot->tts_tid = tid;
}

/*
 * For the re-encryption worker: seal a stored tuple anew, in place (same
 * length), under the current TDE generation.  td is a private copy of the
 * tuple's len bytes (tid for messages); the caller writes it back on its
 * page.  reseal_old: a tuple under an older generation needs it.  patch, if
 * given, may rewrite the plaintext in place (a tuple of the same layout,
 * hidden pointers excluded) and returns how many values it changed (or
 * would, without write), -1 if it cannot.  Returns 1 if td was resealed
 * (would be, without write), 0 if nothing is to be done, -1 if the row must
 * be updated instead (out-of-line values: their blobs need sealing anew, or
 * may hold what patch looks for).  ERROR (XX001) unless authentic.
 */
int
fc_tam_reseal(Relation rel, HeapTupleHeader td, uint32 len, ItemPointer tid, bool write,
			  bool reseal_old, FcTamPatch patch, void *arg)
{
	TupleDesc	desc = RelationGetDescr(rel);
	HeapTupleData stored;
	uint8		hidden[BITMAPLEN(MaxTupleAttributeNumber)];
	bool		anyhidden;
	HeapTuple	plain;
	FcTdeCtx   *ctx;
	bool		old_gen;
	int			patched = 0;
	uint32		hoff = td->t_hoff;
	uint32		data_len;
	uint8	   *trailer;
	uint8		nonce[FC_NONCE_LEN] = {0};
	uint64		counter;

	stored.t_data = td;
	stored.t_len = len;
	stored.t_self = *tid;
	stored.t_tableOid = RelationGetRelid(rel);
	ctx = fc_tde_encrypt_ctx();
	old_gen = fc_tam_tuple_generation(&stored) != (int) ctx->gen;
	if (!(reseal_old && old_gen) && patch == NULL)
		return 0;
	if (patch == NULL && !write)
	{
		/* looking only: the trailer says it all, no need to decrypt */
		const uint8 *tr = (const uint8 *) td + len - FC_TAM_TRAILER_FIXED;

		return (len >= hoff + FC_TAM_TRAILER_FIXED && (tr[0] & FC_TAM_FLAG_HIDDEN)) ? -1 : 1;
	}
	plain = decrypt_raw(rel, desc, &stored, hidden, &anyhidden);
	if (anyhidden)
	{
		explicit_bzero(plain->t_data, plain->t_len);
		pfree(plain);
		return -1;
	}
	if (patch)
	{
		patched = patch(desc, plain->t_data, write, arg);
		if (patched < 0)
		{
			explicit_bzero(plain->t_data, plain->t_len);
			pfree(plain);
			return -1;
		}
	}
	if (!(reseal_old && old_gen) && patched == 0)
	{
		explicit_bzero(plain->t_data, plain->t_len);
		pfree(plain);
		return 0;
	}
	if (!write)
	{
		explicit_bzero(plain->t_data, plain->t_len);
		pfree(plain);
		return 1;
	}

	/* the plaintext into td, a new trailer, one GCM message as in forming */
	data_len = len - hoff - FC_TAM_TRAILER_FIXED;
	memcpy((char *) td + hoff, (char *) plain->t_data + hoff, data_len);
	explicit_bzero(plain->t_data, plain->t_len);
	pfree(plain);
	trailer = (uint8 *) td + hoff + data_len;
	trailer[1] = (ctx->gen >> 8) & 0xff;
	trailer[2] = ctx->gen & 0xff;
	memcpy(trailer + 3, ctx->instance, FC_INSTANCE_ID_LEN);
	counter = fc_next_nonce_counter();
	for (int i = 0; i < 8; i++)
		trailer[11 + i] = nonce[i] = (counter >> (56 - 8 * i)) & 0xff;
	begin_aad(td, data_len, trailer, FC_TAM_TRAILER_FIXED - 16 - 8);
	if (!walk_layout(desc, td, data_len))
		corrupt(rel, &stored, "The tuple's layout does not match the table.");
	if (!seal_ranges(ctx->ctx, nonce, (char *) td + hoff, trailer + 19))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt a tuple: %s", fc_crypto_last_error())));
	return 1;
}

/* The TDE key generation a stored tuple was written under (-1: unknown). */
int
fc_tam_tuple_generation(HeapTuple stored)
{
	const uint8 *tr;

	if (stored->t_len < (uint32) stored->t_data->t_hoff + FC_TAM_TRAILER_FIXED)
		return -1;
	tr = (const uint8 *) stored->t_data + stored->t_len - FC_TAM_TRAILER_FIXED;
	if ((tr[0] & 0xf0) != FC_TAM_FORMAT)
		return -1;
	return ((int) tr[1] << 8) | tr[2];
}

/*
 * Delete the out-of-line values of a stored tuple (decrypting it).  own_new:
 * they were written by the current command (see fc_toast_delete).
 */
void
fc_tam_delete_blobs_of(Relation rel, HeapTuple stored, bool own_new)
{
	uint8		hidden[BITMAPLEN(MaxTupleAttributeNumber)];
	bool		anyhidden;
	const uint8 *tr;
	HeapTuple	plain;
	TupleDesc	desc = RelationGetDescr(rel);
	Datum	   *values;
	bool	   *isnull;
	int			natts;

	if (stored->t_len < FC_TAM_TRAILER_FIXED)
		return;
	tr = (const uint8 *) stored->t_data + stored->t_len - FC_TAM_TRAILER_FIXED;
	if (!(tr[0] & FC_TAM_FLAG_HIDDEN))
		return;
	plain = decrypt_raw(rel, desc, stored, hidden, &anyhidden);
	natts = HeapTupleHeaderGetNatts(plain->t_data);
	values = palloc(desc->natts * sizeof(Datum));
	isnull = palloc(desc->natts * sizeof(bool));
	heap_deform_tuple(plain, desc, values, isnull);
	for (int i = 0; i < natts; i++)
	{
		Oid			valueid;

		if (isnull[i] || att_isnull(i, hidden))
			continue;
		memcpy(&valueid, (char *) DatumGetPointer(values[i]) + 1, 4);
		fc_toast_delete(rel, valueid, own_new);
	}
	pfree(values);
	pfree(isnull);
	explicit_bzero(plain->t_data, plain->t_len);
	pfree(plain);
}

/* Delete the out-of-line values of the stored tuple at tid. */
void
fc_tam_delete_blobs(Relation rel, ItemPointer tid, bool own_new)
{
	HeapTupleData tuple;
	Buffer		buffer;
	HeapTuple	copy;

	tuple.t_self = *tid;
	if (!heap_fetch(rel, SnapshotAny, &tuple, &buffer, false))
	{
		if (BufferIsValid(buffer))
			ReleaseBuffer(buffer);
		return;
	}
	copy = heap_copytuple(&tuple);
	ReleaseBuffer(buffer);
	fc_tam_delete_blobs_of(rel, copy, own_new);
	heap_freetuple(copy);
}
