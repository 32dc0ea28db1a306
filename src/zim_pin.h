/*-------------------------------------------------------------------------
 *
 * zim_pin.h
 *	  What the files of zim_pin may call of each other.
 *
 * zim_pin.c	_PG_init: settings, shared memory and the launcher
 * settings.c	the GUCs (zim_pin.*) and the checks on their values
 * sign.c		the v2.0 request signature and the signed query string
 * http.c		the HTTPS transport: one libcurl multi handle per backend,
 *				concurrent transfers, interruptible waits, size cap,
 *				cleanup on ERROR
 * shared.c		per-Action state (limiter log, pause, statistics) and the
 *				queue's coordination, in shared memory when preloaded, per
 *				backend otherwise
 * ratelimit.c	the per-Action sliding-window limiter (reservations and
 *				the gate on confirmed send times)
 * api.c		ZIM calls: scheduling, signing, retries with backoff,
 *				response parsing and the mapping of failures to SQLSTATEs
 * functions.c	the SQL-callable functions
 * queue.c		the transactional queue: enqueue, claim, send, record; the
 *				launcher and the worker
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ZIM_PIN_H
#define ZIM_PIN_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"

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
/* Upper bound of zim_pin.requests_per_second (the limiter's log size) */
#define ZIM_MAX_RATE			10000
/* Most HTTP exchanges one backend runs at once */
#define ZIM_MAX_TRANSFERS		16

/* settings.c */
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

extern void ZimDefineSettings(void);
extern void ZimCheckConfigured(void);
extern bool ZimIsConfigured(void);
extern uint32 ZimAppId(void);
extern const char *ZimServerSecret(void);
extern const char *ZimRedact(const char *text);

/* sign.c */
extern void ZimSignature(uint32 app_id, const char *nonce, const char *secret,
						 int64 timestamp, char *out_hex);
extern void ZimSignedUrl(StringInfo url, const char *base, const char *action);

/* http.c */

/* How one HTTP exchange ended, before any interpretation of the body */
typedef enum ZimHttpStatus
{
	ZIM_HTTP_OK,				/* a complete answer, any HTTP status */
	ZIM_HTTP_CONNECT_FAILED,	/* nothing sent: connect/resolve failed */
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
} ZimHttpResult;

extern int	ZimHttpStart(const char *url, const char *body);
extern void ZimHttpWait(long timeout_ms);
extern bool ZimHttpFinished(int id);
extern void ZimHttpFinish(int id, ZimHttpResult *result);
extern int	ZimHttpInFlight(void);
extern int	ZimHttpAbortAll(void);

/* shared.c */
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

typedef struct ZimActionState
{
	char		action[ZIM_MAX_ACTION_LEN + 1];
	TimestampTz paused_until;	/* no request before this (backing off) */
	ZimStats	stats;
	int			capacity;		/* size of each of the two rings in log[] */
	int			head;			/* reservations: oldest entry */
	int			count;			/* reservations: entries */
	int			sent_head;		/* confirmed send times: oldest entry */
	int			sent_count;		/* confirmed send times: entries */
	int			inflight;		/* started, send time not yet confirmed */
	/* reservations in log[0, capacity), confirmed sends after; ascending */
	TimestampTz log[FLEXIBLE_ARRAY_MEMBER];
} ZimActionState;

#define ZimReservation(st, i)	((st)->log[((st)->head + (i)) % (st)->capacity])
#define ZimSent(st, i) \
	((st)->log[(st)->capacity + ((st)->sent_head + (i)) % (st)->capacity])

/* coordination of the queue's launcher, worker and enqueuing backends */
typedef struct ZimQueueShared
{
	int			launcher_procno;	/* -1: no launcher */
	int			worker_procno;	/* -1: no worker running */
	bool		work_pending;	/* a commit enqueued since the worker looked */
	TimestampTz next_due;		/* earliest retry the worker left, 0: none */
	TimestampTz last_housekeeping;
} ZimQueueShared;

extern ZimQueueShared *ZimQueueState(void);
extern void ZimSharedInstallHooks(void);
extern bool ZimStateIsShared(void);
extern void ZimStateLock(void);
extern void ZimStateUnlock(void);
extern bool ZimStateLockHeld(void);
extern ZimActionState *ZimActionLookup(const char *action);
extern int	ZimActionIndex(const ZimActionState *st);
extern int	ZimActionCount(void);
extern ZimActionState *ZimActionByIndex(int i);
extern TimestampTz ZimStatsResetTime(void);
extern void ZimStatsResetAll(void);

/* ratelimit.c */
extern TimestampTz ZimRateReserve(const char *action, TimestampTz now);
extern bool ZimRateGate(const char *action, TimestampTz now, TimestampTz *retry_at);
extern void ZimRateSent(const char *action, TimestampTz sent_at);
extern void ZimRatePause(const char *action, int ms);

/* api.c */

/* Which failures a call may retry (see the contract's Retries section) */
typedef enum ZimRetryPolicy
{
	ZIM_RETRY_IDEMPOTENT,		/* ConvPinned: every transient failure */
	ZIM_RETRY_UNSENT_ONLY		/* zim_api: only what was surely not processed */
} ZimRetryPolicy;

/* A parsed ZIM answer */
typedef struct ZimResponse
{
	int64		code;
	char	   *message;		/* "" if absent */
	char	   *request_id;		/* "" if absent */
	Jsonb	   *jsonb;			/* the whole answer */
} ZimResponse;

/* Where one request of a ZimCallMany stands */
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
	const char *body;			/* in: the JSON body, UTF-8 */
	ZimRequestState state;
	int			attempts;		/* requests sent so far */
	TimestampTz at;				/* SCHEDULED: send time; BACKOFF: its end */
	int			transfer;		/* RUNNING: http.c's transfer */
	TimestampTz started;		/* RUNNING: when it passed the rate gate */
	StringInfoData url;			/* RUNNING: the signed URL (wiped after) */
	ZimResponse response;		/* ANSWERED */
	ZimHttpResult http;			/* the last exchange */
	ZimFailure failure;			/* FAILED */
	const char *why;			/* FAILED with ZIM_FAIL_BAD_ANSWER */
} ZimRequest;

extern void ZimCallMany(const char *action, ZimRetryPolicy policy,
						ZimRequest *reqs, int n, int max_retries);
extern bool ZimCodeIsRetryable(int64 code, ZimRetryPolicy policy);
extern void ZimRaiseFailure(const char *action, ZimRetryPolicy policy,
							const ZimRequest *req, const char *extra_detail);
extern void ZimRaiseForCode(const char *action, const ZimRequest *req,
							const char *extra_detail);
extern JsonbValue *ZimJsonGet(Jsonb *jb, const char *key);
extern bool ZimHasErrorList(Jsonb *jb);

/* one entry of a ConvPinned answer's ErrorList */
typedef struct ZimErrorItem
{
	char	   *conv_id;
	int32		conv_type;
	int64		sub_code;
	char	   *sub_message;	/* NULL if absent */
} ZimErrorItem;

extern int	ZimErrorListItems(Jsonb *jb, bool strict, ZimErrorItem **items);
extern void ZimStatsCountConvs(const char *action, int64 changed, int64 failed);

/* functions.c */

/* one conversation to change */
typedef struct ZimConv
{
	char	   *id;
	int32		type;
} ZimConv;

extern int	ZimConvPinnedChunkCount(int n);
extern void ZimConvPinnedChunks(const char *from_user_id, const ZimConv *convs,
								int n, bool pinned, ZimRequest *reqs);
extern bool ZimRequestFailedWhole(const ZimRequest *req);

/* queue.c */
extern int64 ZimJobEnqueue(const char *from_user_id, const ZimConv *convs, int n,
						   bool pinned);
extern int	ZimRunJobs(int max_jobs, bool in_worker);
extern void ZimQueueRegisterWorkers(void);
extern PGDLLEXPORT void zim_pin_launcher_main(Datum arg);
extern PGDLLEXPORT void zim_pin_worker_main(Datum arg);

#endif							/* ZIM_PIN_H */
