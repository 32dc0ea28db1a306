/*-------------------------------------------------------------------------
 *
 * answer.c
 *	  Reading a ZIM answer: is it JSON we can take, and its Code, Message,
 *	  RequestId and whether it reports per-item outcomes (ErrorList).
 *
 * Answers are read with PostgreSQL's own JSON parser, validated first with
 * the non-throwing parser so that a malformed answer comes back as a
 * reason (the client raises SQLSTATE ZP005) and not as a jsonb input
 * error, and kept as jsonb.  The getters here are for every Action.
 *
 * Before the parser sees an answer, its text is put in the database
 * encoding here, whether the answer wrote a character raw or as a \u
 * escape (as Python's json.dumps does): PostgreSQL's parser would convert
 * an escape itself and refuse the whole answer for one character the
 * encoding cannot hold.  Such a character becomes "?" (SQL_ASCII takes its
 * UTF-8 bytes), and so do \u0000 (no text can hold it) and a lone
 * surrogate, in every encoding.
 *
 * Nothing here sends, waits or decides what to do with a Code; it raises
 * only for out-of-memory.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

/* how much of a bad answer we quote */
#define QUOTE_BYTES 120
/* deepest nesting we accept in an answer */
#define MAX_JSON_DEPTH 32
/* largest exponent we accept in a number of an answer */
#define MAX_EXPONENT 300

/*
 * The first bytes of an answer, printable and redacted, for a detail.
 */
const char *
ZimQuoteBody(const StringInfoData *body)
{
	StringInfoData buf;
	int			n = Min(body->len, QUOTE_BYTES);

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) body->data[i];

		appendStringInfoChar(&buf, (c >= 0x20 && c < 0x7f) ? (char) c : '?');
	}
	if (body->len > n)
		appendStringInfoString(&buf, "...");
	return ZimRedact(buf.data);
}

/* state for the validating parse */
typedef struct NumberCheck
{
	bool		bad_number;
} NumberCheck;

/*
 * Refuse numbers that no ZIM answer has and that cost or fail later:
 * more than 40 characters, or an exponent beyond +-MAX_EXPONENT.
 * numeric_in raises 22003 for 1e-20000 or 1e140000, and numeric_out
 * writes 1e131071 as a 131,072-digit string.
 */
static ZIM_JSON_CB_TYPE
check_number(void *state, char *token, JsonTokenType tokentype)
{
	NumberCheck *nc = (NumberCheck *) state;
	const char *e;

	if (tokentype != JSON_TOKEN_NUMBER)
		ZIM_JSON_CB_RETURN;
	if (strlen(token) > 40)
		nc->bad_number = true;
	else if ((e = strpbrk(token, "eE")) != NULL)
	{
		long		exp = strtol(e + 1, NULL, 10);

		if (exp > MAX_EXPONENT || exp < -MAX_EXPONENT)
			nc->bad_number = true;
	}
	ZIM_JSON_CB_RETURN;
}

/*
 * A valid UTF-8 answer in the database encoding.  Unlike pg_any_to_server,
 * this works outside a transaction (the worker reads answers with none
 * open), and a character the database encoding cannot hold becomes "?"
 * rather than an error: a vendor's message in another script must not
 * fail a call whose conversations changed.  (Ids in an answer echo what
 * was sent, so they always convert.)  The \u escapes of characters beyond
 * ASCII are decoded before (zim_decode_escapes), so they are treated alike.
 * SQL_ASCII takes the UTF-8 bytes as they are, raw or decoded.
 */
static char *
zim_utf8_to_server(const char *s, int len)
{
	StringInfoData buf;
	int			enc = GetDatabaseEncoding();

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return pnstrdup(s, len);

	initStringInfo(&buf);
	for (int i = 0; i < len;)
	{
		const unsigned char *p = (const unsigned char *) s + i;
		unsigned char out[MAX_MULTIBYTE_CHAR_LEN + 1] = {0};
		int			n;

		if (*p < 0x80)
		{
			appendStringInfoChar(&buf, (char) *p);
			i++;
			continue;
		}
		n = pg_utf_mblen(p);
		if (zim_unicode_to_server_noerror(utf8_to_unicode(p), out))
			appendStringInfoString(&buf, (const char *) out);
		else
			appendStringInfoChar(&buf, '?');
		i += n;
	}
	return buf.data;
}

/* the value of the four hex digits at p, or -1 */
static int
hex4(const char *p, const char *end)
{
	int			v = 0;

	if (end - p < 4)
		return -1;
	for (int k = 0; k < 4; k++)
	{
		int			c = (unsigned char) p[k];

		if (c >= '0' && c <= '9')
			v = v * 16 + c - '0';
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = v * 16 + c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/*
 * The code point of the \u escape at s[*i] (a surrogate pair counts as
 * one), advancing *i past it; 0 for \u0000 and for a lone surrogate, which
 * no text can hold; -1, with *i unchanged, if there is no \u escape there.
 */
static int
zim_read_escape(const char *s, int len, int *i)
{
	int			cp,
				lo;

	if (*i + 1 >= len || s[*i] != '\\' || s[*i + 1] != 'u' ||
		(cp = hex4(s + *i + 2, s + len)) < 0)
		return -1;
	*i += 6;
	if (is_utf16_surrogate_second(cp))
		return 0;
	if (!is_utf16_surrogate_first(cp))
		return cp;
	if (*i + 1 < len && s[*i] == '\\' && s[*i + 1] == 'u' &&
		(lo = hex4(s + *i + 2, s + len)) >= 0 && is_utf16_surrogate_second(lo))
	{
		*i += 6;
		return surrogate_pair_to_codepoint(cp, lo);
	}
	return 0;
}

/*
 * A valid UTF-8 answer with the \u escapes in its strings that stand for
 * characters beyond ASCII written as those characters, so that
 * zim_utf8_to_server treats them as it treats raw ones.  Escapes of ASCII
 * stay as they are (the parser reads them in every encoding), but for
 * \u0000 and lone surrogates, which become "?".  Other escapes, and broken
 * ones (the parser refuses those), are copied.  The result is never longer
 * than the answer: six bytes of escape give at most three of UTF-8, twelve
 * of a surrogate pair four.
 */
static char *
zim_decode_escapes(const char *s, int len, int *out_len)
{
	char	   *out = palloc(len + 1);
	int			o = 0;
	bool		in_string = false;

	for (int i = 0; i < len;)
	{
		int			start = i;
		int			cp;

		if (!in_string || s[i] != '\\')
		{
			if (s[i] == '"')
				in_string = !in_string;
			out[o++] = s[i++];
			continue;
		}
		if ((cp = zim_read_escape(s, len, &i)) < 0)
		{
			/* \" \\ \n ...: both bytes, so that \\u is not read as \u */
			out[o++] = s[i++];
			if (i < len)
				out[o++] = s[i++];
		}
		else if (cp == 0)
			out[o++] = '?';
		else if (cp < 0x80)
		{
			memcpy(out + o, s + start, i - start);
			o += i - start;
		}
		else
		{
			unicode_to_utf8((pg_wchar) cp, (unsigned char *) out + o);
			o += pg_utf_mblen((unsigned char *) out + o);
		}
	}
	out[o] = '\0';
	*out_len = o;
	return out;
}

/* deepest nesting of [ and { outside strings */
static int
json_depth(const char *s, int len)
{
	int			depth = 0,
				max = 0;
	bool		in_string = false;

	for (int i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '[' || c == '{')
		{
			depth++;
			max = Max(max, depth);
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	return max;
}

/*
 * Parse body into jsonb.  Returns NULL and sets *why if it is not JSON we
 * can take.
 */
static Jsonb *
zim_parse_json(const StringInfo body, const char **why)
{
	char	   *text;
	int			len;
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	NumberCheck nc = {false};
	JsonParseErrorType rc;

	if (body->len == 0)
	{
		*why = "The answer is empty.";
		return NULL;
	}
	if (memchr(body->data, '\0', body->len) != NULL)
	{
		*why = "The answer contains a zero byte.";
		return NULL;
	}
	if (!pg_verify_mbstr(PG_UTF8, body->data, body->len, true))
	{
		*why = "The answer is not valid UTF-8.";
		return NULL;
	}
	if (json_depth(body->data, body->len) > MAX_JSON_DEPTH)
	{
		*why = "The answer is nested too deeply.";
		return NULL;
	}

	text = zim_decode_escapes(body->data, body->len, &len);
	text = zim_utf8_to_server(text, len);
	lex = zim_make_json_lex(text, strlen(text), GetDatabaseEncoding());
	sem.semstate = &nc;
	sem.scalar = check_number;
	rc = pg_parse_json(lex, &sem);
	if (rc != JSON_SUCCESS)
	{
		*why = psprintf("The answer is not JSON: %s", json_errdetail(rc, lex));
		return NULL;
	}
	if (nc.bad_number)
	{
		*why = "The answer contains an out-of-range number.";
		return NULL;
	}
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/*
 * UTF-8 text that is not an answer (a media message's decoded body) read
 * as JSON the way answers are: jsonb, or NULL if it is not JSON.
 */
Jsonb *
ZimJsonParseText(const char *utf8, int len)
{
	StringInfoData s;
	const char *why;

	s.data = (char *) utf8;
	s.len = len;
	s.maxlen = len + 1;
	s.cursor = 0;
	return zim_parse_json(&s, &why);
}

JsonbValue *
ZimJsonGet(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (!JB_ROOT_IS_OBJECT(jb))
		return NULL;
	if (getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL)
		return NULL;
	return (JsonbValue *) memcpy(palloc(sizeof(v)), &v, sizeof(v));
}

/*
 * Read a JSON number as an exact int64; false if it is not one.
 */
bool
ZimJsonInt64(const JsonbValue *v, int64 *out)
{
	char	   *s;
	char	   *end;

	if (v == NULL || v->type != jbvNumeric)
		return false;
	s = DatumGetCString(DirectFunctionCall1(numeric_out,
											NumericGetDatum(v->val.numeric)));
	errno = 0;
	*out = strtoi64(s, &end, 10);
	return errno == 0 && end != s && *end == '\0';
}

static char *
zim_json_string(JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * Turn an answer into *resp, or say why it is not a ZIM answer.  An
 * answer's "ErrorList" or "FailList", if any, must be an array; what its
 * entries hold is the Action's business (conv_pinned.c reads ConvPinned's,
 * the family's files theirs).
 */
bool
ZimReadAnswer(const StringInfo body, ZimResponse *resp, const char **why)
{
	Jsonb	   *jb = zim_parse_json(body, why);
	JsonbValue *v;

	if (jb == NULL)
		return false;
	if (!JB_ROOT_IS_OBJECT(jb))
	{
		*why = "The answer is not a JSON object.";
		return false;
	}
	if (!ZimJsonInt64(ZimJsonGet(jb, "Code"), &resp->code))
	{
		*why = "The answer has no integer \"Code\".";
		return false;
	}

	resp->message = "";
	v = ZimJsonGet(jb, "Message");
	if (v && v->type == jbvString)
		resp->message = zim_json_string(v);
	else if (v && v->type != jbvNull)
	{
		*why = "The answer's \"Message\" is not a string.";
		return false;
	}

	resp->request_id = "";
	v = ZimJsonGet(jb, "RequestId");
	if (v && v->type == jbvString)
		resp->request_id = zim_json_string(v);
	else if (v && v->type != jbvNull)
	{
		*why = "The answer's \"RequestId\" is not a string.";
		return false;
	}

	/* ErrorList, or SetConvMark's FailList */
	resp->has_items = false;
	for (int i = 0; i < 2; i++)
	{
		const char *list = i == 0 ? "ErrorList" : "FailList";

		v = ZimJsonGet(jb, list);
		if (v && v->type != jbvNull &&
			!(v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data)))
		{
			*why = psprintf("The answer's \"%s\" is not an array.", list);
			return false;
		}
		resp->has_items |= v && v->type == jbvBinary &&
			JsonContainerSize(v->val.binary.data) > 0;
	}

	resp->jsonb = jb;
	return true;
}
