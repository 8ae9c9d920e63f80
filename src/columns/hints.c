/*-------------------------------------------------------------------------
 *
 * hints.c
 *	  Say why an encrypted column cannot be compared: PostgreSQL's errors
 *	  for WHERE col = 'x', ORDER BY col, DISTINCT, GROUP BY or UNION on an
 *	  encrypted type ("operator does not exist", "could not identify an
 *	  ordering / equality operator") suggest adding casts, which cannot
 *	  help.  An emit_log_hook replaces that hint, for those errors only,
 *	  when the message names an encrypted type; message, SQLSTATE and
 *	  position stay PostgreSQL's.  Every other error passes untouched.
 *
 * src/columns/hints.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/elog.h"

#include "columns/hints.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

static void fc_hints_emit_log(ErrorData *edata);

/* Install the hook; called from _PG_init after the log redaction's. */
void
fc_hints_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = fc_hints_emit_log;
}

/* Whether s names the type name as a whole word (bare or schema-qualified). */
static bool
names_type(const char *s, const char *name)
{
	size_t		len = strlen(name);

	for (const char *p = strstr(s, name); p != NULL; p = strstr(p + 1, name))
	{
		char		before = p == s ? ' ' : p[-1];
		char		after = p[len];

		if ((before == ' ' || before == '.' || before == '"' || before == '(') &&
			!(after == '_' || (after >= 'a' && after <= 'z') || (after >= '0' && after <= '9')))
			return true;
	}
	return false;
}

/* emit_log_hook: a hint that says what can be done with encrypted columns. */
static void
fc_hints_emit_log(ErrorData *edata)
{
	if (edata->elevel >= ERROR && edata->sqlerrcode == ERRCODE_UNDEFINED_FUNCTION &&
		edata->message != NULL &&
		(strncmp(edata->message, "operator does not exist: ", 25) == 0 ||
		 strncmp(edata->message, "could not identify an ", 22) == 0) &&
		(names_type(edata->message, "encrypted_text") ||
		 names_type(edata->message, "encrypted_bytea")))
		edata->hint = pstrdup("Encrypted columns cannot be compared, sorted, grouped or searched: "
							  "their values are write-only ciphertext. Filter, sort and join on "
							  "other columns; members of fieldcrypt_reader can read a value with "
							  "fieldcrypt.decrypt().");
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}
