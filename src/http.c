/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HTTPS transport: one libcurl multi handle per backend, running up
 *	  to ZIM_MAX_TRANSFERS exchanges at once.
 *
 * The multi handle owns libcurl's connection cache, so connections to the
 * ZIM server stay open between calls (and between transactions) for as
 * long as the backend lives or the server keeps them.  Each transfer slot
 * keeps its easy handle for reuse.
 *
 * We drive libcurl through its socket interface and do all waiting
 * ourselves, on a WaitEventSet holding the process latch and libcurl's
 * sockets, as postgres_fdw waits for libpq: a cancel, statement_timeout or
 * postmaster death wakes the wait at once and CHECK_FOR_INTERRUPTS raises
 * the server's own error.  libcurl may watch more sockets than transfers
 * (two for each while happy eyeballs races IPv6 against IPv4, and newer
 * versions more), so there is no fixed bound: the list of watched sockets
 * grows in the socket callback (malloc) and each wait's set is made for
 * the sockets of that moment.  Only running out of memory for the list
 * fails, with SQLSTATE 53200.  The caller then calls ZimHttpAbortAll (from
 * PG_FINALLY), which detaches every transfer (libcurl closes a connection
 * left mid-exchange) and frees what libcurl allocated, so the backend is
 * ready for the next call.
 *
 * libcurl callbacks (write, read, socket, timer) run inside libcurl: they
 * must never palloc, ereport or CHECK_FOR_INTERRUPTS; they only record
 * into malloc'd or static state, and problems are raised after libcurl
 * returns.  This file knows nothing of ZIM: it moves bytes, and never
 * logs a URL (it carries the signature).
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

/*
 * Sockets the list first holds; small, so that every call of more than a
 * few exchanges grows it
 */
#define INITIAL_SOCKETS 8

/* the answer as it arrives; malloc'd because the write callback fills it */
typedef struct WriteBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		too_large;
	bool		out_of_memory;
} WriteBuffer;

/* one exchange; file-level so that cleanup after a longjmp sees it */
typedef struct Transfer
{
	CURL	   *easy;			/* kept for reuse once created */
	bool		in_use;			/* started and not yet finished */
	bool		added;			/* attached to the multi handle */
	bool		done;			/* libcurl reported completion */
	CURLcode	rc;
	struct curl_slist *headers;
	WriteBuffer response;
	const char *body;			/* the caller's, valid while in use */
	size_t		body_len;
	size_t		body_pos;
	char		errbuf[CURL_ERROR_SIZE];
	char		proxy[ZIM_PROXY_HOST_LEN + 8];	/* host:port, or "" if direct */
} Transfer;

/* the sockets libcurl wants watched, as its socket callback reports them */
typedef struct WatchedSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN, _OUT or _INOUT */
} WatchedSocket;

static CURLM *zim_multi = NULL;
static Transfer transfers[ZIM_MAX_TRANSFERS];

static WatchedSocket *watched = NULL;	/* malloc'd, watched_cap entries */
static int	n_watched = 0;
static int	watched_cap = 0;
static bool watched_out_of_memory = false;	/* and the multi handle is dead */
static long curl_timer_ms = -1;
static WaitEventSet *wait_set = NULL;
static WaitEvent *occurred = NULL;	/* in TopMemoryContext */
static int	occurred_cap = 0;

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
 * that transfer instead (CURLE_SEND_FAIL_REWIND) and client.c decides, with a
 * fresh signature, whether the request may be sent again.
 */
static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	Transfer   *t = (Transfer *) userdata;
	size_t		n = Min(size * nitems, t->body_len - t->body_pos);

	memcpy(buffer, t->body + t->body_pos, n);
	t->body_pos += n;
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
		if (n_watched == watched_cap)
		{
			int			cap = Max(INITIAL_SOCKETS, watched_cap * 2);
			WatchedSocket *p = realloc(watched, cap * sizeof(WatchedSocket));

			if (p == NULL)
			{
				/* libcurl then gives up on the whole multi handle */
				watched_out_of_memory = true;
				return -1;
			}
			watched = p;
			watched_cap = cap;
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
	for (int i = 0; i < ZIM_MAX_TRANSFERS; i++)
	{
		if (transfers[i].easy)
		{
			if (transfers[i].added && zim_multi)
				curl_multi_remove_handle(zim_multi, transfers[i].easy);
			curl_easy_cleanup(transfers[i].easy);
		}
		transfers[i].easy = NULL;
	}
	if (zim_multi)
		curl_multi_cleanup(zim_multi);
	zim_multi = NULL;
}

/*
 * Create this backend's multi handle on first use (never in the postmaster).
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
	if (zim_multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not create a libcurl multi handle.")));
	curl_multi_setopt(zim_multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(zim_multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(zim_multi, CURLMOPT_MAXCONNECTS, (long) ZIM_MAX_TRANSFERS);
}

#define SETOPT(easy, opt, val) \
	do { \
		CURLcode setopt_rc = curl_easy_setopt((easy), (opt), (val)); \
		if (setopt_rc != CURLE_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_SYSTEM_ERROR), \
					 errmsg("could not set libcurl option %s", #opt), \
					 errdetail_internal("%s", curl_easy_strerror(setopt_rc)))); \
	} while (0)

/*
 * zim_pin.proxy, or none.  Either way libcurl is told, so that it never
 * reads the environment's proxy variables: CURLOPT_PROXY "" disables
 * http_proxy, https_proxy and ALL_PROXY, and CURLOPT_NOPROXY "" makes
 * NO_PROXY bypass nothing.  Through a proxy, libcurl opens a CONNECT
 * tunnel (also for HTTPS without CURLOPT_HTTPPROXYTUNNEL; it is set to say
 * so), TLS runs through it to the ZIM server and is verified as when
 * direct, and our headers go to the ZIM server only.
 */
static void
zim_http_setup_proxy(Transfer *t)
{
	CURL	   *e = t->easy;
	const ZimProxy *proxy = ZimProxySetting();

	t->proxy[0] = '\0';
	SETOPT(e, CURLOPT_NOPROXY, "");
	if (proxy == NULL)
	{
		SETOPT(e, CURLOPT_PROXY, "");
		return;
	}
	strlcpy(t->proxy, proxy->host_port, sizeof(t->proxy));
	SETOPT(e, CURLOPT_PROXY, proxy->url);
	SETOPT(e, CURLOPT_PROXYTYPE, (long) CURLPROXY_HTTP);
	SETOPT(e, CURLOPT_HTTPPROXYTUNNEL, 1L);
	SETOPT(e, CURLOPT_HEADEROPT, (long) CURLHEADER_SEPARATE);
	if (proxy->has_credentials)
	{
		SETOPT(e, CURLOPT_PROXYAUTH, (long) CURLAUTH_BASIC);
		SETOPT(e, CURLOPT_PROXYUSERNAME, proxy->user);
		SETOPT(e, CURLOPT_PROXYPASSWORD, proxy->password);
	}
}

static void
zim_http_setup(Transfer *t, const char *url)
{
	CURL	   *e = t->easy;

	curl_easy_reset(e);
	t->errbuf[0] = '\0';

	SETOPT(e, CURLOPT_PRIVATE, (char *) t);
	SETOPT(e, CURLOPT_ERRORBUFFER, t->errbuf);
	SETOPT(e, CURLOPT_NOSIGNAL, 1L);
	SETOPT(e, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(e, CURLOPT_PROTOCOLS_STR, "https");
	SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
	SETOPT(e, CURLOPT_PROTOCOLS, (long) CURLPROTO_HTTPS);
	SETOPT(e, CURLOPT_REDIR_PROTOCOLS, (long) CURLPROTO_HTTPS);
#endif
	SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075700
	/* removing a transfer that is still resolving must not wait for it */
	SETOPT(e, CURLOPT_QUICK_EXIT, 1L);
#endif
	SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (zim_ca_file && zim_ca_file[0])
		SETOPT(e, CURLOPT_CAINFO, zim_ca_file);
	SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long) zim_connect_timeout_ms);
	SETOPT(e, CURLOPT_TIMEOUT_MS, (long) zim_timeout_ms);
	SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
	zim_http_setup_proxy(t);
	if (t->body != NULL)
	{
		SETOPT(e, CURLOPT_POST, 1L);
		SETOPT(e, CURLOPT_READFUNCTION, read_cb);
		SETOPT(e, CURLOPT_READDATA, t);
		SETOPT(e, CURLOPT_SEEKFUNCTION, seek_cb);
		SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) t->body_len);
	}
	else
		SETOPT(e, CURLOPT_HTTPGET, 1L);
	SETOPT(e, CURLOPT_HTTPHEADER, t->headers);
	SETOPT(e, CURLOPT_USERAGENT, "zim_pin/1.0");
	SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) ZIM_MAX_RESPONSE_SIZE);
	SETOPT(e, CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(e, CURLOPT_WRITEDATA, &t->response);
}

/* free what a transfer holds, keeping the easy handle */
static void
zim_http_release(Transfer *t)
{
	if (t->added)
		curl_multi_remove_handle(zim_multi, t->easy);
	t->added = false;
	if (t->easy)
	{
		/* the easy handle keeps pointers to these until reset */
		curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(t->easy, CURLOPT_URL, "");
	}
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	free(t->response.data);
	memset(&t->response, 0, sizeof(t->response));
	t->body = NULL;
	t->in_use = false;
	t->done = false;
}

/*
 * Start POSTing body to url, or a GET of url if body is NULL; returns the
 * transfer's number.  The caller keeps url and body alive until
 * ZimHttpFinish or ZimHttpAbortAll.
 */
int
ZimHttpStart(const char *url, const char *body)
{
	Transfer   *t = NULL;
	int			id;

	zim_http_init();

	for (id = 0; id < ZIM_MAX_TRANSFERS; id++)
		if (!transfers[id].in_use)
		{
			t = &transfers[id];
			break;
		}
	if (t == NULL)
		elog(ERROR, "no free zim_pin transfer slot");

	if (t->easy == NULL && (t->easy = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not create a libcurl handle.")));

	t->in_use = true;
	t->done = false;
	t->rc = CURLE_OK;
	memset(&t->response, 0, sizeof(t->response));
	t->body = body;
	t->body_len = body ? strlen(body) : 0;
	t->body_pos = 0;

	t->headers = curl_slist_append(NULL, body ? "Content-Type: application/json" : "Expect:");
	if (t->headers &&
		(curl_slist_append(t->headers, "Accept: application/json") == NULL ||
		 curl_slist_append(t->headers, "Expect:") == NULL))
	{
		curl_slist_free_all(t->headers);
		t->headers = NULL;
	}
	if (t->headers == NULL)
	{
		t->in_use = false;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}

	zim_http_setup(t, url);

	if (curl_multi_add_handle(zim_multi, t->easy) != CURLM_OK)
	{
		zim_http_release(t);
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not start an HTTP request")));
	}
	t->added = true;
	return id;
}

int
ZimHttpInFlight(void)
{
	int			n = 0;

	for (int i = 0; i < ZIM_MAX_TRANSFERS; i++)
		if (transfers[i].in_use && !transfers[i].done)
			n++;
	return n;
}

/* note the transfers libcurl reports finished */
static void
zim_http_collect(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(zim_multi, &left)) != NULL)
	{
		Transfer   *t = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		if (t)
		{
			t->done = true;
			t->rc = msg->data.result;
		}
	}
}

/*
 * Raise what the socket callback recorded: after libcurl has returned, and
 * with a real SQLSTATE.  (ZimHttpAbortAll then drops the multi handle.)
 */
static void
zim_http_check_sockets(void)
{
	if (watched_out_of_memory)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not watch more than %d sockets of libcurl.",
						   watched_cap)));
}

/*
 * Let libcurl work and wait, at most timeout_ms, for a socket, libcurl's
 * timer or the latch.  Returns after one round of events; the caller asks
 * ZimHttpFinished which transfers are over.  Raises on interrupts.
 */
void
ZimHttpWait(long timeout_ms)
{
	int			running;
	int			n;
	bool		latch_set = false;
	long		timeout = timeout_ms;

	zim_http_init();

	/* let libcurl act on anything due (new transfers, expired timers) */
	curl_multi_socket_action(zim_multi, CURL_SOCKET_TIMEOUT, 0, &running);
	zim_http_collect();
	zim_http_check_sockets();
	if (ZimHttpInFlight() < 1)
		return;

	if (curl_timer_ms >= 0 && curl_timer_ms < timeout)
		timeout = curl_timer_ms;
	if (timeout < 0 || timeout > 1000)
		timeout = 1000;			/* libcurl always has a timer; be safe */
	if (timeout == 0)
		return;

	if (occurred_cap < n_watched + 2)
	{
		int			cap = Max(INITIAL_SOCKETS, n_watched) + 2;

		occurred = occurred
			? repalloc(occurred, cap * sizeof(WaitEvent))
			: MemoryContextAlloc(TopMemoryContext, cap * sizeof(WaitEvent));
		occurred_cap = cap;
	}
	wait_set = zim_create_wait_event_set(n_watched + 2);
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

	n = WaitEventSetWait(wait_set, timeout, occurred, occurred_cap,
						 zim_wait_event(ZIM_WAIT_NETWORK));
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
	zim_http_collect();

	zim_http_check_sockets();

	if (latch_set)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

bool
ZimHttpFinished(int id)
{
	return transfers[id].in_use && transfers[id].done;
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
		case CURLE_OUT_OF_MEMORY:
			/* a header over CURL_MAX_HTTP_HEADER (see ZimHttpFinish) */
			return ZIM_HTTP_TOO_LARGE;
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_CONNECT:

			/*
			 * A handshake that failed before any certificate was judged (the
			 * peer closed or reset the connection): nothing was sent.
			 */
		case CURLE_SSL_CONNECT_ERROR:
			return ZIM_HTTP_CONNECT_FAILED;
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
 * Through a proxy.  A transfer whose request never started (no pretransfer
 * time: TLS with the ZIM server was not complete) sent nothing to the ZIM
 * server, though libcurl counts the CONNECT in its request size.  It
 * failed at the proxy when the tunnel never came up (a refused CONNECT is
 * a receive error to libcurl, and so is a proxy that closed before
 * answering), when the proxy's answer to CONNECT was broken (a receive
 * error or oversized headers after its status line), or when the proxy
 * closed the tunnel it had accepted before TLS got through (a ZIM server
 * that refused TLS would look the same, but then direct connections fail
 * too).  Anything else (a certificate that does not verify, a handshake
 * that timed out) is judged as if direct.  A transfer on a tunnel kept from
 * an earlier one (no CONNECT this time) is judged as if direct: its
 * request may have left.
 */
static void
zim_http_judge_proxy(const Transfer *t, ZimHttpResult *result)
{
	curl_off_t	pretransfer_us = 0;
	bool		tunnel_up;

	strlcpy(result->proxy, t->proxy, sizeof(result->proxy));
	if (t->proxy[0] == '\0' || t->rc == CURLE_OK)
		return;
	curl_easy_getinfo(t->easy, CURLINFO_HTTP_CONNECTCODE, &result->proxy_code);
	curl_easy_getinfo(t->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us);
	if (pretransfer_us != 0)
		return;
	result->request_sent = false;
	tunnel_up = result->proxy_code >= 200 && result->proxy_code < 300;
	if (!tunnel_up || t->rc == CURLE_RECV_ERROR || t->rc == CURLE_OUT_OF_MEMORY ||
		t->rc == CURLE_WEIRD_SERVER_REPLY)
		result->status = ZIM_HTTP_PROXY_FAILED;
	else if (t->rc == CURLE_SSL_CONNECT_ERROR)
	{
		result->status = ZIM_HTTP_PROXY_FAILED;
		result->proxy_closed = true;
	}
}

/*
 * Say in result->error which proxy failed, and how; or, for any other
 * failure through a proxy, that it went through one.
 */
static void
zim_http_proxy_error(const Transfer *t, ZimHttpResult *result)
{
	char		curl_text[sizeof(result->error)];

	if (t->proxy[0] == '\0')
		return;
	if (result->status != ZIM_HTTP_PROXY_FAILED)
	{
		snprintf(result->error + strlen(result->error),
				 sizeof(result->error) - strlen(result->error),
				 " (through the proxy at %s)", t->proxy);
		return;
	}
	strlcpy(curl_text, result->error, sizeof(curl_text));
	if (result->proxy_closed)
		snprintf(result->error, sizeof(result->error),
				 "The proxy at %s accepted the tunnel, then closed it before TLS with the ZIM server was established: %s",
				 t->proxy, curl_text);
	else if (result->proxy_code != 0 && result->proxy_code / 100 != 2)
		snprintf(result->error, sizeof(result->error),
				 "The proxy at %s refused the tunnel with HTTP status %ld",
				 t->proxy, result->proxy_code);
	else
		snprintf(result->error, sizeof(result->error),
				 "The proxy at %s failed: %s", t->proxy, curl_text);
}

/*
 * Fill *result from a finished transfer and free its slot.  Transport
 * failures are reported in result->status, not raised.
 */
void
ZimHttpFinish(int id, ZimHttpResult *result)
{
	Transfer   *t = &transfers[id];
	curl_off_t	request_size = 0;
	double		total = 0;

	Assert(t->in_use && t->done);

	memset(result, 0, sizeof(*result));
	initStringInfo(&result->body);

	/*
	 * Our own buffer could not grow: out of memory.  (libcurl's own
	 * CURLE_OUT_OF_MEMORY is what it reports for a header over its 100 kB
	 * limit: that is the answer's fault, see zim_http_classify.)
	 */
	if (t->response.out_of_memory)
	{
		zim_http_release(t);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not buffer the answer of the ZIM server.")));
	}

	result->status = zim_http_classify(t->rc, &t->response);
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &result->http_code);
	curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &request_size);
	result->request_sent = request_size > 0;
	curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
	result->elapsed_ms = total * 1000.0;
	curl_easy_getinfo(t->easy, CURLINFO_PRETRANSFER_TIME, &total);
	result->pretransfer_ms = total * 1000.0;

	zim_http_judge_proxy(t, result);

	if (result->status == ZIM_HTTP_TOO_LARGE && t->rc != CURLE_OUT_OF_MEMORY)
		snprintf(result->error, sizeof(result->error),
				 "The answer exceeds %d bytes", ZIM_MAX_RESPONSE_SIZE);
	else if (t->rc == CURLE_OUT_OF_MEMORY)
	{
		snprintf(result->error, sizeof(result->error),
				 "libcurl could not buffer the answer: a response header over its limit of 100 kB?");
		zim_http_proxy_error(t, result);
	}
	else if (t->rc != CURLE_OK)
	{
		const char *text = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->rc);

		strlcpy(result->error, ZimRedact(text), sizeof(result->error));
		/* libcurl's texts may end with a space */
		while (result->error[0] && result->error[strlen(result->error) - 1] == ' ')
			result->error[strlen(result->error) - 1] = '\0';
		zim_http_proxy_error(t, result);
	}
	if (t->response.len > 0)
		appendBinaryStringInfo(&result->body, t->response.data, t->response.len);

	zim_http_release(t);
}

/*
 * Close every cached connection: the multi handle goes, and is created
 * again by the next ZimHttpStart.  After an answer that was not a ZIM
 * answer, bytes the peer left on its connection must not be read as the
 * answer to a later request.  Only with nothing in flight (else it does
 * nothing).
 */
void
ZimHttpDropConnections(void)
{
	for (int i = 0; i < ZIM_MAX_TRANSFERS; i++)
		if (transfers[i].in_use)
			return;
	if (zim_multi)
		curl_multi_cleanup(zim_multi);
	zim_multi = NULL;
}

/*
 * Detach and free every transfer; returns how many were still running.
 * Safe to call at any time, including from PG_FINALLY after an ERROR.
 */
int
ZimHttpAbortAll(void)
{
	int			running = 0;

	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;

	for (int i = 0; i < ZIM_MAX_TRANSFERS; i++)
	{
		if (!transfers[i].in_use)
			continue;
		if (!transfers[i].done)
			running++;
		zim_http_release(&transfers[i]);
	}
	n_watched = 0;
	curl_timer_ms = -1;
	if (watched_out_of_memory)
	{
		/* libcurl refuses a multi handle whose socket callback failed */
		if (zim_multi)
			curl_multi_cleanup(zim_multi);
		zim_multi = NULL;
		watched_out_of_memory = false;
	}
	return running;
}
