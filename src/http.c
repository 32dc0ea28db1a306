/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTPS transport: one libcurl multi handle per backend.
 *
 * The multi handle owns libcurl's connection cache, so the connection to
 * the ZIM server stays open between calls (and between transactions) for
 * as long as the backend lives or the server keeps it.  One easy handle is
 * reused for every request.
 *
 * We drive libcurl through its socket interface and do all waiting
 * ourselves, on a WaitEventSet holding the process latch and libcurl's
 * sockets, as postgres_fdw waits for libpq: a cancel, statement_timeout or
 * postmaster death wakes the wait at once and CHECK_FOR_INTERRUPTS raises
 * the server's own error.  The PG_FINALLY block then detaches the transfer
 * (libcurl closes a connection left mid-exchange) and frees what libcurl
 * allocated, so the backend is ready for the next call.
 *
 * libcurl callbacks (write, socket, timer) run inside libcurl: they only
 * record into malloc'd or static state and never palloc or ereport.
 * Problems are recorded there and raised after libcurl returns.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#define MAX_SOCKETS 16

/* the answer as it arrives; malloc'd because the write callback fills it */
typedef struct WriteBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		too_large;
	bool		out_of_memory;
} WriteBuffer;

/* the sockets libcurl wants watched, as its socket callback reports them */
typedef struct WatchedSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN, _OUT or _INOUT */
} WatchedSocket;

static CURLM *zim_multi = NULL;
static CURL *zim_easy = NULL;

static WatchedSocket watched[MAX_SOCKETS];
static int	n_watched = 0;
static bool watched_overflow = false;
static long curl_timer_ms = -1;

static char curl_errbuf[CURL_ERROR_SIZE];

/*
 * State of the one transfer in progress.  File-level, not local, so that
 * the PG_FINALLY block sees it reliably after a longjmp.
 */
static WriteBuffer response_buf;
static struct
{
	const char *data;
	size_t		len;
	size_t		pos;
}			request_body;
static struct curl_slist *request_headers = NULL;
static WaitEventSet *wait_set = NULL;
static bool transfer_added = false;

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	WriteBuffer *wb = (WriteBuffer *) userdata;
	size_t		n = size * nmemb;

	if (wb->len + n > ZIM_MAX_RESPONSE_SIZE)
	{
		wb->too_large = true;
		return 0;				/* makes libcurl fail with CURLE_WRITE_ERROR */
	}
	if (wb->len + n + 1 > wb->cap)
	{
		size_t		newcap = Max(wb->cap * 2, wb->len + n + 1);
		char	   *p;

		newcap = Min(newcap, (size_t) ZIM_MAX_RESPONSE_SIZE + 1);
		p = realloc(wb->data, newcap);
		if (p == NULL)
		{
			wb->out_of_memory = true;
			return 0;
		}
		wb->data = p;
		wb->cap = newcap;
	}
	memcpy(wb->data + wb->len, ptr, n);
	wb->len += n;
	return n;
}

/*
 * The request body is handed over through a read callback that cannot
 * seek, rather than CURLOPT_POSTFIELDS.  libcurl silently sends a request
 * again on a new connection when a reused one dies before any answer; if
 * the body had already gone out, the server may have processed it, and the
 * copy would carry the same nonce.  Without a way to rewind, libcurl fails
 * that transfer instead (CURLE_SEND_FAIL_REWIND) and api.c decides, with a
 * fresh signature, whether the call may be repeated.
 */
static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	size_t		n = Min(size * nitems, request_body.len - request_body.pos);

	memcpy(buffer, request_body.data + request_body.pos, n);
	request_body.pos += n;
	return n;
}

static int
seek_cb(void *userp, curl_off_t offset, int origin)
{
	return CURL_SEEKFUNC_CANTSEEK;
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < n_watched; i++)
		if (watched[i].fd == fd)
			break;

	if (what == CURL_POLL_REMOVE)
	{
		if (i < n_watched)
			watched[i] = watched[--n_watched];
		return 0;
	}
	if (i == n_watched)
	{
		if (n_watched == MAX_SOCKETS)
		{
			watched_overflow = true;
			return -1;			/* libcurl aborts the transfer */
		}
		n_watched++;
	}
	watched[i].fd = fd;
	watched[i].what = what;
	return 0;
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	curl_timer_ms = timeout_ms;
	return 0;
}

static void
zim_http_at_exit(int code, Datum arg)
{
	if (zim_easy)
		curl_easy_cleanup(zim_easy);
	if (zim_multi)
		curl_multi_cleanup(zim_multi);
	zim_easy = NULL;
	zim_multi = NULL;
}

/*
 * Create this backend's handles on first use (never in the postmaster).
 */
static void
zim_http_init(void)
{
	static bool global_done = false;

	if (zim_multi != NULL)
		return;

	if (!global_done)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not initialize libcurl")));
		global_done = true;
		on_proc_exit(zim_http_at_exit, (Datum) 0);
	}

	zim_multi = curl_multi_init();
	zim_easy = curl_easy_init();
	if (zim_multi == NULL || zim_easy == NULL)
	{
		zim_http_at_exit(0, (Datum) 0);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not create the libcurl handles.")));
	}
	curl_multi_setopt(zim_multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(zim_multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	/* one server: a small cache is plenty */
	curl_multi_setopt(zim_multi, CURLMOPT_MAXCONNECTS, 8L);
}

#define SETOPT(opt, val) \
	do { \
		CURLcode setopt_rc = curl_easy_setopt(zim_easy, (opt), (val)); \
		if (setopt_rc != CURLE_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_SYSTEM_ERROR), \
					 errmsg("could not set libcurl option %s", #opt), \
					 errdetail_internal("%s", curl_easy_strerror(setopt_rc)))); \
	} while (0)

static void
zim_http_setup(const char *url, const char *body, struct curl_slist *headers,
			   WriteBuffer *wb)
{
	curl_easy_reset(zim_easy);
	curl_errbuf[0] = '\0';

	SETOPT(CURLOPT_ERRORBUFFER, curl_errbuf);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(CURLOPT_PROTOCOLS_STR, "https");
	SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
	SETOPT(CURLOPT_PROTOCOLS, (long) CURLPROTO_HTTPS);
	SETOPT(CURLOPT_REDIR_PROTOCOLS, (long) CURLPROTO_HTTPS);
#endif
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
	if (zim_ca_file && zim_ca_file[0])
		SETOPT(CURLOPT_CAINFO, zim_ca_file);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long) zim_connect_timeout_ms);
	SETOPT(CURLOPT_TIMEOUT_MS, (long) zim_timeout_ms);
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
	request_body.data = body;
	request_body.len = strlen(body);
	request_body.pos = 0;
	SETOPT(CURLOPT_POST, 1L);
	SETOPT(CURLOPT_READFUNCTION, read_cb);
	SETOPT(CURLOPT_SEEKFUNCTION, seek_cb);
	SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) request_body.len);
	SETOPT(CURLOPT_HTTPHEADER, headers);
	SETOPT(CURLOPT_USERAGENT, "zim_pin/1.0");
	SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) ZIM_MAX_RESPONSE_SIZE);
	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, wb);
}

/*
 * Wait for libcurl's sockets or timer, or the latch, and let libcurl act.
 * Returns when the transfer is over; raises on interrupts.
 */
static void
zim_http_drive(void)
{
	int			running = 1;
	WaitEvent	occurred[MAX_SOCKETS + 2];

	curl_multi_socket_action(zim_multi, CURL_SOCKET_TIMEOUT, 0, &running);

	while (running)
	{
		long		timeout = curl_timer_ms;
		int			n;
		bool		latch_set = false;

		if (timeout == 0)
		{
			curl_multi_socket_action(zim_multi, CURL_SOCKET_TIMEOUT, 0, &running);
			continue;
		}
		/* libcurl always has a timer while a transfer runs; be safe */
		if (timeout < 0 || timeout > 1000)
			timeout = 1000;

		wait_set = CreateWaitEventSet(CurrentMemoryContext, n_watched + 2);
		AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		/* as WaitLatch does: there is no postmaster in single-user mode */
		if (IsUnderPostmaster)
			AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET,
							  NULL, NULL);
		for (int i = 0; i < n_watched; i++)
		{
			uint32		events = 0;

			if (watched[i].what & CURL_POLL_IN)
				events |= WL_SOCKET_READABLE;
			if (watched[i].what & CURL_POLL_OUT)
				events |= WL_SOCKET_WRITEABLE;
			if (events)
				AddWaitEventToSet(wait_set, events, watched[i].fd, NULL, NULL);
		}

		n = WaitEventSetWait(wait_set, timeout, occurred, lengthof(occurred),
							 PG_WAIT_EXTENSION);
		FreeWaitEventSet(wait_set);
		wait_set = NULL;

		for (int i = 0; i < n; i++)
		{
			int			flags = 0;

			if (occurred[i].events & WL_LATCH_SET)
			{
				latch_set = true;
				continue;
			}
			if (occurred[i].events & WL_SOCKET_READABLE)
				flags |= CURL_CSELECT_IN;
			if (occurred[i].events & WL_SOCKET_WRITEABLE)
				flags |= CURL_CSELECT_OUT;
			if (flags)
				curl_multi_socket_action(zim_multi, occurred[i].fd, flags, &running);
		}
		if (n == 0)
			curl_multi_socket_action(zim_multi, CURL_SOCKET_TIMEOUT, 0, &running);

		if (latch_set)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

static ZimHttpStatus
zim_http_classify(CURLcode rc, const WriteBuffer *wb)
{
	switch (rc)
	{
		case CURLE_OK:
			return ZIM_HTTP_OK;
		case CURLE_WRITE_ERROR:
		case CURLE_FILESIZE_EXCEEDED:
			if (wb->too_large || rc == CURLE_FILESIZE_EXCEEDED)
				return ZIM_HTTP_TOO_LARGE;
			return ZIM_HTTP_OTHER;
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_CONNECT:
			return ZIM_HTTP_CONNECT_FAILED;
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		case CURLE_SSL_INVALIDCERTSTATUS:
			return ZIM_HTTP_TLS_FAILED;
		case CURLE_OPERATION_TIMEDOUT:
			return ZIM_HTTP_TIMEOUT;
		case CURLE_SEND_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_GOT_NOTHING:
		case CURLE_PARTIAL_FILE:
		case CURLE_WEIRD_SERVER_REPLY:
		case CURLE_HTTP2:
		case CURLE_HTTP2_STREAM:
		case CURLE_SEND_FAIL_REWIND:
			return ZIM_HTTP_CONNECTION_LOST;
		default:
			return ZIM_HTTP_OTHER;
	}
}

/*
 * POST body to url and fill *result.  Transport failures are reported in
 * result->status, not raised; interrupts and resource failures raise.
 */
void
ZimHttpPost(const char *url, const char *body, ZimHttpResult *result)
{
	WriteBuffer *wb = &response_buf;
	CURLcode	rc = CURLE_OK;

	zim_http_init();

	memset(result, 0, sizeof(*result));
	memset(wb, 0, sizeof(*wb));
	request_headers = NULL;
	wait_set = NULL;
	transfer_added = false;
	initStringInfo(&result->body);

	PG_TRY();
	{
		CURLMsg    *msg;
		int			left;
		curl_off_t	request_size = 0;
		double		total = 0;

		request_headers = curl_slist_append(NULL, "Content-Type: application/json");
		if (request_headers &&
			(curl_slist_append(request_headers, "Accept: application/json") == NULL ||
			 curl_slist_append(request_headers, "Expect:") == NULL))
		{
			curl_slist_free_all(request_headers);
			request_headers = NULL;
		}
		if (request_headers == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));

		zim_http_setup(url, body, request_headers, wb);

		n_watched = 0;
		watched_overflow = false;
		curl_timer_ms = -1;
		if (curl_multi_add_handle(zim_multi, zim_easy) != CURLM_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not start an HTTP request")));
		transfer_added = true;

		zim_http_drive();

		rc = CURLE_OK;
		while ((msg = curl_multi_info_read(zim_multi, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE && msg->easy_handle == zim_easy)
				rc = msg->data.result;

		if (wb->out_of_memory || rc == CURLE_OUT_OF_MEMORY)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Could not buffer the answer of the ZIM server.")));
		if (watched_overflow)
			elog(ERROR, "libcurl opened more than %d sockets", MAX_SOCKETS);

		result->status = zim_http_classify(rc, wb);
		curl_easy_getinfo(zim_easy, CURLINFO_RESPONSE_CODE, &result->http_code);
		curl_easy_getinfo(zim_easy, CURLINFO_REQUEST_SIZE, &request_size);
		result->request_sent = request_size > 0;
		curl_easy_getinfo(zim_easy, CURLINFO_TOTAL_TIME, &total);
		result->elapsed_ms = total * 1000.0;

		if (rc != CURLE_OK)
		{
			const char *text = curl_errbuf[0] ? curl_errbuf : curl_easy_strerror(rc);

			strlcpy(result->error, ZimRedact(text), sizeof(result->error));
		}
		if (wb->len > 0)
			appendBinaryStringInfo(&result->body, wb->data, wb->len);
	}
	PG_FINALLY();
	{
		if (wait_set)
			FreeWaitEventSet(wait_set);
		wait_set = NULL;
		if (transfer_added)
			curl_multi_remove_handle(zim_multi, zim_easy);
		transfer_added = false;
		/* the easy handle keeps pointers to these until reset */
		curl_easy_setopt(zim_easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(zim_easy, CURLOPT_WRITEDATA, NULL);
		curl_easy_setopt(zim_easy, CURLOPT_URL, "");
		curl_slist_free_all(request_headers);
		request_headers = NULL;
		request_body.data = NULL;
		free(wb->data);
		memset(wb, 0, sizeof(*wb));
		n_watched = 0;
		curl_timer_ms = -1;
	}
	PG_END_TRY();
}
