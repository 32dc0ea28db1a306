/*-------------------------------------------------------------------------
 *
 * zim_pin.h
 *	  What the files of zim_pin may call of each other.
 *
 * settings.c	the GUCs (zim_pin.*) and the checks on their values
 * sign.c		the v2.0 request signature and the signed query string
 * http.c		the HTTPS transport: one libcurl multi handle per backend,
 *				interruptible waits, size cap, cleanup on ERROR
 * ratelimit.c	the per-Action sliding-window limiter
 * api.c		one ZIM call: signing, retries with backoff, response
 *				parsing and the mapping of failures to SQLSTATEs
 * functions.c	the SQL-callable functions
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ZIM_PIN_H
#define ZIM_PIN_H

#include "postgres.h"

#include "lib/stringinfo.h"
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

/* settings.c */
extern char *zim_api_url;
extern char *zim_ca_file;
extern int	zim_connect_timeout_ms;
extern int	zim_timeout_ms;
extern int	zim_max_retries;
extern int	zim_requests_per_second;
extern int	zim_max_convs_per_request;

extern void ZimDefineSettings(void);
extern void ZimCheckConfigured(void);
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
} ZimHttpResult;

extern void ZimHttpPost(const char *url, const char *body, ZimHttpResult *result);

/* ratelimit.c */
extern void ZimRateLimitAcquire(const char *action);

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
	int			attempts;		/* how many requests it took */
} ZimResponse;

extern void ZimCall(const char *action, const char *body, ZimRetryPolicy policy,
					ZimResponse *response);
extern JsonbValue *ZimJsonGet(Jsonb *jb, const char *key);
extern bool ZimHasErrorList(Jsonb *jb);
extern void ZimRaiseForCode(const char *action, const ZimResponse *response,
							const char *extra_detail);

#endif							/* ZIM_PIN_H */
