/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The queue's background processes: the launcher, and the worker that
 *	  drains the queue of zim_pin.worker_database.
 *
 * The launcher, registered at start-up and connected to no database,
 * starts a dynamic worker when there is work: at start-up (to finish what
 * a crash left), when a commit enqueued (queue.c sets its latch), and when
 * the earliest retry is due.
 *
 * The worker follows worker_spi's conventions: its signal handlers are set
 * before it unblocks signals, it sleeps on its latch, and each unit of
 * work runs in a short transaction of its own (claim; record; housekeeping)
 * with pgstat_report_activity and debug_query_string saying what it does
 * and pgstat_report_stat after each commit.  It never keeps a transaction
 * open across a network wait: a batch is sent between the claim's
 * transaction and the record's.  It exits after WORKER_IDLE_MS with
 * nothing to do, so that it never blocks DROP DATABASE for long, and it
 * handles SIGTERM as any backend does.
 *
 * This file owns the processes and their transactions; what a claim,
 * send, record or prune does is jobs.c's.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* users, and jobs, the worker claims at once */
#define WORKER_HEADS		200
#define WORKER_BATCH		2000
/* the worker exits after this long with nothing to do */
#define WORKER_IDLE_MS		1000
/* how soon to look again at due jobs that another runner holds */
#define BLOCKED_RECHECK_MS	5000
/* how often the worker deletes old jobs, and how many at most at a time */
#define HOUSEKEEPING_MS		(60 * 1000)
#define PRUNE_BATCH			1000

/* the last prune deleted a full batch: the next look deletes more at once */
static bool prune_more = false;
/* while the AppId or secret is missing, look again this often */
#define UNCONFIGURED_RECHECK_MS	(10 * 1000)
/* a worker that could not connect: first delay before the next, doubled */
#define CONNECT_BACKOFF_MS	1000
#define CONNECT_BACKOFF_CAP_MS	(5 * 60 * 1000)

/* start a transaction with SPI and a snapshot, saying what it is for */
static void
zim_worker_begin(const char *what)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	debug_query_string = what;
	pgstat_report_activity(STATE_RUNNING, what);
}

static void
zim_worker_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	debug_query_string = NULL;
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* errors in a row that were not a job's (the worker backs off) */
static int	worker_errors = 0;

/* jobs of this round whose requests all went (for zim_pin_worker) */
static int	round_sent = 0;

/* has the worker reached its database? (for zim_worker_log_hook) */
static bool worker_connected = false;
static emit_log_hook_type prev_emit_log_hook = NULL;

/*
 * After an ERROR: log it, and end the failed transaction.  Returns the
 * error, copied into cxt.
 */
static ErrorData *
zim_worker_error(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	/* report it like the server would, without ending the worker */
	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("zim_pin worker: %s", edata->message),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
	ZimStatusError(edata->sqlerrcode, edata->message);
	AbortOutOfAnyTransaction();
	debug_query_string = NULL;
	pgstat_report_activity(STATE_IDLE, NULL);
	/* where the worker lives between transactions (cxt may be deleted next) */
	MemoryContextSwitchTo(TopMemoryContext);
	return edata;
}

/*
 * An error that is no job's fault (the database is read-only, a table is
 * locked, memory is short): wait, longer each time, but interruptibly.
 */
static void
zim_worker_back_off(void)
{
	long		ms = ZimBackoffMs(worker_errors++, 1000, 60 * 1000);

	ZimStatusSet(ZIM_WORKER_BACKING_OFF,
				 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms));
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, zim_wait_event(ZIM_WAIT_BACKOFF));
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* record, in a transaction of its own, the error that ended a batch */
static int
zim_worker_record_error(ZimJobBatch *batch, int from, ErrorData *edata)
{
	volatile int finished = 0;

	PG_TRY();
	{
		zim_worker_begin("zim_pin: recording an error");
		finished = ZimJobsRecordError(batch, from, edata);
		zim_worker_end();
	}
	PG_CATCH();
	{
		(void) zim_worker_error(batch->cxt);
		zim_worker_back_off();
	}
	PG_END_TRY();
	return finished;
}

/*
 * Send a claimed batch chunk by chunk, each recorded in a transaction of
 * its own that also renews the lease of the rest (see queue.c, Leases).
 * *from tells the caller where an error stopped it, and *finished how
 * many jobs finished until then.
 */
static void
zim_worker_send_batch(ZimJobBatch *batch, volatile int *from, volatile int *finished)
{
	while (*from < batch->n_groups)
	{
		int			to = ZimJobsChunkEnd(batch, *from, false);
		int			done;

		/* no transaction open while sending */
		debug_query_string = "zim_pin: sending jobs";
		pgstat_report_activity(STATE_RUNNING, debug_query_string);
		ZimJobsSend(batch, *from, to);

		/* the groups all of whose requests went; the last may go on */
		done = ZimJobsSentTo(batch, *from, to);
		for (int g = *from; g < done; g++)
			round_sent += batch->groups[g].n_jobs;
		zim_worker_begin("zim_pin: recording jobs");
		*finished += ZimJobsRecord(batch, *from, done);
		if (done < batch->n_groups)
			ZimJobsRenew(batch, done);
		zim_worker_end();
		ZimJobsRenewed(batch);
		*from = done;
	}
}

/*
 * Claim, send and record one batch; returns how many jobs finished.  An
 * ERROR anywhere is caught: once jobs are claimed it is recorded on those
 * not yet recorded (a poison answer fails its jobs after
 * zim_pin.job_max_attempts instead of being resent without end); before,
 * the worker backs off.
 */
static int
zim_worker_run_batch(void)
{
	ZimJobBatch batch = {0};
	volatile int finished = 0;
	volatile bool claimed = false;
	volatile int from = 0;

	batch.cxt = AllocSetContextCreate(TopMemoryContext, "zim_pin job batch",
									  ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		zim_worker_begin("zim_pin: claiming jobs");
		(void) ZimJobsClaim(WORKER_HEADS, WORKER_BATCH, NULL, 0, &batch);
		zim_worker_end();
		claimed = batch.n_jobs > 0;
		if (claimed)
		{
			ZimStatusSet(ZIM_WORKER_SENDING, 0);
			zim_worker_send_batch(&batch, &from, &finished);
		}
		worker_errors = 0;
	}
	PG_CATCH();
	{
		ErrorData  *edata = zim_worker_error(batch.cxt);

		if (claimed)
			finished += zim_worker_record_error(&batch, from, edata);
		/* and the configuration is waited for (zim_worker_wait_configured) */
		if (!claimed || edata->sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
			zim_worker_back_off();
	}
	PG_END_TRY();
	MemoryContextDelete(batch.cxt);
	return finished;
}

/*
 * Delete old finished jobs now and then, and tell when the next pending
 * job is due (0: none).
 */
static TimestampTz
zim_worker_housekeeping(void)
{
	const char *schema;
	volatile TimestampTz next_due = 0;
	TimestampTz now = GetCurrentTimestamp();
	bool		prune;
	ZimQueueShared *q;
	MemoryContext cxt = CurrentMemoryContext;

	ZimShmemLock();
	q = ZimShmemQueue();
	prune = prune_more || TimestampDifferenceExceeds(q->last_housekeeping, now, HOUSEKEEPING_MS);
	prune_more = false;
	if (prune)
		q->last_housekeeping = now;
	ZimShmemUnlock();

	PG_TRY();
	{
		zim_worker_begin("zim_pin: housekeeping");
		schema = ZimJobsSchema();
		if (schema != NULL)
		{
			if (prune)
				prune_more = ZimJobsPrune(schema, PRUNE_BATCH) == PRUNE_BATCH;
			next_due = ZimJobsNextDue(schema);
		}
		zim_worker_end();
	}
	PG_CATCH();
	{
		FreeErrorData(zim_worker_error(cxt));
		zim_worker_back_off();
		next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BLOCKED_RECHECK_MS);
	}
	PG_END_TRY();
	return next_due;
}

static void
zim_worker_at_exit(int code, Datum arg)
{
	ZimQueueShared *q;
	int			launcher = -1;

	if (ZimShmemLockHeld())
		return;
	ZimShmemLock();
	q = ZimShmemQueue();
	if (q && q->worker_procno == zim_procno(MyProc))
	{
		q->worker_procno = -1;
		/* an error ended the worker: have the launcher start another soon */
		if (code != 0)
			q->next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	}
	if (q)
		launcher = q->launcher_procno;
	ZimShmemUnlock();

	/* the launcher sleeps until the next due time: tell it the news */
	if (code != 0)
		ZimStatusSet(ZIM_WORKER_STOPPED,
					 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000));
	if (launcher >= 0)
		SetLatch(&GetPGProcByNumber(launcher)->procLatch);
}

/*
 * Settings that ALTER DATABASE/ROLE ... SET may give the worker, and the
 * values it runs with instead: a database owner must not be able to make
 * its transactions time out, fail as read-only or serializable, or change
 * how it sends.  The worker must also still be the superuser it connected
 * as: "role" set for the database would make it run as another; it then
 * refuses to run (the launcher tries again with a growing delay).
 */
static const struct
{
	const char *name;
	const char *value;
}			worker_settings[] =
{
	{"statement_timeout", "0"},
	{"lock_timeout", "0"},
	{"idle_in_transaction_session_timeout", "0"},
	{"idle_session_timeout", "0"},
	{"default_transaction_read_only", "off"},
	{"default_transaction_isolation", "read committed"},
	{"default_transaction_deferrable", "off"},
	{"standard_conforming_strings", "on"},
	{"transform_null_equals", "off"},
	{"array_nulls", "on"},
};

static void
zim_worker_own_settings(void)
{
	bool		is_super;

	/* the catalogs are read in a transaction */
	StartTransactionCommand();
	is_super = superuser() && GetUserId() == GetSessionUserId();
	if (!is_super)
		ZimStatusSet(ZIM_WORKER_REFUSED, 0);
	if (!is_super)
		ereport(FATAL,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("zim_pin worker refuses to run as role \"%s\" in database \"%s\"",
						GetUserNameFromId(GetUserId(), false), zim_worker_database),
				 errdetail("The worker must run as the superuser it connected as; a \"role\" setting of the database or of that user changed it."),
				 errhint("Remove it with ALTER DATABASE ... RESET role.")));
	CommitTransactionCommand();
	for (size_t i = 0; i < lengthof(worker_settings); i++)
		SetConfigOption(worker_settings[i].name, worker_settings[i].value,
						PGC_SUSET, PGC_S_OVERRIDE);
	ZIM_WORKER_COMPAT_SETTINGS();
	ZimForceServerSendSettings();
}

/* reload the configuration if asked; clear the wake-up flag */
static void
zim_worker_refresh(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		ZimForceServerSendSettings();
	}
	ZimShmemLock();
	ZimShmemQueue()->work_pending = false;
	ZimShmemUnlock();
}

/*
 * Leave if nothing arrived since the worker last looked, recording when
 * the launcher should start the next one.
 */
static void
zim_worker_leave_if_idle(TimestampTz next_due)
{
	bool		leave;

	ZimShmemLock();
	leave = !ZimShmemQueue()->work_pending;
	if (leave)
	{
		ZimShmemQueue()->next_due = next_due;
		ZimShmemQueue()->worker_procno = -1;
	}
	ZimShmemUnlock();
	if (leave)
		proc_exit(0);
}

/*
 * Without an AppId and a usable secret nothing can be sent: say so once,
 * and leave (a worker that stayed would hold its database, so that DROP
 * DATABASE fails); the launcher starts another in a while.
 */
static void
zim_worker_leave_unconfigured(const char *problem)
{
	bool		warn;
	TimestampTz next = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   UNCONFIGURED_RECHECK_MS);

	ZimShmemLock();
	warn = !ZimShmemQueue()->config_warned;
	ZimShmemQueue()->config_warned = true;
	ZimShmemQueue()->next_due = next;
	ZimShmemQueue()->worker_procno = -1;
	ZimShmemUnlock();
	ZimStatusError(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, problem);
	ZimStatusSet(ZIM_WORKER_UNCONFIGURED, next);
	if (warn)
		ereport(LOG,
				(errmsg("zim_pin worker is waiting for zim_pin.app_id and the secret"),
				 errdetail("Queued jobs are kept until they can be sent."),
				 errhint("Set zim_pin.app_id and zim_pin.server_secret (or zim_pin.server_secret_file) and reload.")));
	proc_exit(0);
}

static void
zim_worker_sleep(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, zim_wait_event(ZIM_WAIT_WORKER_IDLE));
	ResetLatch(MyLatch);
}

/*
 * The worker's FATAL errors (it catches its ERRORs itself): why it could
 * not reach its database, or why it ended, for zim_pin_worker.  Runs while
 * the error is reported: it only copies the message into shared memory.
 */
static void
zim_worker_log_hook(ErrorData *edata)
{
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	if (edata->elevel < FATAL || ZimShmemLockHeld())
		return;
	ZimStatusError(edata->sqlerrcode, edata->message ? edata->message : "");
	if (!worker_connected)
		ZimStatusSet(edata->sqlerrcode == ERRCODE_UNDEFINED_DATABASE
					 ? ZIM_WORKER_NO_DATABASE : ZIM_WORKER_CANNOT_CONNECT, 0);
}

/*
 * The worker: drains the queue of zim_pin.worker_database, then exits
 * after WORKER_IDLE_MS with nothing to do.
 */
void
zim_pin_worker_main(Datum arg)
{
	TimestampTz idle_since;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	ZimStatusStarted(false);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = zim_worker_log_hook;
	BackgroundWorkerInitializeConnection(zim_worker_database, NULL, 0);
	worker_connected = true;
	pgstat_report_appname("zim_pin worker");

	/*
	 * The worker runs as the bootstrap superuser in a database whose owner
	 * may set its search_path (ALTER DATABASE ... SET): resolve nothing
	 * through it.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	zim_worker_own_settings();

	/* its claims outlive its transactions: say it is alive for its life */
	StartTransactionCommand();
	ZimJobsHoldRunnerLock(true);
	CommitTransactionCommand();

	ZimShmemLock();
	ZimShmemQueue()->worker_connects++;
	ZimShmemUnlock();

	ZimShmemLock();
	ZimShmemQueue()->worker_procno = zim_procno(MyProc);
	ZimShmemQueue()->work_pending = false;
	ZimShmemUnlock();
	before_shmem_exit(zim_worker_at_exit, (Datum) 0);
	ZimStatusSet(ZIM_WORKER_IDLE, 0);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		int			done;
		TimestampTz now;
		TimestampTz next_due;
		long		timeout;

		const char *problem;

		zim_worker_refresh();
		if (!ZimIsConfigured(&problem))
			zim_worker_leave_unconfigured(problem);

		ZimShmemLock();
		ZimShmemQueue()->config_warned = false;
		ZimShmemUnlock();
		round_sent = 0;
		done = zim_worker_run_batch();
		next_due = zim_worker_housekeeping();
		now = GetCurrentTimestamp();
		ZimStatusRound(round_sent, done);
		ZimStatusSet(done > 0 || prune_more ? ZIM_WORKER_SENDING : ZIM_WORKER_IDLE, 0);
		if (done > 0 || prune_more)
		{
			idle_since = now;
			continue;
		}

		/*
		 * Nothing finished.  Due jobs that could not be claimed are held by
		 * another runner (zim_pin_run_jobs) or wait behind a job of the same
		 * user that is; look again in a while rather than spin.
		 */
		if (next_due != 0 && next_due <= now)
			next_due = TimestampTzPlusMilliseconds(now, BLOCKED_RECHECK_MS);

		/* idle: leave, unless work arrived meanwhile */
		if (TimestampDifferenceExceeds(idle_since, now, WORKER_IDLE_MS))
			zim_worker_leave_if_idle(next_due);

		timeout = WORKER_IDLE_MS;
		if (next_due != 0)
			timeout = Min(timeout, Max(1, TimestampDifferenceMilliseconds(now, next_due)));
		zim_worker_sleep(timeout);
	}
}

/* start a worker; returns its handle, or NULL if none could be had */
static BackgroundWorkerHandle *
zim_launch_worker(void)
{
	BackgroundWorker w = {0};
	BackgroundWorkerHandle *handle = NULL;

	snprintf(w.bgw_name, BGW_MAXLEN, "zim_pin worker");
	snprintf(w.bgw_type, BGW_MAXLEN, "zim_pin worker");
	snprintf(w.bgw_library_name, BGW_MAXLEN, "zim_pin");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "zim_pin_worker_main");
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	w.bgw_notify_pid = MyProcPid;

	ZimShmemLock();
	ZimShmemQueue()->next_due = 0;
	ZimShmemUnlock();
	if (!RegisterDynamicBackgroundWorker(&w, &handle))
	{
		ereport(LOG,
				(errmsg("zim_pin launcher could not start a worker"),
				 errhint("Raise max_worker_processes.")));
		ZimStatusError(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
					   "zim_pin launcher could not start a worker: no background worker slot is free");
		ZimStatusSet(ZIM_WORKER_NO_SLOT, 0);
	}
	else
		ZimStatusSet(ZIM_WORKER_STARTING, 0);
	return handle;
}

/* the launcher's memory of the workers it started */
typedef struct LauncherState
{
	BackgroundWorkerHandle *handle; /* the last worker started, or NULL */
	uint64		connects_before;	/* worker_connects when it was started */
	int			failures;		/* workers in a row that never connected */
	TimestampTz retry_after;	/* no new worker before this */
} LauncherState;

/*
 * The last worker is gone: if it never reached its database (a misnamed or
 * dropped zim_pin.worker_database), wait longer before the next, and say
 * so once.
 */
static void
zim_launcher_worker_ended(LauncherState *ls, uint64 connects)
{
	if (connects != ls->connects_before)
	{
		ls->failures = 0;
		ls->retry_after = 0;
		return;
	}
	if (ls->failures++ == 0)
		ereport(LOG,
				(errmsg("zim_pin worker could not connect to database \"%s\"",
						zim_worker_database),
				 errhint("Check zim_pin.worker_database; the launcher tries again with a growing delay.")));
	ls->retry_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  ZimBackoffMs(ls->failures, CONNECT_BACKOFF_MS,
															   CONNECT_BACKOFF_CAP_MS));
	/* the worker said why (zim_worker_log_hook); the launcher, until when */
	ZimStatusSet(ZimStatusState(), ls->retry_after);
}

/*
 * The launcher: starts the worker when there is work, and at start-up.
 */
void
zim_pin_launcher_main(Datum arg)
{
	LauncherState ls = {0};
	bool		first = true;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	pgstat_report_appname("zim_pin launcher");

	ZimShmemLock();
	ZimShmemQueue()->launcher_procno = zim_procno(MyProc);
	ZimShmemUnlock();
	ZimStatusStarted(true);

	for (;;)
	{
		bool		pending;
		bool		running;
		uint64		connects;
		TimestampTz due;
		TimestampTz now = GetCurrentTimestamp();
		long		timeout = 60 * 1000;
		pid_t		pid;

		ZimShmemLock();
		pending = ZimShmemQueue()->work_pending;
		due = ZimShmemQueue()->next_due;
		running = ZimShmemQueue()->worker_procno >= 0;
		connects = ZimShmemQueue()->worker_connects;
		ZimShmemUnlock();

		if (ls.handle != NULL)
		{
			if (GetBackgroundWorkerPid(ls.handle, &pid) != BGWH_STOPPED)
				running = true;
			else
			{
				zim_launcher_worker_ended(&ls, connects);
				pfree(ls.handle);
				ls.handle = NULL;
			}
		}

		if (!running && (first || pending || (due != 0 && due <= now)) &&
			now >= ls.retry_after)
		{
			ls.connects_before = connects;
			ls.handle = zim_launch_worker();
			first = false;
			timeout = 1000;
		}
		else if (pending)
		{
			/* the worker may be on its way out, or the next start delayed */
			timeout = 1000;
			if (!running && ls.retry_after > now)
				timeout = Max(1, TimestampDifferenceMilliseconds(now, ls.retry_after));
		}
		else if (due != 0)
			timeout = Min(timeout, Max(1, TimestampDifferenceMilliseconds(now, Max(due, ls.retry_after))));

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, zim_wait_event(ZIM_WAIT_WORKER_IDLE));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * From _PG_init, while preloading: the launcher, if a database is named.
 * Not while pg_upgrade runs the server (binary upgrade mode): the queue of
 * a cluster being upgraded must stay as it is, unsent, until the new
 * cluster starts normally.
 */
void
ZimWorkerRegister(void)
{
	BackgroundWorker w = {0};

	if (zim_worker_database == NULL || zim_worker_database[0] == '\0')
		return;
	if (IsBinaryUpgrade)
		return;

	snprintf(w.bgw_name, BGW_MAXLEN, "zim_pin launcher");
	snprintf(w.bgw_type, BGW_MAXLEN, "zim_pin launcher");
	snprintf(w.bgw_library_name, BGW_MAXLEN, "zim_pin");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "zim_pin_launcher_main");
	w.bgw_flags = BGWORKER_SHMEM_ACCESS;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 1;
	RegisterBackgroundWorker(&w);
}
