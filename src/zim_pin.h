/*-------------------------------------------------------------------------
 *
 * zim_pin.h
 *	  The layout of zim_pin, its glossary, and what each file offers the
 *	  files above it.
 *
 * Layers.  Each file owns one concern.  Calls go one way, down this list;
 * a file never calls a file above it, and files on one line do not call
 * each other.
 *
 *	 zim_pin.c		_PG_init only
 *	 worker.c		the launcher and the queue worker (background processes)
 *	 queue.c		the queue's front: enqueue, the wake-up at commit,
 *					zim_pin_run_jobs()
 *	 jobs.c			the job table as a runner sees it: claim by user, send,
 *					record, renew leases, prune
 *	 merge.c		a user's consecutive jobs of one Action as the fewest
 *					requests, and each job's outcome from their answers
 *	 conv_pinned.c	ConvPinned: arguments, bodies, chunks, ErrorList, what
 *					each request did to its conversations, result rows,
 *					zim_conv_pinned()
 *	 conv_silence.c	SilenceConvNotification, zim_silence_conv_notification()
 *	 conv_mark.c	SetConvMark, zim_set_conv_mark()
 *	 conv_delete.c	DeleteConv, zim_delete_conv()
 *	 conv_clear_unread.c	ClearConversationUnread (a GET),
 *					zim_clear_conversation_unread()
 *	 conv_list.c	QueryConversationList, zim_query_conversation_list()
 *	 conv_query_msg.c	QueryPeerMsg and QueryGroupMsg, zim_query_peer_msg(),
 *					zim_query_group_msg()
 *	 conv_family.c	what the conversation Actions share: their arguments,
 *					the wire's encodings, a writing call's run
 *	 client.c		any Action: schedule, send, retry, judge each attempt,
 *					raise failures with their SQLSTATEs, zim_api()
 *	 answer.c		reading a ZIM answer: JSON checks, Code, Message,
 *					RequestId, jsonb getters
 *	 codes.c		what the ZIM return codes mean; the backoff formula
 *	 ratelimit.c	the per-Action sliding-window limiter
 *	 status.c		what the queue's worker is doing, zim_pin_worker_status()
 *	 stats.c		the per-Action counters, zim_pin_stats(), reset
 *	 sign.c			the v2.0 signature, the signed URL, zim_pin_signature()
 *	 http.c			the libcurl transport
 *	 shmem.c		the shared area: layout, hooks, lock, Action slots, the
 *					queue's coordination
 *	 settings.c		the zim_pin.* settings and the secret
 *	 proxy.c		zim_pin.proxy and its credentials
 *	 compat.h		every difference between PostgreSQL majors
 *
 * Glossary.
 *	 Action		a ZIM server API (ConvPinned, UserRegister, ...); the unit of
 *				the rate limit and of the statistics
 *	 call		one run of a SQL function that sends (zim_conv_pinned,
 *				zim_api) or one batch of the queue: one or more requests
 *	 request	one signed POST of one body to one Action (a ZimRequest);
 *				sent in one or more attempts
 *	 attempt	one sending of a request, signed afresh (nonce, timestamp);
 *				retries are further attempts of the same request
 *	 exchange	(transfer, in http.c) one HTTP request and its answer on
 *				the wire: what one attempt does
 *	 answer		the JSON body ZIM sends back, with its Code
 *	 chunk		the conversations one ConvPinned request carries, at most
 *				zim_pin.max_convs_per_request
 *	 job		one row of zim_pin_job: a stored call of a writing Action
 *				(ConvPinned, SilenceConvNotification, SetConvMark, DeleteConv,
 *				ClearConversationUnread), sent after its transaction
 *				commits, as one or more requests
 *	 group		one user's consecutive jobs of one Action in a batch, sent
 *				merged
 *	 batch		the jobs one runner claims and sends together
 *	 runner		what sends jobs: the worker, or a zim_pin_run_jobs() call
 *
 * Running one test: see CONTRIBUTING.md.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ZIM_PIN_H
#define ZIM_PIN_H

#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "compat.h"

/* SQLSTATEs of our own, class ZP (see README) */
#define ERRCODE_ZIM_SERVICE_ERROR		MAKE_SQLSTATE('Z','P','0','0','1')
#define ERRCODE_ZIM_RATE_LIMITED		MAKE_SQLSTATE('Z','P','0','0','2')
#define ERRCODE_ZIM_AUTH_FAILED			MAKE_SQLSTATE('Z','P','0','0','3')
#define ERRCODE_ZIM_USER_NOT_REGISTERED	MAKE_SQLSTATE('Z','P','0','0','4')
#define ERRCODE_ZIM_BAD_RESPONSE		MAKE_SQLSTATE('Z','P','0','0','5')

/* The vendor's limits on identifiers (bytes) */
#define ZIM_MAX_ID_LEN			32
/* The largest response we accept */
#define ZIM_MAX_RESPONSE_SIZE	(1024 * 1024)
/* Longest Action name we accept */
#define ZIM_MAX_ACTION_LEN		64

/* Most distinct Actions tracked; further ones share the last slot */
#define ZIM_MAX_ACTIONS			16
/*
 * The documented Actions (zim-server-api.md: UserRegister and the eight
 * "Conversation related" ones): each always has a slot of its own, so at
 * most ZIM_MAX_ACTIONS - 10 others get one
 */
#define ZIM_KNOWN_ACTIONS \
	"ConvPinned", "UserRegister", "QueryConversationList", \
	"SilenceConvNotification", "SetConvMark", "DeleteConv", \
	"ClearConversationUnread", "QueryPeerMsg", "QueryGroupMsg"
/* Upper bound of zim_pin.requests_per_second (the limiter's ring size) */
#define ZIM_MAX_RATE			10000
/* Most HTTP exchanges one backend runs at once */
#define ZIM_MAX_TRANSFERS		16
/* Wire times of recent exchanges each Action keeps (the limiter's margin) */
#define ZIM_RATE_WIRE_SAMPLES	32

/*
 * Microseconds of CLOCK_MONOTONIC: the clock of the limiter and of every
 * wait for a send time or a backoff (ZimRateNow).  Unlike the wall clock
 * it never steps, and on Linux it is one clock for every process of the
 * machine, so its times can be compared across backends in shared memory.
 * Never mix it with a TimestampTz.
 */
typedef int64 ZimMonoTime;

/* A NULL argument of a SQL function: SQLSTATE 22004 (every SQL file) */
static inline void
ZimRequireNotNull(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

/* ---- proxy.c ---- */

#define ZIM_PROXY_HOST_LEN 256

/* zim_pin.proxy, parsed */
typedef struct ZimProxy
{
	char		url[ZIM_PROXY_HOST_LEN + 16];	/* http://host:port, for libcurl */
	char		host_port[ZIM_PROXY_HOST_LEN + 8];	/* for messages */
	char		shown[ZIM_PROXY_HOST_LEN + 32]; /* what SHOW prints */
	bool		has_credentials;
	char		user[256];		/* percent-decoded */
	char		password[256];
} ZimProxy;

extern void ZimDefineProxySetting(void);
extern const ZimProxy *ZimProxySetting(void);

/* ---- settings.c ---- */
extern char *zim_api_url;
extern char *zim_ca_file;
extern int	zim_connect_timeout_ms;
extern int	zim_timeout_ms;
extern int	zim_max_retries;
extern int	zim_requests_per_second;
extern int	zim_max_convs_per_request;
extern char *zim_worker_database;
extern int	zim_job_max_attempts;
extern int	zim_job_retention_min;
extern int	zim_job_lease_s;

extern void ZimDefineSettings(void);
extern void ZimCheckConfigured(void);
extern bool ZimIsConfigured(const char **problem);
extern int	ZimUseServerSendSettings(void);
extern void ZimForceServerSendSettings(void);
extern uint32 ZimAppId(void);
extern const char *ZimServerSecret(void);
extern const char *ZimRedact(const char *text);

/* ---- shmem.c ---- */

/* the counters of one Action (stats.c writes them, under the lock) */
typedef struct ZimStats
{
	int64		requests;		/* HTTP exchanges started */
	int64		succeeded;		/* answered with Code 0 */
	int64		failed_connection;	/* class 08: no usable answer */
	int64		failed_service; /* class ZP: non-zero Code or not a ZIM answer */
	int64		canceled;		/* class 57: abandoned by a cancel or timeout */
	int64		retries;		/* attempts scheduled again */
	int64		throttled;		/* requests that waited for the limiter */
	double		throttled_ms;	/* and how long in all */
	int64		convs_changed;	/* ConvPinned: conversations changed */
	int64		convs_failed;	/* ... and those in ErrorList */
	double		latency_sum_ms;
	double		latency_max_ms;
	int64		latency_count;
} ZimStats;

/*
 * One Action's slot: the limiter's state (ratelimit.c) and its counters.
 * Every time in it is a ZimMonoTime.  rings[] holds two rings of capacity
 * send times each, both ascending: first the reserved send times, then the
 * confirmed ones.
 */
typedef struct ZimActionState
{
	char		action[ZIM_MAX_ACTION_LEN + 1];
	ZimMonoTime paused_until;	/* no request before this (backing off) */
	ZimStats	stats;
	int64		widened_us;		/* the margin's widening, as set ... */
	ZimMonoTime widened_at;		/* ... at this time; it narrows from there */
	int			wire_next;		/* wire_us: the next entry to write */
	int			wire_count;		/* wire_us: entries */
	int32		wire_us[ZIM_RATE_WIRE_SAMPLES];	/* recent exchanges' wire times */
	int32		wire_spread_us; /* the most of wire_us minus the least */
	int			capacity;		/* size of each ring */
	int			head;			/* reserved ring: oldest entry */
	int			count;			/* reserved ring: entries */
	int			sent_head;		/* confirmed ring: oldest entry */
	int			sent_count;		/* confirmed ring: entries */
	int			inflight;		/* started, send time not yet confirmed */
	ZimMonoTime rings[FLEXIBLE_ARRAY_MEMBER];
} ZimActionState;

#define ZimReservation(st, i)	((st)->rings[((st)->head + (i)) % (st)->capacity])
#define ZimSent(st, i) \
	((st)->rings[(st)->capacity + ((st)->sent_head + (i)) % (st)->capacity])

/* what the queue's worker is doing, for zim_pin_worker (status.c) */
typedef enum ZimWorkerState
{
	ZIM_WORKER_STARTING,		/* started by the launcher, not yet working */
	ZIM_WORKER_IDLE,			/* nothing to send (running, or gone until work) */
	ZIM_WORKER_SENDING,			/* a batch claimed: sending, recording */
	ZIM_WORKER_BACKING_OFF,		/* after an error that was no job's */
	ZIM_WORKER_UNCONFIGURED,	/* zim_pin.app_id or the secret is missing */
	ZIM_WORKER_NO_DATABASE,		/* zim_pin.worker_database does not exist */
	ZIM_WORKER_CANNOT_CONNECT,	/* the worker could not connect (another reason) */
	ZIM_WORKER_REFUSED,			/* it would have run as another role */
	ZIM_WORKER_NO_SLOT,			/* no background worker slot was free */
	ZIM_WORKER_STOPPED			/* ended by an error; another starts soon */
} ZimWorkerState;

#define ZIM_STATUS_ERROR_LEN 512

typedef struct ZimWorkerStatus
{
	ZimWorkerState state;
	TimestampTz since;			/* when state began */
	TimestampTz until;			/* backing off, waiting: until when; or 0 */
	TimestampTz started_at;		/* the last worker's start */
	TimestampTz launcher_started_at;
	TimestampTz last_round_at;	/* the last look at the queue that finished */
	TimestampTz last_sent_at;	/* the last batch that was sent */
	uint64		jobs_sent;		/* since the server started */
	uint64		jobs_finished;
	TimestampTz last_error_at;
	int			last_error_encoding;
	int			last_error_code;	/* its SQLSTATE, as ERRCODE */
	char		last_error[ZIM_STATUS_ERROR_LEN];
} ZimWorkerStatus;

/* coordination of the queue's launcher, worker and enqueuing backends */
typedef struct ZimQueueShared
{
	int			launcher_procno;	/* -1: no launcher */
	int			worker_procno;	/* -1: no worker running */
	bool		work_pending;	/* a commit enqueued since the worker looked */
	TimestampTz next_due;		/* earliest retry the worker left, 0: none */
	TimestampTz last_housekeeping;
	uint64		worker_connects;	/* workers that reached their database */
	bool		config_warned;	/* "waiting for configuration" was logged */
	ZimWorkerStatus status;		/* status.c's */
} ZimQueueShared;

extern void ZimShmemInstallHooks(void);
extern bool ZimShmemIsShared(void);
extern void ZimShmemLock(void);
extern void ZimShmemUnlock(void);
extern bool ZimShmemLockHeld(void);
extern ZimActionState *ZimActionLookup(const char *action);
extern int	ZimActionIndex(const ZimActionState *st);
extern int	ZimActionCount(void);
extern ZimActionState *ZimActionByIndex(int i);
extern TimestampTz *ZimShmemStatsReset(void);
extern ZimQueueShared *ZimShmemQueue(void);

/* ---- http.c ---- */

/* How one HTTP exchange ended, before any interpretation of the body */
typedef enum ZimHttpStatus
{
	ZIM_HTTP_OK,				/* a complete answer, any HTTP status */
	ZIM_HTTP_CONNECT_FAILED,	/* nothing sent: connect/resolve failed */
	ZIM_HTTP_PROXY_FAILED,		/* nothing sent: zim_pin.proxy failed us */
	ZIM_HTTP_TLS_FAILED,		/* handshake or certificate verification */
	ZIM_HTTP_TIMEOUT,			/* zim_pin.timeout_ms or connect timeout */
	ZIM_HTTP_CONNECTION_LOST,	/* reset, truncated answer, send/recv error */
	ZIM_HTTP_TOO_LARGE,			/* answer exceeded ZIM_MAX_RESPONSE_SIZE */
	ZIM_HTTP_OTHER				/* any other libcurl failure */
} ZimHttpStatus;

typedef struct ZimHttpResult
{
	ZimHttpStatus status;
	long		http_code;		/* 0 if no answer */
	bool		request_sent;	/* did any byte of the request leave? */
	StringInfoData body;		/* palloc'd copy of the answer */
	char		error[256];		/* libcurl's text, redacted, or "" */
	double		elapsed_ms;
	double		pretransfer_ms; /* from start until the request left */
	char		proxy[ZIM_PROXY_HOST_LEN + 8];	/* host:port, or "" if direct */
	long		proxy_code;		/* the proxy's answer to CONNECT, or 0 */
	bool		proxy_closed;	/* it answered 2xx, then closed the tunnel */
} ZimHttpResult;

extern int	ZimHttpStart(const char *url, const char *body);
extern void ZimHttpWait(long timeout_ms);
extern bool ZimHttpFinished(int id);
extern void ZimHttpFinish(int id, ZimHttpResult *result);
extern int	ZimHttpInFlight(void);
extern int	ZimHttpAbortAll(void);
extern void ZimHttpDropConnections(void);

/* ---- sign.c ---- */
extern void ZimSignature(uint32 app_id, const char *nonce, const char *secret,
						 int64 timestamp, char *out_hex);
extern void ZimSignedUrl(StringInfo url, const char *base, const char *action);

/* ---- status.c ---- */
extern void ZimStatusSet(ZimWorkerState state, TimestampTz until);
extern void ZimStatusError(int sqlerrcode, const char *message);
extern void ZimStatusStarted(bool launcher);
extern void ZimStatusRound(int sent, int finished);
extern ZimWorkerState ZimStatusState(void);

/* ---- stats.c ---- */

/* how one attempt ended, for the counters */
typedef enum ZimAttemptOutcome
{
	ZIM_OUTCOME_SUCCEEDED,
	ZIM_OUTCOME_FAILED_CONNECTION,
	ZIM_OUTCOME_FAILED_SERVICE
} ZimAttemptOutcome;

extern void ZimStatsAttempt(const char *action, double latency_ms,
							ZimAttemptOutcome outcome, bool will_retry);
extern void ZimStatsThrottled(const char *action, double wait_ms);
extern void ZimStatsCanceled(const char *action, int n);
extern void ZimStatsConvs(const char *action, int64 changed, int64 failed);

/* ---- ratelimit.c ---- */
extern ZimMonoTime ZimRateNow(void);
extern ZimMonoTime ZimRateReserve(const char *action, ZimMonoTime now);
extern bool ZimRateGate(const char *action, ZimMonoTime now, ZimMonoTime reserved_at,
						ZimMonoTime *retry_at);
extern void ZimRateRelease(const char *action, ZimMonoTime reserved_at);
extern void ZimRateSent(const char *action, ZimMonoTime sent_at, int64 wire_us);
extern void ZimRateExceeded(const char *action, ZimMonoTime started, int pause_ms);

/* ---- codes.c ---- */

/* Which failures a call may retry (see the contract's Retries section) */
typedef enum ZimRetryPolicy
{
	ZIM_RETRY_IDEMPOTENT,		/* ConvPinned: every transient failure */
	ZIM_RETRY_UNSENT_ONLY		/* zim_api: only what was surely not processed */
} ZimRetryPolicy;

/* first delay of a retry after a rate-limit Code, and the shared pause */
#define ZIM_RATE_LIMIT_PAUSE_MS	1000

extern bool ZimCodeIsRetryable(int64 code, ZimRetryPolicy policy);
extern bool ZimCodeIsRateLimit(int64 code);
extern bool ZimCodeIsAuth(int64 code);
extern long ZimBackoffMs(int retry, long base_ms, long cap_ms);

/* ---- answer.c ---- */

/* A parsed ZIM answer */
typedef struct ZimResponse
{
	int64		code;
	char	   *message;		/* "" if absent */
	char	   *request_id;		/* "" if absent */
	bool		has_items;		/* a non-empty "ErrorList": per-item outcomes */
	Jsonb	   *jsonb;			/* the whole answer */
} ZimResponse;

extern bool ZimReadAnswer(const StringInfo body, ZimResponse *resp, const char **why);
extern const char *ZimQuoteBody(const StringInfoData *body);
extern JsonbValue *ZimJsonGet(Jsonb *jb, const char *key);
extern Jsonb *ZimJsonParseText(const char *utf8, int len);
extern bool ZimJsonInt64(const JsonbValue *v, int64 *out);

/* ---- client.c ---- */

/* Where one request stands */
typedef enum ZimRequestState
{
	ZIM_REQ_READY,				/* to be given a send time */
	ZIM_REQ_SCHEDULED,			/* send time reserved, not yet reached */
	ZIM_REQ_RUNNING,			/* on the wire */
	ZIM_REQ_BACKOFF,			/* waiting before a retry */
	ZIM_REQ_ANSWERED,			/* a ZIM answer, any Code */
	ZIM_REQ_FAILED				/* no usable answer after the retries */
} ZimRequestState;

/* How a failed request failed */
typedef enum ZimFailure
{
	ZIM_FAIL_TRANSPORT,			/* http.status says how */
	ZIM_FAIL_HTTP_STATUS,		/* non-2xx without a ZIM answer */
	ZIM_FAIL_BAD_ANSWER			/* not a ZIM answer */
} ZimFailure;

typedef struct ZimRequest
{
	const char *action;			/* in: its Action, or NULL for the call's */
	const char *body;			/* in: the JSON body, UTF-8; NULL: a GET */
	const char *query;			/* in: parameters after the signed ones, encoded */
	ZimRequestState state;
	int			attempts;		/* attempts sent so far */
	ZimMonoTime at;				/* SCHEDULED: send time; BACKOFF: its end */
	ZimMonoTime reserved_at;	/* SCHEDULED: the send time the limiter gave */
	bool		in_flight;		/* counted in the limiter's in-flight count */
	int			transfer;		/* RUNNING: http.c's transfer */
	ZimMonoTime started;		/* RUNNING: when it passed the rate gate */
	StringInfoData url;			/* RUNNING: the signed URL (wiped after) */
	ZimResponse response;		/* ANSWERED */
	ZimHttpResult http;			/* the last exchange */
	ZimFailure failure;			/* FAILED */
	const char *why;			/* FAILED with ZIM_FAIL_BAD_ANSWER */
} ZimRequest;

extern void ZimSendRequests(const char *action, ZimRetryPolicy policy,
							ZimRequest *reqs, int n, int max_retries);
extern bool ZimRequestTransient(const ZimRequest *req);
extern void ZimRequestOutcome(const ZimRequest *req, bool *has_code, int64 *code,
							  const char **message);
extern void ZimRaiseFailure(const char *action, ZimRetryPolicy policy,
							const ZimRequest *req, const char *extra_detail);
extern void ZimRaiseForCode(const char *action, const ZimRequest *req,
							const char *extra_detail);

/* ---- conv_family.c ---- */

/* one conversation to change */
typedef struct ZimConv
{
	char	   *id;
	int32		type;
	int32		mark;			/* SetConvMark: its mark (0 for other Actions) */
	int			tag;			/* the caller's: a kind's build carries it along */
} ZimConv;

/* a conversation a request did not bring to the state asked for */
typedef struct ZimConvFailure
{
	const char *conv_id;
	int32		conv_type;
	bool		has_code;		/* false: no answer, so no SubCode */
	int64		sub_code;
	const char *sub_message;	/* NULL if absent */
} ZimConvFailure;

typedef void (*ZimConvFailureFn) (const ZimConvFailure *f, void *arg);

/* one call of a writing Action of the family, its input checked */
typedef struct ZimConvCall
{
	char	   *from_user_id;
	ZimConv    *convs;			/* a kind's build may reorder them */
	int			n;
	bool		on;				/* the state asked for: silenced, marked */
	int32		mark;			/* SetConvMark's MarkContent */
} ZimConvCall;

/* the conversations one request of a call carries: convs[first, first + n) */
typedef struct ZimConvSpan
{
	int			first;
	int			n;
} ZimConvSpan;

/*
 * One writing Action of the family, as its file fills it in (see
 * conv_family.c).  read_args reads the function's arguments after the
 * conversations (may be NULL); n_requests and build split the call into
 * requests, filling each request's body (or query, with a NULL body, for
 * a GET) in UTF-8 and its span; items hands fn each conversation that an
 * answered request names as failed (may be NULL; strict: a malformed entry
 * raises ZP005, else it is skipped); code_is_item says that a whole
 * request's Code concerns only its one conversation (its row, not an
 * ERROR); code_is_done that the state asked for already holds (no row).
 * per_request is how many conversations one request holds at most (0:
 * zim_pin.max_convs_per_request), for the queue's estimates.
 */
typedef struct ZimConvKind
{
	const char *action;
	const char *const *arg_names;	/* of the arguments after the conversations */
	int			n_args;
	int			per_request;
	void		(*read_args) (FunctionCallInfo fcinfo, ZimConvCall *call);
	int			(*n_requests) (const ZimConvCall *call);
	void		(*build) (ZimConvCall *call, ZimRequest *reqs, ZimConvSpan *spans);
	void		(*items) (const ZimConvCall *call, const ZimRequest *req,
						  const ZimConvSpan *span, bool strict,
						  ZimConvFailureFn fn, void *arg);
	bool		(*code_is_item) (int64 code);
	bool		(*code_is_done) (int64 code);
} ZimConvKind;

extern void ZimConvCheckUserId(const char *id, const char *name);
extern void ZimConvCheckId(const char *id, const char *what);
extern int	ZimConvReadTargets(FunctionCallInfo fcinfo, bool one_type,
							   const char *const *arg_names, int n_args,
							   char **from_user_id, ZimConv **convs);
extern const char *ZimConvStoredProblem(const char *from_user_id, const ZimConv *convs, int n);
extern char *ZimConvUtf8(StringInfo buf);
extern void ZimConvQueryParam(StringInfo query, const char *name, const char *value);
extern bool ZimConvCodeIsOwn(int64 code);

/* the pages of one reading call */
typedef struct ZimConvPager
{
	const char *action;
	int64		next;			/* the cursor to send; 0 asks for the first page */
	int			rows;			/* rows so far */
	int			max_rows;
	int			page_max;		/* the Action's largest Limit */
	int			pages;
	void	   *seen;			/* the cursors ZIM gave (an HTAB) */
	ZimRequest	req;			/* the last page's */
} ZimConvPager;

extern int	ZimConvReadMaxRows(FunctionCallInfo fcinfo, int argno);
extern void ZimConvPagerInit(ZimConvPager *pager, const char *action, int max_rows, int page_max);
extern int	ZimConvPagerLimit(const ZimConvPager *pager);
extern JsonbContainer *ZimConvPagerFetch(ZimConvPager *pager, char *body);
extern bool ZimConvPagerNext(ZimConvPager *pager, int page_rows);
typedef void (*ZimConvRowFn) (void *arg, JsonbValue *entry);
extern void ZimConvPages(ZimConvPager *pager, const char *head, const char *tail,
						 ZimConvRowFn row, void *arg);
extern void ZimConvBadAnswer(const char *action, const char *what);
extern bool ZimConvMsToTimestamp(int64 ms, TimestampTz *ts);
extern Datum ZimConvFamilyCall(FunctionCallInfo fcinfo, const ZimConvKind *kind, bool one_type);
extern int	ZimConvReadCall(FunctionCallInfo fcinfo, const ZimConvKind *kind, bool one_type,
							ZimConvCall *call);
extern bool ZimConvFailedWhole(const ZimConvKind *kind, const ZimRequest *req);

/* each Action's kind, in its own file */
extern PGDLLIMPORT const ZimConvKind ZimConvPinnedKind;
extern PGDLLIMPORT const ZimConvKind ZimSilenceKind;
extern PGDLLIMPORT const ZimConvKind ZimMarkKind;
extern PGDLLIMPORT const ZimConvKind ZimDeleteKind;
extern PGDLLIMPORT const ZimConvKind ZimClearUnreadKind;

/* ---- conv_pinned.c ---- */

/* what the requests of one ConvPinned call did, all chunks together */
typedef struct ZimConvTally
{
	int64		changed;
	int64		failed;
	int			first_whole;	/* first request that failed whole, or -1 */
	int			n_whole;		/* requests that failed whole */
	bool		transient;		/* one of those may succeed if sent again */
} ZimConvTally;

extern int	ZimConvPinnedReadArgs(FunctionCallInfo fcinfo, bool one_type,
								  char **from_user_id, ZimConv **convs, bool *pinned);
extern int	ZimConvPinnedRequestCount(int n_convs);
extern void ZimConvPinnedRequests(const char *from_user_id, const ZimConv *convs,
								  int n_convs, bool pinned, ZimRequest *reqs);
extern void ZimConvPinnedTally(const ZimRequest *reqs, int n_convs, ZimConvTally *tally);
extern void ZimConvPinnedFailures(const ZimRequest *reqs, const ZimConv *convs,
								  int n_convs, bool strict, bool whole_too,
								  ZimConvFailureFn fn, void *arg, ZimConvTally *tally);

/* ---- merge.c ---- */

/* what one job's share of a merged group came to */
typedef enum ZimJobVerdict
{
	ZIM_JOB_DONE,				/* every request it had a part in was answered */
	ZIM_JOB_FAILED,				/* a request it had a part in failed whole */
	ZIM_JOB_RETRY,				/* ... transiently: send it again later */
	ZIM_JOB_HELD_BACK			/* not sent, or behind a job sent again */
} ZimJobVerdict;

/* one claimed job */
typedef struct ZimJob
{
	int64		job_id;
	char	   *from_user_id;
	ZimConv    *convs;
	int			n;
	const ZimConvKind *kind;	/* its Action's; NULL: not one the queue sends */
	bool		on;				/* the state asked for: pinned, silenced, marked */
	int32		mark;			/* SetConvMark's */
	int			attempts;		/* counting this one */
	bool		exhausted;		/* attempts used up by runners that died */
	const char *poison;			/* why it cannot be sent at all, or NULL */
	bool		lost;			/* its lease ran out and another runner took it */
	/* its outcome (merge.c) */
	ZimJobVerdict verdict;
	bool		has_code;		/* the Code and text its row records */
	int64		code;
	const char *message;
	ZimConvFailure *failures;	/* the conversations it asked for that failed */
	int			n_failures;
	int			n_superseded;	/* conversations a later job decided */
	int64		superseded_by;	/* the last such job */
} ZimJob;

/*
 * A group's requests go in two phases: first the "off" intents (unpin,
 * unmute, cancel a mark), then the "on" ones (pin, mute, set a mark,
 * delete, clear), so that an "off" frees a slot under a per-user cap
 * before an "on" needs it.
 */
#define ZIM_PHASE_OFF	0
#define ZIM_PHASE_ON	1
#define ZIM_PHASES		2

/*
 * One user's consecutive jobs of one Action, sent merged: per conversation
 * (and mark) only the last job's intent goes out.
 */
typedef struct ZimJobGroup
{
	int			first_job;		/* its jobs in the batch's array, in order */
	int			n_jobs;
	const ZimConvKind *kind;	/* the Action of its jobs; NULL: none is sent */
	ZimConv    *sent;			/* the conversations sent, "off" first; tag: index */
	int		   *owner;			/* the job (batch index) each one is sent for */
	int			n_sent;
	int			n_off;
	ZimConvCall calls[ZIM_PHASES];	/* each phase's conversations, as built */
	ZimConvSpan *spans[ZIM_PHASES];
	int			first_req[ZIM_PHASES];	/* in the batch's reqs[phase] */
	int			n_reqs[ZIM_PHASES];
	bool		on_sent;		/* false: its "off" requests failed transiently */
	/* its requests in order, "off" then "on": how many went, and go next */
	int			n_reqs_done;
	int			send_to;
} ZimJobGroup;

/* the jobs one runner claimed, by user, and their requests */
typedef struct ZimJobBatch
{
	MemoryContext cxt;			/* holds the batch; outlives SPI and commits */
	const char *schema;			/* the extension's schema, quoted */
	bool		any_action;		/* its zim_pin_job has 1.4's action column */
	ZimJob	   *jobs;
	int			n_jobs;
	ZimJobGroup *groups;
	int			n_groups;
	ZimRequest *reqs[ZIM_PHASES];	/* every group's requests of each phase */
	int			n_reqs[ZIM_PHASES];
	TimestampTz lease;			/* claimed_until of every job held: the claim's token */
	TimestampTz renewed;		/* the lease a renewal wrote, once it commits */
} ZimJobBatch;

extern const ZimConvKind *ZimMergeKind(const char *action);
extern int	ZimMergePerRequest(const ZimConvKind *kind);
extern int	ZimMergeGroupRequests(const ZimJobGroup *g);
extern bool ZimMergeJobSent(const ZimJobBatch *batch, int group, int j);
extern void ZimMergeBuild(ZimJobBatch *batch);
extern void ZimMergeOutcome(ZimJobBatch *batch, int group);

/* ---- queue.c ---- */

extern void ZimQueueInstallHooks(void);

/* ---- jobs.c ---- */

/*
 * The queue's statements run as a superuser (the worker, SECURITY DEFINER
 * functions) with search_path pinned to pg_catalog, and qualify every
 * function, operator and literal as well, so that no object of another
 * schema can be picked instead.  Every OPERATOR() has the same
 * precedence: parenthesize.
 */
#define ZIM_SQL_EQ		"OPERATOR(pg_catalog.=)"
#define ZIM_SQL_NE		"OPERATOR(pg_catalog.<>)"
#define ZIM_SQL_LT		"OPERATOR(pg_catalog.<)"
#define ZIM_SQL_LE		"OPERATOR(pg_catalog.<=)"
#define ZIM_SQL_GT		"OPERATOR(pg_catalog.>)"
#define ZIM_SQL_PLUS	"OPERATOR(pg_catalog.+)"
#define ZIM_SQL_MINUS	"OPERATOR(pg_catalog.-)"

extern const char *ZimJobsSchema(void);
extern bool ZimJobsAnyAction(void);
extern Oid	ZimJobsNamespace(void);
extern Datum ZimJobsArray(Datum *elems, bool *nulls, int n, Oid type);
extern int	ZimJobsClaim(int max_heads, int max_jobs, const int64 *own, int n_own,
						 ZimJobBatch *batch);
extern void ZimJobsHoldRunnerLock(bool session);
extern int	ZimJobsChunkEnd(ZimJobBatch *batch, int from, bool all_of_it);
extern int	ZimJobsSentTo(const ZimJobBatch *batch, int from, int to);
extern void ZimJobsSend(ZimJobBatch *batch, int from, int to);
extern int	ZimJobsRecord(ZimJobBatch *batch, int from, int to);
extern void ZimJobsRenew(ZimJobBatch *batch, int from);
extern void ZimJobsRenewed(ZimJobBatch *batch);
extern int	ZimJobsRecordError(ZimJobBatch *batch, int from, const ErrorData *edata);
extern int	ZimJobsPrune(const char *schema, int max);
extern TimestampTz ZimJobsNextDue(const char *schema);

/* ---- worker.c ---- */
extern void ZimWorkerRegister(void);
extern PGDLLEXPORT void zim_pin_launcher_main(Datum arg);
extern PGDLLEXPORT void zim_pin_worker_main(Datum arg);

#endif							/* ZIM_PIN_H */
