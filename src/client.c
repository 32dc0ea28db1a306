/*-------------------------------------------------------------------------
 *
 * client.c
 *	  Sending requests to any ZIM Action: schedule each attempt with the
 *	  limiter, sign it, send it, judge what came back, retry with backoff,
 *	  and raise what failed with its SQLSTATE; zim_api().
 *
 * ZimSendRequests sends requests of one Action concurrently (up to
 * ZIM_MAX_TRANSFERS at once).  Each request moves through the states of
 * ZimRequestState: READY, given a send time (SCHEDULED), past the rate
 * gate and on the wire (RUNNING), then ANSWERED, FAILED, or BACKOFF and
 * READY again.  Every attempt is signed afresh.  What may be retried
 * depends on the caller's policy: ConvPinned sets an absolute state, so
 * every transient failure may be sent again; an arbitrary Action through
 * zim_api may not be idempotent, so only what was surely not processed is.
 *
 * An answer with any Code is ANSWERED: judging it is the caller's (it
 * knows the Action); ZimRaiseForCode and ZimRaiseFailure map what the
 * caller decides is a failure to the contract's SQLSTATEs.
 *
 * Every wait is on the process latch (directly, or through http.c), so a
 * cancel or statement_timeout raises at once; PG_FINALLY then detaches
 * every transfer and wipes every signed URL.  The path of a request is
 * one way: this file calls the limiter, sign.c, http.c and stats.c, never
 * the Action files above it.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(zim_api);

/* backoff of one request: first delay, doubled per retry, capped */
#define BACKOFF_BASE_MS			200
#define BACKOFF_CAP_MS			10000

/* retries allowed in the current ZimSendRequests */
static int	call_max_retries = 0;

/* an attempt of the current call got something that was not a ZIM answer */
static bool call_got_junk = false;

/* "1 attempt", "3 attempts" */
static const char *
attempts_text(int n)
{
	return psprintf("%d attempt%s", n, n == 1 ? "" : "s");
}

/*
 * Put a request into backoff before its next attempt if it may be retried
 * and has retries left.  Returns true if it will be retried.
 */
static bool
zim_maybe_retry(ZimRequest *req, bool retryable, bool rate_limited)
{
	if (!retryable || req->attempts > call_max_retries)
		return false;
	req->state = ZIM_REQ_BACKOFF;
	req->at = ZimRateNow() +
		(ZimMonoTime) ZimBackoffMs(req->attempts - 1,
								   rate_limited ? ZIM_RATE_LIMIT_PAUSE_MS : BACKOFF_BASE_MS,
								   BACKOFF_CAP_MS) * 1000;
	return true;
}

/* an attempt that got no complete answer: retry or FAILED */
static void
zim_settle_transport_failure(const char *action, ZimRetryPolicy policy, ZimRequest *req)
{
	ZimHttpResult *http = &req->http;
	bool		retry;

	elog(DEBUG1, "zim_pin: %s attempt %d failed after %.1f ms: %s",
		 action, req->attempts, http->elapsed_ms, http->error);

	switch (http->status)
	{
		case ZIM_HTTP_CONNECT_FAILED:
		case ZIM_HTTP_PROXY_FAILED:
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
	ZimStatsAttempt(action, http->elapsed_ms,
					http->status == ZIM_HTTP_TOO_LARGE
					? ZIM_OUTCOME_FAILED_SERVICE : ZIM_OUTCOME_FAILED_CONNECTION,
					retry);
	if (!retry)
	{
		req->state = ZIM_REQ_FAILED;
		req->failure = ZIM_FAIL_TRANSPORT;
	}
}

/* an attempt whose answer is not a ZIM answer: retry or FAILED */
static void
zim_settle_not_answer(const char *action, ZimRetryPolicy policy, ZimRequest *req,
					  const char *why)
{
	ZimHttpResult *http = &req->http;
	bool		http_ok = http->http_code >= 200 && http->http_code < 300;
	bool		retry;

	elog(DEBUG1, "zim_pin: %s attempt %d: HTTP %ld, not a ZIM answer",
		 action, req->attempts, http->http_code);
	call_got_junk = true;

	retry = zim_maybe_retry(req, !http_ok && http->http_code >= 500 &&
							policy == ZIM_RETRY_IDEMPOTENT, false);
	ZimStatsAttempt(action, http->elapsed_ms,
					http_ok ? ZIM_OUTCOME_FAILED_SERVICE : ZIM_OUTCOME_FAILED_CONNECTION,
					retry);
	if (!retry)
	{
		req->state = ZIM_REQ_FAILED;
		req->failure = http_ok ? ZIM_FAIL_BAD_ANSWER : ZIM_FAIL_HTTP_STATUS;
		req->why = why;
	}
}

/*
 * A ZIM answer: ANSWERED, or retried if its Code says the whole request
 * was not processed and may be sent again.  An answer with per-item
 * outcomes (a non-empty ErrorList) is final: items did change or fail.
 */
static void
zim_settle_answer(const char *action, ZimRetryPolicy policy, ZimRequest *req)
{
	int64		code = req->response.code;
	bool		retry;

	elog(DEBUG1, "zim_pin: %s RequestId %s Code " INT64_FORMAT " in %.1f ms",
		 action, req->response.request_id, code, req->http.elapsed_ms);

	/*
	 * Our margin was too narrow for the network's jitter, or someone else
	 * shares the AppId: slow the whole server down
	 */
	if (code != 0 && ZimCodeIsRateLimit(code))
		ZimRateExceeded(action, req->started, ZIM_RATE_LIMIT_PAUSE_MS);
	retry = code != 0 &&
		zim_maybe_retry(req, ZimCodeIsRetryable(code, policy) && !req->response.has_items,
						ZimCodeIsRateLimit(code));
	ZimStatsAttempt(action, req->http.elapsed_ms,
					code == 0 ? ZIM_OUTCOME_SUCCEEDED : ZIM_OUTCOME_FAILED_SERVICE,
					retry);
	if (!retry)
		req->state = ZIM_REQ_ANSWERED;
}

/*
 * Judge a finished attempt: ANSWERED, FAILED, or BACKOFF before the next.
 */
static void
zim_settle_attempt(const char *action, ZimRetryPolicy policy, ZimRequest *req)
{
	const char *why = NULL;

	if (req->http.status != ZIM_HTTP_OK)
		zim_settle_transport_failure(action, policy, req);
	else if (!ZimReadAnswer(&req->http.body, &req->response, &why))
		zim_settle_not_answer(action, policy, req, why);
	else
		zim_settle_answer(action, policy, req);
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

/* the Action a request is sent to: its own, or the call's */
static inline const char *
zim_req_action(const char *action, const ZimRequest *req)
{
	return req->action ? req->action : action;
}

/* a request whose send time has come passes the gate: sign and start it */
static void
zim_start_attempt(const char *action, ZimRequest *req, ZimMonoTime now)
{
	/* RUNNING and counted in flight from here on, so cleanup releases both */
	req->state = ZIM_REQ_RUNNING;
	req->in_flight = true;
	req->started = now;
	req->transfer = -1;
	initStringInfo(&req->url);
	ZimSignedUrl(&req->url, zim_api_url, action);
	if (req->query)
		appendStringInfo(&req->url, "&%s", req->query);
	req->transfer = ZimHttpStart(req->url.data, req->body);
	req->attempts++;
}

/* the send times one Action of a call waits for, while others are in it */
#define ZIM_MAX_AHEAD			4
#define ZIM_MAX_ACTIONS_A_CALL	8

typedef struct ActionLoad
{
	const char *action;			/* compared as a pointer: a kind's name */
	int			ahead;			/* its requests SCHEDULED */
} ActionLoad;

/* the count of action in loads, added if new (NULL if loads is full) */
static int *
zim_load(ActionLoad *loads, int *n_loads, const char *action)
{
	for (int i = 0; i < *n_loads; i++)
		if (loads[i].action == action)
			return &loads[i].ahead;
	if (*n_loads == ZIM_MAX_ACTIONS_A_CALL)
		return NULL;
	loads[*n_loads].action = action;
	loads[*n_loads].ahead = 0;
	return &loads[(*n_loads)++].ahead;
}

/*
 * One pass of the scheduler: give send times, start what is due.  Sets
 * *wake to the next time something is due and *wake_event to why; returns
 * true while a request is not yet ANSWERED or FAILED.
 */
static bool
zim_schedule(const char *action, ZimRequest *reqs, int n, ZimMonoTime *wake,
			 ZimWaitEvent *wake_event)
{
	ZimMonoTime now = ZimRateNow();
	int			busy = 0;
	bool		pending = false;
	ActionLoad	loads[ZIM_MAX_ACTIONS_A_CALL];
	int			n_loads = 0;

	*wake = PG_INT64_MAX;
	*wake_event = ZIM_WAIT_RATE_LIMIT;

	for (int i = 0; i < n; i++)
	{
		int		   *ahead = zim_load(loads, &n_loads, zim_req_action(action, &reqs[i]));

		if (reqs[i].state == ZIM_REQ_SCHEDULED || reqs[i].state == ZIM_REQ_RUNNING)
			busy++;
		if (reqs[i].state == ZIM_REQ_SCHEDULED && ahead)
			(*ahead)++;
	}

	for (int i = 0; i < n; i++)
	{
		ZimRequest *req = &reqs[i];
		const char *act = zim_req_action(action, req);
		int		   *ahead = zim_load(loads, &n_loads, act);

		if (req->state == ZIM_REQ_BACKOFF && req->at <= now)
			req->state = ZIM_REQ_READY;

		/*
		 * Give a send time to ready requests, as many as may run at once.
		 * With several Actions, each waits for at most ZIM_MAX_AHEAD send
		 * times at a time, so that one Action's far-off send times do not
		 * take every transfer while the others could go now.
		 */
		if (req->state == ZIM_REQ_READY && busy < ZIM_MAX_TRANSFERS &&
			(n_loads <= 1 || ahead == NULL || *ahead < ZIM_MAX_AHEAD))
		{
			req->at = req->reserved_at = ZimRateReserve(act, now);
			req->state = ZIM_REQ_SCHEDULED;
			if (req->at > now)
				ZimStatsThrottled(act, (double) (req->at - now) / 1000.0);
			busy++;
			if (ahead)
				(*ahead)++;
		}

		if (req->state == ZIM_REQ_SCHEDULED && req->at <= now &&
			ZimRateGate(act, now, req->reserved_at, &req->at))
		{
			zim_start_attempt(act, req, now);
			if (ahead)
				(*ahead)--;
		}

		if ((req->state == ZIM_REQ_SCHEDULED || req->state == ZIM_REQ_BACKOFF) &&
			req->at < *wake)
		{
			*wake = req->at;
			*wake_event = req->state == ZIM_REQ_BACKOFF ? ZIM_WAIT_BACKOFF : ZIM_WAIT_RATE_LIMIT;
		}
		if (req->state != ZIM_REQ_ANSWERED && req->state != ZIM_REQ_FAILED)
			pending = true;
	}
	return pending;
}

/* a finished exchange's wire time: from when its request left to its end */
static int64
zim_wire_us(const ZimRequest *req)
{
	return Max(0, (int64) ((req->http.elapsed_ms - req->http.pretransfer_ms) * 1000.0));
}

/*
 * When the request of a finished exchange left, for the limiter (0: it
 * never did).  Counted back from now, when we saw the exchange end, by
 * the time libcurl spent after it started sending: never earlier than the
 * truth.  (Counting forward from when the attempt passed the gate was
 * earlier than the truth by however long the backend took to get libcurl
 * going, which under load let a request out too soon.)
 */
static ZimMonoTime
zim_sent_at(const ZimRequest *req)
{
	if (!req->http.request_sent)
		return 0;
	return Max(ZimRateNow() - zim_wire_us(req), req->started);
}

/* settle the attempts whose exchanges are over */
static void
zim_collect(const char *action, ZimRetryPolicy policy, ZimRequest *reqs, int n)
{
	for (int i = 0; i < n; i++)
	{
		ZimRequest *req = &reqs[i];

		if (req->state != ZIM_REQ_RUNNING || !ZimHttpFinished(req->transfer))
			continue;
		ZimHttpFinish(req->transfer, &req->http);
		/* once only: judging the answer below may raise */
		req->in_flight = false;
		ZimRateSent(zim_req_action(action, req), zim_sent_at(req),
					req->http.status == ZIM_HTTP_OK ? zim_wire_us(req) : -1);
		zim_forget_url(req);
		zim_settle_attempt(zim_req_action(action, req), policy, req);
	}
}

static void
zim_send_loop(const char *action, ZimRetryPolicy policy, ZimRequest *reqs, int n)
{
	ZimMonoTime wake;
	ZimWaitEvent wake_event;

	while (zim_schedule(action, reqs, n, &wake, &wake_event))
	{
		long		timeout = 1000;

		/* in whole milliseconds, rounded up: never wake before the time */
		if (wake != PG_INT64_MAX)
			timeout = Min(timeout, Max(0, (wake - ZimRateNow() + 999) / 1000));

		if (ZimHttpInFlight() > 0)
			ZimHttpWait(timeout);
		else if (timeout > 0)
		{
			/* only waits for a send time or a backoff: sleep on the latch */
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout, zim_wait_event(wake_event));
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		zim_collect(action, policy, reqs, n);
	}
}

/*
 * Send n requests of one Action (or each of its own, req->action),
 * concurrently, each paced by the limiter,
 * signed afresh for every attempt and retried as policy allows.  Returns
 * when every request is ANSWERED (any Code: the caller judges it) or
 * FAILED (the caller raises with ZimRaiseFailure).  Raises only for
 * interrupts and resource failures, after detaching every transfer.
 * max_retries < 0 means zim_pin.max_retries.
 */
void
ZimSendRequests(const char *action, ZimRetryPolicy policy, ZimRequest *reqs, int n,
				int max_retries)
{
	ZimCheckConfigured();
	call_max_retries = max_retries >= 0 ? max_retries : zim_max_retries;

	for (int i = 0; i < n; i++)
	{
		reqs[i].state = ZIM_REQ_READY;
		reqs[i].attempts = 0;
		reqs[i].in_flight = false;
		reqs[i].url.data = NULL;
	}

	PG_TRY();
	{
		zim_send_loop(action, policy, reqs, n);
	}
	PG_FINALLY();
	{
		int			running = ZimHttpAbortAll();

		/* what a peer that sent junk left on its connection is never read */
		if (call_got_junk)
			ZimHttpDropConnections();
		call_got_junk = false;

		if (!ZimShmemLockHeld())
			for (int i = 0; i < n; i++)
			{
				/* abandoned transfers may have left: count them as sent now */
				if (reqs[i].in_flight)
					ZimRateSent(zim_req_action(action, &reqs[i]), ZimRateNow(), -1);
				reqs[i].in_flight = false;
				/* send times reserved but not reached are given back */
				if (reqs[i].state == ZIM_REQ_SCHEDULED)
					ZimRateRelease(zim_req_action(action, &reqs[i]), reqs[i].reserved_at);
			}
		ZimStatsCanceled(n > 0 ? zim_req_action(action, &reqs[0]) : action, running);
		for (int i = 0; i < n; i++)
			zim_forget_url(&reqs[i]);
	}
	PG_END_TRY();
}

/*
 * Did a request fail in a way that a later attempt may cure?  For a
 * request FAILED without an answer, or ANSWERED with a Code the caller
 * treats as a failure (idempotent policy).  The same judgement as a call's
 * own retries: the network and HTTP 5xx may pass; a certificate, an
 * oversize answer, HTTP 4xx and an answer that is no ZIM answer persist.
 */
bool
ZimRequestTransient(const ZimRequest *req)
{
	if (req->state == ZIM_REQ_FAILED)
		switch (req->failure)
		{
			case ZIM_FAIL_TRANSPORT:
				return req->http.status != ZIM_HTTP_TLS_FAILED &&
					req->http.status != ZIM_HTTP_TOO_LARGE;
			case ZIM_FAIL_HTTP_STATUS:
				return req->http.http_code >= 500;
			case ZIM_FAIL_BAD_ANSWER:
				return false;
		}
	return ZimCodeIsRetryable(req->response.code, ZIM_RETRY_IDEMPOTENT);
}

/*
 * The Code (if there was an answer) and the text a request ended with,
 * for a record that outlives the call (the queue's rows).
 */
void
ZimRequestOutcome(const ZimRequest *req, bool *has_code, int64 *code,
				  const char **message)
{
	if (req->state == ZIM_REQ_FAILED)
	{
		*has_code = false;
		*code = 0;
		if (req->failure == ZIM_FAIL_TRANSPORT)
			*message = req->http.error[0] ? pstrdup(req->http.error) : "transport failure";
		else if (req->failure == ZIM_FAIL_HTTP_STATUS)
			*message = psprintf("HTTP status %ld", req->http.http_code);
		else
			*message = req->why ? req->why : "invalid answer";
	}
	else
	{
		*has_code = true;
		*code = req->response.code;
		*message = req->response.message;
	}
}

/*
 * What a caller may do after a failure in which the request may have been
 * processed.
 */
static const char *
zim_maybe_done_hint(ZimRetryPolicy policy)
{
	return (policy == ZIM_RETRY_IDEMPOTENT)
		? "The call sets an absolute state, so it can safely be repeated."
		: "The request may or may not have been processed by the ZIM server.";
}

/*
 * The proxy failed: it could not be reached, refused the tunnel, or closed
 * it before TLS began.  Nothing reached the ZIM server.  The detail names
 * the proxy by host and port only (never its credentials).
 */
static void
zim_raise_proxy(const char *action, const ZimHttpResult *http, int attempts,
				const char *sep, const char *extra)
{
	const char *hint;

	if (http->proxy_code == 407)
		hint = "Check the user and password in zim_pin.proxy.";
	else if ((http->proxy_code != 0 && http->proxy_code / 100 != 2) || http->proxy_closed)
		hint = "Check zim_pin.proxy, and that the proxy lets the server reach the host and port of zim_pin.api_url.";
	else
		hint = "Check zim_pin.proxy, and that the proxy is running.";
	ereport(ERROR,
			(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
			 errmsg("could not connect to the ZIM server through the proxy"),
			 errdetail_internal("%s (Action %s, %s).%s%s", http->error, action,
								attempts_text(attempts), sep, extra),
			 errhint("%s", hint)));
}

/*
 * Raise the error for a request whose last attempt failed in transport.
 */
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
		case ZIM_HTTP_PROXY_FAILED:
			zim_raise_proxy(action, http, attempts, sep, extra);
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
					 errdetail_internal("%s (Action %s).%s%s",
										http->error, action, sep, extra),
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
										ZimQuoteBody(&req->http.body), sep, extra),
					 errhint("%s", zim_maybe_done_hint(policy))));
			break;
		case ZIM_FAIL_BAD_ANSWER:
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("invalid answer from the ZIM server"),
					 errdetail_internal("%s HTTP status %ld; the answer begins: \"%s\"%s%s",
										req->why, req->http.http_code,
										ZimQuoteBody(&req->http.body), sep, extra),
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

	if (ZimCodeIsRateLimit(code))
	{
		sqlstate = ERRCODE_ZIM_RATE_LIMITED;
		hint = "The AppId's call rate is shared with every server that uses it; retry later.";
	}
	else if (ZimCodeIsAuth(code))
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
 * zim_api(action text, body jsonb) returns jsonb
 */
Datum
zim_api(PG_FUNCTION_ARGS)
{
	char	   *action;
	Jsonb	   *body;
	char	   *body_text;
	size_t		len;
	ZimRequest	req = {0};
	Jsonb	   *result;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "zim_pin call",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(work);

	ZimRequireNotNull(fcinfo, 0, "action");
	ZimRequireNotNull(fcinfo, 1, "body");

	action = text_to_cstring(PG_GETARG_TEXT_PP(0));
	len = strlen(action);
	if (len == 0 || len > ZIM_MAX_ACTION_LEN ||
		strspn(action, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid ZIM action name"),
				 errdetail("An action name is 1 to %d ASCII letters and digits.",
						   ZIM_MAX_ACTION_LEN)));

	body = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(body))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("body must be a JSON object")));
	body_text = JsonbToCString(NULL, &body->root, VARSIZE(body));
	body_text = pg_server_to_any(body_text, strlen(body_text), PG_UTF8);

	req.body = body_text;
	ZimSendRequests(action, ZIM_RETRY_UNSENT_ONLY, &req, 1, -1);
	if (req.state == ZIM_REQ_FAILED)
		ZimRaiseFailure(action, ZIM_RETRY_UNSENT_ONLY, &req, NULL);

	MemoryContextSwitchTo(oldcxt);
	result = (Jsonb *) palloc(VARSIZE(req.response.jsonb));
	memcpy(result, req.response.jsonb, VARSIZE(req.response.jsonb));
	MemoryContextDelete(work);
	PG_RETURN_JSONB_P(result);
}

