/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keeps secrets that pass through this backend (passphrases given to
 *	  set_data_encryption_key, plaintexts written to encrypted columns) out
 *	  of the server log, pgaudit, auto_explain, parallel workers and
 *	  pg_stat_activity, without ever changing what the client receives.
 *
 *	  Literal masking (the main mechanism).  Parse analysis (writeonly.c)
 *	  tells, for each statement text, which of its literals can reach an
 *	  encrypted column, by their byte offsets; a statement that cannot be
 *	  traced is marked "mask every literal".  Texts are remembered by a hash,
 *	  for the session (a prepared statement runs long after it was parsed).
 *	  fc_mask_text() rewrites such a text with those literal tokens (found by
 *	  a small tokenizer that never fails) replaced by '[redacted]': that
 *	  copy is what the STATEMENT line, pg_stat_activity, the executor (so
 *	  pgaudit, auto_explain and parallel workers) and log-only lines quoting
 *	  the text show.  Identifiers and keywords are never touched.
 *
 *	  Statements that fail before parse analysis finished (a misspelt
 *	  column, a syntax error) have unknown targets: in a database where the
 *	  extension is installed (or not yet known), every literal of their
 *	  STATEMENT line is masked.
 *
 *	  Remembered secrets (the second mechanism).  Values known to be secret
 *	  (passphrases, plaintexts given to an input function, parameters of a
 *	  sensitive statement) are kept, for the current top-level statement
 *	  only, in a ring in memory excluded from core dumps; they mask the
 *	  literals holding them in any statement text (a DO body), and their
 *	  occurrences in the server-log copy of messages of that statement
 *	  (CONTEXT lines, pgaudit parameters).  Secrets shorter than
 *	  FC_MIN_REDACT_LEN bytes are not remembered.
 *
 *	  The client always gets the message as PostgreSQL made it: when the
 *	  server-log copy differs, the hook sends the original to the client
 *	  itself and lets PostgreSQL write the masked copy to the log only.
 *
 *	  Bind parameters are logged (log_min_duration_statement at Bind) before
 *	  any value reaches us: the "parameters:" detail of log lines of
 *	  sensitive statements is hidden whole.
 *
 *	  What this cannot cover: log_statement, which writes the text as it
 *	  arrives, before any extension sees it.
 *
 *	  The file is longer than 800 lines because the log hook, the literal
 *	  tokenizer and the ring of remembered secrets share the state of the
 *	  current top-level statement (its hash, how far analysis got, the
 *	  nested texts it ran); split, that state would be exported to all.
 *
 * src/keys/redact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "libpq/libpq.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/elog.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "keys/keystore.h"
#include "keys/literal.h"
#include "keys/redact.h"

#define RING_SLOTS		1024
#define RING_BYTES		(1024 * 1024)	/* secure arena for remembered secrets */

typedef struct SecretRing
{
	int			next;			/* slot to overwrite next */
	Size		used;			/* arena bytes in use (bump, reset on wrap) */
	struct
	{
		Size		off;
		Size		len;		/* 0 = empty slot */
	}			slot[RING_SLOTS];
	char		arena[RING_BYTES];
	char		probe[RING_BYTES / 4 + 1];	/* see pnstrdup_secret_probe */
} SecretRing;

static SecretRing *ring = NULL;
static char *masked_statement = NULL;	/* see fc_emit_log_hook */
static bool copy_into_encrypted = false;	/* see fc_redact_copy_from */

/*
 * COPY FROM into a table with encrypted columns is running: its error
 * context lines ("COPY t, line 3: \"...\"") quote raw input lines, which
 * hold plaintext, when a line fails before any input function ran.
 */
void
fc_redact_copy_from(bool on)
{
	copy_into_encrypted = on;
}

/* Is a COPY FROM into a table with encrypted columns running? */
bool
fc_redact_copy_from_active(void)
{
	return copy_into_encrypted;
}

/*
 * Cut the quoted input line out of every "COPY t, line N: \"...\"" line of
 * an error context (it need not be the first line: a trigger's own context
 * comes before it).  Returns a new string, zeroing the old one.
 */
static char *
redact_copy_context(char *context)
{
	StringInfoData buf;
	const char *line;

	if (context == NULL || strstr(context, "COPY ") == NULL)
		return context;
	initStringInfo(&buf);
	line = context;
	while (*line)
	{
		const char *eol = strchr(line, '\n');
		size_t		len = eol ? (size_t) (eol - line) : strlen(line);
		const char *q = NULL;

		if (strncmp(line, "COPY ", 5) == 0)
		{
			q = strstr(line, ": \"");
			if (q && q >= line + len)
				q = NULL;
		}
		if (q)
		{
			appendBinaryStringInfo(&buf, line, q + 2 - line);
			appendStringInfoString(&buf, FC_REDACTED);
		}
		else
			appendBinaryStringInfo(&buf, line, len);
		if (!eol)
			break;
		appendStringInfoChar(&buf, '\n');
		line = eol + 1;
	}
	explicit_bzero(context, strlen(context));
	return buf.data;
}

/*
 * Hashes of statement texts that are sensitive, kept for the whole session
 * (a prepared statement may be bound long after it was parsed); NULL until
 * the first one, the fast path for sessions that never write a secret.
 */
typedef struct SensitiveEntry
{
	uint64		key;			/* text_hash of the statement text */
	bool		all;			/* mask every literal */
	int			nlocs;
	int			maxlocs;
	int		   *locs;			/* byte offsets of literals to mask */
} SensitiveEntry;

static HTAB *sensitive = NULL;
static MemoryContext sensitive_cxt = NULL;
#define SENSITIVE_MAX 20000

/*
 * Lengths of the texts in sensitive, modulo SENSITIVE_LEN_BITS: a text of
 * any other length is not in it, which most statements learn without being
 * hashed.  Bits are never cleared while the table lives (a false hit only
 * costs the hash lookup).
 */
#define SENSITIVE_LEN_BITS	1024
static uint64 sensitive_lens[SENSITIVE_LEN_BITS / 64];

/*
 * The current top-level statement: its hash, how far parse analysis got
 * through it, and the nested statement texts found sensitive while it runs
 * (PL/pgSQL, SQL functions), whose copies log-only lines may quote.
 */
#define RECENT_MAX		16
#define RECENT_MAX_LEN	(64 * 1024)
static uint64 top_hash = 0;
static int	analyzed_upto = -1;
static int	recent_count = 0;
static char *recent[RECENT_MAX];
static int	ext_state = -1;		/* extension installed here: -1 unknown, 0, 1 */
static bool ring_live = false;	/* the ring holds a secret of this statement */
static emit_log_hook_type prev_emit_log_hook = NULL;

static char *redact_string(char *s);
static bool holds_secret(const char *s);
static bool holds_secret_n(const char *s, size_t n);
static SensitiveEntry *lookup_entry(const char *src, bool create);
static void fc_emit_log_hook(ErrorData *edata);

/* Install the log hook; called from _PG_init. */
void
fc_redact_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = fc_emit_log_hook;
}

/* Remember one spelling of a secret. */
static void
remember(const char *s, size_t len)
{
	int			i;

	if (len < FC_MIN_REDACT_LEN || len > RING_BYTES / 4)
		return;
	if (ring == NULL)
		fc_secure_region_alloc((void **) &ring, sizeof(SecretRing));
	/* already known? */
	for (i = 0; i < RING_SLOTS; i++)
		if (ring->slot[i].len == len &&
			memcmp(ring->arena + ring->slot[i].off, s, len) == 0)
			return;
	if (ring->used + len > RING_BYTES)
	{
		/* arena full: start over, forgetting everything */
		explicit_bzero(ring, sizeof(SecretRing));
	}
	i = ring->next;
	if (ring->slot[i].len > 0)
		explicit_bzero(ring->arena + ring->slot[i].off, ring->slot[i].len);
	ring->slot[i].off = ring->used;
	ring->slot[i].len = len;
	memcpy(ring->arena + ring->used, s, len);
	ring->used += len;
	ring_live = true;
	ring->next = (i + 1) % RING_SLOTS;
}

/* s with every quote character q doubled (palloc'd), as SQL or CSV write it. */
static char *
double_quotes(const char *s, size_t len, char q, size_t *outlen)
{
	char	   *out = palloc(len * 2 + 1);
	size_t		n = 0;

	for (size_t i = 0; i < len; i++)
	{
		out[n++] = s[i];
		if (s[i] == q)
			out[n++] = q;
	}
	out[n] = '\0';
	*outlen = n;
	return out;
}

/* Remember s and its spellings with double quotes doubled once and twice. */
static void
remember_csv(const char *s, size_t len)
{
	size_t		l1,
				l2;
	char	   *once,
			   *twice;

	remember(s, len);
	if (memchr(s, '"', len) == NULL)
		return;
	/* pgaudit's CSV field, and its parameter field, which is escaped twice */
	once = double_quotes(s, len, '"', &l1);
	twice = double_quotes(once, l1, '"', &l2);
	remember(once, l1);
	remember(twice, l2);
	explicit_bzero(once, l1);
	explicit_bzero(twice, l2);
	pfree(once);
	pfree(twice);
}

/*
 * Remember a secret so that later log lines of this backend hide it: as
 * it is, as an SQL literal writes it (single quotes doubled), and as
 * pgaudit's CSV writes either (double quotes doubled, once or twice).
 */
void
fc_register_secret(const char *s, size_t len)
{
	size_t		l1;
	char	   *sql;

	remember_csv(s, len);
	if (memchr(s, '\'', len) == NULL)
		return;
	sql = double_quotes(s, len, '\'', &l1);
	remember_csv(sql, l1);
	explicit_bzero(sql, l1);
	pfree(sql);
}

static uint64
text_hash(const char *s)
{
	return hash_bytes_extended((const unsigned char *) s, strlen(s), 0x46430001) | 1;
}

/* The entry of a statement text (created if asked), or NULL. */
static SensitiveEntry *
lookup_entry(const char *src, bool create)
{
	uint64		h;
	Size		len;
	SensitiveEntry *e;
	bool		found;

	if (src == NULL || (sensitive == NULL && !create))
		return NULL;
	len = strlen(src) % SENSITIVE_LEN_BITS;
	if (!create && (sensitive_lens[len / 64] & (UINT64CONST(1) << (len % 64))) == 0)
		return NULL;
	if (sensitive != NULL && create && hash_get_num_entries(sensitive) >= SENSITIVE_MAX)
	{
		/* bounded: sessions that inline values make every text distinct */
		hash_destroy(sensitive);
		MemoryContextDelete(sensitive_cxt);
		sensitive = NULL;
		memset(sensitive_lens, 0, sizeof(sensitive_lens));
	}
	if (sensitive == NULL)
	{
		HASHCTL		ctl;

		sensitive_cxt = AllocSetContextCreate(TopMemoryContext, "fieldcrypt sensitive statements",
											  ALLOCSET_SMALL_SIZES);
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(SensitiveEntry);
		ctl.hcxt = sensitive_cxt;
		sensitive = hash_create("fieldcrypt sensitive statements", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (create)
		sensitive_lens[len / 64] |= UINT64CONST(1) << (len % 64);
	h = text_hash(src);
	e = hash_search(sensitive, &h, create ? HASH_ENTER : HASH_FIND, &found);
	if (e && create && !found)
	{
		e->all = false;
		e->nlocs = e->maxlocs = 0;
		e->locs = NULL;
	}
	return e;
}

/* Keep a copy of a nested sensitive text that log-only lines may quote. */
static void
remember_recent(const char *src)
{
	size_t		len = strlen(src);

	if (src == debug_query_string || len > RECENT_MAX_LEN || recent_count >= RECENT_MAX)
		return;
	for (int i = 0; i < recent_count; i++)
		if (strcmp(recent[i], src) == 0)
			return;
	recent[recent_count++] = MemoryContextStrdup(TopMemoryContext, src);
}

/*
 * Remember that a statement text is sensitive (writes to encrypted columns,
 * or calls what may): the "parameters:" detail of its log lines is then
 * hidden whole, since a bind parameter is logged (at Bind, by
 * log_min_duration_statement) before any of our code sees its value.
 */
void
fc_mark_sensitive_statement(const char *src)
{
	if (lookup_entry(src, true))
		remember_recent(src);
}

/* The literal that starts at byte offset loc of src can reach a secret's place. */
void
fc_taint_literal(const char *src, int loc)
{
	SensitiveEntry *e = lookup_entry(src, true);

	if (e == NULL || loc < 0)
		return;
	remember_recent(src);
	for (int i = 0; i < e->nlocs; i++)
		if (e->locs[i] == loc)
			return;
	if (e->nlocs == e->maxlocs)
	{
		e->maxlocs = e->maxlocs ? e->maxlocs * 2 : 8;
		e->locs = e->locs ? repalloc(e->locs, sizeof(int) * e->maxlocs) :
			MemoryContextAlloc(sensitive_cxt, sizeof(int) * e->maxlocs);
	}
	e->locs[e->nlocs++] = loc;
}

/* Every literal of src is to be masked (where they go cannot be told). */
void
fc_mask_all_literals(const char *src)
{
	SensitiveEntry *e = lookup_entry(src, true);

	if (e)
	{
		e->all = true;
		remember_recent(src);
	}
}

/* Was this statement text marked sensitive? */
bool
fc_statement_is_sensitive(const char *src)
{
	return lookup_entry(src, false) != NULL;
}

/*
 * A new top-level statement begins (src is debug_query_string): forget the
 * secrets and nested texts of the previous one, so that they never mask
 * anything of later statements (an identifier spelt like an old passphrase).
 */
void
fc_redact_new_statement(const char *src)
{
	uint64		h;

	if (src == NULL)
		return;
	h = text_hash(src);
	if (h == top_hash)
		return;
	top_hash = h;
	analyzed_upto = -1;
	for (int i = 0; i < recent_count; i++)
		pfree(recent[i]);
	recent_count = 0;
	if (ring != NULL && ring_live)
		explicit_bzero(ring, sizeof(SecretRing));
	ring_live = false;
}

/*
 * Parse analysis of the top-level statement text src got through byte
 * offset upto (end of the statement analyzed); installed tells whether the
 * extension is installed in this database (-1: not known here).
 */
void
fc_note_analyzed(const char *src, int upto, int installed)
{
	if (installed >= 0)
		ext_state = installed;
	if (src != debug_query_string)
		return;
	fc_redact_new_statement(src);
	if (upto > analyzed_upto)
		analyzed_upto = upto;
}

/* Did parse analysis finish every statement of the top-level text src? */
static bool
analysis_complete(const char *src)
{
	const char *p;

	if (text_hash(src) != top_hash || analyzed_upto < 0)
		return false;
	if ((size_t) analyzed_upto >= strlen(src))
		return true;
	for (p = src + analyzed_upto; *p; p++)
		if (!isspace((unsigned char) *p) && *p != ';')
			return false;
	return true;
}

/*
 * A small SQL tokenizer that never fails: what is a literal (string in any
 * of its spellings, number), a word, or anything else.  Comments and
 * quoted identifiers are skipped as such, so that a quote inside them is
 * never taken for a literal.
 */
typedef enum TokKind
{
	TOK_END,
	TOK_WORD,
	TOK_STRING,
	TOK_NUMBER,
	TOK_SIGN,
	TOK_OTHER
} TokKind;

static bool
ident_char(char c)
{
	return isalnum((unsigned char) c) || c == '_' || c == '$' || IS_HIGHBIT_SET(c);
}

/* The end of the quoted string whose opening quote is at p. */
static const char *
skip_quoted(const char *p, bool backslash)
{
	for (p++; *p; p++)
	{
		if (backslash && *p == '\\' && p[1])
			p++;
		else if (*p == '\'' && p[1] == '\'')
			p++;
		else if (*p == '\'')
			return p + 1;
	}
	return p;
}

/* Scan one token at or after p: sets *start and *kind, returns its end. */
static const char *
next_token(const char *p, const char **start, TokKind *kind)
{
	for (;;)
	{
		while (*p && isspace((unsigned char) *p))
			p++;
		if (p[0] == '-' && p[1] == '-')
		{
			while (*p && *p != '\n')
				p++;
			continue;
		}
		if (p[0] == '/' && p[1] == '*')
		{
			int			depth = 1;

			for (p += 2; *p && depth > 0; p++)
			{
				if (p[0] == '/' && p[1] == '*')
					depth++, p++;
				else if (p[0] == '*' && p[1] == '/')
					depth--, p++;
			}
			continue;
		}
		break;
	}
	*start = p;
	if (*p == '\0')
	{
		*kind = TOK_END;
		return p;
	}
	if (*p == '\'' || ((p[0] == 'E' || p[0] == 'e' || p[0] == 'B' || p[0] == 'b' ||
						p[0] == 'X' || p[0] == 'x' || p[0] == 'N' || p[0] == 'n') && p[1] == '\'') ||
		((p[0] == 'U' || p[0] == 'u') && p[1] == '&' && p[2] == '\''))
	{
		bool		backslash = (p[0] == 'E' || p[0] == 'e');
		const char *q = p;

		while (*q != '\'')
			q++;
		q = skip_quoted(q, backslash);
		/* 'a' <newline> 'b' is one literal */
		for (;;)
		{
			const char *r = q;
			bool		newline = false;

			while (*r && isspace((unsigned char) *r))
				newline |= (*r++ == '\n');
			if (!newline || *r != '\'')
				break;
			q = skip_quoted(r, backslash);
		}
		*kind = TOK_STRING;
		return q;
	}
	if (*p == '$' && !isdigit((unsigned char) p[1]))
	{
		const char *q = p + 1;

		while (ident_char(*q) && *q != '$')
			q++;
		if (*q == '$')
		{
			size_t		taglen = q - p + 1;
			const char *end = q + 1;

			while ((end = strchr(end, '$')) != NULL && strncmp(end, p, taglen) != 0)
				end++;
			*kind = TOK_STRING;
			return end ? end + taglen : p + strlen(p);
		}
	}
	if (*p == '"')
	{
		const char *q;

		for (q = p + 1; *q; q++)
			if (*q == '"')
			{
				if (q[1] != '"')
					break;
				q++;
			}
		*kind = TOK_WORD;
		return *q ? q + 1 : q;
	}
	if (isdigit((unsigned char) *p) || (*p == '.' && isdigit((unsigned char) p[1])))
	{
		const char *q = p;

		while (isalnum((unsigned char) *q) || *q == '.' || *q == '_' ||
			   ((*q == '+' || *q == '-') && (q[-1] == 'e' || q[-1] == 'E')))
			q++;
		*kind = TOK_NUMBER;
		return q;
	}
	if (ident_char(*p))
	{
		const char *q = p;

		while (ident_char(*q))
			q++;
		*kind = TOK_WORD;
		return q;
	}
	*kind = (*p == '-' || *p == '+') ? TOK_SIGN : TOK_OTHER;
	return p + 1;
}

/* Is one of the entry's locations at off? */
static bool
has_loc(SensitiveEntry *e, int off)
{
	if (e == NULL)
		return false;
	for (int i = 0; i < e->nlocs; i++)
		if (e->locs[i] == off)
			return true;
	return false;
}

/*
 * src with its literals masked: every one if all, else those the entry
 * names (a location may point at a sign or a type name just before the
 * literal: "-5", "date '...'") and those holding a remembered secret.
 * NULL if nothing was masked.
 */
static char *
mask_literals(const char *src, SensitiveEntry *e, bool all)
{
	StringInfoData buf;
	const char *p = src;
	const char *copied = src;
	const char *prev_start = NULL;
	TokKind		prev_kind = TOK_END;
	const char *prev_end = NULL;
	bool		any = false;

	for (;;)
	{
		const char *start;
		TokKind		kind;
		const char *end = next_token(p, &start, &kind);
		bool		mask = false;

		if (kind == TOK_END)
			break;
		if (kind == TOK_STRING || kind == TOK_NUMBER)
		{
			mask = all || has_loc(e, start - src) ||
				((prev_kind == TOK_SIGN || prev_kind == TOK_WORD) &&
				 has_loc(e, prev_start - src) &&
				 strspn(prev_end, " \t\r\n\f") >= (size_t) (start - prev_end)) ||
				holds_secret_n(start, end - start);
		}
		if (mask)
		{
			if (!any)
				initStringInfo(&buf);
			any = true;
			appendBinaryStringInfo(&buf, copied, start - copied);
			appendStringInfoString(&buf, kind == TOK_STRING ? "'" FC_REDACTED "'" : FC_REDACTED);
			copied = end;
		}
		prev_start = start;
		prev_kind = kind;
		prev_end = end;
		p = end;
	}
	if (!any)
		return NULL;
	appendStringInfoString(&buf, copied);
	return buf.data;
}

/*
 * A copy of a statement text with the literals that may hold a secret
 * masked (palloc'd), or NULL if it needs none.
 */
char *
fc_mask_text(const char *src)
{
	SensitiveEntry *e;

	if (src == NULL)
		return NULL;
	e = lookup_entry(src, false);
	if (e == NULL && !ring_live)
		return NULL;
	return mask_literals(src, e, e && e->all);
}

/* Hide the parameter values of a "parameters: $1 = '...'" detail. */
static char *
redact_parameters(char *detail)
{
	if (detail && strncmp(detail, "parameters: ", 12) == 0)
		return pstrdup("parameters: " FC_REDACTED);
	return detail;
}

/* True if the n bytes at s contain a remembered secret. */
static bool
holds_secret_n(const char *s, size_t n)
{
	if (s == NULL || !ring_live)
		return false;
	for (int i = 0; i < RING_SLOTS; i++)
	{
		Size		len = ring->slot[i].len;
		const char *sec = ring->arena + ring->slot[i].off;

		if (len == 0 || len > n)
			continue;
		for (const char *p = s; p + len <= s + n; p++)
			if (*p == sec[0] && memcmp(p, sec, len) == 0)
				return true;
	}
	return false;
}

/* True if s contains a remembered secret. */
static bool
holds_secret(const char *s)
{
	return s != NULL && holds_secret_n(s, strlen(s));
}

/*
 * A NUL-terminated copy of a remembered secret (which the arena stores
 * without terminator), in the ring's own scratch area.
 */
static const char *
pnstrdup_secret_probe(const char *sec, Size len)
{
	memcpy(ring->probe, sec, len);
	ring->probe[len] = '\0';
	return ring->probe;
}

/* Return s with every remembered secret replaced (palloc'd), or s itself. */
static char *
redact_string(char *s)
{
	StringInfoData buf;

	if (!holds_secret(s))
		return s;
	for (int i = 0; i < RING_SLOTS; i++)
	{
		Size		len = ring->slot[i].len;
		const char *sec = ring->arena + ring->slot[i].off;
		const char *p;
		const char *from;

		if (len == 0 || strstr(s, pnstrdup_secret_probe(sec, len)) == NULL)
			continue;
		initStringInfo(&buf);
		from = s;
		while ((p = strchr(from, sec[0])) != NULL)
		{
			if (strncmp(p, sec, len) == 0)
			{
				appendBinaryStringInfo(&buf, from, p - from);
				appendStringInfoString(&buf, FC_REDACTED);
				from = p + len;
			}
			else
			{
				appendBinaryStringInfo(&buf, from, p - from + 1);
				from = p + 1;
			}
		}
		appendStringInfoString(&buf, from);
		s = buf.data;
	}
	return s;
}

/* Every '...' of s replaced by '[redacted]' (a plan's constants). */
static char *
mask_quoted(const char *s)
{
	StringInfoData buf;
	const char *p;

	if (strchr(s, '\'') == NULL)
		return (char *) s;
	initStringInfo(&buf);
	while ((p = strchr(s, '\'')) != NULL)
	{
		appendBinaryStringInfo(&buf, s, p - s);
		appendStringInfoString(&buf, "'" FC_REDACTED "'");
		s = skip_quoted(p, false);
	}
	appendStringInfoString(&buf, s);
	return buf.data;
}

/* s with quote character q doubled (palloc'd), as CSV writes it. */
static char *
doubled(const char *s, char q)
{
	size_t		n;

	return double_quotes(s, strlen(s), q, &n);
}

typedef struct KnownText
{
	const char *text;			/* as it may appear in a log line */
	const char *masked;			/* what to write instead */
} KnownText;

/*
 * The server-log copy of one message field: statement texts it quotes
 * (raw or CSV-escaped, as pgaudit writes them) are replaced by their
 * masked copies; in the rest, remembered secrets are masked, and in
 * log-only lines of a sensitive statement every quoted constant too (the
 * plan auto_explain prints).  Returns s itself if nothing changed.
 */
static char *
redact_field(char *s, KnownText *known, int nknown, bool quoted_too)
{
	StringInfoData buf;
	const char *p = s;
	bool		any = false;

	if (s == NULL)
		return s;
	initStringInfo(&buf);
	while (*p)
	{
		const char *best = NULL;
		int			bk = -1;
		const char *gap_end;
		char	   *gap;
		char	   *red;

		for (int k = 0; k < nknown; k++)
		{
			const char *hit = strstr(p, known[k].text);

			if (hit && (best == NULL || hit < best ||
						(hit == best && strlen(known[k].text) > strlen(known[bk].text))))
				best = hit, bk = k;
		}
		gap_end = best ? best : p + strlen(p);
		gap = pnstrdup(p, gap_end - p);
		red = redact_string(gap);
		if (quoted_too)
			red = mask_quoted(red);
		any |= strcmp(red, gap) != 0;
		appendStringInfoString(&buf, red);
		if (best == NULL)
			break;
		appendStringInfoString(&buf, known[bk].masked);
		any |= strcmp(known[bk].masked, known[bk].text) != 0;
		p = best + strlen(known[bk].text);
	}
	if (!any)
	{
		pfree(buf.data);
		return s;
	}
	return buf.data;
}

/* The severity word PostgreSQL writes for a level (elog.c's error_severity). */
static const char *
severity_word(int elevel)
{
	switch (elevel)
	{
		case DEBUG1:
		case DEBUG2:
		case DEBUG3:
		case DEBUG4:
		case DEBUG5:
			return "DEBUG";
		case LOG:
		case LOG_SERVER_ONLY:
			return "LOG";
		case INFO:
			return "INFO";
		case NOTICE:
			return "NOTICE";
		case WARNING:
		case WARNING_CLIENT_ONLY:
			return "WARNING";
		case ERROR:
			return "ERROR";
		case FATAL:
			return "FATAL";
		case PANIC:
			return "PANIC";
	}
	return "???";
}

static void
send_field(StringInfo buf, char code, const char *s)
{
	if (s == NULL)
		return;
	pq_sendbyte(buf, code);
	if (in_error_recursion_trouble())
		pq_send_ascii_string(buf, s);
	else
		pq_sendstring(buf, s);
}

/*
 * Send a message to the client exactly as PostgreSQL would (protocol 3,
 * elog.c's send_message_to_frontend): used when the server-log copy of it
 * is masked, so that the client still gets the original.
 */
static void
send_to_client(const ErrorData *edata)
{
	StringInfoData msgbuf;
	const char *sev = severity_word(edata->elevel);
	char		tbuf[12];

	pq_beginmessage(&msgbuf, (edata->elevel < ERROR) ? 'N' : 'E');
	send_field(&msgbuf, PG_DIAG_SEVERITY, _(sev));
	send_field(&msgbuf, PG_DIAG_SEVERITY_NONLOCALIZED, sev);
	send_field(&msgbuf, PG_DIAG_SQLSTATE, unpack_sql_state(edata->sqlerrcode));
	send_field(&msgbuf, PG_DIAG_MESSAGE_PRIMARY,
			   edata->message ? edata->message : _("missing error text"));
	send_field(&msgbuf, PG_DIAG_MESSAGE_DETAIL, edata->detail);
	send_field(&msgbuf, PG_DIAG_MESSAGE_HINT, edata->hint);
	send_field(&msgbuf, PG_DIAG_CONTEXT, edata->context);
	send_field(&msgbuf, PG_DIAG_SCHEMA_NAME, edata->schema_name);
	send_field(&msgbuf, PG_DIAG_TABLE_NAME, edata->table_name);
	send_field(&msgbuf, PG_DIAG_COLUMN_NAME, edata->column_name);
	send_field(&msgbuf, PG_DIAG_DATATYPE_NAME, edata->datatype_name);
	send_field(&msgbuf, PG_DIAG_CONSTRAINT_NAME, edata->constraint_name);
	if (edata->cursorpos > 0)
	{
		snprintf(tbuf, sizeof(tbuf), "%d", edata->cursorpos);
		send_field(&msgbuf, PG_DIAG_STATEMENT_POSITION, tbuf);
	}
	if (edata->internalpos > 0)
	{
		snprintf(tbuf, sizeof(tbuf), "%d", edata->internalpos);
		send_field(&msgbuf, PG_DIAG_INTERNAL_POSITION, tbuf);
	}
	send_field(&msgbuf, PG_DIAG_INTERNAL_QUERY, edata->internalquery);
	send_field(&msgbuf, PG_DIAG_SOURCE_FILE, edata->filename);
	if (edata->lineno > 0)
	{
		snprintf(tbuf, sizeof(tbuf), "%d", edata->lineno);
		send_field(&msgbuf, PG_DIAG_SOURCE_LINE, tbuf);
	}
	send_field(&msgbuf, PG_DIAG_SOURCE_FUNCTION, edata->funcname);
	pq_sendbyte(&msgbuf, '\0');
	pq_endmessage(&msgbuf);
	pq_flush();
}

/* The masked STATEMENT line for the top-level text, or NULL if none needed. */
static char *
masked_top_statement(int elevel)
{
	if (debug_query_string == NULL)
		return NULL;
	/* failed before parse analysis could tell where its literals go */
	if (elevel >= ERROR && ext_state != 0 && !IsParallelWorker() &&
		!analysis_complete(debug_query_string))
		return mask_literals(debug_query_string, NULL, true);
	return fc_mask_text(debug_query_string);
}

/*
 * emit_log_hook: mask secrets in the server-log copy of a message; the
 * client gets the original (sent from here when the copies differ).
 */
static void
fc_emit_log_hook(ErrorData *edata)
{
	ErrorData	orig;
	KnownText	known[4 * (RECENT_MAX + 1)];
	int			nknown = 0;
	bool		sensitive;
	bool		changed = false;
	char	   *stmt;

	if (!edata->output_to_server)
	{
		if (prev_emit_log_hook)
			prev_emit_log_hook(edata);
		return;
	}
	orig = *edata;
	sensitive = fc_statement_is_sensitive(debug_query_string) || recent_count > 0;

	/* statement texts this line may quote, and their masked copies */
	for (int i = -1; i < recent_count; i++)
	{
		const char *t = i < 0 ? debug_query_string : recent[i];
		char	   *m = i < 0 ? masked_top_statement(edata->elevel) : fc_mask_text(t);

		if (t == NULL || (m == NULL && !(sensitive && fc_statement_is_sensitive(t))))
			continue;
		if (m == NULL)
			m = (char *) t;		/* quoted as is, kept apart from the rest */
		known[nknown].text = t;
		known[nknown++].masked = m;
		if (strchr(t, '"'))
		{
			known[nknown].text = doubled(t, '"');
			known[nknown++].masked = doubled(m, '"');
		}
		/* the masked copy itself (what the executor was given) stays as is */
		if (m != t && nknown < (int) lengthof(known) - 1)
		{
			known[nknown].text = m;
			known[nknown++].masked = m;
			if (strchr(m, '"'))
			{
				known[nknown].text = doubled(m, '"');
				known[nknown].masked = known[nknown].text;
				nknown++;
			}
		}
	}

	if (fc_statement_is_sensitive(debug_query_string))
	{
		if (!edata->output_to_client)
			edata->detail = redact_parameters(edata->detail);
		else if (edata->detail_log == NULL && edata->detail &&
				 strncmp(edata->detail, "parameters: ", 12) == 0)
			edata->detail_log = redact_parameters(edata->detail);	/* log only */
		edata->detail_log = redact_parameters(edata->detail_log);
	}
	if (copy_into_encrypted)
		edata->context = redact_copy_context(edata->context);
	if (nknown > 0 || ring_live || (sensitive && !edata->output_to_client))
	{
		bool		quoted = sensitive && !edata->output_to_client;

		edata->message = redact_field(edata->message, known, nknown, quoted);
		edata->detail = redact_field(edata->detail, known, nknown, quoted);
		edata->detail_log = redact_field(edata->detail_log, known, nknown, quoted);
		edata->hint = redact_field(edata->hint, known, nknown, false);
		edata->context = redact_field(edata->context, known, nknown, false);
		edata->internalquery = redact_field(edata->internalquery, known, nknown, false);
	}
	changed = edata->message != orig.message || edata->detail != orig.detail ||
		edata->hint != orig.hint || edata->context != orig.context ||
		edata->internalquery != orig.internalquery;

	/*
	 * The STATEMENT line is written from debug_query_string after this hook.
	 * An ERROR ends the statement: point it at a masked copy (the line stays,
	 * so auditors see that something was hidden).  Below ERROR the statement
	 * goes on, so its line is left out instead.
	 */
	stmt = nknown > 0 && !edata->hide_stmt ? (char *) known[0].masked : NULL;
	if (stmt && known[0].text == debug_query_string && stmt != debug_query_string)
	{
		if (edata->elevel >= ERROR)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
			char	   *prev = masked_statement;

			masked_statement = pstrdup(stmt);
			MemoryContextSwitchTo(old);
			if (fc_statement_is_sensitive(debug_query_string))
				fc_mark_sensitive_statement(masked_statement);
			debug_query_string = masked_statement;
			if (prev)
				pfree(prev);
		}
		else
			edata->hide_stmt = true;
	}

	/* the client gets what PostgreSQL made */
	if (changed && edata->output_to_client && whereToSendOutput == DestRemote &&
		PG_PROTOCOL_MAJOR(FrontendProtocol) >= 3)
	{
		send_to_client(&orig);
		edata->output_to_client = false;
	}
	else if (changed && edata->output_to_client)
	{
		/* cannot split the copies: the client's wins */
		edata->message = orig.message;
		edata->detail = orig.detail;
		edata->hint = orig.hint;
		edata->context = orig.context;
		edata->internalquery = orig.internalquery;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * Replace this backend's query text in pg_stat_activity with a copy in
 * which literals that may hold a secret are masked.
 */
void
fc_redact_activity(void)
{
	char	   *q = fc_mask_text(debug_query_string);

	if (q == NULL)
		return;
	pgstat_report_activity(STATE_RUNNING, q);
	pfree(q);
}

/*
 * Byte pos of src lies in a literal of it (a statement of a DO body, found
 * inside the DO statement's text): that whole literal is to be masked.
 */
void
fc_taint_literal_within(const char *src, int pos)
{
	const char *p = src;

	if (src == NULL || pos < 0)
		return;
	for (;;)
	{
		const char *start;
		TokKind		kind;
		const char *end = next_token(p, &start, &kind);

		if (kind == TOK_END || start - src > pos)
			return;
		if ((kind == TOK_STRING || kind == TOK_NUMBER) && end - src > pos)
		{
			fc_taint_literal(src, start - src);
			return;
		}
		p = end;
	}
}

/*
 * A nested statement text (the body of CREATE FUNCTION ... AS '...') is
 * not in src as it is, but as the contents of a quoted literal: mask every
 * literal of src whose decoded contents hold it, and every literal whose
 * decoding is uncertain (keys/literal.c).
 */
void
fc_taint_literal_holding(const char *src, const char *text)
{
	const char *p = src;
	StringInfoData buf;
	Size		textlen;

	if (src == NULL || text == NULL || *text == '\0')
		return;
	textlen = strlen(text);
	initStringInfo(&buf);
	for (;;)
	{
		const char *start;
		TokKind		kind;
		const char *end = next_token(p, &start, &kind);

		if (kind == TOK_END)
			break;
		p = end;
		/* decoding never lengthens a literal */
		if (kind != TOK_STRING || (Size) (end - start) < textlen)
			continue;
		resetStringInfo(&buf);
		if (!fc_decode_literal(start, end, &buf) || strstr(buf.data, text) != NULL)
			fc_taint_literal(src, start - src);
		else if ((start[0] == 'U' || start[0] == 'u') && start[1] == '&')
		{
			const char *w;
			TokKind		wkind;
			const char *wend = next_token(end, &w, &wkind);

			/* U&'...' UESCAPE '!': another escape character */
			if (wkind == TOK_WORD && wend - w == 7 && pg_strncasecmp(w, "uescape", 7) == 0)
				fc_taint_literal(src, start - src);
		}
	}
	explicit_bzero(buf.data, buf.maxlen);
	pfree(buf.data);
}
