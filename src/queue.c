/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The job table: storing a job (zim_conv_pinned_enqueue), the wake-up
 *	  at commit, claiming due jobs, sending a batch, recording outcomes,
 *	  pruning old jobs, and zim_pin_run_jobs().
 *
 * Jobs are rows of zim_pin_job.  A job is sent only when it is the oldest
 * pending job of its user, so a user's jobs take effect in enqueue order,
 * while jobs of different users go out together (one ZimSendRequests,
 * paced by the shared limiter).
 *
 * Claiming.  A claim marks jobs claimed_by = the runner's pid and
 * claimed_until = a lease (zim_pin.job_lease), and counts the attempt.  A
 * job whose claimer is no longer alive (killed, crashed) or whose lease
 * ran out is claimable again: at-least-once, which is safe because pinning
 * sets an absolute state.  Claims lock rows with FOR UPDATE SKIP LOCKED,
 * so two runners never take the same job at once.
 *
 * Leases.  The pair (claimed_by, claimed_until) is the claim's token: a
 * runner records an outcome, or renews its lease, only on the jobs that
 * still carry its token, so a runner whose lease ran out (a stopped
 * process, a vendor brownout) never overwrites what a later runner
 * recorded.  A batch is sent in chunks that each fit in half a lease at
 * the worst (every request taking zim_pin.timeout_ms), and the worker
 * renews the lease of the rest after each chunk.
 *
 * Transactions are the caller's.  ZimQueueClaim, ZimQueueRecord,
 * ZimQueuePrune and ZimQueueNextDue need SPI connected in a transaction;
 * ZimQueueSend needs neither.  The worker (worker.c) runs claim and record
 * in short transactions of their own and sends with none open;
 * zim_pin_run_jobs, here, runs all three in its caller's transaction.
 *
 * Waking.  A backend that enqueued sets a flag; a transaction callback,
 * registered once per backend on the first enqueue, sees the flag at
 * commit and sets the worker's latch (or the launcher's, which then starts
 * the worker).  Transactions that do not enqueue pay one flag test.  A
 * prepared transaction's jobs become visible at COMMIT PREPARED, perhaps
 * in another session: when preloaded, a ProcessUtility hook wakes the
 * worker after every COMMIT PREPARED (whether it enqueued is not known
 * there; a needless wake-up costs one look at the queue).
 *
 * This file never starts a process or a transaction of its own, and holds
 * ConvPinned's rules only through conv_pinned.c.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(zim_conv_pinned_enqueue);
PG_FUNCTION_INFO_V1(zim_conv_pinned_enqueue_one_type);
PG_FUNCTION_INFO_V1(zim_pin_run_jobs);

/* jobs claimed at once */
#define JOB_BATCH			200
/* zim_pin_run_jobs starts no new batch after this long */
#define RUN_JOBS_BUDGET_MS	10000

/*
 * The statements below run as a superuser in the worker and in the
 * SECURITY DEFINER zim_pin_run_jobs.  Both pin search_path to pg_catalog,
 * and every function, operator and literal here is qualified or cast as
 * well, so no object of any other schema can be picked instead.  (Every
 * OPERATOR() has the same precedence: parenthesize.)
 */
#define EQ		"OPERATOR(pg_catalog.=)"
#define NE		"OPERATOR(pg_catalog.<>)"
#define LT		"OPERATOR(pg_catalog.<)"
#define LE		"OPERATOR(pg_catalog.<=)"
#define PLUS	"OPERATOR(pg_catalog.+)"
#define MINUS	"OPERATOR(pg_catalog.-)"
/* job retries: first delay, doubled, capped */
#define JOB_BACKOFF_BASE_MS	1000
#define JOB_BACKOFF_CAP_MS	(5 * 60 * 1000)

static bool enqueued_in_xact = false;

/*
 * The jobs this transaction enqueued (in TopTransactionContext), which
 * zim_pin_run_jobs must not send: they are not committed, and may never
 * be.
 */
static int64 *own_job_ids = NULL;
static int	n_own_jobs = 0;
static int	own_jobs_cap = 0;
static bool xact_callback_registered = false;

static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * The extension's schema, quoted, or NULL if it is not installed in this
 * database; SPI is connected.
 */
const char *
ZimQueueSchema(void)
{
	if (SPI_execute("SELECT extnamespace::pg_catalog.regnamespace::pg_catalog.text"
					" FROM pg_catalog.pg_extension"
					" WHERE extname OPERATOR(pg_catalog.=) 'zim_pin'::pg_catalog.name",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/* tell the worker, or the launcher if no worker runs, that work arrived */
static void
zim_queue_wake(void)
{
	ZimQueueShared *q;
	int			procno;

	ZimShmemLock();
	q = ZimShmemQueue();
	if (q == NULL)
	{
		ZimShmemUnlock();
		return;
	}
	q->work_pending = true;
	procno = q->worker_procno >= 0 ? q->worker_procno : q->launcher_procno;
	ZimShmemUnlock();

	if (procno >= 0)
		SetLatch(&GetPGProcByNumber(procno)->procLatch);
}

/* wake the worker after COMMIT PREPARED: the jobs it made visible are due */
static void
zim_queue_process_utility(PlannedStmt *pstmt, const char *queryString,
						  bool readOnlyTree, ProcessUtilityContext context,
						  ParamListInfo params, QueryEnvironment *queryEnv,
						  DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (IsA(stmt, TransactionStmt) &&
		((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
		zim_queue_wake();
}

/* when preloaded (from _PG_init) */
void
ZimQueueInstallHooks(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = zim_queue_process_utility;
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
		case XACT_EVENT_PREPARE:
			enqueued_in_xact = false;
			break;
		default:
			break;
	}
	if (event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PARALLEL_PRE_COMMIT &&
		event != XACT_EVENT_PRE_PREPARE)
	{
		/* TopTransactionContext goes with the transaction */
		own_job_ids = NULL;
		n_own_jobs = own_jobs_cap = 0;
	}
}

/* remember a job this transaction enqueued */
static void
zim_remember_own_job(int64 job_id)
{
	if (n_own_jobs == own_jobs_cap)
	{
		int			cap = Max(16, own_jobs_cap * 2);

		own_job_ids = own_job_ids
			? repalloc(own_job_ids, sizeof(int64) * cap)
			: MemoryContextAlloc(TopTransactionContext, sizeof(int64) * cap);
		own_jobs_cap = cap;
	}
	own_job_ids[n_own_jobs++] = job_id;
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
static int64
zim_job_enqueue(const char *from_user_id, const ZimConv *convs, int n, bool pinned)
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
	schema = ZimQueueSchema();
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
	zim_remember_own_job(job_id);
	return job_id;
}

/* one claimed row as a ZimJob, in the current memory context */
static void
zim_job_from_tuple(HeapTuple tup, TupleDesc desc, ZimJob *job)
{
	bool		isnull;
	Datum	   *ids;
	Datum	   *types;
	int			n_ids;
	int			n_types;

	job->job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	job->from_user_id = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull)),
					  TEXTOID, -1, false, TYPALIGN_INT, &ids, NULL, &n_ids);
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 4, &isnull)),
					  INT4OID, 4, true, TYPALIGN_INT, &types, NULL, &n_types);
	job->pinned = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	/* its earlier attempts all ended without an outcome (the runner died) */
	job->exhausted = job->attempts > zim_job_max_attempts;
	job->n = Min(n_ids, n_types);
	job->convs = palloc(sizeof(ZimConv) * Max(job->n, 1));
	for (int k = 0; k < job->n; k++)
	{
		job->convs[k].id = TextDatumGetCString(ids[k]);
		job->convs[k].type = DatumGetInt32(types[k]);
	}
}

/*
 * Build the requests of every job of a claimed batch.  Done in the claim's
 * transaction: a body is converted to UTF-8, which needs one in a database
 * of another encoding.
 */
static void
zim_batch_requests(ZimJobBatch *batch)
{
	int			total = 0;

	for (int j = 0; j < batch->n_jobs; j++)
	{
		batch->jobs[j].first_req = total;
		/* an empty job sends nothing and is done; an exhausted one fails */
		batch->jobs[j].n_reqs = batch->jobs[j].exhausted ? 0 :
			ZimConvPinnedRequestCount(batch->jobs[j].n);
		total += batch->jobs[j].n_reqs;
	}
	batch->reqs = palloc0(sizeof(ZimRequest) * Max(total, 1));
	batch->n_reqs = total;
	for (int j = 0; j < batch->n_jobs; j++)
		if (batch->jobs[j].n_reqs > 0)
			ZimConvPinnedRequests(batch->jobs[j].from_user_id, batch->jobs[j].convs,
								  batch->jobs[j].n, batch->jobs[j].pinned,
								  batch->reqs + batch->jobs[j].first_req);
}

/*
 * Claim up to max due jobs that head their user's queue, into batch (whose
 * cxt the caller set), with their requests; SPI is connected.  Returns how
 * many; 0 also when the extension is not installed here.
 */
int
ZimQueueClaim(int max, ZimJobBatch *batch)
{
	Oid			argtypes[3] = {INT4OID, INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		args[3];
	Datum	   *own = palloc(sizeof(Datum) * Max(n_own_jobs, 1));
	const char *schema = ZimQueueSchema();
	int			rc;
	MemoryContext old;

	batch->n_jobs = 0;
	batch->n_reqs = 0;
	if (schema == NULL)
		return 0;
	batch->schema = MemoryContextStrdup(batch->cxt, schema);

	/*
	 * Never the calling transaction's own jobs (zim_pin_run_jobs): those it
	 * enqueued, and rows it inserted itself.  A later job of the same user
	 * still waits behind them.
	 */
	for (int i = 0; i < n_own_jobs; i++)
		own[i] = Int64GetDatum(own_job_ids[i]);
	args[0] = Int32GetDatum(max);
	args[1] = zim_array(own, n_own_jobs, INT8OID);
	batch->lease = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   (int64) zim_job_lease_s * 1000);
	args[2] = TimestampTzGetDatum(batch->lease);

	rc = SPI_execute_with_args(psprintf(
										"WITH heads AS ("
										" SELECT j.job_id FROM %1$s.zim_pin_job j"
										" WHERE j.state " EQ " 'pending'::pg_catalog.text"
										"  AND j.next_attempt_at " LE " pg_catalog.clock_timestamp()"
										"  AND (j.claimed_by IS NULL OR j.claimed_until " LT " pg_catalog.clock_timestamp()"
										"       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(j.claimed_by)))"
										"  AND NOT EXISTS (SELECT 1 FROM %1$s.zim_pin_job e"
										"                  WHERE e.from_user_id " EQ " j.from_user_id"
										"                    AND e.state " EQ " 'pending'::pg_catalog.text"
										"                    AND e.job_id " LT " j.job_id)"
										"  AND NOT (j.job_id " EQ " ANY ($2))"
										"  AND (pg_catalog.pg_current_xact_id_if_assigned() IS NULL"
										"       OR NOT (j.xmin " EQ " pg_catalog.xid(pg_catalog.pg_current_xact_id_if_assigned())))"
										" ORDER BY j.job_id LIMIT $1 FOR UPDATE OF j SKIP LOCKED)"
										" UPDATE %1$s.zim_pin_job j"
										" SET claimed_by = pg_catalog.pg_backend_pid(),"
										"     claimed_until = $3,"
										"     attempts = j.attempts " PLUS " 1"
										" FROM heads WHERE j.job_id " EQ " heads.job_id"
										" RETURNING j.job_id, j.from_user_id, j.conv_ids, j.conv_types,"
										"           j.pinned, j.attempts",
										batch->schema),
							   3, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim zim_pin jobs: %s", SPI_result_code_string(rc));

	old = MemoryContextSwitchTo(batch->cxt);
	batch->n_jobs = (int) SPI_processed;
	batch->jobs = palloc0(sizeof(ZimJob) * Max(batch->n_jobs, 1));
	for (int i = 0; i < batch->n_jobs; i++)
		zim_job_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &batch->jobs[i]);
	zim_batch_requests(batch);
	MemoryContextSwitchTo(old);
	return batch->n_jobs;
}

/*
 * Where the chunk of a batch that starts at job from ends: the jobs whose
 * requests, each taking zim_pin.timeout_ms at the worst
 * (ZIM_MAX_TRANSFERS at a time) and paced at zim_pin.requests_per_second,
 * are surely sent within half a lease.  At least one job.
 */
int
ZimQueueChunkEnd(const ZimJobBatch *batch, int from)
{
	double		per_req_ms = Max(1000.0 / zim_requests_per_second,
								 (double) zim_timeout_ms / ZIM_MAX_TRANSFERS);
	double		cap = zim_job_lease_s * 1000.0 / 2 / per_req_ms;
	int			n_reqs = 0;
	int			to = from;

	while (to < batch->n_jobs &&
		   (to == from || n_reqs + batch->jobs[to].n_reqs <= cap))
		n_reqs += batch->jobs[to++].n_reqs;
	return to;
}

/*
 * Send every request of jobs [from, to) of a claimed batch that are still
 * held, in one ZimSendRequests per run of held jobs, with no retry inside
 * it: a job that fails transiently is retried as a whole job, later.
 * Needs no transaction.
 */
void
ZimQueueSend(ZimJobBatch *batch, int from, int to)
{
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);

	while (from < to)
	{
		int			end = from;

		while (end < to && !batch->jobs[end].lost)
			end++;
		if (end > from)
		{
			int			first = batch->jobs[from].first_req;
			int			last = batch->jobs[end - 1].first_req + batch->jobs[end - 1].n_reqs;

			ZimSendRequests("ConvPinned", ZIM_RETRY_IDEMPOTENT, batch->reqs + first,
							last - first, 0);
		}
		from = end + 1;			/* past a lost job */
	}
	MemoryContextSwitchTo(old);
}

static void
zim_spi_exec(const char *sql, int nargs, Oid *types, Datum *args, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, args, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "zim_pin queue statement failed: %s", SPI_result_code_string(rc));
}

/* where failure rows of one job go */
typedef struct FailureSink
{
	const char *schema;
	int64		job_id;
} FailureSink;

/* a conversation a job did not change, as a row of zim_pin_job_failure */
static void
zim_failure_row(const ZimConvFailure *f, void *arg)
{
	FailureSink *sink = (FailureSink *) arg;
	Oid			types[5] = {INT8OID, TEXTOID, INT4OID, INT8OID, TEXTOID};
	Datum		args[5];
	char		nulls[6] = "     ";

	args[0] = Int64GetDatum(sink->job_id);
	args[1] = CStringGetTextDatum(f->conv_id);
	args[2] = Int32GetDatum(f->conv_type);
	args[3] = Int64GetDatum(f->sub_code);
	args[4] = f->sub_message ? CStringGetTextDatum(f->sub_message) : (Datum) 0;
	if (!f->has_code)
		nulls[3] = 'n';
	if (f->sub_message == NULL)
		nulls[4] = 'n';
	zim_spi_exec(psprintf("INSERT INTO %s.zim_pin_job_failure "
						  "(job_id, conv_id, conv_type, sub_code, sub_message) "
						  "VALUES ($1, $2, $3, $4, $5)", sink->schema),
				 5, types, args, nulls);
}

/*
 * The Code and text a job reports: those of its first request that failed
 * whole, else the first non-zero Code of a partly failed one, else
 * success.
 */
static void
zim_job_outcome(const ZimJob *job, const ZimRequest *reqs, const ZimConvTally *tally,
				bool *has_code, int64 *code, const char **message)
{
	*has_code = true;
	*code = 0;
	*message = "success";
	if (tally->first_whole >= 0)
	{
		ZimRequestOutcome(&reqs[tally->first_whole], has_code, code, message);
		return;
	}
	for (int r = 0; r < job->n_reqs; r++)
		if (reqs[r].response.code != 0)
		{
			*code = reqs[r].response.code;
			*message = reqs[r].response.message;
			return;
		}
}

/*
 * The arguments of the two UPDATEs below: $1 job, $2 state, $3 code, $4
 * text, $5 ms, $6 the claim's lease.
 */
typedef struct JobUpdate
{
	Oid			types[6];
	Datum		args[6];
	char		nulls[7];
} JobUpdate;

/* only while the job still carries this runner's token */
#define JOB_HELD	" WHERE job_id " EQ " $1 AND claimed_by " EQ " pg_catalog.pg_backend_pid()" \
					" AND claimed_until " EQ " $6"

static void
zim_job_update_init(JobUpdate *u, const ZimJobBatch *batch, const ZimJob *job,
					bool has_code, int64 code, const char *message)
{
	static const Oid types[6] = {INT8OID, TEXTOID, INT8OID, TEXTOID, INT8OID, TIMESTAMPTZOID};

	memcpy(u->types, types, sizeof(types));
	memset(u->args, 0, sizeof(u->args));
	strcpy(u->nulls, "      ");
	u->args[0] = Int64GetDatum(job->job_id);
	u->args[1] = CStringGetTextDatum("pending");
	u->args[2] = Int64GetDatum(code);
	u->args[3] = CStringGetTextDatum(message);
	u->args[5] = TimestampTzGetDatum(batch->lease);
	if (!has_code)
		u->nulls[2] = 'n';
}

/*
 * Run one of the UPDATEs below; false, with a LOG, if the job is no
 * longer this runner's.
 */
static bool
zim_job_update(const char *sql, JobUpdate *u, ZimJob *job)
{
	zim_spi_exec(sql, 6, u->types, u->args, u->nulls);
	if (SPI_processed == 1)
		return true;
	job->lost = true;
	ereport(LOG,
			(errmsg("zim_pin job %lld was not recorded: its lease ran out and another runner took it",
					(long long) job->job_id),
			 errhint("Consider a longer zim_pin.job_lease.")));
	return false;
}

/* send the whole job again later (pinning is idempotent): releases the claim */
static void
zim_job_retry(const ZimJobBatch *batch, ZimJob *job, bool has_code, int64 code,
			  const char *message)
{
	JobUpdate	u;

	zim_job_update_init(&u, batch, job, has_code, code, message);
	u.args[4] = Int64GetDatum(ZimBackoffMs(job->attempts - 1, JOB_BACKOFF_BASE_MS,
										   JOB_BACKOFF_CAP_MS));
	(void) zim_job_update(psprintf("UPDATE %s.zim_pin_job SET last_code = $3, last_message = $4,"
								   " next_attempt_at = pg_catalog.clock_timestamp() " PLUS
								   "   pg_catalog.make_interval(secs => $5 OPERATOR(pg_catalog./) 1000.0::pg_catalog.float8),"
								   " claimed_by = NULL, claimed_until = NULL" JOB_HELD,
								   batch->schema), &u, job);
}

/*
 * The job's final state, before its failure rows go in: returns false if
 * the job is no longer this runner's (and then it gets no rows).
 */
static bool
zim_job_finish(const ZimJobBatch *batch, ZimJob *job, bool done, bool has_code,
			   int64 code, const char *message)
{
	JobUpdate	u;

	zim_job_update_init(&u, batch, job, has_code, code, message);
	u.args[1] = CStringGetTextDatum(done ? "done" : "failed");
	return zim_job_update(psprintf("UPDATE %s.zim_pin_job SET state = $2, finished_at = pg_catalog.clock_timestamp(),"
								   " last_code = $3, last_message = $4,"
								   " claimed_by = NULL, claimed_until = NULL" JOB_HELD,
								   batch->schema), &u, job);
}

/* fail a job none of whose conversations was changed: one row each */
static void
zim_job_fail_whole(const ZimJobBatch *batch, ZimJob *job, const char *message)
{
	FailureSink sink = {batch->schema, job->job_id};
	ZimConvFailure f = {0};

	if (!zim_job_finish(batch, job, false, false, 0, message))
		return;
	f.sub_message = message;
	for (int k = 0; k < job->n; k++)
	{
		f.conv_id = job->convs[k].id;
		f.conv_type = job->convs[k].type;
		zim_failure_row(&f, &sink);
	}
}

/*
 * Record what one job's requests did: retry it later, or finish it (done
 * or failed) with its failure rows.  Returns true if it finished.
 */
static bool
zim_record_job(const ZimJobBatch *batch, ZimJob *job, const ZimRequest *reqs)
{
	ZimConvTally tally;
	bool		has_code;
	int64		code;
	const char *message;
	FailureSink sink = {batch->schema, job->job_id};

	if (job->exhausted)
	{
		zim_job_fail_whole(batch, job,
						   psprintf("gave up after %d attempts, the last of which ended without an outcome",
									job->attempts - 1));
		return !job->lost;
	}

	ZimConvPinnedTally(reqs, job->n, &tally);
	zim_job_outcome(job, reqs, &tally, &has_code, &code, &message);
	if (tally.first_whole >= 0 && tally.transient && job->attempts < zim_job_max_attempts)
	{
		zim_job_retry(batch, job, has_code, code, message);
		return false;
	}

	/* finished: the job's final state, then its failure rows */
	if (!zim_job_finish(batch, job, tally.first_whole < 0, has_code, code, message))
		return false;
	ZimConvPinnedFailures(reqs, job->convs, job->n, false, true,
						  zim_failure_row, &sink, &tally);
	return true;
}

/*
 * Record the outcome of jobs [from, to) of a sent batch, those still
 * held; SPI is connected.  Returns how many finished (done or failed).
 */
int
ZimQueueRecord(ZimJobBatch *batch, int from, int to)
{
	int			finished = 0;
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);

	for (int j = from; j < to; j++)
		if (!batch->jobs[j].lost &&
			zim_record_job(batch, &batch->jobs[j], batch->reqs + batch->jobs[j].first_req))
			finished++;
	MemoryContextSwitchTo(old);
	return finished;
}

/*
 * Renew the lease of jobs [from, n_jobs) of a batch that are still held;
 * those that are not (another runner took them) are marked lost, and will
 * be neither sent nor recorded here.  SPI is connected.
 */
void
ZimQueueRenew(ZimJobBatch *batch, int from)
{
	Oid			types[3] = {INT8ARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		args[3];
	Datum	   *ids = palloc(sizeof(Datum) * Max(batch->n_jobs - from, 1));
	TimestampTz lease = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													(int64) zim_job_lease_s * 1000);
	int			n = 0;

	for (int j = from; j < batch->n_jobs; j++)
		if (!batch->jobs[j].lost)
			ids[n++] = Int64GetDatum(batch->jobs[j].job_id);
	args[0] = zim_array(ids, n, INT8OID);
	args[1] = TimestampTzGetDatum(lease);
	args[2] = TimestampTzGetDatum(batch->lease);
	zim_spi_exec(psprintf("UPDATE %s.zim_pin_job SET claimed_until = $2"
						  " WHERE job_id " EQ " ANY ($1)"
						  "  AND claimed_by " EQ " pg_catalog.pg_backend_pid()"
						  "  AND claimed_until " EQ " $3 RETURNING job_id", batch->schema),
				 3, types, args, NULL);
	for (int j = from; j < batch->n_jobs; j++)
	{
		bool		kept = false;

		for (uint64 r = 0; r < SPI_processed && !kept; r++)
		{
			bool		isnull;

			kept = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
											   1, &isnull)) == batch->jobs[j].job_id;
		}
		if (!kept && !batch->jobs[j].lost)
		{
			batch->jobs[j].lost = true;
			ereport(LOG,
					(errmsg("zim_pin job %lld was given up unsent: its lease ran out and another runner took it",
							(long long) batch->jobs[j].job_id),
					 errhint("Consider a longer zim_pin.job_lease.")));
		}
	}
	batch->lease = lease;
}

/*
 * An error ended the sending or recording of a claimed batch (an answer
 * that broke something, an out-of-memory): record it on every job of the
 * batch from job from on that is still held, so that no job is reclaimed
 * and resent without end.  A job with
 * attempts left is retried later; the others fail.  SPI is connected, in a
 * transaction other than the one that failed.  Returns how many finished.
 */
int
ZimQueueRecordError(ZimJobBatch *batch, int from, const ErrorData *edata)
{
	int			finished = 0;
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);
	const char *message = psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode),
								   edata->message ? edata->message : "error");

	for (int j = from; j < batch->n_jobs; j++)
	{
		ZimJob	   *job = &batch->jobs[j];

		if (job->lost)
			continue;
		if (!job->exhausted && job->attempts < zim_job_max_attempts)
			zim_job_retry(batch, job, false, 0, message);
		else
		{
			zim_job_fail_whole(batch, job, message);
			if (!job->lost)
				finished++;
		}
	}
	MemoryContextSwitchTo(old);
	return finished;
}

/*
 * Delete finished jobs (and by cascade their failure rows) older than
 * zim_pin.job_retention; SPI is connected.
 */
void
ZimQueuePrune(const char *schema)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(zim_job_retention_min)};

	zim_spi_exec(psprintf("DELETE FROM %s.zim_pin_job WHERE state " NE " 'pending'::pg_catalog.text"
						  " AND finished_at " LT " (pg_catalog.clock_timestamp() " MINUS
						  "   pg_catalog.make_interval(mins => $1))",
						  schema), 1, types, args, NULL);
}

/*
 * When the earliest pending job is due (0: none); SPI is connected.
 */
TimestampTz
ZimQueueNextDue(const char *schema)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute(psprintf("SELECT pg_catalog.min(next_attempt_at) FROM %s.zim_pin_job"
							 " WHERE state " EQ " 'pending'::pg_catalog.text", schema),
					true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		return 0;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

static Datum
zim_enqueue_common(FunctionCallInfo fcinfo, bool one_type)
{
	char	   *from_user_id;
	ZimConv    *convs;
	bool		pinned;
	int			n;

	n = ZimConvPinnedReadArgs(fcinfo, one_type, &from_user_id, &convs, &pinned);
	PG_RETURN_INT64(zim_job_enqueue(from_user_id, convs, n, pinned));
}

/*
 * zim_conv_pinned_enqueue(from_user_id text, conv_ids text[],
 *						   conv_types int[], pinned boolean) returns bigint
 */
Datum
zim_conv_pinned_enqueue(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, false);
}

/*
 * zim_conv_pinned_enqueue(from_user_id text, conv_ids text[],
 *						   conv_type int, pinned boolean) returns bigint
 */
Datum
zim_conv_pinned_enqueue_one_type(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, true);
}

/*
 * Send and record a batch claimed in the caller's transaction, in a
 * subtransaction: an ERROR there (a poison answer, out of memory) is
 * recorded on the batch's jobs instead, so that no job is resent without
 * end.  A cancel or statement_timeout is the caller's, and goes on up.
 */
static int
zim_run_claimed(ZimJobBatch *batch)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile int finished = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		ZimQueueSend(batch, 0, batch->n_jobs);
		finished = ZimQueueRecord(batch, 0, batch->n_jobs);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(batch->cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("sending queued jobs failed: %s", edata->message),
				 errdetail("The error was recorded on the %d jobs being sent.", batch->n_jobs)));
		finished = ZimQueueRecordError(batch, 0, edata);
	}
	PG_END_TRY();
	return finished;
}

/*
 * zim_pin_run_jobs(max_jobs int) returns int: claim, send and record due
 * jobs now, all in the calling transaction (so a rollback makes the jobs
 * claimable again); returns how many finished.  Starts no new batch after
 * RUN_JOBS_BUDGET_MS.
 */
Datum
zim_pin_run_jobs(PG_FUNCTION_ARGS)
{
	int32		max_jobs = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	TimestampTz start = GetCurrentTimestamp();
	ZimJobBatch batch = {0};
	int			claimed_total = 0;
	int			finished = 0;

	if (max_jobs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must not be negative")));
	if (max_jobs == 0)
		PG_RETURN_INT32(0);
	ZimCheckConfigured();

	batch.cxt = AllocSetContextCreate(CurrentMemoryContext, "zim_pin job batch",
									  ALLOCSET_DEFAULT_SIZES);
	while (claimed_total < max_jobs)
	{
		SPI_connect();
		if (ZimQueueClaim(Min(JOB_BATCH, max_jobs - claimed_total), &batch) == 0)
		{
			SPI_finish();
			break;
		}
		claimed_total += batch.n_jobs;
		finished += zim_run_claimed(&batch);
		SPI_finish();
		/* forget the answers */
		MemoryContextReset(batch.cxt);

		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), RUN_JOBS_BUDGET_MS))
			break;
	}
	MemoryContextDelete(batch.cxt);
	PG_RETURN_INT32(finished);
}
