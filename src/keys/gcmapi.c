/*-------------------------------------------------------------------------
 *
 * gcmapi.c
 *	  SQL view of the AES-256-GCM implementations (crypto.c): which one
 *	  this backend used for how many messages (gcm_usage), and a
 *	  known-answer self test of each against NIST's GCM test vectors
 *	  (gcm_self_test), run whatever fieldcrypt.crypto_library says.
 *
 *	  The vectors are the AES-256 test cases 13 to 16 of McGrew and Viega,
 *	  "The Galois/Counter Mode of Operation (GCM)", as published with
 *	  NIST's GCM validation (no key of any user is involved).
 *
 * src/keys/gcmapi.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "keys/crypto.h"

PG_FUNCTION_INFO_V1(fieldcrypt_gcm_usage);
PG_FUNCTION_INFO_V1(fieldcrypt_gcm_self_test);

typedef struct GcmVector
{
	const char *name;
	const char *key;
	const char *iv;
	const char *aad;
	const char *plain;
	const char *cipher;
	const char *tag;
} GcmVector;

#define K15 "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
#define P15 "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" \
			"1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
#define C15 "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" \
			"8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"

static const GcmVector vectors[] = {
	{"test case 13", "0000000000000000000000000000000000000000000000000000000000000000",
		"000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
	{"test case 14", "0000000000000000000000000000000000000000000000000000000000000000",
		"000000000000000000000000", "", "00000000000000000000000000000000",
	"cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
	{"test case 15", K15, "cafebabefacedbaddecaf888", "", P15 "1aafd255", C15 "898015ad",
	"b094dac5d93471bdec1a502270e3cc6c"},
	{"test case 16", K15, "cafebabefacedbaddecaf888",
		"feedfacedeadbeeffeedfacedeadbeefabaddad2", P15, C15,
	"76fc6ece0f4e1768cddf8853bb2d551b"},
};

static Size unhex(const char *hex, uint8 *out);
static bool run_vector(const GcmVector *v, FcGcmLib lib);

/* Decode a hex constant; returns its length in bytes. */
static Size
unhex(const char *hex, uint8 *out)
{
	Size		n = strlen(hex) / 2;

	hex_decode(hex, strlen(hex), (char *) out);
	return n;
}

/*
 * Seal with one library and compare ciphertext and tag; open it; and check
 * that a flipped tag bit is refused.
 */
static bool
run_vector(const GcmVector *v, FcGcmLib lib)
{
	uint8		key[FC_KEY_LEN];
	uint8		iv[FC_NONCE_LEN];
	uint8		aad[64];
	uint8		plain[64];
	uint8		want[64];
	uint8		want_tag[FC_TAG_LEN];
	uint8		buf[64];
	uint8		tag[FC_TAG_LEN];
	Size		aadlen,
				len;
	FcCipher   *enc = NULL;
	FcCipher   *dec = NULL;
	bool		ok;

	unhex(v->key, key);
	unhex(v->iv, iv);
	aadlen = unhex(v->aad, aad);
	len = unhex(v->plain, plain);
	unhex(v->cipher, want);
	unhex(v->tag, want_tag);

	enc = fc_cipher_new_using(key, true, lib);
	dec = fc_cipher_new_using(key, false, lib);
	ok = enc != NULL && dec != NULL &&
		fc_gcm_seal(enc, iv, aad, aadlen, plain, len, buf, tag) &&
		memcmp(buf, want, len) == 0 && memcmp(tag, want_tag, FC_TAG_LEN) == 0 &&
		fc_gcm_open(dec, iv, aad, aadlen, want, len, buf, want_tag) &&
		memcmp(buf, plain, len) == 0;
	if (ok)
	{
		tag[FC_TAG_LEN - 1] ^= 1;
		ok = !fc_gcm_open(dec, iv, aad, aadlen, want, len, buf, tag);
	}
	fc_cipher_free(enc);
	fc_cipher_free(dec);
	return ok;
}

/*
 * fieldcrypt.gcm_usage(): per library, whether this server sends messages
 * to it and how many this backend sealed and opened with it.
 */
Datum
fieldcrypt_gcm_usage(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const names[FC_GCM_NLIBS] = {"openssl", "nettle"};

	InitMaterializedSRF(fcinfo, 0);
	for (int lib = 0; lib < FC_GCM_NLIBS; lib++)
	{
		Datum		values[5];
		bool		nulls[5] = {0};

		values[0] = CStringGetTextDatum(names[lib]);
		values[1] = BoolGetDatum(lib == FC_GCM_OPENSSL || fc_gcm_nettle_enabled());
		values[2] = Int64GetDatum((int64) fc_gcm_usage[lib].seals);
		values[3] = Int64GetDatum((int64) fc_gcm_usage[lib].opens);
		values[4] = Int64GetDatum((int64) fc_gcm_usage[lib].bytes);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* fieldcrypt.gcm_self_test(): each NIST vector through each library. */
Datum
fieldcrypt_gcm_self_test(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const names[FC_GCM_NLIBS] = {"openssl", "nettle"};

	InitMaterializedSRF(fcinfo, 0);
	for (int lib = 0; lib < FC_GCM_NLIBS; lib++)
		for (int i = 0; i < (int) lengthof(vectors); i++)
		{
			Datum		values[3];
			bool		nulls[3] = {0};

			values[0] = CStringGetTextDatum(names[lib]);
			values[1] = CStringGetTextDatum(vectors[i].name);
			values[2] = BoolGetDatum(run_vector(&vectors[i], (FcGcmLib) lib));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	return (Datum) 0;
}
