/*-------------------------------------------------------------------------
 *
 * tam_toast.c
 *	  Out-of-line values of encrypted_heap tables: encrypted blobs in the
 *	  table's TOAST relation (a plain heap), written, read and deleted here.
 *
 *	  A blob is stored as ordinary TOAST chunks (chunk_id = value id,
 *	  chunk_seq = 0..n) holding
 *		version(1) gen(2) instance(8) counter(8)
 *		then per 64 kB segment of the plaintext: ciphertext, tag(16)
 *	  Segment i is sealed with nonce counter || i under the TDE subkey of
 *	  (gen, instance); its AAD binds the value id, the plaintext size, i and
 *	  whether it is the last segment, so a swapped, reordered or truncated
 *	  blob fails authentication.  The plaintext is exactly what heap would
 *	  store (raw bytes, or va_tcinfo + compressed bytes), so that
 *	  detoast.c's slice and decompression logic works on our exposed
 *	  pointers unchanged.  The blob size is a function of the plaintext
 *	  size, so slices of large values read only the segments they need.
 *
 * src/tde/tam_toast.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heaptoast.h"
#include "access/table.h"
#include "access/toast_internals.h"
#include "access/xact.h"
#include "access/detoast.h"
#include "miscadmin.h"
#include "catalog/catalog.h"
#include "utils/rel.h"

#include "tde/tam.h"
#include "tde/tam_crypt.h"

#define BLOB_VERSION	1
#define BLOB_HDR		19		/* version, gen, instance, counter */
#define BLOB_SEG		65536

typedef struct ToastErrCtx
{
	Relation	rel;
	Oid			valueid;
} ToastErrCtx;

static int32 blob_size(int32 extsize);
static void blob_aad(uint8 *aad, const uint8 *hdr, Oid valueid, int32 extsize,
					 uint32 seg, bool last);
static void toast_error_context(void *arg);

/* Stored size of the blob of a plaintext of extsize bytes. */
static int32
blob_size(int32 extsize)
{
	int32		nseg = (extsize + BLOB_SEG - 1) / BLOB_SEG;

	return BLOB_HDR + Max(nseg, 1) * FC_TAG_LEN + extsize;
}

#define BLOB_AAD_LEN	(BLOB_HDR + 13)

/* The AAD of segment seg. */
static void
blob_aad(uint8 *aad, const uint8 *hdr, Oid valueid, int32 extsize, uint32 seg, bool last)
{
	memcpy(aad, hdr, BLOB_HDR);
	memcpy(aad + BLOB_HDR, &valueid, 4);
	memcpy(aad + BLOB_HDR + 4, &extsize, 4);
	memcpy(aad + BLOB_HDR + 8, &seg, 4);
	aad[BLOB_HDR + 12] = last ? 1 : 0;
}

/* Error context naming the table whose value was being read. */
static void
toast_error_context(void *arg)
{
	ToastErrCtx *c = (ToastErrCtx *) arg;

	errcontext("reading out-of-line value %u of encrypted table \"%s\"",
			   c->valueid, RelationGetRelationName(c->rel));
}

/*
 * Encrypt value (plain, or compressed inline) into a new blob in rel's
 * TOAST table under ctx (the row's key context); return the hidden pointer
 * that replaces it in the tuple.
 */
Datum
fc_toast_save(Relation rel, struct varlena *value, int options, FcTdeCtx *ctx)
{
	Relation	toastrel;
	Relation   *toastidxs;
	int			num_indexes;
	int			validIndex;
	TupleDesc	toastdesc;
	const char *data;
	int32		extsize;
	int32		rawsize;
	uint32		extinfo;
	Oid			valueid;
	int32		bsize;
	uint8	   *blob;
	uint8	   *p;
	uint32		nseg;
	CommandId	cid = GetCurrentCommandId(true);
	struct varlena *hidden;
	uint8	   *h;
	int32		seq = 0;

	if (!OidIsValid(rel->rd_rel->reltoastrelid))
		elog(ERROR, "encrypted table \"%s\" has no TOAST table", RelationGetRelationName(rel));

	if (VARATT_IS_COMPRESSED(value))
	{
		data = VARDATA(value);
		extsize = VARSIZE(value) - VARHDRSZ;
		rawsize = VARDATA_COMPRESSED_GET_EXTSIZE(value) + VARHDRSZ;
		extinfo = (uint32) extsize |
			((uint32) VARDATA_COMPRESSED_GET_COMPRESS_METHOD(value) << VARLENA_EXTSIZE_BITS);
	}
	else
	{
		data = VARDATA_ANY(value);
		extsize = VARSIZE_ANY_EXHDR(value);
		rawsize = extsize + VARHDRSZ;
		extinfo = (uint32) extsize;
	}

	toastrel = table_open(rel->rd_rel->reltoastrelid, RowExclusiveLock);
	toastdesc = RelationGetDescr(toastrel);
	validIndex = toast_open_indexes(toastrel, RowExclusiveLock, &toastidxs, &num_indexes);
	valueid = GetNewOidWithIndex(toastrel, RelationGetRelid(toastidxs[validIndex]),
								 (AttrNumber) 1);

	/* seal the segments */
	bsize = blob_size(extsize);
	blob = palloc(bsize);
	blob[0] = BLOB_VERSION;
	blob[1] = (ctx->gen >> 8) & 0xff;
	blob[2] = ctx->gen & 0xff;
	memcpy(blob + 3, ctx->instance, FC_INSTANCE_ID_LEN);
	{
		uint64		counter = fc_next_nonce_counter();

		for (int i = 0; i < 8; i++)
			blob[11 + i] = (counter >> (56 - 8 * i)) & 0xff;
	}
	nseg = Max((extsize + BLOB_SEG - 1) / BLOB_SEG, 1);
	p = blob + BLOB_HDR;
	for (uint32 s = 0; s < nseg; s++)
	{
		int32		off = s * BLOB_SEG;
		int32		len = Min(BLOB_SEG, extsize - off);
		uint8		aad[BLOB_AAD_LEN];
		uint8		nonce[FC_NONCE_LEN];

		blob_aad(aad, blob, valueid, extsize, s, s == nseg - 1);
		memcpy(nonce, blob + 11, 8);
		nonce[8] = (s >> 24) & 0xff;
		nonce[9] = (s >> 16) & 0xff;
		nonce[10] = (s >> 8) & 0xff;
		nonce[11] = s & 0xff;
		if (!fc_gcm_seal(ctx->ctx, nonce, aad, BLOB_AAD_LEN, (const uint8 *) data + off,
						 len, p, p + len))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not encrypt a value: %s", fc_crypto_last_error())));
		p += len + FC_TAG_LEN;
	}

	/* write it as chunks, as toast_save_datum would */
	{
		Datum		t_values[3];
		bool		t_isnull[3] = {false, false, false};
		union
		{
			struct varlena hdr;
			char		data[TOAST_MAX_CHUNK_SIZE + VARHDRSZ];
			int32		align_it;
		}			chunk;
		int32		done = 0;

		options &= ~HEAP_INSERT_SPECULATIVE;
		t_values[0] = ObjectIdGetDatum(valueid);
		t_values[2] = PointerGetDatum(&chunk);
		while (done < bsize)
		{
			int32		n = Min((int32) TOAST_MAX_CHUNK_SIZE, bsize - done);
			HeapTuple	tt;

			CHECK_FOR_INTERRUPTS();
			t_values[1] = Int32GetDatum(seq++);
			SET_VARSIZE(&chunk, n + VARHDRSZ);
			memcpy(VARDATA(&chunk), blob + done, n);
			tt = heap_form_tuple(toastdesc, t_values, t_isnull);
			heap_insert(toastrel, tt, cid, options, NULL);
			for (int i = 0; i < num_indexes; i++)
				if (toastidxs[i]->rd_index->indisready)
					index_insert(toastidxs[i], t_values, t_isnull, &tt->t_self, toastrel,
								 toastidxs[i]->rd_index->indisunique ?
								 UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
								 false, NULL);
			heap_freetuple(tt);
			done += n;
		}
	}
	toast_close_indexes(toastidxs, num_indexes, NoLock);
	table_close(toastrel, NoLock);
	pfree(blob);

	/* hidden pointer: 1-byte header, value id, raw size, extinfo */
	hidden = palloc(FC_TAM_HIDDEN_LEN);
	SET_VARSIZE_1B(hidden, FC_TAM_HIDDEN_LEN);
	h = (uint8 *) hidden + 1;
	memcpy(h, &valueid, 4);
	memcpy(h + 4, &rawsize, 4);
	memcpy(h + 8, &extinfo, 4);
	return PointerGetDatum(hidden);
}

/*
 * Delete the blob valueid of rel (its chunks, in this transaction).  own_new:
 * the chunks were inserted by the current command (an aborted speculative
 * insertion or a failed update), which cannot delete them the normal way
 * (they are invisible to it); they are killed as heap kills a speculative
 * insertion's TOAST chunks.
 */
void
fc_toast_delete(Relation rel, Oid valueid, bool own_new)
{
	struct varatt_external ext;
	char		ptr[TOAST_POINTER_SIZE];

	memset(&ext, 0, sizeof(ext));
	ext.va_valueid = valueid;
	ext.va_toastrelid = rel->rd_rel->reltoastrelid;
	SET_VARTAG_EXTERNAL(ptr, VARTAG_ONDISK);
	memcpy(VARDATA_EXTERNAL(ptr), &ext, sizeof(ext));
	toast_delete_datum(rel, PointerGetDatum(ptr), own_new);
}

/*
 * relation_fetch_toast_slice of encrypted_heap: rel is the main table (our
 * exposed pointers name it).  Fill VARDATA(result) with plaintext bytes
 * [sliceoffset, sliceoffset + slicelength) of value valueid of attrsize
 * bytes, reading and verifying only the segments that cover them.
 */
void
fc_tam_fetch_toast_slice(Relation rel, Oid valueid, int32 attrsize,
						 int32 sliceoffset, int32 slicelength,
						 struct varlena *result)
{
	Relation	toastrel;
	int32		bsize = blob_size(attrsize);
	uint32		nseg = Max((attrsize + BLOB_SEG - 1) / BLOB_SEG, 1);
	uint32		first;
	uint32		last;
	int32		from;
	int32		to;
	struct varlena *buf;
	uint8		hdr[BLOB_HDR];
	uint8	   *seg;
	uint32		gen;
	FcTdeCtx   *ctx;
	ErrorContextCallback errcb;
	ToastErrCtx ectx;

	if (slicelength <= 0)
		return;
	if (!OidIsValid(rel->rd_rel->reltoastrelid))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("out-of-line value %u of table \"%s\" has no TOAST table",
						valueid, RelationGetRelationName(rel))));

	ectx.rel = rel;
	ectx.valueid = valueid;
	errcb.callback = toast_error_context;
	errcb.arg = &ectx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	toastrel = table_open(rel->rd_rel->reltoastrelid, AccessShareLock);
	first = sliceoffset / BLOB_SEG;
	last = (sliceoffset + slicelength - 1) / BLOB_SEG;
	if (last >= nseg)
		elog(ERROR, "toast slice beyond the end of value %u", valueid);
	from = BLOB_HDR + first * (BLOB_SEG + FC_TAG_LEN);
	to = BLOB_HDR + last * (BLOB_SEG + FC_TAG_LEN) +
		Min(BLOB_SEG, attrsize - (int32) (last * BLOB_SEG)) + FC_TAG_LEN;

	buf = palloc(VARHDRSZ + Max(BLOB_HDR, to - from));
	SET_VARSIZE(buf, VARHDRSZ + BLOB_HDR);
	heap_fetch_toast_slice(toastrel, valueid, bsize, 0, BLOB_HDR, buf);
	memcpy(hdr, VARDATA(buf), BLOB_HDR);
	SET_VARSIZE(buf, VARHDRSZ + to - from);
	heap_fetch_toast_slice(toastrel, valueid, bsize, from, to - from, buf);
	table_close(toastrel, AccessShareLock);

	if (hdr[0] != BLOB_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value %u in table \"%s\" failed authentication",
						valueid, RelationGetRelationName(rel)),
				 errdetail("The value has an unknown format version.")));
	gen = ((uint32) hdr[1] << 8) | hdr[2];
	ctx = fc_tde_decrypt_ctx(gen, hdr + 3, rel);
	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("encrypted value %u in table \"%s\" failed authentication",
						valueid, RelationGetRelationName(rel)),
				 errdetail("It names TDE key generation %u, which this database does not have: "
						   "it was modified on disk, or the keyring is older than the data.", gen)));

	seg = (uint8 *) VARDATA(buf);
	for (uint32 s = first; s <= last; s++)
	{
		int32		off = s * BLOB_SEG;
		int32		len = Min(BLOB_SEG, attrsize - off);
		uint8		aad[BLOB_AAD_LEN];
		uint8		nonce[FC_NONCE_LEN];
		int32		lo;
		int32		hi;

		blob_aad(aad, hdr, valueid, attrsize, s, s == nseg - 1);
		memcpy(nonce, hdr + 11, 8);
		nonce[8] = (s >> 24) & 0xff;
		nonce[9] = (s >> 16) & 0xff;
		nonce[10] = (s >> 8) & 0xff;
		nonce[11] = s & 0xff;
		if (!fc_gcm_open(ctx->ctx, nonce, aad, BLOB_AAD_LEN, seg, len, seg, seg + len))
		{
			explicit_bzero(VARDATA(buf), to - from);
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("encrypted value %u in table \"%s\" failed authentication",
							valueid, RelationGetRelationName(rel)),
					 errdetail("The value was modified, truncated or swapped on disk, "
							   "or written with another key.")));
		}
		lo = Max(off, sliceoffset);
		hi = Min(off + len, sliceoffset + slicelength);
		if (hi > lo)
			memcpy(VARDATA(result) + (lo - sliceoffset), seg + (lo - off), hi - lo);
		seg += len + FC_TAG_LEN;
	}
	explicit_bzero(VARDATA(buf), to - from);
	pfree(buf);
	error_context_stack = errcb.previous;
}
