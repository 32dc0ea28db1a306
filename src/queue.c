/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The transactional queue: jobs stored by zim_conv_pinned_enqueue and
 *	  sent after their transaction commits, by a background worker or by
 *	  zim_pin_run_jobs.
 *
 * Jobs are rows of zim_pin_job.  A job is sent only when it is the oldest
 * pending job of its user, so a user's jobs take effect in enqueue order,
 * while jobs of different users go out together (one ZimCallMany, paced
 * by the shared limiter).
 *
 * Claiming.  The worker never keeps a transaction open across a network
 * wait: it claims jobs in a short transaction (claimed_by = its pid,
 * claimed_until = a lease), sends them with no transaction open, and
 * records the outcomes in a second short transaction.  A job whose
 * claimer is no longer alive (killed, crashed) or whose lease ran out is
 * claimable again: at-least-once, which is safe because pinning sets an
 * absolute state.  zim_pin_run_jobs runs inside its caller's transaction,
 * so it claims with row locks (FOR UPDATE SKIP LOCKED) and records in that
 * transaction; if the caller rolls back, the jobs are simply sent again.
 *
 * Waking.  A backend that enqueued sets a flag; a transaction callback,
 * registered once per backend on the first enqueue, sees the flag at
 * commit and sets the worker's latch (or the launcher's, which then starts
 * the worker).  Transactions that do not enqueue pay one flag test.
 *
 * Workers.  A launcher, connected to no database, starts a dynamic worker
 * for zim_pin.worker_database when there is work, at start-up (to finish
 * what a crash left) and when the earliest retry is due.  The worker exits
 * after a second with nothing to do, so that it never blocks DROP DATABASE
 * for long; it handles SIGTERM as any backend does.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "utils/guc.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* jobs claimed at once */
#define JOB_BATCH			200
/* zim_pin_run_jobs starts no new batch after this long */
#define RUN_JOBS_BUDGET_MS	10000
/* a claim's lease, if its claimer stays alive */
#define CLAIM_LEASE			"10 minutes"
/* the worker exits after this long with nothing to do */
#define WORKER_IDLE_MS		1000
/* how soon to look again at due jobs that another runner holds */
#define BLOCKED_RECHECK_MS	5000
/* job retries: first delay, doubled, capped */
#define JOB_BACKOFF_BASE_MS	1000
#define JOB_BACKOFF_CAP_MS	(5 * 60 * 1000)

typedef struct ZimJob
{
	int64		job_id;
	char	   *from_user_id;
	ZimConv    *convs;
	int			n;
	bool		pinned;
	int			attempts;
	int			first_req;		/* its requests in the batch's array */
	int			n_reqs;
} ZimJob;

static bool enqueued_in_xact = false;
static bool xact_callback_registered = false;

/* the extension's schema, quoted, or NULL if not installed; SPI is connected */
static const char *
zim_schema(void)
{
	if (SPI_execute("SELECT extnamespace::pg_catalog.regnamespace::pg_catalog.text"
					" FROM pg_catalog.pg_extension WHERE extname = 'zim_pin'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

static void
zim_queue_wake(void)
{
	ZimQueueShared *q;
	int			procno;

	ZimStateLock();
	q = ZimQueueState();
	if (q == NULL)
	{
		ZimStateUnlock();
		return;
	}
	q->work_pending = true;
	procno = q->worker_procno >= 0 ? q->worker_procno : q->launcher_procno;
	ZimStateUnlock();

	if (procno >= 0)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

static void
zim_queue_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (enqueued_in_xact)
			{
				enqueued_in_xact = false;
				zim_queue_wake();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			enqueued_in_xact = false;
			break;
		default:
			break;
	}
}

/* an array Datum of the given element type */
static Datum
zim_array(Datum *elems, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, type, typlen, typbyval, typalign));
}

/*
 * Store one job in the caller's transaction; returns its id.
 */
int64
ZimJobEnqueue(const char *from_user_id, const ZimConv *convs, int n, bool pinned)
{
	const char *schema;
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *types = palloc(sizeof(Datum) * Max(n, 1));
	Datum		args[4];
	Oid			argtypes[4] = {TEXTOID, TEXTARRAYOID, INT4ARRAYOID, BOOLOID};
	bool		isnull;
	int64		job_id;
	int			rc;

	for (int i = 0; i < n; i++)
	{
		ids[i] = CStringGetTextDatum(convs[i].id);
		types[i] = Int32GetDatum(convs[i].type);
	}
	args[0] = CStringGetTextDatum(from_user_id);
	args[1] = zim_array(ids, n, TEXTOID);
	args[2] = zim_array(types, n, INT4OID);
	args[3] = BoolGetDatum(pinned);

	SPI_connect();
	schema = zim_schema();
	if (schema == NULL)
		elog(ERROR, "extension zim_pin is not installed in this database");
	rc = SPI_execute_with_args(psprintf("INSERT INTO %s.zim_pin_job "
										"(from_user_id, conv_ids, conv_types, pinned) "
										"VALUES ($1, $2, $3, $4) RETURNING job_id",
										schema),
							   4, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not store the zim_pin job: %s", SPI_result_code_string(rc));
	job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	if (!xact_callback_registered)
	{
		RegisterXactCallback(zim_queue_xact_callback, NULL);
		xact_callback_registered = true;
	}
	enqueued_in_xact = true;
	return job_id;
}

/*
 * Claim up to max due jobs that head their user's queue; SPI is connected.
 * The result lives in CurrentMemoryContext (not SPI's).
 */
static int
zim_claim(const char *schema, int max, MemoryContext cxt, ZimJob **jobs_out)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(max)};
	int			rc;
	int			n;
	ZimJob	   *jobs;
	MemoryContext old;

	rc = SPI_execute_with_args(psprintf(
										"WITH heads AS ("
										" SELECT j.job_id FROM %1$s.zim_pin_job j"
										" WHERE j.state = 'pending' AND j.next_attempt_at <= clock_timestamp()"
										"  AND (j.claimed_by IS NULL OR j.claimed_until < clock_timestamp()"
										"       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(j.claimed_by)))"
										"  AND NOT EXISTS (SELECT 1 FROM %1$s.zim_pin_job e"
										"                  WHERE e.from_user_id = j.from_user_id"
										"                    AND e.state = 'pending' AND e.job_id < j.job_id)"
										" ORDER BY j.job_id LIMIT $1 FOR UPDATE OF j SKIP LOCKED)"
										" UPDATE %1$s.zim_pin_job j"
										" SET claimed_by = pg_catalog.pg_backend_pid(),"
										"     claimed_until = clock_timestamp() + interval '" CLAIM_LEASE "',"
										"     attempts = j.attempts + 1"
										" FROM heads WHERE j.job_id = heads.job_id"
										" RETURNING j.job_id, j.from_user_id, j.conv_ids, j.conv_types,"
										"           j.pinned, j.attempts",
										schema),
							   1, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim zim_pin jobs: %s", SPI_result_code_string(rc));

	n = (int) SPI_processed;
	old = MemoryContextSwitchTo(cxt);
	jobs = palloc0(sizeof(ZimJob) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum	   *ids;
		Datum	   *types;
		int			n_ids;
		int			n_types;

		jobs[i].job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		jobs[i].from_user_id = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull)),
						  TEXTOID, -1, false, TYPALIGN_INT, &ids, NULL, &n_ids);
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 4, &isnull)),
						  INT4OID, 4, true, TYPALIGN_INT, &types, NULL, &n_types);
		jobs[i].pinned = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		jobs[i].attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		jobs[i].n = Min(n_ids, n_types);
		jobs[i].convs = palloc(sizeof(ZimConv) * Max(jobs[i].n, 1));
		for (int k = 0; k < jobs[i].n; k++)
		{
			jobs[i].convs[k].id = TextDatumGetCString(ids[k]);
			jobs[i].convs[k].type = DatumGetInt32(types[k]);
		}
	}
	MemoryContextSwitchTo(old);
	*jobs_out = jobs;
	return n;
}

/* build the requests of a batch: every chunk of every job */
static ZimRequest *
zim_batch_requests(ZimJob *jobs, int n_jobs, int *n_reqs)
{
	int			total = 0;
	ZimRequest *reqs;

	for (int j = 0; j < n_jobs; j++)
	{
		jobs[j].first_req = total;
		/* an empty job sends nothing and is done */
		jobs[j].n_reqs = ZimConvPinnedChunkCount(jobs[j].n);
		total += jobs[j].n_reqs;
	}
	reqs = palloc0(sizeof(ZimRequest) * Max(total, 1));
	for (int j = 0; j < n_jobs; j++)
		ZimConvPinnedChunks(jobs[j].from_user_id, jobs[j].convs, jobs[j].n,
							jobs[j].pinned, reqs + jobs[j].first_req);
	*n_reqs = total;
	return reqs;
}

static void
zim_spi_exec(const char *sql, int nargs, Oid *types, Datum *args, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, args, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "zim_pin queue statement failed: %s", SPI_result_code_string(rc));
}

static void
zim_failure_row(const char *schema, int64 job_id, const char *conv_id, int32 conv_type,
				bool has_code, int64 code, const char *message)
{
	Oid			types[5] = {INT8OID, TEXTOID, INT4OID, INT8OID, TEXTOID};
	Datum		args[5];
	char		nulls[6] = "     ";

	args[0] = Int64GetDatum(job_id);
	args[1] = CStringGetTextDatum(conv_id);
	args[2] = Int32GetDatum(conv_type);
	args[3] = Int64GetDatum(code);
	args[4] = message ? CStringGetTextDatum(message) : (Datum) 0;
	if (!has_code)
		nulls[3] = 'n';
	if (message == NULL)
		nulls[4] = 'n';
	zim_spi_exec(psprintf("INSERT INTO %s.zim_pin_job_failure "
						  "(job_id, conv_id, conv_type, sub_code, sub_message) "
						  "VALUES ($1, $2, $3, $4, $5)", schema),
				 5, types, args, nulls);
}

/* ErrorList entries of an answer, as failure rows; returns how many */
static int
zim_failure_rows_from(const char *schema, int64 job_id, Jsonb *jb)
{
	ZimErrorItem *items;
	int			n = ZimErrorListItems(jb, false, &items);

	for (int i = 0; i < n; i++)
		zim_failure_row(schema, job_id, items[i].conv_id, items[i].conv_type,
						true, items[i].sub_code, items[i].sub_message);
	return n;
}

/* did a request fail in a way that a later attempt may cure? */
static bool
zim_request_transient(const ZimRequest *req)
{
	if (req->state == ZIM_REQ_FAILED)
		return req->failure != ZIM_FAIL_TRANSPORT ||
			(req->http.status != ZIM_HTTP_TLS_FAILED &&
			 req->http.status != ZIM_HTTP_TOO_LARGE);
	return ZimCodeIsRetryable(req->response.code, ZIM_RETRY_IDEMPOTENT);
}

static long
zim_job_backoff_ms(int attempts)
{
	long		base = JOB_BACKOFF_BASE_MS;

	for (int i = 1; i < attempts && base < JOB_BACKOFF_CAP_MS; i++)
		base *= 2;
	base = Min(base, JOB_BACKOFF_CAP_MS);
	return base / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (base / 2));
}

/* the code and text a failed request reports */
static void
zim_request_outcome(const ZimRequest *req, bool *has_code, int64 *code, const char **message)
{
	if (req->state == ZIM_REQ_FAILED)
	{
		*has_code = false;
		*code = 0;
		if (req->failure == ZIM_FAIL_TRANSPORT)
			*message = req->http.error[0] ? pstrdup(req->http.error) : "transport failure";
		else if (req->failure == ZIM_FAIL_HTTP_STATUS)
			*message = psprintf("HTTP status %ld", req->http.http_code);
		else
			*message = req->why ? req->why : "invalid answer";
	}
	else
	{
		*has_code = true;
		*code = req->response.code;
		*message = req->response.message;
	}
}

/*
 * Record the outcome of each job of a batch; SPI is connected.  Returns
 * how many jobs finished (done or failed).
 */
static int
zim_record(const char *schema, ZimJob *jobs, int n_jobs, ZimRequest *reqs)
{
	int			finished = 0;
	int64		changed = 0;
	int64		failed = 0;

	for (int j = 0; j < n_jobs; j++)
	{
		ZimJob	   *job = &jobs[j];
		int			bad = -1;
		bool		transient = false;
		bool		has_code = true;
		int64		code = 0;
		const char *message = "success";
		Oid			types[5] = {INT8OID, TEXTOID, INT8OID, TEXTOID, INT8OID};
		Datum		args[5];
		char		nulls[6] = "     ";

		for (int r = 0; r < job->n_reqs; r++)
		{
			ZimRequest *req = &reqs[job->first_req + r];

			if (ZimRequestFailedWhole(req))
			{
				if (bad < 0)
					bad = r;
				if (zim_request_transient(req))
					transient = true;
			}
			else if (req->response.code != 0 && code == 0)
			{
				code = req->response.code;
				message = req->response.message;
			}
		}
		if (bad >= 0)
			zim_request_outcome(&reqs[job->first_req + bad], &has_code, &code, &message);

		args[0] = Int64GetDatum(job->job_id);
		args[2] = Int64GetDatum(code);
		args[3] = CStringGetTextDatum(message);
		if (!has_code)
			nulls[2] = 'n';

		if (bad >= 0 && transient && job->attempts < zim_job_max_attempts)
		{
			/* try the whole job again later: pinning is idempotent */
			args[4] = Int64GetDatum(zim_job_backoff_ms(job->attempts));
			zim_spi_exec(psprintf("UPDATE %s.zim_pin_job SET last_code = $3, last_message = $4,"
								  " next_attempt_at = clock_timestamp() + $5 * interval '1 millisecond',"
								  " claimed_by = NULL, claimed_until = NULL"
								  " WHERE job_id = $1", schema),
						 5, types, args, nulls);
			continue;
		}

		/* finished: failure rows, then the job's final state */
		for (int r = 0; r < job->n_reqs; r++)
		{
			ZimRequest *req = &reqs[job->first_req + r];
			int			first = r * zim_max_convs_per_request;
			int			count = Min(zim_max_convs_per_request, job->n - first);

			if (ZimRequestFailedWhole(req))
			{
				bool		rhas;
				int64		rcode;
				const char *rmsg;

				zim_request_outcome(req, &rhas, &rcode, &rmsg);
				for (int k = 0; k < count; k++)
					zim_failure_row(schema, job->job_id, job->convs[first + k].id,
									job->convs[first + k].type, rhas, rcode, rmsg);
				failed += count;
			}
			else
			{
				int			rows = zim_failure_rows_from(schema, job->job_id,
														 req->response.jsonb);

				failed += rows;
				changed += count - rows;
			}
		}
		args[1] = CStringGetTextDatum(bad >= 0 ? "failed" : "done");
		zim_spi_exec(psprintf("UPDATE %s.zim_pin_job SET state = $2, finished_at = clock_timestamp(),"
							  " last_code = $3, last_message = $4,"
							  " claimed_by = NULL, claimed_until = NULL"
							  " WHERE job_id = $1", schema),
					 4, types, args, nulls);
		finished++;
	}
	ZimStatsCountConvs("ConvPinned", changed, failed);
	return finished;
}

/* start a transaction with SPI and a snapshot, in the worker */
static void
zim_worker_begin(const char *what)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);
}

static void
zim_worker_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Process due jobs: in the worker (claims and outcomes each in a short
 * transaction of their own, nothing open while sending), or in the
 * caller's transaction (zim_pin_run_jobs).  Returns how many finished.
 */
int
ZimRunJobs(int max_jobs, bool in_worker)
{
	MemoryContext batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
													"zim_pin job batch",
													ALLOCSET_DEFAULT_SIZES);
	TimestampTz start = GetCurrentTimestamp();
	int			finished = 0;
	int			claimed_total = 0;

	while (claimed_total < max_jobs)
	{
		ZimJob	   *jobs;
		int			n_jobs;
		ZimRequest *reqs;
		int			n_reqs;
		const char *schema;
		MemoryContext old = MemoryContextSwitchTo(batch_cxt);

		if (in_worker)
			zim_worker_begin("zim_pin: claiming jobs");
		else
			SPI_connect();
		schema = zim_schema();
		if (schema == NULL)
		{
			if (in_worker)
				zim_worker_end();
			else
				SPI_finish();
			MemoryContextSwitchTo(old);
			break;
		}
		schema = MemoryContextStrdup(batch_cxt, schema);
		n_jobs = zim_claim(schema, Min(JOB_BATCH, max_jobs - claimed_total),
						   batch_cxt, &jobs);
		if (in_worker)
		{
			zim_worker_end();
			/* commit left us in TopMemoryContext */
			MemoryContextSwitchTo(batch_cxt);
		}

		if (n_jobs == 0)
		{
			if (!in_worker)
				SPI_finish();
			MemoryContextSwitchTo(old);
			break;
		}
		claimed_total += n_jobs;

		/* send, with no transaction open in the worker */
		if (in_worker)
			pgstat_report_activity(STATE_RUNNING, "zim_pin: sending jobs");
		reqs = zim_batch_requests(jobs, n_jobs, &n_reqs);
		ZimCallMany("ConvPinned", ZIM_RETRY_IDEMPOTENT, reqs, n_reqs, 0);

		if (in_worker)
			zim_worker_begin("zim_pin: recording jobs");
		finished += zim_record(schema, jobs, n_jobs, reqs);
		if (in_worker)
			zim_worker_end();
		else
			SPI_finish();
		/* forget the signed URLs' memory and the answers */

		MemoryContextSwitchTo(old);
		MemoryContextReset(batch_cxt);

		if (!in_worker &&
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), RUN_JOBS_BUDGET_MS))
			break;
	}
	MemoryContextDelete(batch_cxt);
	return finished;
}

/*
 * Worker housekeeping: delete finished jobs past the retention, and tell
 * when the next pending job is due (0: none).
 */
static TimestampTz
zim_worker_housekeeping(bool delete_old)
{
	const char *schema;
	TimestampTz next_due = 0;

	zim_worker_begin("zim_pin: housekeeping");
	schema = zim_schema();
	if (schema != NULL)
	{
		if (delete_old)
		{
			Oid			types[1] = {INT4OID};
			Datum		args[1] = {Int32GetDatum(zim_job_retention_min)};

			zim_spi_exec(psprintf("DELETE FROM %s.zim_pin_job WHERE state <> 'pending'"
								  " AND finished_at < clock_timestamp() - $1 * interval '1 minute'",
								  schema), 1, types, args, NULL);
		}
		if (SPI_execute(psprintf("SELECT min(next_attempt_at) FROM %s.zim_pin_job"
								 " WHERE state = 'pending'", schema), true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				next_due = DatumGetTimestampTz(d);
		}
	}
	zim_worker_end();
	return next_due;
}

static void
zim_worker_at_exit(int code, Datum arg)
{
	ZimQueueShared *q;
	int			launcher = -1;

	if (ZimStateLockHeld())
		return;
	ZimStateLock();
	q = ZimQueueState();
	if (q && q->worker_procno == MyProc->pgprocno)
	{
		q->worker_procno = -1;
		/* an error ended the worker: have the launcher start another soon */
		if (code != 0)
			q->next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	}
	if (q)
		launcher = q->launcher_procno;
	ZimStateUnlock();

	/* the launcher sleeps until the next due time: tell it the news */
	if (launcher >= 0)
		SetLatch(&ProcGlobal->allProcs[launcher].procLatch);
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

	ZimStateLock();
	ZimQueueState()->worker_procno = MyProc->pgprocno;
	ZimQueueState()->work_pending = false;
	ZimStateUnlock();
	before_shmem_exit(zim_worker_at_exit, (Datum) 0);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		int			done;
		TimestampTz now;
		TimestampTz next_due;
		bool		housekeeping;
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ZimStateLock();
		ZimQueueState()->work_pending = false;
		ZimStateUnlock();

		if (!ZimIsConfigured())
		{
			ereport(LOG,
					(errmsg("zim_pin worker is waiting for zim_pin.app_id and zim_pin.server_secret")));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 10 * 1000L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}

		done = ZimRunJobs(JOB_BATCH, true);

		now = GetCurrentTimestamp();
		ZimStateLock();
		housekeeping = TimestampDifferenceExceeds(ZimQueueState()->last_housekeeping, now, 60 * 1000);
		if (housekeeping)
			ZimQueueState()->last_housekeeping = now;
		ZimStateUnlock();
		next_due = zim_worker_housekeeping(housekeeping);

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
		{
			bool		leave;

			ZimStateLock();
			leave = !ZimQueueState()->work_pending;
			if (leave)
			{
				ZimQueueState()->next_due = next_due;
				ZimQueueState()->worker_procno = -1;
			}
			ZimStateUnlock();
			if (leave)
				proc_exit(0);
		}

		timeout = WORKER_IDLE_MS;
		if (next_due != 0)
			timeout = Min(timeout, Max(1, TimestampDifferenceMilliseconds(now, next_due)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
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

	ZimStateLock();
	ZimQueueState()->launcher_procno = MyProc->pgprocno;
	ZimStateUnlock();

	for (;;)
	{
		bool		pending;
		bool		running;
		TimestampTz due;
		TimestampTz now = GetCurrentTimestamp();
		long		timeout = 60 * 1000;
		pid_t		pid;

		ZimStateLock();
		pending = ZimQueueState()->work_pending;
		due = ZimQueueState()->next_due;
		running = ZimQueueState()->worker_procno >= 0;
		ZimStateUnlock();

		if (handle != NULL && GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED)
			running = true;

		if (!running && (first || pending || (due != 0 && due <= now)))
		{
			BackgroundWorker w = {0};

			snprintf(w.bgw_name, BGW_MAXLEN, "zim_pin worker");
			snprintf(w.bgw_type, BGW_MAXLEN, "zim_pin worker");
			snprintf(w.bgw_library_name, BGW_MAXLEN, "zim_pin");
			snprintf(w.bgw_function_name, BGW_MAXLEN, "zim_pin_worker_main");
			w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
			w.bgw_start_time = BgWorkerStart_RecoveryFinished;
			w.bgw_restart_time = BGW_NEVER_RESTART;
			w.bgw_notify_pid = MyProcPid;
			if (handle)
				pfree(handle);
			handle = NULL;
			ZimStateLock();
			ZimQueueState()->next_due = 0;
			ZimStateUnlock();
			if (!RegisterDynamicBackgroundWorker(&w, &handle))
				ereport(LOG,
						(errmsg("zim_pin launcher could not start a worker"),
						 errhint("Raise max_worker_processes.")));
			first = false;
			timeout = 1000;
		}
		else if (due != 0)
			timeout = Min(timeout, Max(1, TimestampDifferenceMilliseconds(now, due)));

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * From _PG_init, while preloading: the launcher, if a database is named.
 */
void
ZimQueueRegisterWorkers(void)
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
