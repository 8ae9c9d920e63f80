/*-------------------------------------------------------------------------
 *
 * pkcs11.c
 *	  The tenant key in an HSM, through the PKCS#11 API of its module
 *	  (loaded with dlopen; p11-kit's pkcs11.h for the types).
 *
 *	  The RSA private key never leaves the token: the key-encryption key
 *	  that seals the keyring is unwrapped by C_Decrypt with CKM_RSA_PKCS_OAEP
 *	  (SHA-256, MGF1-SHA256; or SHA-1 where the module supports nothing
 *	  else, as SoftHSM 2.6 does: tenant.c records which).  Only the public key (CKA_MODULUS,
 *	  CKA_PUBLIC_EXPONENT) is read out, to wrap with OpenSSL and to compute
 *	  the key's fingerprint.  Objects are found by CKA_LABEL in the token
 *	  whose label is given.
 *
 *	  The user PIN is the standard output of fieldcrypt.hsm_pin_command
 *	  (run like fieldcrypt.key_command), never an SQL argument.  It is
 *	  zeroed after C_Login and never written to any message.
 *
 *	  Every operation initializes the module, does its work and finalizes
 *	  it again: these run in the postmaster (at start), in the startup
 *	  process (WAL replay) and in backends, and a module must not be used
 *	  across fork() without a new C_Initialize.
 *
 * src/keys/pkcs11.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <dlfcn.h>

#include "keys/keyring.h"
#include "keys/pkcs11.h"

char	   *fc_hsm_pin_command = NULL;
char	   *fc_hsm_modules = NULL;

/* last: its compatibility macros rename common identifiers (value, count) */
#include <p11-kit/pkcs11.h>

#define PIN_MAX		256

typedef struct HsmSession
{
	CK_FUNCTION_LIST_PTR fl;
	CK_SESSION_HANDLE sess;
	bool		initialized;
	bool		opened;
	bool		logged_in;
} HsmSession;

static bool label_matches(const unsigned char *padded, const char *label);
static uint8 *get_attribute(HsmSession *h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type,
							size_t *len);
static bool hsm_open(const char *module, const char *token, HsmSession *h,
					 char *why, size_t whylen);
static void hsm_close(HsmSession *h);
static bool hsm_find(HsmSession *h, CK_OBJECT_CLASS cls, const char *label,
					 CK_OBJECT_HANDLE *obj, char *why, size_t whylen);

/* Is the space-padded 32-byte token label equal to label? */
static bool
label_matches(const unsigned char *padded, const char *label)
{
	size_t		n = strlen(label);

	if (n > 32 || memcmp(padded, label, n) != 0)
		return false;
	for (size_t i = n; i < 32; i++)
		if (padded[i] != ' ')
			return false;
	return true;
}

/*
 * Load the module, find the token by label, open a session and log in
 * with the PIN from fieldcrypt.hsm_pin_command.
 */
static bool
hsm_open(const char *module, const char *token, HsmSession *h,
		 char *why, size_t whylen)
{
	void	   *lib;
	CK_C_GetFunctionList getfl;
	CK_RV		rv;
	CK_ULONG	nslots = 0;
	CK_SLOT_ID *slots;
	CK_SLOT_ID	slot = 0;
	bool		found = false;
	char		pin[PIN_MAX];
	size_t		pinlen;

	memset(h, 0, sizeof(*h));
	lib = dlopen(module, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL)
	{
		snprintf(why, whylen, "could not load PKCS#11 module \"%s\": %s", module, dlerror());
		return false;
	}
	getfl = (CK_C_GetFunctionList) dlsym(lib, "C_GetFunctionList");
	if (getfl == NULL || getfl(&h->fl) != CKR_OK || h->fl == NULL)
	{
		snprintf(why, whylen, "\"%s\" is not a PKCS#11 module", module);
		return false;
	}
	rv = h->fl->C_Initialize(NULL);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
	{
		snprintf(why, whylen, "PKCS#11 module \"%s\" failed to initialize (CKR 0x%lx)",
				 module, (unsigned long) rv);
		return false;
	}
	h->initialized = (rv == CKR_OK);

	rv = h->fl->C_GetSlotList(CK_TRUE, NULL, &nslots);
	if (rv != CKR_OK)
	{
		snprintf(why, whylen, "could not list the slots of PKCS#11 module \"%s\" (CKR 0x%lx)",
				 module, (unsigned long) rv);
		return false;
	}
	slots = palloc0(sizeof(CK_SLOT_ID) * (nslots + 1));
	rv = h->fl->C_GetSlotList(CK_TRUE, slots, &nslots);
	for (CK_ULONG i = 0; rv == CKR_OK && i < nslots && !found; i++)
	{
		CK_TOKEN_INFO info;

		if (h->fl->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
			label_matches(info.label, token))
		{
			slot = slots[i];
			found = true;
		}
	}
	pfree(slots);
	if (!found)
	{
		snprintf(why, whylen, "HSM token \"%s\" was not found through PKCS#11 module \"%s\"",
				 token, module);
		return false;
	}

	rv = h->fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &h->sess);
	if (rv != CKR_OK)
	{
		snprintf(why, whylen, "could not open a session with HSM token \"%s\" (CKR 0x%lx)",
				 token, (unsigned long) rv);
		return false;
	}
	h->opened = true;

	if (!fc_run_command(fc_hsm_pin_command, "fieldcrypt.hsm_pin_command", pin, sizeof(pin),
						&pinlen, why, whylen))
	{
		explicit_bzero(pin, sizeof(pin));
		return false;
	}
	while (pinlen > 0 && (pin[pinlen - 1] == '\n' || pin[pinlen - 1] == '\r'))
		pinlen--;
	rv = h->fl->C_Login(h->sess, CKU_USER, (CK_UTF8CHAR_PTR) pin, pinlen);
	explicit_bzero(pin, sizeof(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
	{
		snprintf(why, whylen, "could not log in to HSM token \"%s\"%s (CKR 0x%lx)", token,
				 rv == CKR_PIN_INCORRECT ? ": the PIN from fieldcrypt.hsm_pin_command is wrong" : "",
				 (unsigned long) rv);
		return false;
	}
	h->logged_in = (rv == CKR_OK);
	return true;
}

/* Log out, close the session and finalize the module, as far as opened. */
static void
hsm_close(HsmSession *h)
{
	if (h->logged_in)
		h->fl->C_Logout(h->sess);
	if (h->opened)
		h->fl->C_CloseSession(h->sess);
	if (h->initialized)
		h->fl->C_Finalize(NULL);
	memset(h, 0, sizeof(*h));
}

/* The one object of class cls labelled label. */
static bool
hsm_find(HsmSession *h, CK_OBJECT_CLASS cls, const char *label,
		 CK_OBJECT_HANDLE *obj, char *why, size_t whylen)
{
	CK_ATTRIBUTE tmpl[2];
	CK_ULONG	nfound = 0;
	CK_RV		rv;

	tmpl[0].type = CKA_CLASS;
	tmpl[0].pValue = &cls;
	tmpl[0].ulValueLen = sizeof(cls);
	tmpl[1].type = CKA_LABEL;
	tmpl[1].pValue = (void *) label;
	tmpl[1].ulValueLen = strlen(label);
	rv = h->fl->C_FindObjectsInit(h->sess, tmpl, 2);
	if (rv == CKR_OK)
	{
		rv = h->fl->C_FindObjects(h->sess, obj, 1, &nfound);
		h->fl->C_FindObjectsFinal(h->sess);
	}
	if (rv != CKR_OK || nfound != 1)
	{
		snprintf(why, whylen, "HSM token holds no %s key labelled \"%s\"",
				 cls == CKO_PRIVATE_KEY ? "private" : "public", label);
		return false;
	}
	return true;
}

/* Read one attribute into palloc'd memory. */
static uint8 *
get_attribute(HsmSession *h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type, size_t *len)
{
	CK_ATTRIBUTE a = {type, NULL, 0};
	uint8	   *buf;

	if (h->fl->C_GetAttributeValue(h->sess, obj, &a, 1) != CKR_OK ||
		a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen == 0 ||
		a.ulValueLen > 4096)
		return NULL;
	buf = palloc(a.ulValueLen);
	a.pValue = buf;
	if (h->fl->C_GetAttributeValue(h->sess, obj, &a, 1) != CKR_OK)
	{
		pfree(buf);
		return NULL;
	}
	*len = a.ulValueLen;
	return buf;
}

/*
 * The RSA public key of the key pair labelled label (from its public key
 * object, or the private key object's public attributes), after checking
 * that a private key with that label exists.
 */
bool
fc_hsm_public_key(const char *module, const char *token, const char *label,
				  FcPkey **pub, char *why, size_t whylen)
{
	HsmSession	h;
	CK_OBJECT_HANDLE priv,
				obj;
	uint8	   *n = NULL,
			   *e = NULL;
	size_t		nlen = 0,
				elen = 0;
	bool		ok = false;

	*pub = NULL;
	if (hsm_open(module, token, &h, why, whylen) &&
		hsm_find(&h, CKO_PRIVATE_KEY, label, &priv, why, whylen))
	{
		char		ignore[256];

		if (!hsm_find(&h, CKO_PUBLIC_KEY, label, &obj, ignore, sizeof(ignore)))
			obj = priv;
		n = get_attribute(&h, obj, CKA_MODULUS, &nlen);
		e = get_attribute(&h, obj, CKA_PUBLIC_EXPONENT, &elen);
		if (n && e)
			*pub = fc_rsa_public_from_parts(n, nlen, e, elen);
		if (*pub == NULL)
			snprintf(why, whylen, "HSM key \"%s\" is not an RSA key or its public part cannot be read",
					 label);
		else
			ok = true;
	}
	hsm_close(&h);
	if (n)
		pfree(n);
	if (e)
		pfree(e);
	return ok;
}

/*
 * Unwrap an RSA-OAEP wrapped secret with the private key labelled label.
 * *unsupported tells whether the module refused OAEP with this hash.
 */
bool
fc_hsm_unwrap(const char *module, const char *token, const char *label,
			  int hash, const uint8 *in, size_t inlen, uint8 *out, size_t outsize,
			  size_t *outlen, bool *unsupported, char *why, size_t whylen)
{
	HsmSession	h;
	CK_OBJECT_HANDLE priv;
	CK_RSA_PKCS_OAEP_PARAMS oaep;
	CK_MECHANISM mech;
	uint8		buf[FC_RSA_MAX_BITS / 8];
	CK_ULONG	n = sizeof(buf);
	CK_RV		rv;
	bool		ok = false;

	*outlen = 0;
	*unsupported = false;
	oaep.hashAlg = hash == FC_OAEP_SHA1 ? CKM_SHA_1 : CKM_SHA256;
	oaep.mgf = hash == FC_OAEP_SHA1 ? CKG_MGF1_SHA1 : CKG_MGF1_SHA256;
	oaep.source = CKZ_DATA_SPECIFIED;
	oaep.pSourceData = NULL;
	oaep.ulSourceDataLen = 0;
	mech.mechanism = CKM_RSA_PKCS_OAEP;
	mech.pParameter = &oaep;
	mech.ulParameterLen = sizeof(oaep);

	if (hsm_open(module, token, &h, why, whylen) &&
		hsm_find(&h, CKO_PRIVATE_KEY, label, &priv, why, whylen))
	{
		rv = h.fl->C_DecryptInit(h.sess, &mech, priv);
		*unsupported = (rv == CKR_ARGUMENTS_BAD || rv == CKR_MECHANISM_PARAM_INVALID ||
						rv == CKR_MECHANISM_INVALID);
		if (rv == CKR_OK)
			rv = h.fl->C_Decrypt(h.sess, (CK_BYTE_PTR) in, inlen, buf, &n);
		if (rv != CKR_OK || n > outsize)
			snprintf(why, whylen, "HSM key \"%s\" could not unwrap the key-encryption key "
					 "with RSA-OAEP-%s (CKR 0x%lx)",
					 label, hash == FC_OAEP_SHA1 ? "SHA1" : "SHA256", (unsigned long) rv);
		else
		{
			memcpy(out, buf, n);
			*outlen = n;
			ok = true;
		}
	}
	explicit_bzero(buf, sizeof(buf));
	hsm_close(&h);
	return ok;
}
