/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keeps secrets that pass through this backend (passphrases given to
 *	  set_data_encryption_key, plaintexts written to encrypted columns) out
 *	  of the server log and pg_stat_activity.
 *
 *	  Each secret is remembered in a small ring of recent secrets, in
 *	  memory excluded from core dumps.  emit_log_hook replaces every
 *	  occurrence in the message, detail, hint, context and internal query
 *	  of a log entry, and masks them in the STATEMENT line too.  Secrets shorter than FC_MIN_REDACT_LEN bytes are not
 *	  remembered: replacing them would mangle every log line.
 *
 *	  Bind parameters are logged (log_min_duration_statement at Bind) before
 *	  any value reaches us: statements that write to encrypted columns are
 *	  remembered by a hash of their text at parse analysis, and the
 *	  "parameters:" detail of their log lines is hidden whole.
 *
 *	  What this cannot cover: log_statement (written before parse analysis,
 *	  before any extension sees the values) and statements that fail in the
 *	  raw parser.  The README recommends bind parameters.
 *
 * src/keys/redact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/elog.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "keys/keystore.h"
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
static HTAB *sensitive = NULL;
#define SENSITIVE_MAX 20000
static emit_log_hook_type prev_emit_log_hook = NULL;

static char *redact_string(char *s);
static bool holds_secret(const char *s);
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

/*
 * Remember the body of the string literal that starts at byte offset loc of
 * a statement text, exactly as written there ('...', E'...', U&'...' or
 * $tag$...$tag$), so that escaped spellings are hidden too.
 */
void
fc_register_literal_at(const char *src, size_t srclen, int loc)
{
	const char *p;
	const char *start;
	bool		backslash = false;

	if (src == NULL || loc < 0 || (size_t) loc >= srclen)
		return;
	p = src + loc;
	if (*p == 'E' || *p == 'e')
	{
		backslash = true;
		p++;
	}
	else if ((p[0] == 'U' || p[0] == 'u') && p[1] == '&')
		p += 2;
	if (*p == '$')
	{
		const char *tagend = strchr(p + 1, '$');
		const char *end;
		char	   *tag;

		if (tagend == NULL)
			return;
		tag = pnstrdup(p, tagend - p + 1);
		start = tagend + 1;
		end = strstr(start, tag);
		if (end)
			remember_csv(start, end - start);
		pfree(tag);
		return;
	}
	if (*p != '\'')
		return;
	start = ++p;
	while (*p)
	{
		if (backslash && *p == '\\' && p[1])
			p += 2;
		else if (*p == '\'' && p[1] == '\'')
			p += 2;
		else if (*p == '\'')
			break;
		else
			p++;
	}
	remember_csv(start, p - start);
}

static uint64
text_hash(const char *s)
{
	return hash_bytes_extended((const unsigned char *) s, strlen(s), 0x46430001) | 1;
}

/*
 * Remember that a statement text writes to encrypted columns: the
 * "parameters:" detail of its log lines is then hidden whole, since a bind
 * parameter is logged (at Bind, by log_min_duration_statement) before any
 * of our code sees its value.
 */
void
fc_mark_sensitive_statement(const char *src)
{
	uint64		h;

	if (src == NULL)
		return;
	if (sensitive == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(uint64);
		ctl.hcxt = TopMemoryContext;
		sensitive = hash_create("fieldcrypt sensitive statements", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	else if (hash_get_num_entries(sensitive) >= SENSITIVE_MAX)
	{
		/* bounded: sessions that inline values make every text distinct */
		hash_destroy(sensitive);
		sensitive = NULL;
		fc_mark_sensitive_statement(src);
		return;
	}
	h = text_hash(src);
	hash_search(sensitive, &h, HASH_ENTER, NULL);
}

/* Was this statement text marked with fc_mark_sensitive_statement? */
bool
fc_statement_is_sensitive(const char *src)
{
	uint64		h;

	if (src == NULL || sensitive == NULL)
		return false;
	h = text_hash(src);
	return hash_search(sensitive, &h, HASH_FIND, NULL) != NULL;
}

/* Hide the parameter values of a "parameters: $1 = '...'" detail. */
static char *
redact_parameters(char *detail)
{
	if (detail && strncmp(detail, "parameters: ", 12) == 0)
	{
		explicit_bzero(detail, strlen(detail));
		return pstrdup("parameters: " FC_REDACTED);
	}
	return detail;
}

/* True if s contains a remembered secret. */
static bool
holds_secret(const char *s)
{
	if (s == NULL || ring == NULL)
		return false;
	for (int i = 0; i < RING_SLOTS; i++)
	{
		Size		len = ring->slot[i].len;

		if (len > 0 && strlen(s) >= len)
		{
			const char *sec = ring->arena + ring->slot[i].off;

			for (const char *p = s; (p = strchr(p, sec[0])) != NULL; p++)
				if (strncmp(p, sec, len) == 0)
					return true;
		}
	}
	return false;
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
	bool		owned = false;	/* s is our own intermediate copy */

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
		explicit_bzero(s, strlen(s));
		if (owned)
			pfree(s);
		s = buf.data;
		owned = true;
	}
	return s;
}

/* emit_log_hook: scrub secrets from everything that reaches the server log. */
static void
fc_emit_log_hook(ErrorData *edata)
{
	if (edata->output_to_server && fc_statement_is_sensitive(debug_query_string))
	{
		edata->detail = redact_parameters(edata->detail);
		edata->detail_log = redact_parameters(edata->detail_log);
	}
	if (copy_into_encrypted && edata->output_to_server)
		edata->context = redact_copy_context(edata->context);
	if (ring != NULL && edata->output_to_server)
	{
		edata->message = redact_string(edata->message);
		edata->detail = redact_string(edata->detail);
		edata->detail_log = redact_string(edata->detail_log);
		edata->hint = redact_string(edata->hint);
		edata->context = redact_string(edata->context);
		edata->internalquery = redact_string(edata->internalquery);
		if (holds_secret(debug_query_string))
		{
			/*
			 * The STATEMENT line is written from debug_query_string after this
			 * hook: point it at a masked copy, so the line stays (auditors
			 * see that something was hidden) without the secret.
			 */
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
			char	   *prev = masked_statement;

			bool		was_sensitive = fc_statement_is_sensitive(debug_query_string);

			masked_statement = redact_string(pstrdup(debug_query_string));
			MemoryContextSwitchTo(old);
			if (was_sensitive)
				fc_mark_sensitive_statement(masked_statement);
			debug_query_string = masked_statement;
			if (prev)
			{
				explicit_bzero(prev, strlen(prev));
				pfree(prev);
			}
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * Replace this backend's query text in pg_stat_activity with a copy in
 * which remembered secrets are masked.
 */
void
fc_redact_activity(void)
{
	char	   *q;

	if (debug_query_string == NULL || !holds_secret(debug_query_string))
		return;
	q = redact_string(pstrdup(debug_query_string));
	pgstat_report_activity(STATE_RUNNING, q);
	pfree(q);
}
