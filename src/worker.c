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
 * send, record or prune does is queue.c's.
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
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* jobs the worker claims at once */
#define WORKER_BATCH		200
/* the worker exits after this long with nothing to do */
#define WORKER_IDLE_MS		1000
/* how soon to look again at due jobs that another runner holds */
#define BLOCKED_RECHECK_MS	5000
/* how often the worker deletes old jobs */
#define HOUSEKEEPING_MS		(60 * 1000)

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

/*
 * Claim, send and record one batch; returns how many jobs finished.
 */
static int
zim_worker_run_batch(void)
{
	ZimJobBatch batch = {0};
	int			finished = 0;

	batch.cxt = AllocSetContextCreate(TopMemoryContext, "zim_pin job batch",
									  ALLOCSET_DEFAULT_SIZES);
	zim_worker_begin("zim_pin: claiming jobs");
	(void) ZimQueueClaim(WORKER_BATCH, &batch);
	zim_worker_end();
	if (batch.n_jobs > 0)
	{
		/* no transaction open while sending */
		debug_query_string = "zim_pin: sending jobs";
		pgstat_report_activity(STATE_RUNNING, debug_query_string);
		ZimQueueSend(&batch);

		zim_worker_begin("zim_pin: recording jobs");
		finished = ZimQueueRecord(&batch);
		zim_worker_end();
	}
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
	TimestampTz next_due = 0;
	TimestampTz now = GetCurrentTimestamp();
	bool		prune;
	ZimQueueShared *q;

	ZimShmemLock();
	q = ZimShmemQueue();
	prune = TimestampDifferenceExceeds(q->last_housekeeping, now, HOUSEKEEPING_MS);
	if (prune)
		q->last_housekeeping = now;
	ZimShmemUnlock();

	zim_worker_begin("zim_pin: housekeeping");
	schema = ZimQueueSchema();
	if (schema != NULL)
	{
		if (prune)
			ZimQueuePrune(schema);
		next_due = ZimQueueNextDue(schema);
	}
	zim_worker_end();
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
	if (launcher >= 0)
		SetLatch(&GetPGProcByNumber(launcher)->procLatch);
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

static void
zim_worker_sleep(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, zim_wait_event(ZIM_WAIT_WORKER_IDLE));
	ResetLatch(MyLatch);
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
	BackgroundWorkerInitializeConnection(zim_worker_database, NULL, 0);
	pgstat_report_appname("zim_pin worker");

	ZimShmemLock();
	ZimShmemQueue()->worker_procno = zim_procno(MyProc);
	ZimShmemQueue()->work_pending = false;
	ZimShmemUnlock();
	before_shmem_exit(zim_worker_at_exit, (Datum) 0);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		int			done;
		TimestampTz now;
		TimestampTz next_due;
		long		timeout;

		zim_worker_refresh();
		if (!ZimIsConfigured())
		{
			ereport(LOG,
					(errmsg("zim_pin worker is waiting for zim_pin.app_id and zim_pin.server_secret")));
			zim_worker_sleep(10 * 1000L);
			continue;
		}

		done = zim_worker_run_batch();
		next_due = zim_worker_housekeeping();
		now = GetCurrentTimestamp();
		if (done > 0)
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
		ereport(LOG,
				(errmsg("zim_pin launcher could not start a worker"),
				 errhint("Raise max_worker_processes.")));
	return handle;
}

/*
 * The launcher: starts the worker when there is work, and at start-up.
 */
void
zim_pin_launcher_main(Datum arg)
{
	BackgroundWorkerHandle *handle = NULL;
	bool		first = true;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	pgstat_report_appname("zim_pin launcher");

	ZimShmemLock();
	ZimShmemQueue()->launcher_procno = zim_procno(MyProc);
	ZimShmemUnlock();

	for (;;)
	{
		bool		pending;
		bool		running;
		TimestampTz due;
		TimestampTz now = GetCurrentTimestamp();
		long		timeout = 60 * 1000;
		pid_t		pid;

		ZimShmemLock();
		pending = ZimShmemQueue()->work_pending;
		due = ZimShmemQueue()->next_due;
		running = ZimShmemQueue()->worker_procno >= 0;
		ZimShmemUnlock();

		if (handle != NULL && GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED)
			running = true;

		if (!running && (first || pending || (due != 0 && due <= now)))
		{
			if (handle)
				pfree(handle);
			handle = zim_launch_worker();
			first = false;
			timeout = 1000;
		}
		else if (due != 0)
			timeout = Min(timeout, Max(1, TimestampDifferenceMilliseconds(now, due)));

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, zim_wait_event(ZIM_WAIT_WORKER_IDLE));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * From _PG_init, while preloading: the launcher, if a database is named.
 */
void
ZimWorkerRegister(void)
{
	BackgroundWorker w = {0};

	if (zim_worker_database == NULL || zim_worker_database[0] == '\0')
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
