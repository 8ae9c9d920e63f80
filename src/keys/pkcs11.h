/*-------------------------------------------------------------------------
 *
 * pkcs11.h
 *	  A tenant key held in an HSM, used through its PKCS#11 module.
 *
 * src/keys/pkcs11.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_PKCS11_H
#define FIELDCRYPT_PKCS11_H

#include "keys/rsakey.h"

/* settings (guc.c registers them) */
extern char *fc_hsm_pin_command;
extern char *fc_hsm_modules;

extern bool fc_hsm_public_key(const char *module, const char *token, const char *label,
							  FcPkey **pub, char *why, size_t whylen);
extern bool fc_hsm_unwrap(const char *module, const char *token, const char *label,
						  int hash, const uint8 *in, size_t inlen, uint8 *out, size_t outsize,
						  size_t *outlen, bool *unsupported, char *why, size_t whylen);

#endif
