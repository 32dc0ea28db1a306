/*-------------------------------------------------------------------------
 *
 * api.c
 *	  One ZIM call: sign, send, retry, read the answer, or raise.
 *
 * ZimCallMany sends requests of one Action concurrently and returns their
 * parsed answers.  Each attempt gets a send time from the rate limiter and
 * is signed afresh.  What may
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

bool
ZimCodeIsRetryable(int64 code, ZimRetryPolicy policy)
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
 * The backoff before retry number attempt (0-based), with jitter.
 */
static long
zim_backoff_ms(int attempt, bool rate_limited)
{
	long		base = rate_limited ? BACKOFF_RATE_BASE_MS : BACKOFF_BASE_MS;

	for (int i = 0; i < attempt && base < BACKOFF_CAP_MS; i++)
		base *= 2;
	base = Min(base, BACKOFF_CAP_MS);
	/* "equal jitter": half fixed, half random */
	return base / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (base / 2));
}

/*
 * The first bytes of an answer, printable and redacted, for a detail.
 */
static const char *
zim_quote_body(const StringInfoData *body)
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

/* the reason an ErrorList entry is malformed, or NULL */
static const char *
zim_error_item(JsonbContainer *obj, ZimErrorItem *item)
{
	JsonbValue	v;
	int64		type;

	if (!getKeyJsonValueFromContainer(obj, "ConvId", 6, &v) || v.type != jbvString)
		return "has no string \"ConvId\"";
	item->conv_id = pnstrdup(v.val.string.val, v.val.string.len);

	if (!getKeyJsonValueFromContainer(obj, "ConvType", 8, &v) ||
		!zim_numeric_int64(&v, &type) || type < PG_INT32_MIN || type > PG_INT32_MAX)
		return "has no integer \"ConvType\"";
	item->conv_type = (int32) type;

	if (!getKeyJsonValueFromContainer(obj, "SubCode", 7, &v) ||
		!zim_numeric_int64(&v, &item->sub_code))
		return "has no integer \"SubCode\"";

	item->sub_message = NULL;
	if (getKeyJsonValueFromContainer(obj, "SubMessage", 10, &v) && v.type == jbvString)
		item->sub_message = pnstrdup(v.val.string.val, v.val.string.len);
	return NULL;
}

/*
 * The entries of a ConvPinned answer's ErrorList.  strict: a malformed
 * entry raises ZP005; otherwise it is skipped (the queue records what it
 * can rather than fail a job forever on one bad entry).
 */
int
ZimErrorListItems(Jsonb *jb, bool strict, ZimErrorItem **items_out)
{
	JsonbValue *list = ZimJsonGet(jb, "ErrorList");
	ZimErrorItem *items;
	int			n;
	int			k = 0;

	*items_out = NULL;
	if (list == NULL || list->type != jbvBinary)
		return 0;
	n = JsonContainerSize(list->val.binary.data);
	items = palloc0(sizeof(ZimErrorItem) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(list->val.binary.data, i);
		const char *why = "is not an object";

		if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
			why = zim_error_item(v->val.binary.data, &items[k]);
		if (why == NULL)
			k++;
		else if (strict)
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("invalid answer from the ZIM server"),
					 errdetail("An entry of \"ErrorList\" %s.", why),
					 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
	}
	*items_out = items;
	return k;
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
					ZimRetryPolicy policy, int attempts, const char *extra)
{
	const char *maybe_done = zim_maybe_done_hint(policy);
	const char *sep = extra ? " " : "";

	if (extra == NULL)
		extra = "";

	switch (http->status)
	{
		case ZIM_HTTP_CONNECT_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not connect to the ZIM server"),
					 errdetail_internal("%s (Action %s, %s).%s%s",
										http->error, action, attempts_text(attempts),
										sep, extra),
					 errhint("Check zim_pin.api_url and the network.")));
			break;
		case ZIM_HTTP_TLS_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not establish a verified TLS connection to the ZIM server"),
					 errdetail_internal("%s (Action %s).%s%s", http->error, action,
										sep, extra),
					 errhint("Check zim_pin.ca_file and zim_pin.api_url.")));
			break;
		case ZIM_HTTP_TIMEOUT:
			if (!http->request_sent)
				ereport(ERROR,
						(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
						 errmsg("timed out connecting to the ZIM server"),
						 errdetail_internal("%s (Action %s, %s).%s%s",
											http->error, action, attempts_text(attempts),
											sep, extra),
						 errhint("Check zim_pin.api_url and the network, or raise zim_pin.connect_timeout_ms.")));
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("ZIM request timed out"),
					 errdetail_internal("%s (Action %s, %s).%s%s",
										http->error, action, attempts_text(attempts),
										sep, extra),
					 errhint("%s Raise zim_pin.timeout_ms if the server is slow.", maybe_done)));
			break;
		case ZIM_HTTP_TOO_LARGE:
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("answer of the ZIM server is too large"),
					 errdetail("The answer exceeds %d bytes (Action %s).%s%s",
							   ZIM_MAX_RESPONSE_SIZE, action, sep, extra),
					 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
			break;
		case ZIM_HTTP_CONNECTION_LOST:
		case ZIM_HTTP_OTHER:
		case ZIM_HTTP_OK:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("connection to the ZIM server was lost"),
					 errdetail_internal("%s (Action %s, %s).%s%s",
										http->error, action, attempts_text(attempts),
										sep, extra),
					 errhint("%s", maybe_done)));
			break;
	}
}

/*
 * Raise the error of a request that failed without a usable answer.
 * extra_detail, if given, is appended to the detail.
 */
void
ZimRaiseFailure(const char *action, ZimRetryPolicy policy,
				const ZimRequest *req, const char *extra_detail)
{
	const char *sep = extra_detail ? " " : "";
	const char *extra = extra_detail ? extra_detail : "";

	switch (req->failure)
	{
		case ZIM_FAIL_TRANSPORT:
			zim_raise_transport(action, &req->http, policy, req->attempts,
								extra_detail);
			break;
		case ZIM_FAIL_HTTP_STATUS:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("ZIM server answered with HTTP status %ld", req->http.http_code),
					 errdetail_internal("Action %s, %s; the answer begins: \"%s\"%s%s",
										action, attempts_text(req->attempts),
										zim_quote_body(&req->http.body), sep, extra),
					 errhint("%s", zim_maybe_done_hint(policy))));
			break;
		case ZIM_FAIL_BAD_ANSWER:
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("invalid answer from the ZIM server"),
					 errdetail_internal("%s HTTP status %ld; the answer begins: \"%s\"%s%s",
										req->why, req->http.http_code,
										zim_quote_body(&req->http.body), sep, extra),
					 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
			break;
	}
}

/*
 * Raise the error for an answer whose Code fails the whole call.
 */
void
ZimRaiseForCode(const char *action, const ZimRequest *req,
				const char *extra_detail)
{
	int			sqlstate;
	const char *hint;
	const ZimResponse *response = &req->response;
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
								attempts_text(req->attempts),
								extra_detail ? " " : "",
								extra_detail ? extra_detail : ""),
			 errhint("%s", hint)));
}

/*
 * Statistics of one finished exchange.
 */
typedef enum AttemptOutcome
{
	OUTCOME_SUCCEEDED,
	OUTCOME_FAILED_CONNECTION,
	OUTCOME_FAILED_SERVICE
} AttemptOutcome;

static void
zim_stats_attempt(const char *action, double latency_ms, AttemptOutcome outcome,
				  bool will_retry)
{
	ZimActionState *st;

	ZimStateLock();
	st = ZimActionLookup(action);
	st->stats.requests++;
	st->stats.latency_sum_ms += latency_ms;
	st->stats.latency_count++;
	if (latency_ms > st->stats.latency_max_ms)
		st->stats.latency_max_ms = latency_ms;
	switch (outcome)
	{
		case OUTCOME_SUCCEEDED:
			st->stats.succeeded++;
			break;
		case OUTCOME_FAILED_CONNECTION:
			st->stats.failed_connection++;
			break;
		case OUTCOME_FAILED_SERVICE:
			st->stats.failed_service++;
			break;
	}
	if (will_retry)
		st->stats.retries++;
	ZimStateUnlock();
}

void
ZimStatsCountConvs(const char *action, int64 changed, int64 failed)
{
	ZimActionState *st;

	ZimStateLock();
	st = ZimActionLookup(action);
	st->stats.convs_changed += changed;
	st->stats.convs_failed += failed;
	ZimStateUnlock();
}

static void
zim_stats_canceled(const char *action, int n)
{
	ZimActionState *st;

	if (n == 0 || ZimStateLockHeld())
		return;
	ZimStateLock();
	st = ZimActionLookup(action);
	st->stats.canceled += n;
	ZimStateUnlock();
}

/*
 * Put a request into backoff before its next attempt, or decide it has no
 * attempt left.  Returns true if it will be retried.
 */
/* retries allowed in the current ZimCallMany */
static int	call_max_retries = 0;

static bool
zim_maybe_retry(ZimRequest *req, bool retryable, bool rate_limited)
{
	if (!retryable || req->attempts > call_max_retries)
		return false;
	req->state = ZIM_REQ_BACKOFF;
	req->at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										  zim_backoff_ms(req->attempts - 1, rate_limited));
	return true;
}

/*
 * Judge a finished exchange: answered, failed, or to be retried.
 */
static void
zim_judge(const char *action, ZimRetryPolicy policy, ZimRequest *req)
{
	ZimHttpResult *http = &req->http;
	const char *why = NULL;
	bool		retry;

	if (http->status != ZIM_HTTP_OK)
	{
		elog(DEBUG1, "zim_pin: %s attempt %d failed after %.1f ms: %s",
			 action, req->attempts, http->elapsed_ms, http->error);

		switch (http->status)
		{
			case ZIM_HTTP_CONNECT_FAILED:
				retry = true;
				break;
			case ZIM_HTTP_TIMEOUT:
			case ZIM_HTTP_CONNECTION_LOST:
			case ZIM_HTTP_OTHER:
				retry = policy == ZIM_RETRY_IDEMPOTENT || !http->request_sent;
				break;
			default:
				/* certificate problems and oversize answers persist */
				retry = false;
				break;
		}
		retry = zim_maybe_retry(req, retry, false);
		zim_stats_attempt(action, http->elapsed_ms,
						  http->status == ZIM_HTTP_TOO_LARGE
						  ? OUTCOME_FAILED_SERVICE : OUTCOME_FAILED_CONNECTION,
						  retry);
		if (!retry)
		{
			req->state = ZIM_REQ_FAILED;
			req->failure = ZIM_FAIL_TRANSPORT;
		}
		return;
	}

	if (!zim_read_answer(&http->body, &req->response, &why))
	{
		bool		http_ok = http->http_code >= 200 && http->http_code < 300;

		elog(DEBUG1, "zim_pin: %s attempt %d: HTTP %ld, not a ZIM answer",
			 action, req->attempts, http->http_code);

		retry = zim_maybe_retry(req, !http_ok && http->http_code >= 500 &&
								policy == ZIM_RETRY_IDEMPOTENT, false);
		zim_stats_attempt(action, http->elapsed_ms,
						  http_ok ? OUTCOME_FAILED_SERVICE : OUTCOME_FAILED_CONNECTION,
						  retry);
		if (!retry)
		{
			req->state = ZIM_REQ_FAILED;
			req->failure = http_ok ? ZIM_FAIL_BAD_ANSWER : ZIM_FAIL_HTTP_STATUS;
			req->why = why;
		}
		return;
	}

	elog(DEBUG1, "zim_pin: %s RequestId %s Code " INT64_FORMAT " in %.1f ms",
		 action, req->response.request_id, req->response.code, http->elapsed_ms);

	if (req->response.code != 0 && code_is_rate_limit(req->response.code))
	{
		/* someone else shares the AppId: slow the whole server down */
		ZimRatePause(action, BACKOFF_RATE_BASE_MS);
	}
	retry = req->response.code != 0 &&
		zim_maybe_retry(req, ZimCodeIsRetryable(req->response.code, policy) &&
						!ZimHasErrorList(req->response.jsonb),
						code_is_rate_limit(req->response.code));
	zim_stats_attempt(action, http->elapsed_ms,
					  req->response.code == 0 ? OUTCOME_SUCCEEDED : OUTCOME_FAILED_SERVICE,
					  retry);
	if (!retry)
		req->state = ZIM_REQ_ANSWERED;
}

/* wipe and free a request's signed URL */
static void
zim_forget_url(ZimRequest *req)
{
	if (req->url.data)
	{
		explicit_bzero(req->url.data, req->url.maxlen);
		pfree(req->url.data);
		req->url.data = NULL;
	}
}

/* one pass of the scheduler; returns true while work remains */
static bool
zim_schedule(const char *action, ZimRequest *reqs, int n, TimestampTz *wake)
{
	TimestampTz now = GetCurrentTimestamp();
	int			busy = 0;
	bool		pending = false;

	*wake = DT_NOEND;

	for (int i = 0; i < n; i++)
		if (reqs[i].state == ZIM_REQ_SCHEDULED || reqs[i].state == ZIM_REQ_RUNNING)
			busy++;

	for (int i = 0; i < n; i++)
	{
		ZimRequest *req = &reqs[i];

		if (req->state == ZIM_REQ_BACKOFF && req->at <= now)
			req->state = ZIM_REQ_READY;

		/* give a send time to ready requests, as many as may run at once */
		if (req->state == ZIM_REQ_READY && busy < ZIM_MAX_TRANSFERS)
		{
			req->at = ZimRateReserve(action, now);
			req->state = ZIM_REQ_SCHEDULED;
			busy++;
		}

		if (req->state == ZIM_REQ_SCHEDULED && req->at <= now &&
			ZimRateGate(action, now, &req->at))
		{
			/* RUNNING from here on, so that cleanup releases the gate */
			req->state = ZIM_REQ_RUNNING;
			req->started = now;
			req->transfer = -1;
			initStringInfo(&req->url);
			ZimSignedUrl(&req->url, zim_api_url, action);
			req->transfer = ZimHttpStart(req->url.data, req->body);
			req->attempts++;
		}

		if ((req->state == ZIM_REQ_SCHEDULED || req->state == ZIM_REQ_BACKOFF) &&
			req->at < *wake)
			*wake = req->at;
		if (req->state != ZIM_REQ_ANSWERED && req->state != ZIM_REQ_FAILED)
			pending = true;
	}
	return pending;
}

static void
zim_call_loop(const char *action, ZimRetryPolicy policy, ZimRequest *reqs, int n)
{
	TimestampTz wake;

	while (zim_schedule(action, reqs, n, &wake))
	{
		long		timeout = 1000;

		if (wake != DT_NOEND)
			timeout = Min(timeout,
						  Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(), wake)));

		if (ZimHttpInFlight() > 0)
			ZimHttpWait(timeout);
		else if (timeout > 0)
		{
			/* only waits for a send time or a backoff: sleep on the latch */
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}

		for (int i = 0; i < n; i++)
		{
			ZimRequest *req = &reqs[i];

			if (req->state != ZIM_REQ_RUNNING || !ZimHttpFinished(req->transfer))
				continue;
			ZimHttpFinish(req->transfer, &req->http);
			ZimRateSent(action, req->http.request_sent
						? req->started + (TimestampTz) (req->http.pretransfer_ms * 1000.0)
						: 0);
			zim_forget_url(req);
			zim_judge(action, policy, req);
		}
	}
}

/*
 * Send n requests of one Action, concurrently, each paced by the limiter,
 * signed afresh for every attempt and retried as policy allows.  Returns
 * when every request is ANSWERED (any Code: the caller judges it) or
 * FAILED (the caller raises with ZimRaiseFailure).  Raises only for
 * interrupts and resource failures, after detaching every transfer.
 * max_retries < 0 means zim_pin.max_retries.
 */
void
ZimCallMany(const char *action, ZimRetryPolicy policy, ZimRequest *reqs, int n,
			int max_retries)
{
	ZimCheckConfigured();
	call_max_retries = max_retries >= 0 ? max_retries : zim_max_retries;

	for (int i = 0; i < n; i++)
	{
		reqs[i].state = ZIM_REQ_READY;
		reqs[i].attempts = 0;
		reqs[i].url.data = NULL;
	}

	PG_TRY();
	{
		zim_call_loop(action, policy, reqs, n);
	}
	PG_FINALLY();
	{
		int			running = ZimHttpAbortAll();

		/* abandoned transfers may have left: count them as sent now */
		if (!ZimStateLockHeld())
			for (int i = 0; i < n; i++)
				if (reqs[i].state == ZIM_REQ_RUNNING)
					ZimRateSent(action, GetCurrentTimestamp());
		zim_stats_canceled(action, running);
		for (int i = 0; i < n; i++)
			zim_forget_url(&reqs[i]);
	}
	PG_END_TRY();
}
