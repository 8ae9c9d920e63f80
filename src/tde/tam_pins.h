/*-------------------------------------------------------------------------
 *
 * tam_pins.h
 *	  This backend's pins on entries of the decrypted-row cache.
 *
 * src/tde/tam_pins.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_TAM_PINS_H
#define FIELDCRYPT_TAM_PINS_H

typedef struct FcPinCount
{
	int32		entry1;			/* cache entry + 1; 0: free element */
	int32		count;			/* this backend's pins on it */
} FcPinCount;

extern void fc_pins_reserve(void);
extern FcPinCount *fc_pins_get(int entry, bool create);
extern void fc_pins_forget(FcPinCount *p);
extern void fc_pins_drop_all(void (*drop) (int entry));
extern int	fc_pins_held(void);

#endif
