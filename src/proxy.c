/*-------------------------------------------------------------------------
 *
 * proxy.c
 *	  The zim_pin.proxy setting: the HTTP CONNECT proxy requests go through,
 *	  and its credentials, kept like the secret.
 *
 * The value is http://[user:password@]host:port.  It is parsed once, when
 * it is set, into a ZimProxy held in the GUC's "extra": the proxy's URL
 * without the credentials (what libcurl gets as CURLOPT_PROXY), the
 * credentials percent-decoded (CURLOPT_PROXYUSERNAME and _PASSWORD), and
 * the form that SHOW prints, with the credentials replaced by "********".
 *
 * As for zim_pin.server_secret (see settings.c), the GUC variable itself
 * stays "" whatever is set: PostgreSQL shows a string setting's variable
 * in pg_settings.reset_val, and the "parameter ... changed to ..." line of
 * a reload quotes the new value from the file whenever the variable
 * changes.  A variable that never changes never gets that line.  No
 * message of this file quotes the value either (PostgreSQL's own "invalid
 * value" message would).  Credentials are only accepted from the
 * configuration file (ALTER SYSTEM included): on the postmaster's command
 * line ps would show them.
 *
 * The environment's proxy variables are never used (http.c tells libcurl
 * so), so where requests go does not depend on how the server started.
 *
 * This file is the bottom layer: it calls no other file of zim_pin.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include <ctype.h>

#include "utils/guc.h"

#define PROXY_MASK "********"

/* the GUC variable: always "" (see above) */
static char *proxy_string = NULL;

/* set by the assign hook; points into GUC-owned extra, NULL for direct */
static const ZimProxy *proxy_value = NULL;

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char) tolower((unsigned char) c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * Percent-decode s[0..len) into out (size outsz).  false if an escape is
 * malformed, decodes to a control character, or the result does not fit.
 */
static bool
proxy_decode(const char *s, size_t len, char *out, size_t outsz)
{
	size_t		n = 0;

	for (size_t i = 0; i < len; i++)
	{
		int			c = (unsigned char) s[i];

		if (c == '%')
		{
			int			hi;
			int			lo;

			if (i + 2 >= len)
				return false;
			hi = hex_value(s[i + 1]);
			lo = hex_value(s[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = hi * 16 + lo;
			i += 2;
		}
		if (c < 0x20 || c == 0x7f || n + 1 >= outsz)
			return false;
		out[n++] = (char) c;
	}
	out[n] = '\0';
	return n > 0;
}

/* the host: a name, an IPv4 address, or an IPv6 address in brackets */
static bool
proxy_host_ok(const char *h, size_t len)
{
	if (len == 0 || len >= ZIM_PROXY_HOST_LEN)
		return false;
	if (h[0] == '[')
	{
		if (len < 3 || h[len - 1] != ']')
			return false;
		for (size_t i = 1; i < len - 1; i++)
			if (!isxdigit((unsigned char) h[i]) && h[i] != ':' && h[i] != '.')
				return false;
		return true;
	}
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char) h[i]) && h[i] != '.' && h[i] != '-')
			return false;
	return h[0] != '-' && h[0] != '.';
}

/*
 * Parse s into *p; returns NULL, or what is wrong (a detail that never
 * quotes the value).
 */
static const char *
proxy_parse(const char *s, ZimProxy *p)
{
	const char *auth;
	const char *at = NULL;
	const char *hostport;
	const char *end;
	const char *colon;
	long		port = 0;

	memset(p, 0, sizeof(*p));
	if (strlen(s) > 1024)
		return "The value must not be longer than 1024 bytes.";
	for (const char *c = s; *c; c++)
		if ((unsigned char) *c <= ' ' || (unsigned char) *c >= 0x7f)
			return "The value must not contain spaces, control or non-ASCII characters.";
	if (pg_strncasecmp(s, "http://", 7) != 0)
		return "Only an HTTP proxy is supported: the value must be http://[user:password@]host:port.";

	auth = s + 7;
	end = auth + strcspn(auth, "/?#");
	if (*end == '?' || *end == '#' || (*end == '/' && end[1] != '\0'))
		return "The value must not have a path, query or fragment: http://[user:password@]host:port.";
	for (const char *c = auth; c < end; c++)
		if (*c == '@')
			at = c;
	hostport = auth;
	if (at != NULL)
	{
		const char *sep = memchr(auth, ':', at - auth);

		if (sep == NULL || sep == auth || sep + 1 == at)
			return "Credentials must be given as user:password@, both not empty.";
		if (!proxy_decode(auth, sep - auth, p->user, sizeof(p->user)) ||
			!proxy_decode(sep + 1, at - sep - 1, p->password, sizeof(p->password)))
			return "The user or password is too long, or has a bad %-escape or a control character.";
		p->has_credentials = true;
		hostport = at + 1;
	}

	/* the port follows the host (after the brackets of IPv6) */
	if (hostport[0] == '[')
	{
		const char *close = memchr(hostport, ']', end - hostport);

		if (close == NULL)
			return "The host must be a name, an IPv4 address or an IPv6 address in brackets.";
		colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
	}
	else
		colon = memchr(hostport, ':', end - hostport);
	if (colon == NULL)
		return "The port must be given: http://[user:password@]host:port.";
	if (!proxy_host_ok(hostport, colon - hostport))
		return "The host must be a name, an IPv4 address or an IPv6 address in brackets.";
	if (colon + 1 == end || end - colon - 1 > 5)
		return "The port must be a number between 1 and 65535.";
	for (const char *c = colon + 1; c < end; c++)
	{
		if (!isdigit((unsigned char) *c))
			return "The port must be a number between 1 and 65535.";
		port = port * 10 + (*c - '0');
	}
	if (port < 1 || port > 65535)
		return "The port must be a number between 1 and 65535.";

	snprintf(p->host_port, sizeof(p->host_port), "%.*s",
			 (int) (end - hostport), hostport);
	snprintf(p->url, sizeof(p->url), "http://%s", p->host_port);
	snprintf(p->shown, sizeof(p->shown), "http://%s%s",
			 p->has_credentials ? PROXY_MASK "@" : "", p->host_port);
	return NULL;
}

/* wipe and refuse *newval, with a message that does not quote it */
static bool
proxy_refuse(char **newval, int sqlstate, const char *msg, const char *detail)
{
	explicit_bzero(*newval, strlen(*newval));
	GUC_check_errcode(sqlstate);
	GUC_check_errmsg("%s", msg);
	GUC_check_errdetail("%s", detail);
	return false;
}

static bool
check_proxy(char **newval, void **extra, GucSource source)
{
	ZimProxy	parsed;
	ZimProxy   *result;
	const char *problem;
	char	   *empty;

	if ((*newval)[0] == '\0')
		return true;

	problem = proxy_parse(*newval, &parsed);
	if (problem != NULL)
	{
		explicit_bzero(&parsed, sizeof(parsed));
		return proxy_refuse(newval, ERRCODE_INVALID_PARAMETER_VALUE,
							"invalid value for parameter \"zim_pin.proxy\"", problem);
	}
	/* as for the secret: ps shows the postmaster's command line */
	if (parsed.has_credentials && source != PGC_S_FILE && source != PGC_S_DEFAULT &&
		source != PGC_S_DYNAMIC_DEFAULT)
	{
		explicit_bzero(&parsed, sizeof(parsed));
		return proxy_refuse(newval, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
							"zim_pin.proxy with credentials can only be set in the server's configuration file",
							"Credentials given elsewhere could be read by other roles or in the process list.");
	}

	result = zim_guc_malloc(sizeof(ZimProxy));
	empty = zim_guc_malloc(1);
	if (result == NULL || empty == NULL)
	{
		if (result)
			zim_guc_free(result);
		if (empty)
			zim_guc_free(empty);
		explicit_bzero(&parsed, sizeof(parsed));
		return proxy_refuse(newval, ERRCODE_OUT_OF_MEMORY, "out of memory",
							"Could not keep the value of zim_pin.proxy.");
	}
	memcpy(result, &parsed, sizeof(ZimProxy));
	explicit_bzero(&parsed, sizeof(parsed));
	empty[0] = '\0';
	explicit_bzero(*newval, strlen(*newval));
	zim_guc_free(*newval);
	*newval = empty;
	*extra = result;
	return true;
}

static void
assign_proxy(const char *newval, void *extra)
{
	proxy_value = (const ZimProxy *) extra;
}

static const char *
show_proxy(void)
{
	return proxy_value ? proxy_value->shown : "";
}

/* from ZimDefineSettings, before the prefix is reserved */
void
ZimDefineProxySetting(void)
{
	DefineCustomStringVariable("zim_pin.proxy",
							   "HTTP CONNECT proxy for requests to ZIM: http://[user:password@]host:port; empty means direct.",
							   "The environment's proxy variables are never used.  SHOW prints the credentials as ********.",
							   &proxy_string,
							   "",
							   PGC_SIGHUP,
							   GUC_NOT_IN_SAMPLE,
							   check_proxy, assign_proxy, show_proxy);
}

/* the proxy to use, or NULL to connect directly */
const ZimProxy *
ZimProxySetting(void)
{
	return proxy_value;
}
