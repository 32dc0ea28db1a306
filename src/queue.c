/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The queue's front: storing a job of any writing Action of the
 *	  family (zim_conv_pinned_enqueue and its kin), the
 *	  wake-up at commit and at COMMIT PREPARED, and zim_pin_run_jobs().
 *
 * Jobs are rows of zim_pin_job.  A user's jobs take effect in enqueue
 * order; jobs of different users go out together.  Claiming, sending and
 * recording a batch are jobs.c's; this file runs them in the caller's
 * transaction for zim_pin_run_jobs, as the worker (worker.c) runs them in
 * transactions of its own.
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
 * This file never starts a process or a transaction of its own.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(zim_conv_pinned_enqueue);
PG_FUNCTION_INFO_V1(zim_conv_pinned_enqueue_one_type);
PG_FUNCTION_INFO_V1(zim_silence_conv_notification_enqueue);
PG_FUNCTION_INFO_V1(zim_silence_conv_notification_enqueue_one_type);
PG_FUNCTION_INFO_V1(zim_set_conv_mark_enqueue);
PG_FUNCTION_INFO_V1(zim_set_conv_mark_enqueue_one_type);
PG_FUNCTION_INFO_V1(zim_delete_conv_enqueue);
PG_FUNCTION_INFO_V1(zim_delete_conv_enqueue_one_type);
PG_FUNCTION_INFO_V1(zim_clear_conversation_unread_enqueue);
PG_FUNCTION_INFO_V1(zim_clear_conversation_unread_enqueue_one_type);
PG_FUNCTION_INFO_V1(zim_pin_run_jobs);

/* users, and jobs, claimed at once */
#define RUN_JOBS_HEADS		200
#define RUN_JOBS_BATCH		2000
/* zim_pin_run_jobs starts no new batch after this long */
#define RUN_JOBS_BUDGET_MS	10000
/* old jobs zim_pin_run_jobs deletes at most per call */
#define RUN_JOBS_PRUNE		1000

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

/*
 * The saved plan of the INSERT of a job, and the table it inserts into.
 * Prepared once per backend; a DDL change of the table makes the plan
 * cache replan it; a new table (the extension dropped and created again)
 * or 1.4's columns appearing (ALTER EXTENSION zim_pin UPDATE) makes it be
 * prepared anew.  Saves a parse, a plan and a catalog query per job.
 */
static SPIPlanPtr enqueue_plan = NULL;
static Oid	enqueue_relid = InvalidOid;
static bool enqueue_any_action = false;

/* the INSERT of a job, prepared for the extension's table now; SPI is connected */
static SPIPlanPtr
zim_enqueue_plan(bool *any_action)
{
	static Oid	argtypes[8] = {TEXTOID, TEXTARRAYOID, INT4ARRAYOID, TEXTOID,
	BOOLOID, BOOLOID, INT4OID, BOOLOID};
	const char *schema;
	char	   *name;
	SPIPlanPtr	plan;
	Oid			nsp;
	Oid			relid;

	/* the table of the saved plan is still there, as it was (syscache lookups) */
	if (enqueue_plan != NULL &&
		(name = get_rel_name(enqueue_relid)) != NULL && strcmp(name, "zim_pin_job") == 0)
	{
		*any_action = get_attnum(enqueue_relid, "action") != InvalidAttrNumber;
		if (*any_action == enqueue_any_action)
			return enqueue_plan;
	}

	nsp = ZimJobsNamespace();
	relid = OidIsValid(nsp) ? get_relname_relid("zim_pin_job", nsp) : InvalidOid;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"zim_pin\" is not installed in this database")));
	*any_action = get_attnum(relid, "action") != InvalidAttrNumber;
	schema = quote_identifier(get_namespace_name(nsp));
	if (*any_action)
		plan = SPI_prepare(psprintf("INSERT INTO %s.zim_pin_job (from_user_id, conv_ids, conv_types,"
									" action, pinned, silenced, mark, marked)"
									" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING job_id", schema),
						   8, argtypes);
	else
		plan = SPI_prepare(psprintf("INSERT INTO %s.zim_pin_job (from_user_id, conv_ids, conv_types, pinned)"
									" VALUES ($1, $2, $3, $5) RETURNING job_id", schema),
						   8, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare the zim_pin job insert: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep the zim_pin job insert");
	if (enqueue_plan != NULL)
		SPI_freeplan(enqueue_plan);
	enqueue_plan = plan;
	enqueue_relid = relid;
	enqueue_any_action = *any_action;
	return plan;
}

/*
 * Store one job of kind's Action in the caller's transaction; returns its
 * id.  The job's intent goes in its Action's column (pinned, silenced, or
 * mark and marked), the others are NULL.
 */
static int64
zim_job_enqueue(const ZimConvKind *kind, const ZimConvCall *call)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(call->n, 1));
	Datum	   *types = palloc(sizeof(Datum) * Max(call->n, 1));
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', 'n', 'n', 'n', 'n'};
	bool		any_action;
	SPIPlanPtr	plan;
	bool		isnull;
	int64		job_id;
	int			rc;

	for (int i = 0; i < call->n; i++)
	{
		ids[i] = CStringGetTextDatum(call->convs[i].id);
		types[i] = Int32GetDatum(call->convs[i].type);
	}
	args[0] = CStringGetTextDatum(call->from_user_id);
	args[1] = ZimJobsArray(ids, NULL, call->n, TEXTOID);
	args[2] = ZimJobsArray(types, NULL, call->n, INT4OID);
	args[3] = CStringGetTextDatum(kind->action);
	args[4] = args[5] = args[7] = BoolGetDatum(call->on);
	args[6] = Int32GetDatum(call->mark);
	if (kind == &ZimConvPinnedKind)
		nulls[4] = ' ';
	else if (kind == &ZimSilenceKind)
		nulls[5] = ' ';
	else if (kind == &ZimMarkKind)
		nulls[6] = nulls[7] = ' ';

	SPI_connect();
	plan = zim_enqueue_plan(&any_action);
	if (!any_action && kind != &ZimConvPinnedKind)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the zim_pin queue of this database cannot hold %s jobs yet", kind->action),
				 errhint("Run ALTER EXTENSION zim_pin UPDATE.")));
	rc = SPI_execute_plan(plan, args, nulls, false, 1);
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

/* an enqueue function: its arguments checked as its synchronous form checks them */
static Datum
zim_enqueue_common(FunctionCallInfo fcinfo, const ZimConvKind *kind, bool one_type)
{
	ZimConvCall call;

	(void) ZimConvReadCall(fcinfo, kind, one_type, &call);
	PG_RETURN_INT64(zim_job_enqueue(kind, &call));
}

/*
 * <name>_enqueue(from_user_id text, conv_ids text[], conv_types int[] |
 *				  conv_type int, <the Action's own arguments>) returns bigint,
 * for each writing function of the family
 */
Datum
zim_conv_pinned_enqueue(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimConvPinnedKind, false);
}

Datum
zim_conv_pinned_enqueue_one_type(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimConvPinnedKind, true);
}

Datum
zim_silence_conv_notification_enqueue(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimSilenceKind, false);
}

Datum
zim_silence_conv_notification_enqueue_one_type(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimSilenceKind, true);
}

Datum
zim_set_conv_mark_enqueue(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimMarkKind, false);
}

Datum
zim_set_conv_mark_enqueue_one_type(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimMarkKind, true);
}

Datum
zim_delete_conv_enqueue(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimDeleteKind, false);
}

Datum
zim_delete_conv_enqueue_one_type(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimDeleteKind, true);
}

Datum
zim_clear_conversation_unread_enqueue(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimClearUnreadKind, false);
}

Datum
zim_clear_conversation_unread_enqueue_one_type(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, &ZimClearUnreadKind, true);
}

/*
 * Send and record a batch claimed in the caller's transaction, in a
 * subtransaction: an ERROR there (a poison answer, out of memory) is
 * recorded on the batch's jobs instead, so that no job is resent without
 * end.  A cancel or statement_timeout is the caller's, and goes on up,
 * once the subtransaction is rolled back.  A configuration error (55000)
 * is no job's: the jobs go back to the queue uncharged, and *stop says
 * that the call should send no more.
 */
static int
zim_run_claimed(ZimJobBatch *batch, bool *stop)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile int finished = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		ZimJobsSend(batch, 0, ZimJobsChunkEnd(batch, 0, true));
		finished = ZimJobsRecord(batch, 0, batch->n_groups);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/*
		 * Roll the subtransaction back first, whatever the error, as
		 * PL/pgSQL does: re-throwing from inside it would leave the caller
		 * in a subtransaction it never opened, with this function's GUC
		 * nest level (its search_path) still in force.
		 */
		MemoryContextSwitchTo(batch->cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		/* a cancel or statement_timeout is the caller's: it goes on up */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		if (edata->sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		{
			/* no job's fault: they go back unsent, and the call stops */
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("sending queued jobs stopped: %s", edata->message),
					 errdetail("The %d jobs being sent were returned to the queue; their attempt was not counted.",
							   batch->n_jobs),
					 edata->hint ? errhint("%s", edata->hint) : 0));
			*stop = true;
		}
		else
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("sending queued jobs failed: %s", edata->message),
					 errdetail("The error was recorded on the %d jobs being sent.", batch->n_jobs)));
		finished = ZimJobsRecordError(batch, 0, edata);
	}
	PG_END_TRY();
	return finished;
}

/*
 * zim_pin_run_jobs(max_jobs int) returns int: claim, send and record due
 * jobs now, all in the calling transaction (so a rollback makes the jobs
 * claimable again); returns how many finished.  Starts no new batch after
 * RUN_JOBS_BUDGET_MS.  Then deletes up to RUN_JOBS_PRUNE jobs past
 * zim_pin.job_retention (also with max_jobs 0, which sends nothing).
 */
Datum
zim_pin_run_jobs(PG_FUNCTION_ARGS)
{
	int32		max_jobs = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	TimestampTz start = GetCurrentTimestamp();
	ZimJobBatch batch = {0};
	int			claimed_total = 0;
	int			finished = 0;
	const char *schema;
	int			guc_level;
	bool		stop = false;

	if (max_jobs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must not be negative")));
	if (max_jobs > 0)
		ZimCheckConfigured();

	/*
	 * Send with the server's timeouts and retries: this function is
	 * SECURITY DEFINER, and a caller who may only run the queue must not
	 * spend its jobs' attempts with a 1 ms timeout of its own.
	 */
	guc_level = ZimUseServerSendSettings();

	/* other runners must see that this one is alive while it holds claims */
	if (max_jobs > 0)
		ZimJobsHoldRunnerLock(false);

	batch.cxt = AllocSetContextCreate(CurrentMemoryContext, "zim_pin job batch",
									  ALLOCSET_DEFAULT_SIZES);
	while (claimed_total < max_jobs)
	{
		SPI_connect();
		if (ZimJobsClaim(RUN_JOBS_HEADS, Min(RUN_JOBS_BATCH, max_jobs - claimed_total),
						 own_job_ids, n_own_jobs, &batch) == 0)
		{
			SPI_finish();
			break;
		}
		claimed_total += batch.n_jobs;
		finished += zim_run_claimed(&batch, &stop);
		SPI_finish();
		/* forget the answers */
		MemoryContextReset(batch.cxt);

		if (stop || TimestampDifferenceExceeds(start, GetCurrentTimestamp(), RUN_JOBS_BUDGET_MS))
			break;
	}
	MemoryContextDelete(batch.cxt);

	/* retention, in a bounded batch: later calls delete the rest */
	SPI_connect();
	schema = ZimJobsSchema();
	if (schema != NULL)
		(void) ZimJobsPrune(schema, RUN_JOBS_PRUNE);
	SPI_finish();
	AtEOXact_GUC(true, guc_level);
	PG_RETURN_INT32(finished);
}
