/*-------------------------------------------------------------------------
 *
 * restamp.c
 *	  Finding the envelopes inside a stored value and re-encrypting the
 *	  stale ones where they are: plain encrypted values, domains over them,
 *	  arrays and composites holding them (at any depth).
 *
 *	  A re-encrypted envelope has exactly the length of the old one (same
 *	  header, same plaintext length, same tag), so a value is rewritten in
 *	  place and keeps its length.  That lets the re-encryption worker
 *	  rewrite row versions on their page without running any code of the
 *	  table's owner (src/rotation/inplace.c).  Only values stored inline and
 *	  uncompressed can be walked in place; for the others the caller
 *	  detoasts a copy, walks that, and stores it as a new value.
 *
 *	  An envelope is stale when its generation is not the current one and
 *	  this database still holds it.  Values under a generation that is gone,
 *	  and values that cannot be authenticated, are left as they are: they
 *	  were unreadable before and stay so.
 *
 * src/columns/restamp.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/tupmacs.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "columns/enctypes.h"
#include "columns/restamp.h"
#include "keys/keystore.h"

static int	walk_container(Oid typid, char *vl, bool write);
static int	walk_tuple(TupleDesc desc, HeapTupleHeader td, bool write);

/* True if generation gen is not the current one and this database still holds it. */
bool
fc_generation_is_stale(uint32 gen)
{
	const FcGeneration *cur = fc_local_generation(0, true);

	if (cur == NULL || gen == 0 || gen == cur->gen)
		return false;
	return fc_local_generation(gen, false) != NULL;
}

/*
 * The envelope in varlena vl (any header, inline, uncompressed): 1 if it is
 * stale (and, with write, re-encrypted in place), else 0.
 */
static int
restamp_envelope(char *vl, bool write)
{
	uint8	   *env = (uint8 *) VARDATA_ANY(vl);
	Size		len = VARSIZE_ANY_EXHDR(vl);
	bytea	   *copy;
	bytea	   *fresh;

	if (!fc_generation_is_stale(fc_envelope_generation(PointerGetDatum(vl))))
		return 0;
	if (!write)
		return 1;
	copy = palloc(VARHDRSZ + len);
	SET_VARSIZE(copy, VARHDRSZ + len);
	memcpy(VARDATA(copy), env, len);
	fresh = fc_reencrypt_envelope(copy, (char) env[1]);
	pfree(copy);
	if (fresh == NULL)
		return 0;				/* not authentic: left as it is */
	if (VARSIZE_ANY_EXHDR(fresh) != len)
		elog(ERROR, "re-encrypted envelope changed its length");
	memcpy(env, VARDATA_ANY(fresh), len);
	pfree(fresh);
	return 1;
}

/*
 * Walk a stored value of type typid at vl (a varlena in place: inline, not
 * compressed): the number of stale envelopes in it, re-encrypted in place
 * with write.  -1 if the value is compressed or external (walk a detoasted
 * copy instead).
 */
int
fc_restamp_value(Oid typid, char *vl, bool write)
{
	if (VARATT_IS_EXTERNAL(vl) || VARATT_IS_COMPRESSED(vl))
		return -1;
	if (fc_is_encrypted_type(typid))
		return restamp_envelope(vl, write);
	if (!fc_type_holds_encrypted(typid))
		return 0;
	return walk_container(getBaseType(typid), vl, write);
}

/*
 * An array or composite value: walked in an aligned copy with a 4-byte
 * header (a value stored with a 1-byte header is not aligned for its
 * struct), whose payload goes back where it came from.
 */
static int
walk_container(Oid typid, char *vl, bool write)
{
	Size		len = VARSIZE_ANY_EXHDR(vl);
	char	   *copy = palloc(VARHDRSZ + len);
	Oid			elem = get_element_type(typid);
	int			n = 0;

	SET_VARSIZE(copy, VARHDRSZ + len);
	memcpy(VARDATA(copy), VARDATA_ANY(vl), len);

	if (OidIsValid(elem))
	{
		ArrayType  *a = (ArrayType *) copy;
		int			nitems = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
		bits8	   *nulls = ARR_NULLBITMAP(a);
		char	   *p = copy + (a->dataoffset != 0 ? (Size) a->dataoffset :
								   (Size) ARR_OVERHEAD_NONULLS(ARR_NDIM(a)));
		int16		elmlen;
		bool		elmbyval;
		char		elmalign;

		get_typlenbyvalalign(elem, &elmlen, &elmbyval, &elmalign);
		for (int i = 0; i < nitems; i++)
		{
			int			k;

			if (nulls && !(nulls[i / 8] & (1 << (i % 8))))
				continue;
			p = (char *) att_align_nominal(p, elmalign);
			k = fc_restamp_value(elem, p, write);
			if (k < 0)
				elog(ERROR, "unexpected toasted element in an array holding encrypted values");
			n += k;
			p = att_addlength_pointer(p, elmlen, p);
		}
	}
	else
	{
		HeapTupleHeader td = (HeapTupleHeader) copy;
		TupleDesc	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(td),
												  HeapTupleHeaderGetTypMod(td));

		n = walk_tuple(desc, td, write);
		ReleaseTupleDesc(desc);
	}
	if (write && n > 0)
		memcpy(VARDATA_ANY(vl), VARDATA(copy), len);
	pfree(copy);
	return n;
}

/*
 * The attributes of tuple td (laid out by desc): stale envelopes in those
 * that can hold one.  -1 if one of them is compressed or external.
 */
static int
walk_tuple(TupleDesc desc, HeapTupleHeader td, bool write)
{
	int			natts = Min(HeapTupleHeaderGetNatts(td), desc->natts);
	bool		hasnulls = (td->t_infomask & HEAP_HASNULL) != 0;
	char	   *tp = (char *) td + td->t_hoff;
	Size		off = 0;
	int			n = 0;
	bool		toasted = false;

	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (hasnulls && att_isnull(i, td->t_bits))
			continue;
		if (att->attlen == -1)
			off = att_align_pointer(off, att->attalign, -1, tp + off);
		else
			off = att_align_nominal(off, att->attalign);
		if (!att->attisdropped && att->attlen == -1 && fc_type_holds_encrypted(att->atttypid))
		{
			int			k = fc_restamp_value(att->atttypid, tp + off, write);

			if (k < 0)
				toasted = true;
			else
				n += k;
		}
		off = att_addlength_pointer(off, att->attlen, tp + off);
	}
	return toasted ? -1 : n;
}

/*
 * A stored heap tuple of a relation with tuple descriptor desc, in place:
 * the number of stale envelopes (re-encrypted with write), or -1 if some
 * value that may hold one is compressed or out of line (then nothing was
 * written: the caller updates the row instead).
 */
int
fc_restamp_tuple(TupleDesc desc, HeapTupleHeader td, bool write)
{
	int			n = walk_tuple(desc, td, false);

	if (n <= 0 || !write)
		return n;
	return walk_tuple(desc, td, true);
}

/*
 * A value of type typid (any storage) with its stale envelopes
 * re-encrypted, as a new palloc'd datum; *changed tells whether any was.
 */
Datum
fc_restamp_datum(Oid typid, Datum value, bool *changed)
{
	struct varlena *copy = (struct varlena *) PG_DETOAST_DATUM_COPY(value);
	int			n = fc_restamp_value(typid, (char *) copy, true);

	*changed = n > 0;
	return PointerGetDatum(copy);
}
