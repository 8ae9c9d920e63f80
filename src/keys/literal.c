/*-------------------------------------------------------------------------
 *
 * literal.c
 *	  The contents of an SQL string literal as the server's scanner reads
 *	  them, for redaction: a statement nested in another one (the body of
 *	  CREATE FUNCTION ... AS '...') is the decoded contents of one of the
 *	  outer statement's literals, not a substring of its text, as soon as
 *	  the body holds a quote or a backslash escape.
 *
 *	  Handles the forms the scanner accepts: '...' (with or without
 *	  standard_conforming_strings), E'...', N'...', U&'...', dollar quotes,
 *	  and quoted parts continued across a newline.  Never fails: an escape
 *	  it cannot reproduce byte for byte (a Unicode escape outside UTF-8, a
 *	  UESCAPE clause, a zero byte) makes the result "uncertain", and the
 *	  caller then treats the literal as possibly holding what it looks for.
 *
 * src/keys/literal.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "parser/parser.h"

#include "keys/literal.h"

typedef enum
{
	QUOTE_PLAIN,				/* '' is a quote; backslash is a character */
	QUOTE_ESCAPE,				/* E'...': backslash escapes */
	QUOTE_UNICODE				/* U&'...': \XXXX and \+XXXXXX */
} QuoteMode;

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Read exactly n hex digits at p (before end); -1 if they are not there. */
static long
hex_digits(const char *p, const char *end, int n)
{
	long		v = 0;

	if (end - p < n)
		return -1;
	for (int i = 0; i < n; i++)
	{
		int			d = hexval(p[i]);

		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * Append code point c in the server encoding; false if that is not exact
 * (out of range, a surrogate half, not UTF-8).
 */
static bool
append_code_point(StringInfo out, long c)
{
	unsigned char buf[8];

	if (c <= 0 || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return false;
	if (c < 0x80)
	{
		appendStringInfoChar(out, (char) c);
		return true;
	}
	if (GetDatabaseEncoding() != PG_UTF8)
		return false;
	unicode_to_utf8((pg_wchar) c, buf);
	appendBinaryStringInfo(out, (char *) buf, pg_utf_mblen(buf));
	return true;
}

/*
 * One backslash escape of an E'...' string at p (p[0] is the backslash,
 * p[1] exists): appends its byte(s), returns how many input bytes it used.
 */
static int
escape(const char *p, const char *end, StringInfo out, bool *exact)
{
	static const char simple_from[] = "bfnrt";
	static const char simple_to[] = "\b\f\n\r\t";
	char		c = p[1];
	const char *simple = c != '\0' ? strchr(simple_from, c) : NULL;
	int			n;
	long		v;

	if (simple != NULL)
	{
		appendStringInfoChar(out, simple_to[simple - simple_from]);
		return 2;
	}
	switch (c)
	{
		case 'x':
			v = 0;
			for (n = 2; n < 4 && p + n < end && hexval(p[n]) >= 0; n++)
				v = v * 16 + hexval(p[n]);
			if (n == 2)
				break;			/* \x without a digit: an x */
			if (v == 0)
				*exact = false;
			appendStringInfoChar(out, (char) v);
			return n;
		case 'u':
		case 'U':
			n = c == 'u' ? 4 : 8;
			v = hex_digits(p + 2, end, n);
			if (v >= 0)
			{
				if (!append_code_point(out, v))
					*exact = false;
				return 2 + n;
			}
			break;
		default:
			if (c >= '0' && c <= '7')
			{
				v = 0;
				for (n = 1; n <= 3 && p + n < end && p[n] >= '0' && p[n] <= '7'; n++)
					v = v * 8 + (p[n] - '0');
				if ((v & 0xFF) == 0)
					*exact = false;
				appendStringInfoChar(out, (char) v);
				return n;
			}
			break;
	}
	appendStringInfoChar(out, c);
	return 2;
}

/*
 * One quoted part starting at the quote at p: its contents appended to
 * out; returns the position after its closing quote (or end).
 */
static const char *
quoted_part(const char *p, const char *end, QuoteMode mode, StringInfo out, bool *exact)
{
	for (p++; p < end; p++)
	{
		if (*p == '\\' && p + 1 < end && mode == QUOTE_ESCAPE)
		{
			p += escape(p, end, out, exact) - 1;
			continue;
		}
		if (*p == '\\' && p + 1 < end && mode == QUOTE_UNICODE)
		{
			long		v = -1;

			if (p[1] == '\\')
			{
				appendStringInfoChar(out, '\\');
				p++;
				continue;
			}
			if (p[1] == '+')
				v = hex_digits(p + 2, end, 6);
			else
				v = hex_digits(p + 1, end, 4);
			if (v >= 0)
			{
				if (!append_code_point(out, v))
					*exact = false;
				p += p[1] == '+' ? 7 : 4;
				continue;
			}
			*exact = false;
		}
		if (*p == '\'')
		{
			if (p + 1 < end && p[1] == '\'')
			{
				appendStringInfoChar(out, '\'');
				p++;
				continue;
			}
			return p + 1;
		}
		appendStringInfoChar(out, *p);
	}
	return end;
}

/*
 * Append to out the contents of the string literal token [start, end) of a
 * statement text (as redact.c's tokenizer delimits it).  Returns false if
 * the result may differ from what the scanner makes of it.
 */
bool
fc_decode_literal(const char *start, const char *end, StringInfo out)
{
	const char *p = start;
	QuoteMode	mode = standard_conforming_strings ? QUOTE_PLAIN : QUOTE_ESCAPE;
	bool		exact = true;

	if (*p == '$')
	{
		const char *tag_end = memchr(p + 1, '$', end - p - 1);
		Size		taglen;

		if (tag_end == NULL)
			return false;
		taglen = tag_end - p + 1;
		if ((Size) (end - start) < 2 * taglen)
			return false;
		appendBinaryStringInfo(out, start + taglen, (end - start) - 2 * taglen);
		return true;
	}
	if (*p == 'E' || *p == 'e')
		mode = QUOTE_ESCAPE, p++;
	else if (*p == 'N' || *p == 'n')
		p++;
	else if (*p == 'U' || *p == 'u')
		mode = QUOTE_UNICODE, p += 2;
	else if (*p != '\'')
		return true;			/* B'...', X'...': bits, never text */
	while (p < end)
	{
		while (p < end && *p != '\'')
			p++;				/* whitespace between continued parts */
		if (p >= end)
			break;
		p = quoted_part(p, end, mode, out, &exact);
	}
	return exact;
}
