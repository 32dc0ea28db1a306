/*-------------------------------------------------------------------------
 *
 * api.c
 *	  One ZIM call: sign, send, retry, read the answer, or raise.
 *
 * ZimCall sends one Action with one body and returns the parsed answer.
 * Each attempt waits for the rate limiter and is signed afresh.  What may
 * be retried depends on the caller: ConvPinned sets an absolute state, so
 * every transient failure may be sent again; an arbitrary Action through
 * zim_api may not be idempotent, so only what was surely not processed is.
 *
 * Answers are read with PostgreSQL's own JSON parser (validated first with
 * the non-throwing parser, so that a malformed answer becomes SQLSTATE
 * ZP005 and not a jsonb input error) and kept as jsonb.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "common/jsonapi.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

/* how much of a bad answer we quote */
#define QUOTE_BYTES 120
/* deepest nesting we accept in an answer */
#define MAX_JSON_DEPTH 32

/* backoff: first delay, doubled per retry, capped */
#define BACKOFF_BASE_MS			200
#define BACKOFF_RATE_BASE_MS	1000
#define BACKOFF_CAP_MS			10000

/* "1 attempt", "3 attempts" */
static const char *
attempts_text(int n)
{
	return psprintf("%d attempt%s", n, n == 1 ? "" : "s");
}

static bool
code_in(int64 code, const int64 *codes, int n)
{
	for (int i = 0; i < n; i++)
		if (codes[i] == code)
			return true;
	return false;
}

/* Codes that mean "the request was not processed, send it again" */
static bool
code_is_rate_limit(int64 code)
{
	static const int64 codes[] = {7, 660300005, 660700001};

	return code_in(code, codes, lengthof(codes));
}

static bool
code_is_retryable(int64 code, ZimRetryPolicy policy)
{
	static const int64 idempotent[] = {1, 7, 660000001, 660000003, 660300005};
	static const int64 unsent[] = {1, 7, 660300005, 660700001};

	if (policy == ZIM_RETRY_IDEMPOTENT)
		return code_in(code, idempotent, lengthof(idempotent));
	return code_in(code, unsent, lengthof(unsent));
}

static bool
code_is_auth(int64 code)
{
	static const int64 codes[] = {3, 100000001, 100000004, 100000005, 100000010};

	return code_in(code, codes, lengthof(codes));
}

/*
 * Sleep for the backoff before retry number attempt (0-based), with
 * jitter, interruptibly.
 */
static void
zim_backoff(int attempt, bool rate_limited)
{
	long		base = rate_limited ? BACKOFF_RATE_BASE_MS : BACKOFF_BASE_MS;
	long		delay;
	TimestampTz deadline;

	for (int i = 0; i < attempt && base < BACKOFF_CAP_MS; i++)
		base *= 2;
	base = Min(base, BACKOFF_CAP_MS);
	/* "equal jitter": half fixed, half random */
	delay = base / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (base / 2));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														   deadline);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The first bytes of an answer, printable and redacted, for a detail.
 */
static const char *
zim_quote_body(const StringInfo body)
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
 * Refuse numbers that numeric_in could reject (and that no ZIM answer
 * has): jsonb_in would raise a numeric error for them.
 */
#if PG_VERSION_NUM >= 160000
static JsonParseErrorType
#else
static void
#endif
check_number(void *state, char *token, JsonTokenType tokentype)
{
	NumberCheck *nc = (NumberCheck *) state;

	if (tokentype == JSON_TOKEN_NUMBER && strlen(token) > 40)
		nc->bad_number = true;
#if PG_VERSION_NUM >= 160000
	return JSON_SUCCESS;
#endif
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

	text = pg_any_to_server(body->data, body->len, PG_UTF8);
	lex = makeJsonLexContextCstringLen(text, strlen(text),
									   GetDatabaseEncoding(), true);
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
static bool
zim_numeric_int64(JsonbValue *v, int64 *out)
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
 * Turn an answer into *resp, or say why it is not a ZIM answer.
 */
static bool
zim_read_answer(const StringInfo body, ZimResponse *resp, const char **why)
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
	if (!zim_numeric_int64(ZimJsonGet(jb, "Code"), &resp->code))
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

	v = ZimJsonGet(jb, "ErrorList");
	if (v && v->type != jbvNull &&
		!(v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data)))
	{
		*why = "The answer's \"ErrorList\" is not an array.";
		return false;
	}

	resp->jsonb = jb;
	return true;
}

bool
ZimHasErrorList(Jsonb *jb)
{
	JsonbValue *v = ZimJsonGet(jb, "ErrorList");

	return v && v->type == jbvBinary &&
		JsonContainerSize(v->val.binary.data) > 0;
}

/*
 * Raise the error for a transport failure.
 */
/*
 * What a caller may do after a failure in which the request may have been
 * processed.
 */
static const char *
zim_maybe_done_hint(ZimRetryPolicy policy)
{
	return (policy == ZIM_RETRY_IDEMPOTENT)
		? "Pinning sets an absolute state, so the call can safely be repeated."
		: "The request may or may not have been processed by the ZIM server.";
}

static void
zim_raise_transport(const char *action, const ZimHttpResult *http,
					ZimRetryPolicy policy, int attempts)
{
	const char *maybe_done = zim_maybe_done_hint(policy);

	switch (http->status)
	{
		case ZIM_HTTP_CONNECT_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not connect to the ZIM server"),
					 errdetail_internal("%s (Action %s, %s).",
										http->error, action, attempts_text(attempts)),
					 errhint("Check zim_pin.api_url and the network.")));
			break;
		case ZIM_HTTP_TLS_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not establish a verified TLS connection to the ZIM server"),
					 errdetail_internal("%s (Action %s).", http->error, action),
					 errhint("Check zim_pin.ca_file and zim_pin.api_url.")));
			break;
		case ZIM_HTTP_TIMEOUT:
			if (!http->request_sent)
				ereport(ERROR,
						(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
						 errmsg("timed out connecting to the ZIM server"),
						 errdetail_internal("%s (Action %s, %s).",
											http->error, action, attempts_text(attempts)),
						 errhint("Check zim_pin.api_url and the network, or raise zim_pin.connect_timeout_ms.")));
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("ZIM request timed out"),
					 errdetail_internal("%s (Action %s, %s).",
										http->error, action, attempts_text(attempts)),
					 errhint("%s Raise zim_pin.timeout_ms if the server is slow.", maybe_done)));
			break;
		case ZIM_HTTP_TOO_LARGE:
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("answer of the ZIM server is too large"),
					 errdetail("The answer exceeds %d bytes (Action %s).",
							   ZIM_MAX_RESPONSE_SIZE, action),
					 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
			break;
		case ZIM_HTTP_CONNECTION_LOST:
		case ZIM_HTTP_OTHER:
		case ZIM_HTTP_OK:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("connection to the ZIM server was lost"),
					 errdetail_internal("%s (Action %s, %s).",
										http->error, action, attempts_text(attempts)),
					 errhint("%s", maybe_done)));
			break;
	}
}

/*
 * Raise the error for an answer whose Code fails the whole call.
 */
void
ZimRaiseForCode(const char *action, const ZimResponse *response,
				const char *extra_detail)
{
	int			sqlstate;
	const char *hint;
	int64		code = response->code;

	if (code_is_rate_limit(code))
	{
		sqlstate = ERRCODE_ZIM_RATE_LIMITED;
		hint = "The AppId's call rate is shared with every server that uses it; retry later.";
	}
	else if (code_is_auth(code))
	{
		sqlstate = ERRCODE_ZIM_AUTH_FAILED;
		hint = (code == 100000004)
			? "Check the database server's clock: signatures expire after 10 minutes."
			: "Check zim_pin.app_id and zim_pin.server_secret against the ZEGOCLOUD console.";
	}
	else if (code == 660500002)
	{
		sqlstate = ERRCODE_ZIM_USER_NOT_REGISTERED;
		hint = "Register the user first, for example with zim_api('UserRegister', ...).";
	}
	else
	{
		sqlstate = ERRCODE_ZIM_SERVICE_ERROR;
		if (code == 2 || code == 660000002)
			hint = "Check the request parameters against the ZIM server API documentation.";
		else if (code == 1 || code == 660000001 || code == 660000003 ||
				 code == 100000015)
			hint = "The ZIM service failed; retry later.";
		else
			hint = "Look the code up in ZEGOCLOUD's list of ZIM return codes.";
	}

	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("ZIM %s failed with code " INT64_FORMAT ": %s",
					action, code, ZimRedact(response->message)),
			 errdetail_internal("RequestId %s, after %s.%s%s",
								response->request_id[0] ? response->request_id : "(none)",
								attempts_text(response->attempts),
								extra_detail ? " " : "",
								extra_detail ? extra_detail : ""),
			 errhint("%s", hint)));
}

/*
 * Sign and send one attempt.  The URL carries the signature: wipe it
 * whatever happens.
 */
static void
zim_send_signed(const char *action, const char *body, ZimHttpResult *http)
{
	StringInfoData url;

	initStringInfo(&url);
	PG_TRY();
	{
		ZimSignedUrl(&url, zim_api_url, action);
		ZimHttpPost(url.data, body, http);
	}
	PG_FINALLY();
	{
		explicit_bzero(url.data, url.maxlen);
		pfree(url.data);
	}
	PG_END_TRY();
}

/*
 * Send one Action with retries; fill *response with the last answer.
 * Raises for transport failures and answers that are not ZIM answers.
 * A non-zero Code is returned to the caller (after retries, when the Code
 * is transient and the answer carries no per-item ErrorList).
 */
void
ZimCall(const char *action, const char *body, ZimRetryPolicy policy,
		ZimResponse *response)
{
	ZimCheckConfigured();

	memset(response, 0, sizeof(*response));

	for (int attempt = 0;; attempt++)
	{
		bool		last = attempt >= zim_max_retries;
		ZimHttpResult http;
		const char *why = NULL;
		bool		retry;

		ZimRateLimitAcquire(action);

		zim_send_signed(action, body, &http);

		response->attempts = attempt + 1;

		if (http.status != ZIM_HTTP_OK)
		{
			elog(DEBUG1, "zim_pin: %s attempt %d failed after %.1f ms: %s",
				 action, attempt + 1, http.elapsed_ms, http.error);

			switch (http.status)
			{
				case ZIM_HTTP_CONNECT_FAILED:
					retry = true;
					break;
				case ZIM_HTTP_TIMEOUT:
				case ZIM_HTTP_CONNECTION_LOST:
				case ZIM_HTTP_OTHER:
					retry = policy == ZIM_RETRY_IDEMPOTENT || !http.request_sent;
					break;
				default:
					/* certificate problems and oversize answers persist */
					retry = false;
					break;
			}
			if (retry && !last)
			{
				zim_backoff(attempt, false);
				continue;
			}
			zim_raise_transport(action, &http, policy, attempt + 1);
		}

		if (!zim_read_answer(&http.body, response, &why))
		{
			bool		http_ok = http.http_code >= 200 && http.http_code < 300;

			elog(DEBUG1, "zim_pin: %s attempt %d: HTTP %ld, not a ZIM answer",
				 action, attempt + 1, http.http_code);

			if (!http_ok && http.http_code >= 500 &&
				policy == ZIM_RETRY_IDEMPOTENT && !last)
			{
				zim_backoff(attempt, false);
				continue;
			}
			if (!http_ok)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("ZIM server answered with HTTP status %ld", http.http_code),
						 errdetail_internal("Action %s, %s; the answer begins: \"%s\"",
											action, attempts_text(attempt + 1),
											zim_quote_body(&http.body)),
						 errhint("%s", zim_maybe_done_hint(policy))));
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("invalid answer from the ZIM server"),
					 errdetail_internal("%s HTTP status %ld; the answer begins: \"%s\"",
										why, http.http_code, zim_quote_body(&http.body)),
					 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
		}

		elog(DEBUG1, "zim_pin: %s RequestId %s Code " INT64_FORMAT " in %.1f ms",
			 action, response->request_id, response->code, http.elapsed_ms);

		if (response->code != 0 && !last &&
			code_is_retryable(response->code, policy) &&
			!ZimHasErrorList(response->jsonb))
		{
			zim_backoff(attempt, code_is_rate_limit(response->code));
			continue;
		}
		return;
	}
}
