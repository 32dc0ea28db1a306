/*-------------------------------------------------------------------------
 *
 * status.c
 *	  What the queue's launcher and worker are doing, kept in shared memory
 *	  for the zim_pin_worker view: zim_pin_worker_status().
 *
 * The worker (and the launcher, for what only it can see: a worker that
 * never reached its database, or found no free slot) writes its state,
 * its last error and its counters here as it goes; anyone with EXECUTE on
 * zim_pin_worker_status() (pg_read_all_stats, through the view) reads
 * them.  There is one worker, for zim_pin.worker_database, so one row for
 * it, and one for the launcher.  The rows are there whether the processes
 * run or not: the worker leaves when idle, and the row then says "idle".
 *
 * An error message is kept in the encoding of the database it was raised
 * in.  A reader in a database of another encoding gets its non-ASCII
 * bytes as "?", never bytes that are invalid in its own encoding.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(zim_pin_worker_status);

static const char *const state_names[] = {
	[ZIM_WORKER_STARTING] = "starting",
	[ZIM_WORKER_IDLE] = "idle",
	[ZIM_WORKER_SENDING] = "sending",
	[ZIM_WORKER_BACKING_OFF] = "backing off",
	[ZIM_WORKER_UNCONFIGURED] = "waiting for configuration",
	[ZIM_WORKER_NO_DATABASE] = "database missing",
	[ZIM_WORKER_CANNOT_CONNECT] = "cannot connect",
	[ZIM_WORKER_REFUSED] = "refused to run",
	[ZIM_WORKER_NO_SLOT] = "no worker slot",
	[ZIM_WORKER_STOPPED] = "stopped",
};

StaticAssertDecl(lengthof(state_names) == ZIM_WORKER_STOPPED + 1,
				 "every worker state has a name");

/* the status, with the lock held; NULL without preloading */
static ZimWorkerStatus *
zim_status_locked(void)
{
	ZimQueueShared *q;

	ZimShmemLock();
	q = ZimShmemQueue();
	if (q == NULL)
	{
		ZimShmemUnlock();
		return NULL;
	}
	return &q->status;
}

/*
 * Enter a state; until is when a wait (backing off, a next try) ends, or
 * 0.  The time it began changes only when the state does.
 */
void
ZimStatusSet(ZimWorkerState state, TimestampTz until)
{
	ZimWorkerStatus *st = zim_status_locked();

	if (st == NULL)
		return;
	if (st->state != state || st->since == 0)
		st->since = GetCurrentTimestamp();
	st->state = state;
	st->until = until;
	ZimShmemUnlock();
}

ZimWorkerState
ZimStatusState(void)
{
	ZimWorkerStatus *st = zim_status_locked();
	ZimWorkerState state;

	if (st == NULL)
		return ZIM_WORKER_IDLE;
	state = st->state;
	ZimShmemUnlock();
	return state;
}

/*
 * Keep an error: its message (cut to fit, on a character boundary) and
 * SQLSTATE.  The messages zim_pin raises never hold the secret or the
 * proxy's credentials (see client.c), so this one is as safe to show as
 * the server log is.
 */
void
ZimStatusError(int sqlerrcode, const char *message)
{
	ZimWorkerStatus *st;
	int			len = strlen(message);

	len = pg_mbcliplen(message, len, ZIM_STATUS_ERROR_LEN - 1);
	st = zim_status_locked();
	if (st == NULL)
		return;
	memcpy(st->last_error, message, len);
	st->last_error[len] = '\0';
	st->last_error_encoding = GetDatabaseEncoding();
	st->last_error_code = sqlerrcode;
	st->last_error_at = GetCurrentTimestamp();
	ZimShmemUnlock();
}

/* a worker (or the launcher) began */
void
ZimStatusStarted(bool launcher)
{
	ZimWorkerStatus *st = zim_status_locked();

	if (st == NULL)
		return;
	if (launcher)
		st->launcher_started_at = GetCurrentTimestamp();
	else
		st->started_at = GetCurrentTimestamp();
	ZimShmemUnlock();
}

/* a look at the queue finished: sent jobs went out, finished ones ended */
void
ZimStatusRound(int sent, int finished)
{
	ZimWorkerStatus *st = zim_status_locked();
	TimestampTz now = GetCurrentTimestamp();

	if (st == NULL)
		return;
	st->last_round_at = now;
	if (sent > 0)
		st->last_sent_at = now;
	st->jobs_sent += sent;
	st->jobs_finished += finished;
	ZimShmemUnlock();
}

/* the pid of a process number, or 0 */
static int
zim_status_pid(int procno)
{
	return procno >= 0 ? GetPGProcByNumber(procno)->pid : 0;
}

/* a kept message, safe in this database's encoding */
static Datum
zim_status_message(const char *msg, int encoding)
{
	char	   *copy = pstrdup(msg);

	if (encoding != GetDatabaseEncoding())
	{
		for (char *p = copy; *p; p++)
			if (IS_HIGHBIT_SET(*p))
				*p = '?';
	}
	else if (!pg_verifymbstr(copy, strlen(copy), true))
		for (char *p = copy; *p; p++)
			if (IS_HIGHBIT_SET(*p))
				*p = '?';
	return CStringGetTextDatum(copy);
}

#define STATUS_COLUMNS 13

static Datum
zim_status_ts(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

/* the launcher's row: running, or why there is none */
static void
zim_status_launcher_row(ReturnSetInfo *rsinfo, const ZimQueueShared *q)
{
	Datum		values[STATUS_COLUMNS] = {0};
	bool		nulls[STATUS_COLUMNS];
	const char *state;
	int			pid = q ? zim_status_pid(q->launcher_procno) : 0;

	memset(nulls, true, sizeof(nulls));
	if (q == NULL)
		state = "not preloaded";
	else if (zim_worker_database == NULL || zim_worker_database[0] == '\0')
		state = "disabled";
	else
		state = pid != 0 ? "running" : "not running";
	values[2] = CStringGetTextDatum(state);
	nulls[2] = false;
	if (pid != 0)
	{
		values[1] = Int32GetDatum(pid);
		nulls[1] = false;
	}
	/* since and started_at: it is running since it started */
	if (q != NULL && pid != 0)
	{
		values[3] = zim_status_ts(q->status.launcher_started_at, &nulls[3]);
		values[10] = zim_status_ts(q->status.launcher_started_at, &nulls[10]);
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* the worker's row, from a copy taken under the lock */
static void
zim_status_worker_row(ReturnSetInfo *rsinfo, const char *database,
					  const ZimQueueShared *q)
{
	Datum		values[STATUS_COLUMNS] = {0};
	bool		nulls[STATUS_COLUMNS] = {0};
	const ZimWorkerStatus *st = q ? &q->status : NULL;
	int			pid = q ? zim_status_pid(q->worker_procno) : 0;
	int			k = 0;

	values[k++] = DirectFunctionCall1(namein, CStringGetDatum(database));
	values[k] = Int32GetDatum(pid);
	nulls[k++] = pid == 0;
	if (st == NULL)
	{
		values[k++] = CStringGetTextDatum("not preloaded");
		for (; k < STATUS_COLUMNS; k++)
			nulls[k] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		return;
	}
	values[k++] = CStringGetTextDatum(state_names[st->state]);
	values[k] = zim_status_ts(st->since, &nulls[k]);
	k++;
	values[k] = zim_status_ts(st->until, &nulls[k]);
	k++;
	values[k] = zim_status_ts(q->next_due, &nulls[k]);
	k++;
	values[k] = zim_status_ts(st->last_round_at, &nulls[k]);
	k++;
	values[k] = zim_status_ts(st->last_sent_at, &nulls[k]);
	k++;
	values[k++] = Int64GetDatum((int64) st->jobs_sent);
	values[k++] = Int64GetDatum((int64) st->jobs_finished);
	values[k] = zim_status_ts(st->started_at, &nulls[k]);
	k++;
	if (st->last_error_at != 0)
	{
		values[k++] = zim_status_message(st->last_error, st->last_error_encoding);
		values[k++] = TimestampTzGetDatum(st->last_error_at);
	}
	else
	{
		nulls[k++] = true;
		nulls[k++] = true;
	}
	Assert(k == STATUS_COLUMNS);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * zim_pin_worker_status(): the launcher's row (database NULL), then the
 * worker's, for zim_pin.worker_database.  Without preloading, both say so
 * (the worker's only if zim_pin.worker_database is in the configuration).
 */
Datum
zim_pin_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ZimQueueShared copy;
	ZimQueueShared *q = NULL;
	const char *database = zim_worker_database;

	InitMaterializedSRF(fcinfo, 0);

	ZimShmemLock();
	if (ZimShmemQueue() != NULL)
	{
		copy = *ZimShmemQueue();
		q = &copy;
	}
	ZimShmemUnlock();

	/* not preloaded: the placeholder of the configuration file, if any */
	if (q == NULL)
		database = GetConfigOption("zim_pin.worker_database", true, false);

	zim_status_launcher_row(rsinfo, q);
	if (database != NULL && database[0] != '\0')
		zim_status_worker_row(rsinfo, database, q);
	return (Datum) 0;
}
