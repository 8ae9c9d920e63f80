/*-------------------------------------------------------------------------
 *
 * redact.h
 *	  Keeping secrets out of the server log and pg_stat_activity.
 *
 * src/keys/redact.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FIELDCRYPT_REDACT_H
#define FIELDCRYPT_REDACT_H

#define FC_REDACTED			"[redacted]"
#define FC_MIN_REDACT_LEN	6

extern void fc_register_secret(const char *s, size_t len);
extern void fc_redact_activity(void);
extern void fc_mark_sensitive_statement(const char *src);
extern bool fc_statement_is_sensitive(const char *src);
extern void fc_taint_literal(const char *src, int loc);
extern void fc_mask_all_literals(const char *src);
extern char *fc_mask_text(const char *src);
extern void fc_redact_new_statement(const char *src);
extern void fc_note_analyzed(const char *src, int upto, int installed);
extern void fc_taint_literal_within(const char *src, int pos);
extern void fc_taint_literal_holding(const char *src, const char *text);
extern void fc_redact_init(void);
extern void fc_redact_copy_from(bool on);
extern bool fc_redact_copy_from_active(void);

#endif
