/*-------------------------------------------------------------------------
 *
 * keyport.c
 *	  Key generations that follow the data to other nodes: a logical
 *	  subscriber, a shard, a copy.  export_key_generations() writes the
 *	  metadata of every generation this database holds (number, PBKDF2
 *	  iteration count, salt, key check value; never a key) as a text
 *	  document; import_key_generations(document, passphrase) on another
 *	  database re-derives each generation it does not hold from the
 *	  passphrase with the origin's salt, checks it against the key check
 *	  value, and installs it under the same number, so that envelopes made
 *	  on the origin open there.  Importing each newer document after a key
 *	  change on the origin follows that change.
 *
 *	  The document, one generation a line, ascending, newest last, lines
 *	  separated by newlines (a final newline is accepted):
 *
 *		fieldcrypt key generations 1
 *		generation <n> iterations <i> salt <32 hex> kcv <32 hex>
 *
 *	  Rules, as for set_data_encryption_key: fieldcrypt_admin members (or
 *	  superusers), over TLS, one key change at a time in the cluster (the
 *	  change lock), one per transaction, nothing changed on refusal.  The
 *	  change goes through keyapi.c's pending entry: the keyring is written
 *	  at PRE_COMMIT and shared memory follows at COMMIT; the metadata rows
 *	  (key_source 'imported') are inserted in the caller's transaction.
 *
 *	  A generation number the target already holds must be the same
 *	  generation (salt, iterations, key check value); a different one is
 *	  refused: envelopes name their generation by number only, so the two
 *	  could not both be read.
 *
 * src/keys/keyport.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "keys/cluster_2pc.h"
#include "keys/keyapi.h"
#include "keys/keydoc.h"
#include "keys/keystore.h"
#include "keys/redact.h"
#include "keys/rotstate.h"

#define DOC_MIN_ITERATIONS	600000	/* the least fieldcrypt.kdf_iterations allows */

PG_FUNCTION_INFO_V1(fieldcrypt_export_key_generations);
PG_FUNCTION_INFO_V1(fieldcrypt_import_key_generations);

/* One generation as the document describes it: no key. */
typedef struct DocGeneration
{
	uint32		gen;
	uint32		iterations;
	uint8		salt[FC_SALT_LEN];
	uint8		kcv[FC_KCV_LEN];
} DocGeneration;

/* What an import did, for the caller's messages and result. */
typedef struct ImportResult
{
	int			nmissing;		/* document generations not held before */
	int			nadded;
	Datum		added[FC_MAX_GENERATIONS];
	StringInfoData unopened;	/* "2, 3": missing ones the passphrase did not open */
} ImportResult;

static void doc_error(int line, const char *detail);
static bool parse_hex(const char *s, int len, uint8 *out);
static bool parse_uint(const char *s, int len, uint32 *out);
pg_noinline static int parse_document(const char *doc, DocGeneration *gens);
static void require_keys(FcDbKeys *cur, bool have);
static void import_generations(const char *pass, const DocGeneration *gens, int ndoc,
							   FcDbKeys *cur, FcDbKeys *entry, struct ImportResult *res);

/* ERROR 22P02: the document is not one export_key_generations made. */
static void
doc_error(int line, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid key generations document"),
			 line > 0 ? errdetail("Line %d: %s", line, detail) : errdetail("%s", detail),
			 errhint("Pass the text fieldcrypt.export_key_generations() returned on the origin, unchanged.")));
}

/* Decode exactly 2*len lower- or upper-case hex digits. */
static bool
parse_hex(const char *s, int len, uint8 *out)
{
	for (int i = 0; i < 2 * len; i++)
	{
		char		c = s[i];
		int			v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return false;
		if (i % 2 == 0)
			out[i / 2] = v << 4;
		else
			out[i / 2] |= v;
	}
	return true;
}

/* Decode a decimal number of len digits in 1..INT32_MAX. */
static bool
parse_uint(const char *s, int len, uint32 *out)
{
	uint64		v = 0;

	if (len < 1 || len > 10)
		return false;
	for (int i = 0; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > PG_INT32_MAX)
		return false;
	*out = (uint32) v;
	return true;
}

/*
 * Parse a document into gens (room for FC_MAX_GENERATIONS); returns how
 * many.  Strict: the header, then one line per generation in ascending
 * order, an optional final newline, nothing else.
 */
pg_noinline static int
parse_document(const char *doc, DocGeneration *gens)
{
	const char *p = doc;
	int			line = 0;
	int			n = 0;

	while (*p)
	{
		const char *end = strchr(p, '\n');
		int			len = end ? (int) (end - p) : (int) strlen(p);
		char		word[4][16];
		const char *field[4];
		int			flen[4];
		const char *q = p;

		line++;
		if (line == 1)
		{
			if (len != (int) strlen(DOC_HEADER) || strncmp(p, DOC_HEADER, len) != 0)
				doc_error(1, "The document does not begin with \"" DOC_HEADER "\".");
		}
		else
		{
			DocGeneration *g;

			/* generation <n> iterations <i> salt <hex> kcv <hex> */
			for (int f = 0; f < 4; f++)
			{
				const char *w = q;
				const char *v;

				while (q < p + len && *q != ' ')
					q++;
				if (q - w >= (int) sizeof(word[f]) || q >= p + len)
					doc_error(line, "A generation line has the form \"generation N iterations N salt HEX kcv HEX\".");
				memcpy(word[f], w, q - w);
				word[f][q - w] = '\0';
				v = ++q;
				while (q < p + len && *q != ' ')
					q++;
				field[f] = v;
				flen[f] = (int) (q - v);
				if (f < 3 && q < p + len)
					q++;
			}
			if (q != p + len || strcmp(word[0], "generation") != 0 ||
				strcmp(word[1], "iterations") != 0 || strcmp(word[2], "salt") != 0 ||
				strcmp(word[3], "kcv") != 0)
				doc_error(line, "A generation line has the form \"generation N iterations N salt HEX kcv HEX\".");
			if (n >= FC_MAX_GENERATIONS)
				doc_error(line, psprintf("A document holds at most %d generations.", FC_MAX_GENERATIONS));
			g = &gens[n];
			if (!parse_uint(field[0], flen[0], &g->gen))
				doc_error(line, "The generation number is not a positive integer.");
			if (!parse_uint(field[1], flen[1], &g->iterations) ||
				g->iterations < DOC_MIN_ITERATIONS)
				doc_error(line, psprintf("The iteration count is not an integer of at least %d.",
										 DOC_MIN_ITERATIONS));
			if (flen[2] != 2 * FC_SALT_LEN || !parse_hex(field[2], FC_SALT_LEN, g->salt))
				doc_error(line, psprintf("The salt is not %d hexadecimal digits.", 2 * FC_SALT_LEN));
			if (flen[3] != 2 * FC_KCV_LEN || !parse_hex(field[3], FC_KCV_LEN, g->kcv))
				doc_error(line, psprintf("The key check value is not %d hexadecimal digits.",
										 2 * FC_KCV_LEN));
			if (n > 0 && g->gen <= gens[n - 1].gen)
				doc_error(line, "Generations are not in ascending order.");
			n++;
		}
		if (!end)
			break;
		p = end + 1;
	}
	if (line == 0)
		doc_error(0, "The document is empty.");
	if (n == 0)
		doc_error(0, "The document lists no key generation.");
	return n;
}

/* ERROR 55000 unless this database holds its keys (lookup result have). */
static void
require_keys(FcDbKeys *cur, bool have)
{
	if (have)
		return;
	fc_secure_region_free(cur, sizeof(FcDbKeys));
	fc_key_missing_error();
}

/*
 * fieldcrypt.export_key_generations() RETURNS text
 *
 * The metadata of every generation this database holds, oldest first.
 */
Datum
fieldcrypt_export_key_generations(PG_FUNCTION_ARGS)
{
	FcDbKeys   *cur;
	char	   *doc;

	fc_require_role(FC_ADMIN_ROLE, "export key generations");
	fc_require_tls("fieldcrypt.export_key_generations");
	fc_check_ring_usable();

	fc_secure_region_alloc((void **) &cur, sizeof(FcDbKeys));
	require_keys(cur, fc_db_lookup(MyDatabaseId, cur));
	doc = fc_key_generations_document(cur);
	fc_secure_region_free(cur, sizeof(FcDbKeys));
	PG_RETURN_TEXT_P(cstring_to_text(doc));
}

/*
 * fieldcrypt.import_key_generations(document text, passphrase text)
 * RETURNS integer[]
 *
 * Installs every generation of the document that this database does not
 * hold and that the passphrase opens; returns their numbers (empty when
 * the database already holds them all).  The newest generation held
 * afterwards is the current one; if it came in now, the passphrase becomes
 * the current key (retrieve_data_encryption_key), and older generations are
 * re-encrypted and destroyed by the rotation worker as after a key change.
 */
Datum
fieldcrypt_import_key_generations(PG_FUNCTION_ARGS)
{
	char	   *doc;
	char	   *volatile pass = NULL;
	DocGeneration gens[FC_MAX_GENERATIONS];
	int			ndoc;
	FcDbKeys   *cur;
	FcDbKeys   *entry;
	ImportResult *res = palloc0(sizeof(ImportResult));

	if (!PG_ARGISNULL(1))
	{
		pass = text_to_cstring(PG_GETARG_TEXT_PP(1));
		fc_register_secret(pass, strlen(pass));
		fc_redact_activity();
	}
	fc_require_role(FC_ADMIN_ROLE, "import key generations");
	fc_require_tls("fieldcrypt.import_key_generations");
	if (PG_ARGISNULL(0) || pass == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key generations document and passphrase must not be null")));
	if (strlen(pass) > FC_MAX_PASSPHRASE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("data encryption key is too long"),
				 errdetail("The key may be at most %d bytes long.", FC_MAX_PASSPHRASE)));
	doc = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ndoc = parse_document(doc, gens);
	fc_check_ring_usable();
	entry = fc_key_change_prepare();
	fc_acquire_change_lock();

	fc_secure_region_alloc((void **) &cur, sizeof(FcDbKeys));
	initStringInfo(&res->unopened);
	PG_TRY();
	{
		import_generations(pass, gens, ndoc, cur, entry, res);
	}
	PG_FINALLY();
	{
		explicit_bzero(cur, sizeof(FcDbKeys));
		fc_secure_region_free(cur, sizeof(FcDbKeys));
		explicit_bzero(pass, strlen(pass));
	}
	PG_END_TRY();

	if (res->nmissing == 0)
		ereport(NOTICE,
				(errmsg("this database already holds every key generation of the document")));
	else if (res->unopened.len > 0)
		ereport(NOTICE,
				(errmsg("key generations %s of the document were not imported", res->unopened.data),
				 errdetail("They were made with another passphrase."),
				 errhint("Import the document again with that passphrase if values of them may still arrive.")));
	PG_RETURN_ARRAYTYPE_P(construct_array(res->added, res->nadded, INT4OID, sizeof(int32), true,
										  TYPALIGN_INT));
}

/*
 * The body of import_key_generations, under the change lock: checks the
 * target, derives the missing generations into entry and stages it.
 */
static void
import_generations(const char *pass, const DocGeneration *gens, int ndoc,
				   FcDbKeys *cur, FcDbKeys *entry, ImportResult *res)
{
	bool		held[FC_MAX_GENERATIONS] = {0};
	bool		have;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	have = fc_db_lookup(MyDatabaseId, cur);
	if (!have && fc_meta_current().found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the data encryption key of this database has not been restored"),
				 errdetail("The database was imported or copied without its key; nothing was changed."),
				 errhint("Restore it with fieldcrypt.set_data_encryption_key(key) over TLS first.")));

	/* a number held here must be the same generation: checked before any derivation */
	for (int d = 0; have && d < ndoc; d++)
		for (int i = 0; i < cur->ngens; i++)
		{
			const FcGeneration *h = &cur->gens[i];

			if (h->gen != gens[d].gen)
				continue;
			if (h->iterations != gens[d].iterations ||
				memcmp(h->salt, gens[d].salt, FC_SALT_LEN) != 0 ||
				!fc_equal_ct(h->kcv, gens[d].kcv, FC_KCV_LEN))
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_OBJECT),
						 errmsg("this database holds a different key generation %u", h->gen),
						 errdetail("Both databases made their own generation %u; values name their "
								   "generation by number only, so one of them could not be read. "
								   "Nothing was changed.", h->gen),
						 errhint("Import into a database where the extension was created with "
								 "fieldcrypt.auto_activate = off, before any value is encrypted there.")));
			held[d] = true;
		}
	for (int d = 0; d < ndoc; d++)
		if (!held[d])
			res->nmissing++;
	if (res->nmissing == 0)
		return;

	if (have)
	{
		fc_rotstate_check_idle(cur);
		memcpy(entry, cur, sizeof(FcDbKeys));
	}
	else
	{
		entry->dboid = MyDatabaseId;
		entry->activated_at = now;
	}
	if (entry->ngens + res->nmissing > FC_MAX_GENERATIONS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("this database would keep more than %d key generations", FC_MAX_GENERATIONS),
				 errdetail("It keeps %d and the document adds %d; nothing was changed.",
						   entry->ngens, res->nmissing),
				 errhint("Let re-encryption destroy the older generations first "
						 "(fieldcrypt.rotation_progress).")));

	/* derive each missing generation; keep those the passphrase opens */
	for (int d = 0; d < ndoc; d++)
	{
		FcGeneration *g = &entry->gens[entry->ngens];

		if (held[d])
			continue;
		CHECK_FOR_INTERRUPTS();
		fc_derive_generation(pass, gens[d].gen, gens[d].salt, gens[d].iterations, g);
		if (!fc_equal_ct(g->kcv, gens[d].kcv, FC_KCV_LEN))
		{
			explicit_bzero(g, sizeof(FcGeneration));
			appendStringInfo(&res->unopened, "%s%u", res->unopened.len ? ", " : "", gens[d].gen);
			continue;
		}
		res->added[res->nadded++] = Int32GetDatum((int32) gens[d].gen);
		entry->ngens++;
		if (gens[d].gen > entry->current_gen)
		{
			entry->current_gen = gens[d].gen;
			entry->source = FC_SOURCE_RESTORED;
			entry->set_at = now;
			strlcpy(entry->passphrase, pass, sizeof(entry->passphrase));
		}
	}
	if (res->nadded == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PASSWORD),
				 errmsg("passphrase does not open any key generation of the document that this database lacks"),
				 errdetail("The key check values of generations %s differ; nothing was changed.",
						   res->unopened.data),
				 errhint("Give the passphrase that was set on the origin for one of them.")));
	for (int i = entry->ngens - res->nadded; i < entry->ngens; i++)
		fc_meta_insert(&entry->gens[i], "imported", now);
	fc_key_change_stage();
	/* on a Citus coordinator: prepared on every worker, or ERROR (cluster_2pc.c) */
	fc_cluster_key_change(entry, pass);
}
