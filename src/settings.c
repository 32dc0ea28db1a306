/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The zim_pin.* settings and the checks on their values.
 *
 * Who may set what is part of the security model: everything that decides
 * where a signed request goes or how its server is verified (app_id,
 * server_secret, api_url, ca_file, max_convs_per_request) is SUSET, and the
 * prefix is reserved so that a placeholder set by an ordinary user before
 * the library loads cannot survive into it.
 *
 * The secret needs more care than GUC_SUPERUSER_ONLY gives.  PostgreSQL
 * shows a string setting's variable in SHOW, current_setting(), pg_settings
 * (reset_val too) and in the "parameter ... changed to ..." line that a
 * reload logs.  So the check hook moves the value into the hook's "extra"
 * (which only this file reads) and replaces the variable itself with "".
 * The variable never changes, so a reload never logs it, and the show hook
 * prints "********" when a secret is set.  The extra follows SET, RESET,
 * SET LOCAL and function SET clauses like the value would.
 *
 * This file is the bottom layer: it calls no other file of zim_pin, and
 * nothing here may put the secret in a message, at any level.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include <ctype.h>
#include <limits.h>

#include "miscadmin.h"
#include "utils/guc.h"

char	   *zim_api_url = NULL;
char	   *zim_ca_file = NULL;
int			zim_connect_timeout_ms = 5000;
int			zim_timeout_ms = 10000;
int			zim_max_retries = 3;
int			zim_requests_per_second = 20;
int			zim_max_convs_per_request = 20;
char	   *zim_worker_database = NULL;
int			zim_job_max_attempts = 10;
int			zim_job_retention_min = 7 * 24 * 60;

/* the GUC variables of the two settings whose real value lives in "extra" */
static char *app_id_string = NULL;
static char *secret_string = NULL;

/* set by the assign hooks; point into GUC-owned extra */
static const uint32 *app_id_value = NULL;
static const char *secret_value = NULL;

#define SECRET_MASK "********"

/*
 * zim_pin.app_id: empty, or a decimal 1..4294967295 without sign, spaces
 * or leading zeros' tricks (leading zeros are accepted, the value counts).
 */
static bool
check_app_id(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;
	uint64		v = 0;
	uint32	   *result;

	if (s == NULL || s[0] == '\0')
		return true;

	for (const char *p = s; *p; p++)
	{
		if (!isdigit((unsigned char) *p) || p - s >= 10)
		{
			GUC_check_errdetail("The AppId must be a decimal number between 1 and 4294967295.");
			return false;
		}
		v = v * 10 + (*p - '0');
	}
	if (v < 1 || v > UINT32_MAX)
	{
		GUC_check_errdetail("The AppId must be a decimal number between 1 and 4294967295.");
		return false;
	}

	result = zim_guc_malloc(sizeof(uint32));
	if (result == NULL)
		return false;
	*result = (uint32) v;
	*extra = result;
	return true;
}

static void
assign_app_id(const char *newval, void *extra)
{
	app_id_value = (const uint32 *) extra;
}

/*
 * zim_pin.server_secret: never fails (a failed check would print the value
 * in "invalid value for parameter"); moves the value into extra.
 */
static bool
check_server_secret(char **newval, void **extra, GucSource source)
{
	char	   *secret;
	char	   *empty;
	size_t		len = strlen(*newval);

	if (len == 0)
		return true;

	secret = zim_guc_malloc(len + 1);
	empty = zim_guc_malloc(1);
	if (secret == NULL || empty == NULL)
	{
		if (secret)
			zim_guc_free(secret);
		if (empty)
			zim_guc_free(empty);
		return false;
	}
	memcpy(secret, *newval, len + 1);
	empty[0] = '\0';

	explicit_bzero(*newval, len);
	zim_guc_free(*newval);
	*newval = empty;
	*extra = secret;
	return true;
}

static void
assign_server_secret(const char *newval, void *extra)
{
	secret_value = (const char *) extra;
}

static const char *
show_server_secret(void)
{
	return (secret_value && secret_value[0]) ? SECRET_MASK : "";
}

/*
 * zim_pin.api_url: https only; the query string is ours to add, so no '?'
 * or '#', and nothing a URL parser could read two ways.
 */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;

	if (pg_strncasecmp(s, "https://", 8) != 0 || s[8] == '\0' || s[8] == '/')
	{
		GUC_check_errdetail("The URL must start with \"https://\" and name a host.");
		return false;
	}
	if (strlen(s) > 1024)
	{
		GUC_check_errdetail("The URL must not be longer than 1024 bytes.");
		return false;
	}
	for (const char *p = s; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c <= ' ' || c >= 0x7f || c == '?' || c == '#' || c == '\\')
		{
			GUC_check_errdetail("The URL must not contain spaces, control characters, \"?\", \"#\" or \"\\\".");
			return false;
		}
	}
	return true;
}

void
ZimDefineSettings(void)
{
	DefineCustomStringVariable("zim_pin.app_id",
							   "ZEGOCLOUD AppId used to sign requests.",
							   "A decimal number between 1 and 4294967295.",
							   &app_id_string,
							   "",
							   PGC_SUSET,
							   0,
							   check_app_id, assign_app_id, NULL);

	DefineCustomStringVariable("zim_pin.server_secret",
							   "ZEGOCLOUD ServerSecret used to sign requests.",
							   "Never shown: SHOW prints ******** when it is set.",
							   &secret_string,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL |
							   GUC_NOT_IN_SAMPLE,
							   check_server_secret, assign_server_secret,
							   show_server_secret);

	DefineCustomStringVariable("zim_pin.api_url",
							   "Base URL of the ZIM server API.",
							   "Must start with https://.",
							   &zim_api_url,
							   "https://zim-api.zego.im/",
							   PGC_SUSET,
							   0,
							   check_api_url, NULL, NULL);

	DefineCustomStringVariable("zim_pin.ca_file",
							   "CA bundle used to verify the ZIM server; empty means the system store.",
							   NULL,
							   &zim_ca_file,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("zim_pin.connect_timeout_ms",
							"Time allowed to connect to the ZIM server.",
							NULL,
							&zim_connect_timeout_ms,
							5000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("zim_pin.timeout_ms",
							"Time allowed for one HTTP exchange with the ZIM server.",
							NULL,
							&zim_timeout_ms,
							10000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("zim_pin.max_retries",
							"Retries of one request after a transient failure.",
							NULL,
							&zim_max_retries,
							3, 0, 10,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("zim_pin.requests_per_second",
							"Most requests sent per Action in any one-second window.",
							NULL,
							&zim_requests_per_second,
							20, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("zim_pin.max_convs_per_request",
							"Most conversations sent in one ConvPinned request.",
							NULL,
							&zim_max_convs_per_request,
							20, 1, 100,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	/* a postmaster setting can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("zim_pin.worker_database",
								   "Database whose queue a background worker drains; empty means no worker.",
								   "Needs zim_pin in shared_preload_libraries.",
								   &zim_worker_database,
								   "",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);

	DefineCustomIntVariable("zim_pin.job_max_attempts",
							"Attempts of a queued job before it fails after transient errors.",
							NULL,
							&zim_job_max_attempts,
							10, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("zim_pin.job_retention",
							"How long finished jobs are kept before the worker deletes them.",
							NULL,
							&zim_job_retention_min,
							7 * 24 * 60, 1, INT_MAX / 60,
							PGC_SIGHUP,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("zim_pin");
}

/*
 * Raise 55000 unless the AppId and the secret are set.
 */
void
ZimCheckConfigured(void)
{
	if (app_id_value == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("zim_pin.app_id is not set"),
				 errhint("Set zim_pin.app_id and zim_pin.server_secret in postgresql.conf and reload.")));
	if (secret_value == NULL || secret_value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("zim_pin.server_secret is not set"),
				 errhint("Set zim_pin.app_id and zim_pin.server_secret in postgresql.conf and reload.")));
}

bool
ZimIsConfigured(void)
{
	return app_id_value != NULL && secret_value != NULL && secret_value[0] != '\0';
}

uint32
ZimAppId(void)
{
	return app_id_value ? *app_id_value : 0;
}

const char *
ZimServerSecret(void)
{
	return secret_value ? secret_value : "";
}

/*
 * Return a palloc'd copy of text that is safe to show: the secret and the
 * value of any Signature= parameter are replaced.  Used on everything that
 * comes from libcurl or the network before it reaches a message.
 */
const char *
ZimRedact(const char *text)
{
	StringInfoData buf;
	const char *secret = ZimServerSecret();
	size_t		secret_len = strlen(secret);
	const char *p = text;

	initStringInfo(&buf);
	while (*p)
	{
		if (secret_len > 0 && strncmp(p, secret, secret_len) == 0)
		{
			appendStringInfoString(&buf, SECRET_MASK);
			p += secret_len;
		}
		else if (pg_strncasecmp(p, "Signature=", 10) == 0)
		{
			appendStringInfoString(&buf, "Signature=" SECRET_MASK);
			p += 10;
			while (*p && *p != '&' && *p != ' ' && *p != '"')
				p++;
		}
		else
			appendStringInfoChar(&buf, *p++);
	}
	return buf.data;
}
