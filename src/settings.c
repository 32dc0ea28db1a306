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
 * The secret can also come from a file (zim_pin.server_secret_file), read
 * by the server at each call, and refused when group or others may read it
 * (like ssl_key_file).  Without preloading, PostgreSQL shows every zim_pin.*
 * value of postgresql.conf to every role until the library loads, so a
 * secret in zim_pin.server_secret is then refused: the file is the only
 * way.
 *
 * This file calls only proxy.c (zim_pin.proxy, whose credentials are kept
 * like the secret), and nothing here may put the secret in a message, at
 * any level.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

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
int			zim_job_lease_s = 600;

/*
 * The server's own values of the settings that say how a request is sent:
 * what the configuration file (or ALTER SYSTEM), the postmaster's command
 * line or the default gives, never a session's, a role's, a database's or
 * a client's.  The check hooks note every value they pass from those
 * sources: the postmaster's at start and at each reload, inherited by every
 * backend it starts, then each backend's own reloads.  The worker and
 * zim_pin_run_jobs send with these (ZimUseServerSendSettings), so nobody
 * who may merely run the queue decides how it sends.
 */
static int	server_connect_timeout_ms = 5000;
static int	server_timeout_ms = 10000;
static int	server_max_retries = 3;

/* the GUC variables of the two settings whose real value lives in "extra" */
static char *app_id_string = NULL;
static char *secret_string = NULL;
static char *secret_file = NULL;

/* was the library loaded by shared_preload_libraries? */
static bool preloaded = false;

/* the secret as last read from zim_pin.server_secret_file, wiped on change */
#define MAX_SECRET_LEN 1024
static char file_secret[MAX_SECRET_LEN + 1];

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
 * Where a secret may come from: the configuration file (ALTER SYSTEM writes
 * postgresql.auto.conf, which is read as one), or the built-in default.
 * Every other source stores or shows the value where other roles can read
 * it: ALTER ROLE/DATABASE ... SET and a function's SET clause keep it in
 * catalogs every role reads (they are validated as PGC_S_TEST), a client's
 * startup options and the postmaster's command line are in ps, and a SET
 * is in the statement log.
 */
static bool
zim_secret_source_ok(GucSource source)
{
	return source == PGC_S_DEFAULT || source == PGC_S_DYNAMIC_DEFAULT ||
		source == PGC_S_FILE;
}

/*
 * Refuse *newval without its value ever reaching a message: PostgreSQL's
 * own "invalid value for parameter" message would quote it, so the hook
 * gives its own message and wipes the value first.
 */
static bool
zim_refuse_secret(char **newval, const char *msg, const char *detail)
{
	explicit_bzero(*newval, strlen(*newval));
	GUC_check_errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
	GUC_check_errmsg("%s", msg);
	if (detail)
		GUC_check_errdetail("%s", detail);
	GUC_check_errhint("Set zim_pin.server_secret in postgresql.conf or with ALTER SYSTEM, or use zim_pin.server_secret_file.");
	return false;
}

/*
 * zim_pin.server_secret: moves the value into extra, and refuses it from
 * any source but the configuration file.  An empty value (no secret) is
 * accepted from anywhere.
 */
static bool
check_server_secret(char **newval, void **extra, GucSource source)
{
	char	   *secret;
	char	   *empty;
	size_t		len = strlen(*newval);

	if (len == 0)
		return true;

	if (!zim_secret_source_ok(source))
		return zim_refuse_secret(newval,
								 "zim_pin.server_secret can only be set in the server's configuration file",
								 "A secret set with SET, ALTER ROLE, ALTER DATABASE, a function's SET clause or connection options could be read by other roles.");

	secret = zim_guc_malloc(len + 1);
	empty = zim_guc_malloc(1);
	if (secret == NULL || empty == NULL)
	{
		if (secret)
			zim_guc_free(secret);
		if (empty)
			zim_guc_free(empty);
		/* the value must not reach the "invalid value" message either */
		explicit_bzero(*newval, len);
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
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

/*
 * Set an int setting: with action GUC_ACTION_SAVE for a function's
 * duration, or (action -1) as an override for the process's life.
 */
static void
zim_set_int(const char *name, int value, int action)
{
	char		buf[32];

	snprintf(buf, sizeof(buf), "%d", value);
	if (action < 0)
		SetConfigOption(name, buf, PGC_SUSET, PGC_S_OVERRIDE);
	else
		(void) set_config_option(name, buf, PGC_SUSET, PGC_S_SESSION,
								 (GucAction) action, true, 0, false);
}

/* values from these sources are the server's own */
static inline bool
zim_server_source(GucSource source)
{
	return source <= PGC_S_ARGV;
}

static bool
check_connect_timeout_ms(int *newval, void **extra, GucSource source)
{
	if (zim_server_source(source))
		server_connect_timeout_ms = *newval;
	return true;
}

static bool
check_timeout_ms(int *newval, void **extra, GucSource source)
{
	if (zim_server_source(source))
		server_timeout_ms = *newval;
	return true;
}

static bool
check_max_retries(int *newval, void **extra, GucSource source)
{
	if (zim_server_source(source))
		server_max_retries = *newval;
	return true;
}

void
ZimDefineSettings(void)
{
	preloaded = process_shared_preload_libraries_in_progress;

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

	DefineCustomStringVariable("zim_pin.server_secret_file",
							   "File whose first line is the ZEGOCLOUD ServerSecret.",
							   "Read by the server; refused if group or others can read it.",
							   &secret_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

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
							check_connect_timeout_ms, NULL, NULL);

	DefineCustomIntVariable("zim_pin.timeout_ms",
							"Time allowed for one HTTP exchange with the ZIM server.",
							NULL,
							&zim_timeout_ms,
							10000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							check_timeout_ms, NULL, NULL);

	DefineCustomIntVariable("zim_pin.max_retries",
							"Retries of one request after a transient failure.",
							NULL,
							&zim_max_retries,
							3, 0, 10,
							PGC_USERSET,
							0,
							check_max_retries, NULL, NULL);

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

	DefineCustomIntVariable("zim_pin.job_lease",
							"How long a runner holds the jobs it claimed before another may take them.",
							"A runner that is still sending renews its lease; a runner that died loses its jobs at once.",
							&zim_job_lease_s,
							600, 1, 24 * 60 * 60,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	ZimDefineProxySetting();

	MarkGUCPrefixReserved("zim_pin");
}

/*
 * Make the sending settings the server's own values (see above) until the
 * returned GUC nest level is closed with AtEOXact_GUC(true, level), or the
 * (sub)transaction aborts.  For zim_pin_run_jobs, whose caller may have SET
 * them, or inherited them from ALTER ROLE/DATABASE.
 */
int
ZimUseServerSendSettings(void)
{
	int			level = NewGUCNestLevel();

	zim_set_int("zim_pin.connect_timeout_ms", server_connect_timeout_ms, GUC_ACTION_SAVE);
	zim_set_int("zim_pin.timeout_ms", server_timeout_ms, GUC_ACTION_SAVE);
	zim_set_int("zim_pin.max_retries", server_max_retries, GUC_ACTION_SAVE);
	return level;
}

/*
 * The same for the worker, for as long as it runs (until its next reload,
 * when it calls this again): the database's owner may have set them with
 * ALTER DATABASE ... SET.
 */
void
ZimForceServerSendSettings(void)
{
	zim_set_int("zim_pin.connect_timeout_ms", server_connect_timeout_ms, -1);
	zim_set_int("zim_pin.timeout_ms", server_timeout_ms, -1);
	zim_set_int("zim_pin.max_retries", server_max_retries, -1);
}

/* what is wrong with the configuration, for ZimCheckConfigured */
typedef struct ConfigProblem
{
	const char *message;
	const char *detail;
	const char *hint;
	const char *log_detail;		/* for the server log only (the file's path) */
} ConfigProblem;

#define HINT_SECRET \
	"Set zim_pin.app_id and zim_pin.server_secret (or zim_pin.server_secret_file) in postgresql.conf and reload."

/*
 * Read the first line of zim_pin.server_secret_file into file_secret.
 * Returns false and fills *p if it cannot be used.  Never puts any of the
 * file's content in a message, and its path only in the server log: the
 * setting is superuser-only, and the messages reach whoever called.
 */
static bool
zim_read_secret_file(ConfigProblem *p)
{
	int			fd;
	struct stat st;
	ssize_t		n;
	char	   *eol;

	explicit_bzero(file_secret, sizeof(file_secret));
	p->log_detail = psprintf("The file is \"%s\".", secret_file);
	fd = open(secret_file, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
	{
		p->message = psprintf("could not open the file named by zim_pin.server_secret_file: %m");
		p->hint = "Check zim_pin.server_secret_file: the file must be readable by the database server.";
		return false;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
	{
		close(fd);
		p->message = "the file named by zim_pin.server_secret_file is not a regular file";
		return false;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO))
	{
		close(fd);
		p->message = "the file named by zim_pin.server_secret_file has group or world access";
		p->detail = "The file must have permissions u=rw (0600) or less, like ssl_key_file.";
		p->hint = "Run chmod 600 on the file.";
		return false;
	}
	n = read(fd, file_secret, MAX_SECRET_LEN);
	close(fd);
	if (n < 0)
	{
		p->message = psprintf("could not read the file named by zim_pin.server_secret_file: %m");
		return false;
	}
	file_secret[n] = '\0';
	if ((eol = strpbrk(file_secret, "\r\n")) != NULL)
		*eol = '\0';
	if (file_secret[0] == '\0')
	{
		p->message = "the file named by zim_pin.server_secret_file is empty";
		p->detail = "Its first line must be the ServerSecret.";
		return false;
	}
	return true;
}

/* true if the AppId and a usable secret are set; else fills *p */
static bool
zim_check_config(ConfigProblem *p)
{
	bool		from_file = secret_file != NULL && secret_file[0] != '\0';
	bool		from_setting = secret_value != NULL && secret_value[0] != '\0';

	memset(p, 0, sizeof(*p));
	p->hint = HINT_SECRET;
	if (app_id_value == NULL)
	{
		p->message = "zim_pin.app_id is not set";
		return false;
	}
	if (from_file && from_setting)
	{
		p->message = "zim_pin.server_secret and zim_pin.server_secret_file are both set";
		p->hint = "Set only one of them, and reload.";
		return false;
	}
	if (!preloaded && ZimProxySetting() && ZimProxySetting()->has_credentials)
	{
		p->message = "zim_pin.proxy with credentials cannot be used without preloading";
		p->detail = "Without shared_preload_libraries = 'zim_pin', PostgreSQL shows the zim_pin.proxy of postgresql.conf to every role.";
		p->hint = "Add zim_pin to shared_preload_libraries, or use a proxy that needs no credentials.";
		return false;
	}
	if (from_file)
		return zim_read_secret_file(p);
	if (!from_setting)
	{
		p->message = "zim_pin.server_secret is not set";
		return false;
	}
	if (!preloaded)
	{
		p->message = "zim_pin.server_secret cannot be used without preloading";
		p->detail = "Without shared_preload_libraries = 'zim_pin', PostgreSQL shows the zim_pin.server_secret of postgresql.conf to every role.";
		p->hint = "Add zim_pin to shared_preload_libraries, or give the secret in zim_pin.server_secret_file instead.";
		return false;
	}
	return true;
}

/*
 * Raise 55000 unless the AppId and a usable secret are set; (re)reads the
 * secret file.  Called once per call, before anything is sent.
 */
void
ZimCheckConfigured(void)
{
	ConfigProblem p;

	if (!zim_check_config(&p))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_internal("%s", p.message),
				 p.detail ? errdetail_internal("%s", p.detail) : 0,
				 p.hint ? errhint("%s", p.hint) : 0,
				 p.log_detail ? errdetail_log("%s", p.log_detail) : 0));
}

/*
 * The same check, without raising (the worker waits instead); *problem
 * says what is missing, safe to show (no path, no value).
 */
bool
ZimIsConfigured(const char **problem)
{
	ConfigProblem p;
	bool		ok = zim_check_config(&p);

	*problem = ok ? NULL : p.message;
	return ok;
}

uint32
ZimAppId(void)
{
	return app_id_value ? *app_id_value : 0;
}

/* the secret that ZimCheckConfigured found usable */
const char *
ZimServerSecret(void)
{
	if (secret_file != NULL && secret_file[0] != '\0')
		return file_secret;
	return secret_value ? secret_value : "";
}

/*
 * Return a palloc'd copy of text that is safe to show: the secret, the
 * proxy's user and password, and the value of any Signature= parameter
 * are replaced.  Used on everything that
 * comes from libcurl or the network before it reaches a message.
 */
const char *
ZimRedact(const char *text)
{
	StringInfoData buf;
	const ZimProxy *proxy = ZimProxySetting();
	const char *secrets[4] = {file_secret, secret_value ? secret_value : "",
		proxy && proxy->has_credentials ? proxy->password : "",
	proxy && proxy->has_credentials ? proxy->user : ""};
	const char *p = text;

	initStringInfo(&buf);
	while (*p)
	{
		size_t		len = 0;

		for (size_t i = 0; i < lengthof(secrets) && len == 0; i++)
			if (secrets[i][0] && strncmp(p, secrets[i], strlen(secrets[i])) == 0)
				len = strlen(secrets[i]);
		if (len > 0)
		{
			appendStringInfoString(&buf, SECRET_MASK);
			p += len;
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
