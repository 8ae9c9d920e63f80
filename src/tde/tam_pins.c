/*-------------------------------------------------------------------------
 *
 * tam_pins.c
 *	  This backend's pins on entries of the decrypted-row cache
 *	  (tam_cache.c): how many times it pinned each entry it holds.
 *
 *	  As bufmgr's PrivateRefCount: a small array searched linearly, and a
 *	  backend-local hash table for the rare backend that holds more pins
 *	  at once (each lazy slot holds at most one).  Memory and work are in
 *	  proportion to the pins held, never to the cache's size: a backend
 *	  that holds none allocates nothing, and the end of a transaction
 *	  walks only what is held.  fc_pins_reserve must be called before the
 *	  caller takes a lock to pin: it makes room in the array (spilling an
 *	  element to the hash table, which may allocate and so ERROR), so that
 *	  fc_pins_get(entry, true) cannot fail once the shared pin is taken.
 *
 * src/tde/tam_pins.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "tde/tam_pins.h"

#define PIN_ARRAY	8

/* entry + 1 (0: free) and this backend's pins on it */
static FcPinCount pin_array[PIN_ARRAY];
static HTAB *pin_hash = NULL;	/* overflow: entry -> FcPinCount */
static int	pin_hashed = 0;		/* elements in pin_hash */
static int	pin_clock = 0;		/* next array element to spill */

/* Make sure a free array element exists (may allocate: call before locking). */
void
fc_pins_reserve(void)
{
	FcPinCount *spill;
	FcPinCount *h;
	bool		found;

	for (int i = 0; i < PIN_ARRAY; i++)
		if (pin_array[i].entry1 == 0)
			return;
	if (pin_hash == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(int32);
		info.entrysize = sizeof(FcPinCount);
		info.hcxt = TopMemoryContext;
		pin_hash = hash_create("fieldcrypt tde cache pins", 64, &info,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	spill = &pin_array[pin_clock];
	pin_clock = (pin_clock + 1) % PIN_ARRAY;
	h = hash_search(pin_hash, &spill->entry1, HASH_ENTER, &found);
	Assert(!found);
	h->count = spill->count;
	pin_hashed++;
	spill->entry1 = 0;
	spill->count = 0;
}

/*
 * This backend's pin count of entry, or NULL if it holds none and !create;
 * with create, a zero count in a free element (fc_pins_reserve made one).
 */
FcPinCount *
fc_pins_get(int entry, bool create)
{
	FcPinCount *free = NULL;

	for (int i = 0; i < PIN_ARRAY; i++)
	{
		if (pin_array[i].entry1 == entry + 1)
			return &pin_array[i];
		if (pin_array[i].entry1 == 0 && free == NULL)
			free = &pin_array[i];
	}
	if (pin_hashed > 0)
	{
		int32		key = entry + 1;
		FcPinCount *h = hash_search(pin_hash, &key, HASH_FIND, NULL);

		if (h != NULL)
			return h;
	}
	if (!create)
		return NULL;
	if (free == NULL)
		elog(ERROR, "no free element for a tde cache pin");
	free->entry1 = entry + 1;
	free->count = 0;
	return free;
}

/* Forget an element whose count fell to zero. */
void
fc_pins_forget(FcPinCount *p)
{
	Assert(p->count == 0);
	if (p >= pin_array && p < pin_array + PIN_ARRAY)
		p->entry1 = 0;
	else
	{
		int32		key = p->entry1;

		hash_search(pin_hash, &key, HASH_REMOVE, NULL);
		pin_hashed--;
	}
}

/* Call drop(entry) for every entry this backend pins, and forget them all. */
void
fc_pins_drop_all(void (*drop) (int entry))
{
	for (int i = 0; i < PIN_ARRAY; i++)
		if (pin_array[i].entry1 != 0)
		{
			drop(pin_array[i].entry1 - 1);
			pin_array[i].entry1 = 0;
			pin_array[i].count = 0;
		}
	if (pin_hashed > 0)
	{
		HASH_SEQ_STATUS seq;
		FcPinCount *h;

		hash_seq_init(&seq, pin_hash);
		while ((h = hash_seq_search(&seq)) != NULL)
		{
			int32		key = h->entry1;

			drop(key - 1);
			hash_search(pin_hash, &key, HASH_REMOVE, NULL);
		}
		pin_hashed = 0;
	}
}

/* Number of entries this backend pins (for assertions and tests). */
int
fc_pins_held(void)
{
	int			n = pin_hashed;

	for (int i = 0; i < PIN_ARRAY; i++)
		n += pin_array[i].entry1 != 0;
	return n;
}
