/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  The job table as a runner sees it: claiming a batch of due jobs by
 *	  user, sending it, recording each job's outcome, renewing the lease,
 *	  pruning old jobs, and when the next job is due.
 *
 * Claiming.  A claim takes due jobs that head their user's queue and, behind
 * each, the user's next pending jobs of the same Action while they are due
 * and free (up to GROUP_MAX_JOBS jobs and as many conversations as
 * GROUP_MAX_REQUESTS requests of that Action hold, so that one user cannot
 * starve the others).  A user's jobs form a group, sent merged (merge.c).
 * A job of another Action ends the group and heads the user's queue in a
 * later claim, once the group is recorded: so no job is sent before every
 * earlier job of its user, of any Action, has its answer, and a DeleteConv
 * goes out after everything queued before it.  A claim marks jobs claimed_by = the
 * runner's pid and claimed_until = a lease (zim_pin.job_lease), and counts
 * the attempt.  A job whose claimer is no longer alive (killed, crashed) or
 * whose lease ran out is claimable again: at-least-once, which is safe
 * because every Action the queue sends sets an absolute state.  Heads are locked FOR UPDATE SKIP
 * LOCKED, so two runners never take the same user at once.
 *
 * Leases.  The pair (claimed_by, claimed_until) is the claim's token: a
 * runner records an outcome, or renews its lease, only on the jobs that
 * still carry its token, so a runner whose lease ran out (a stopped
 * process, a vendor brownout) never overwrites what a later runner
 * recorded.  A batch is sent in chunks of whole groups that each fit in
 * half a lease at the worst (every request taking zim_pin.timeout_ms), and
 * the worker renews the lease of the rest after each chunk.
 *
 * Recording.  Each chunk is recorded with four statements whatever its
 * size: the finished jobs, their failure rows, the jobs to send again
 * later, and the jobs held back (returned unsent, their attempt not
 * counted).
 *
 * Transactions are the caller's: everything here but ZimJobsSend needs SPI
 * connected in a transaction; ZimJobsSend needs none.  Every statement
 * runs as a superuser (in the worker, or in the SECURITY DEFINER
 * zim_pin_run_jobs), so each is fully qualified (see ZIM_SQL_EQ).
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include <float.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define EQ		ZIM_SQL_EQ
#define NE		ZIM_SQL_NE
#define LT		ZIM_SQL_LT
#define LE		ZIM_SQL_LE
#define GT		ZIM_SQL_GT
#define PLUS	ZIM_SQL_PLUS
#define MINUS	ZIM_SQL_MINUS

/* a merged group holds at most this many jobs, and conversations for this many requests */
#define GROUP_MAX_JOBS		200
#define GROUP_MAX_REQUESTS	10
/* a claim takes on about this many requests (10 s at the vendor's 20/s) */
#define CLAIM_MAX_REQUESTS	200

/* job retries: first delay, doubled, capped */
#define JOB_BACKOFF_BASE_MS	1000
#define JOB_BACKOFF_CAP_MS	(5 * 60 * 1000)

/* the OID of the extension's schema, or InvalidOid; SPI is connected */
Oid
ZimJobsNamespace(void)
{
	bool		isnull;

	if (SPI_execute("SELECT extnamespace FROM pg_catalog.pg_extension"
					" WHERE extname OPERATOR(pg_catalog.=) 'zim_pin'::pg_catalog.name",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return InvalidOid;
	return DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The extension's schema, quoted, or NULL if it is not installed in this
 * database; SPI is connected.
 */
const char *
ZimJobsSchema(void)
{
	Oid			nsp = ZimJobsNamespace();
	char	   *name = OidIsValid(nsp) ? get_namespace_name(nsp) : NULL;

	return name ? quote_identifier(name) : NULL;
}

/*
 * Does the extension's zim_pin_job have 1.4's action column?  Before
 * ALTER EXTENSION zim_pin UPDATE, every job is a ConvPinned job.  SPI is
 * connected.
 */
bool
ZimJobsAnyAction(void)
{
	Oid			nsp = ZimJobsNamespace();
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("zim_pin_job", nsp) : InvalidOid;

	return OidIsValid(relid) && get_attnum(relid, "action") != InvalidAttrNumber;
}

/*
 * The columns zim_job_from_tuple reads, of row r: job_id, from_user_id,
 * conv_ids, conv_types, the state asked for, attempts (plus one if
 * counting: it is read before the claim counts it), the Action, the mark.
 */
static char *
zim_job_cols(const ZimJobBatch *batch, const char *r, bool counting)
{
	const char *attempts = counting ? psprintf("%s.attempts " ZIM_SQL_PLUS " 1", r)
		: psprintf("%s.attempts", r);

	if (batch->any_action)
		return psprintf("%1$s.job_id, %1$s.from_user_id, %1$s.conv_ids, %1$s.conv_types,"
						" coalesce(%1$s.pinned, %1$s.silenced, %1$s.marked, true), %2$s,"
						" %1$s.action, %1$s.mark", r, attempts);
	return psprintf("%1$s.job_id, %1$s.from_user_id, %1$s.conv_ids, %1$s.conv_types,"
					" %1$s.pinned, %2$s, 'ConvPinned'::pg_catalog.text, NULL::pg_catalog.int4",
					r, attempts);
}

/* an array Datum of the given element type; nulls may be NULL */
Datum
ZimJobsArray(Datum *elems, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	if (n == 0)
		return PointerGetDatum(construct_empty_array(type));
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, type,
											  typlen, typbyval, typalign));
}

static void
zim_spi_exec(const char *sql, int nargs, Oid *types, Datum *args, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, args, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "zim_pin queue statement failed: %s", SPI_result_code_string(rc));
}

static int
zim_job_by_id(const void *a, const void *b)
{
	int64		x = ((const ZimJob *) a)->job_id;
	int64		y = ((const ZimJob *) b)->job_id;

	return x < y ? -1 : x > y;
}

/*
 * A claimer's liveness.  Every runner holds, while it holds claims, a lock
 * only C code can take: an advisory lock tag whose fourth field is
 * RUNNER_LOCK_KIND, where pg_advisory_lock() and its kin always use 1 or
 * 2.  A claim whose claimer no longer holds it is a dead runner's.  The
 * lock manager is read afresh at each look (pg_lock_status()), where
 * pg_stat_activity would be read once per transaction and miss a runner
 * that started since.  A row changed by another runner since the
 * statement's snapshot is looked at again, with its new claimer, once it
 * is locked: so a claimer that came after the snapshot is seen too.
 */
#define RUNNER_LOCK_CLASS	0x7A50696E	/* "zPin" */
#define RUNNER_LOCK_KIND	7

static void
zim_runner_locktag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, RUNNER_LOCK_CLASS, (uint32) MyProcPid,
						 RUNNER_LOCK_KIND);
}

/*
 * Take this runner's liveness lock: for the session (the worker, whose
 * claims outlive its transactions) or for the transaction
 * (zim_pin_run_jobs, whose claims never do).  No one else can hold it.
 */
void
ZimJobsHoldRunnerLock(bool session)
{
	LOCKTAG		tag;

	zim_runner_locktag(&tag);
	if (LockAcquire(&tag, ExclusiveLock, session, true) == LOCKACQUIRE_NOT_AVAIL)
		elog(ERROR, "zim_pin runner lock of process %d is held by another process",
			 MyProcPid);
}

/* SQL that is true if the claimer pid_expr (an integer) still runs */
static char *
zim_alive_sql(const char *pid_expr)
{
	return psprintf("EXISTS (SELECT 1 FROM pg_catalog.pg_lock_status() l"
					" WHERE l.locktype " EQ " 'advisory'::pg_catalog.text"
					"   AND l.database " EQ " '%u'::pg_catalog.oid"
					"   AND l.classid " EQ " '%u'::pg_catalog.oid"
					"   AND l.objid " EQ " %s::pg_catalog.oid"
					"   AND l.objsubid " EQ " '%d'::pg_catalog.int2 AND l.granted)",
					MyDatabaseId, (uint32) RUNNER_LOCK_CLASS, pid_expr, RUNNER_LOCK_KIND);
}

/* SQL that is true if row r (an alias) may be claimed now, by its lease */
static char *
zim_free_sql(const char *r)
{
	return psprintf("(%1$s.claimed_by IS NULL"
					" OR %1$s.claimed_until " LT " pg_catalog.clock_timestamp()"
					" OR NOT %2$s)",
					r, zim_alive_sql(psprintf("%s.claimed_by", r)));
}

/*
 * One row (zim_job_cols) as a ZimJob.  A row that cannot be sent (a null
 * element, arrays of different lengths, an id not valid in UTF-8, an
 * Action or mark the queue does not know: inserted by hand, or restored)
 * gets a poison reason, and will fail alone.
 */
static void
zim_job_from_tuple(HeapTuple tup, TupleDesc desc, ZimJob *job)
{
	bool		isnull;
	Datum	   *ids;
	Datum	   *types;
	bool	   *id_nulls;
	bool	   *type_nulls;
	int			n_ids;
	int			n_types;
	Datum		action;
	Datum		mark;
	bool		mark_null;

	memset(job, 0, sizeof(*job));
	job->job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	job->from_user_id = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull)),
					  TEXTOID, -1, false, TYPALIGN_INT, &ids, &id_nulls, &n_ids);
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 4, &isnull)),
					  INT4OID, 4, true, TYPALIGN_INT, &types, &type_nulls, &n_types);
	job->on = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	job->on = job->on && !isnull;
	job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	action = SPI_getbinval(tup, desc, 7, &isnull);
	job->kind = isnull ? NULL : ZimMergeKind(TextDatumGetCString(action));
	mark = SPI_getbinval(tup, desc, 8, &mark_null);
	job->mark = mark_null ? 0 : DatumGetInt32(mark);
	if (job->kind == NULL)
		job->poison = "22023: its action is not one the queue sends";
	else if (job->kind == &ZimMarkKind && (mark_null || job->mark < 1 || job->mark > 30))
		job->poison = "22023: its mark is not between 1 and 30";
	job->n = Min(n_ids, n_types);
	job->convs = palloc(sizeof(ZimConv) * Max(job->n, 1));
	for (int k = 0; k < job->n; k++)
	{
		job->convs[k].id = id_nulls[k] || type_nulls[k] ? NULL : TextDatumGetCString(ids[k]);
		job->convs[k].type = type_nulls[k] ? 0 : DatumGetInt32(types[k]);
		job->convs[k].mark = job->mark;
		job->convs[k].tag = 0;
		if (job->poison == NULL && (id_nulls[k] || type_nulls[k]))
			job->poison = psprintf("22004: element %d of %s is null", k + 1,
								   id_nulls[k] ? "conv_ids" : "conv_types");
	}
	if (job->poison == NULL && n_ids != n_types)
		job->poison = psprintf("22023: conv_ids has %d elements and conv_types has %d",
							   n_ids, n_types);
	if (job->poison == NULL)
		job->poison = ZimConvStoredProblem(job->from_user_id, job->convs, job->n);
}

/*
 * What n conversations of an Action cost a claim's budget, in requests at
 * the Action's limit (fractions add up: merged, 100 one-conversation mark
 * jobs make one request)
 */
static double
zim_claim_cost(const ZimConvKind *kind, int n)
{
	return (double) n / ZimMergePerRequest(kind);
}

/*
 * Step 1 of a claim: due jobs that head their user's queue, never one of
 * the calling transaction's own (own ids, or rows it inserted, in any of
 * its subtransactions), as long as they fit in the claim's budget of
 * requests (at least one).  Claims them; they come back in job order, in
 * heads (batch->cxt).
 */
static int
zim_claim_heads(ZimJobBatch *batch, int max_heads, Datum own, ZimJob **heads, double *cost)
{
	Oid			types[2] = {INT4OID, INT8ARRAYOID};
	Datum		args[2] = {Int32GetDatum(max_heads), own};
	Oid			utypes[2] = {INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		uargs[2];
	Datum	   *ids;
	int			n = 0;
	MemoryContext old;

	/* lock the candidates */
	zim_spi_exec(psprintf("SELECT j.job_id, j.xmin, pg_catalog.cardinality(j.conv_ids), %3$s"
						  " FROM %1$s.zim_pin_job j"
						  " WHERE j.state " EQ " 'pending'::pg_catalog.text"
						  "  AND j.next_attempt_at " LE " pg_catalog.clock_timestamp()"
						  "  AND %2$s"
						  "  AND NOT EXISTS (SELECT 1 FROM %1$s.zim_pin_job e"
						  "                  WHERE e.from_user_id " EQ " j.from_user_id"
						  "                    AND e.state " EQ " 'pending'::pg_catalog.text"
						  "                    AND e.job_id " LT " j.job_id)"
						  "  AND NOT (j.job_id " EQ " ANY ($2))"
						  " ORDER BY j.job_id LIMIT $1 FOR UPDATE OF j SKIP LOCKED",
						  batch->schema, zim_free_sql("j"),
						  batch->any_action ? "j.action" : "'ConvPinned'::pg_catalog.text"),
				 2, types, args, NULL);

	/* the calling transaction's own rows are not committed: never those */
	ids = palloc(sizeof(Datum) * Max(SPI_processed, 1));
	*cost = 0;
	for (uint64 r = 0; r < SPI_processed && (n == 0 || *cost < CLAIM_MAX_REQUESTS); r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		isnull;
		TransactionId xmin = DatumGetTransactionId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		Datum		card = SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull);
		bool		action_null;
		Datum		action = SPI_getbinval(tup, SPI_tuptable->tupdesc, 4, &action_null);
		const ZimConvKind *kind = action_null ? NULL : ZimMergeKind(TextDatumGetCString(action));

		if (TransactionIdIsCurrentTransactionId(xmin))
			continue;
		ids[n++] = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);
		*cost += zim_claim_cost(kind, isnull ? 0 : DatumGetInt32(card));
	}
	if (n == 0)
		return 0;

	uargs[0] = ZimJobsArray(ids, NULL, n, INT8OID);
	uargs[1] = TimestampTzGetDatum(batch->lease);
	zim_spi_exec(psprintf("UPDATE %s.zim_pin_job j"
						  " SET claimed_by = pg_catalog.pg_backend_pid(), claimed_until = $2,"
						  "     attempts = j.attempts " PLUS " 1"
						  " WHERE j.job_id " EQ " ANY ($1)"
						  " RETURNING %s", batch->schema, zim_job_cols(batch, "j", false)),
				 2, utypes, uargs, NULL);
	n = (int) SPI_processed;
	old = MemoryContextSwitchTo(batch->cxt);
	*heads = palloc(sizeof(ZimJob) * Max(n, 1));
	for (int i = 0; i < n; i++)
		zim_job_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &(*heads)[i]);
	MemoryContextSwitchTo(old);
	qsort(*heads, n, sizeof(ZimJob), zim_job_by_id);
	return n;
}

/*
 * Step 2: behind each head, the user's next pending jobs (up to
 * GROUP_MAX_JOBS - 1), each with whether this runner may take it now and
 * its claim token as read.  Leaves them in SPI_tuptable, ordered by head,
 * then job: columns 1-8 as zim_job_from_tuple reads them, 9 the head's
 * index, 10 "takeable" by its lease and time, 11 xmin, 12-13 the token.
 */
static void
zim_claim_followers_read(ZimJobBatch *batch, ZimJob *heads, int n_heads, Datum own)
{
	Datum	   *users = palloc(sizeof(Datum) * Max(n_heads, 1));
	Datum	   *ids = palloc(sizeof(Datum) * Max(n_heads, 1));
	Oid			types[4] = {TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT4OID};
	Datum		args[4];

	for (int i = 0; i < n_heads; i++)
	{
		users[i] = CStringGetTextDatum(heads[i].from_user_id);
		ids[i] = Int64GetDatum(heads[i].job_id);
	}
	args[0] = ZimJobsArray(users, NULL, n_heads, TEXTOID);
	args[1] = ZimJobsArray(ids, NULL, n_heads, INT8OID);
	args[2] = own;
	args[3] = Int32GetDatum(GROUP_MAX_JOBS - 1);
	zim_spi_exec(psprintf("SELECT f.* FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2))"
						  "      WITH ORDINALITY AS h(user_id, head_id, ord)"
						  " CROSS JOIN LATERAL ("
						  "  SELECT %3$s, h.ord AS head_ord,"
						  "         (e.next_attempt_at " LE " pg_catalog.clock_timestamp()"
						  "          AND %2$s AND NOT (e.job_id " EQ " ANY ($3))) AS takeable,"
						  "         e.xmin AS row_xmin, e.claimed_by AS by, e.claimed_until AS until"
						  "  FROM %1$s.zim_pin_job e"
						  "  WHERE e.from_user_id " EQ " h.user_id"
						  "    AND e.state " EQ " 'pending'::pg_catalog.text AND e.job_id " GT " h.head_id"
						  "  ORDER BY e.job_id LIMIT $4) f"
						  " ORDER BY f.head_ord, f.job_id", batch->schema, zim_free_sql("e"),
						  zim_job_cols(batch, "e", true)),
				 4, types, args, NULL);
}

/* a follower a group would take, with its claim token as read */
typedef struct Follower
{
	ZimJob		job;
	int			group;			/* its head's index */
	Datum		claimed_by;		/* (Datum) 0 and null: none */
	bool		by_null;
	Datum		claimed_until;
	bool		until_null;
	bool		got;
} Follower;

/*
 * Step 3: from the rows of step 2, the followers each group would take:
 * the user's next jobs in order, while each is of the head's Action and
 * takeable, and the group and the claim stay within their bounds.  A job
 * of another Action ends the group: it goes in a later claim, once this
 * group has its answers, so that a user's jobs of every Action take
 * effect in order.  Returns how many, in *out.
 */
static int
zim_claim_followers_choose(ZimJob *heads, int n_heads, int max_jobs, double cost,
						   Follower **out)
{
	SPITupleTable *tt = SPI_tuptable;
	Follower   *fs = palloc0(sizeof(Follower) * Max(SPI_processed, 1));
	int			n = 0;
	int			n_jobs = n_heads;
	int			group_convs = 0;
	bool		open = false;
	int			cur = -1;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = tt->vals[r];
		bool		isnull;
		int			ord = (int) DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 9, &isnull)) - 1;
		TransactionId xmin;
		Follower   *f = &fs[n];
		const ZimConvKind *kind = heads[ord].kind;

		if (ord != cur)
		{
			cur = ord;
			open = true;
			group_convs = heads[ord].n;
		}
		xmin = DatumGetTransactionId(SPI_getbinval(tup, tt->tupdesc, 11, &isnull));
		if (!open || !DatumGetBool(SPI_getbinval(tup, tt->tupdesc, 10, &isnull)) ||
			TransactionIdIsCurrentTransactionId(xmin) || n_jobs >= max_jobs)
		{
			open = false;		/* behind one it may not take: none */
			continue;
		}
		zim_job_from_tuple(tup, tt->tupdesc, &f->job);
		if (f->job.kind != kind ||
			group_convs + f->job.n > GROUP_MAX_REQUESTS * ZimMergePerRequest(kind) ||
			cost + zim_claim_cost(kind, f->job.n) > CLAIM_MAX_REQUESTS)
		{
			open = false;
			continue;
		}
		group_convs += f->job.n;
		cost += zim_claim_cost(kind, f->job.n);
		f->group = ord;
		f->claimed_by = SPI_getbinval(tup, tt->tupdesc, 12, &f->by_null);
		f->claimed_until = SPI_getbinval(tup, tt->tupdesc, 13, &f->until_null);
		n++;
		n_jobs++;
	}
	*out = fs;
	return n;
}

/*
 * Step 4: claim the followers chosen, each only if its claim token is
 * still the one read (another runner may have claimed it since) and no
 * one else locks it; marks which it got.
 */
static void
zim_claim_followers(ZimJobBatch *batch, Follower *fs, int n)
{
	Oid			types[4] = {INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};
	Datum		args[4];
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *by = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *by_null = palloc(sizeof(bool) * Max(n, 1));
	Datum	   *until = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *until_null = palloc(sizeof(bool) * Max(n, 1));

	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(fs[i].job.job_id);
		by[i] = fs[i].claimed_by;
		by_null[i] = fs[i].by_null;
		until[i] = fs[i].claimed_until;
		until_null[i] = fs[i].until_null;
	}
	args[0] = ZimJobsArray(ids, NULL, n, INT8OID);
	args[1] = ZimJobsArray(by, by_null, n, INT4OID);
	args[2] = ZimJobsArray(until, until_null, n, TIMESTAMPTZOID);
	args[3] = TimestampTzGetDatum(batch->lease);
	zim_spi_exec(psprintf("WITH got AS ("
						  " SELECT e.job_id FROM %1$s.zim_pin_job e,"
						  "  ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))"
						  "   AS u(job_id, claimed_by, claimed_until)"
						  " WHERE e.job_id " EQ " u.job_id AND e.state " EQ " 'pending'::pg_catalog.text"
						  "  AND ((e.claimed_by IS NULL AND u.claimed_by IS NULL)"
						  "       OR e.claimed_by " EQ " u.claimed_by)"
						  "  AND ((e.claimed_until IS NULL AND u.claimed_until IS NULL)"
						  "       OR e.claimed_until " EQ " u.claimed_until)"
						  " FOR UPDATE OF e SKIP LOCKED)"
						  " UPDATE %1$s.zim_pin_job j"
						  " SET claimed_by = pg_catalog.pg_backend_pid(), claimed_until = $4,"
						  "     attempts = j.attempts " PLUS " 1"
						  " FROM got WHERE j.job_id " EQ " got.job_id RETURNING j.job_id",
						  batch->schema), 4, types, args, NULL);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 1, &isnull));

		for (int i = 0; i < n; i++)
			if (fs[i].job.job_id == id)
				fs[i].got = true;
	}
}

/* give back claimed jobs unsent, their attempt not counted */
static void
zim_claim_give_back(ZimJobBatch *batch, Datum *ids, int n)
{
	Oid			types[2] = {INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		args[2] = {ZimJobsArray(ids, NULL, n, INT8OID), TimestampTzGetDatum(batch->lease)};

	if (n == 0)
		return;
	zim_spi_exec(psprintf("UPDATE %s.zim_pin_job"
						  " SET attempts = attempts " MINUS " 1, claimed_by = NULL, claimed_until = NULL"
						  " WHERE job_id " EQ " ANY ($1)"
						  "   AND claimed_by " EQ " pg_catalog.pg_backend_pid() AND claimed_until " EQ " $2",
						  batch->schema), 2, types, args, NULL);
}

/* groups with fewer requests first: a huge one does not hold the others up */
static int
zim_group_by_size(const void *a, const void *b)
{
	const ZimJobGroup *x = (const ZimJobGroup *) a;
	const ZimJobGroup *y = (const ZimJobGroup *) b;
	int			nx = ZimMergeGroupRequests(x);
	int			ny = ZimMergeGroupRequests(y);

	if (nx != ny)
		return nx < ny ? -1 : 1;
	return x->first_job - y->first_job;
}

/*
 * Put the groups in order of size, and their jobs in the same order, so
 * that a chunk of groups is a range of jobs; then build the requests.
 */
static void
zim_claim_build(ZimJobBatch *batch)
{
	ZimJob	   *jobs = palloc(sizeof(ZimJob) * Max(batch->n_jobs, 1));
	int			k = 0;

	/* the sizes (only the counts: the requests are built again below) */
	for (int i = 0; i < batch->n_groups; i++)
	{
		ZimJobGroup *g = &batch->groups[i];
		int			convs = 0;

		for (int j = g->first_job; j < g->first_job + g->n_jobs; j++)
			convs += batch->jobs[j].n;
		g->n_reqs[ZIM_PHASE_OFF] = 0;
		g->n_reqs[ZIM_PHASE_ON] = (convs + ZimMergePerRequest(batch->jobs[g->first_job].kind) - 1) /
			ZimMergePerRequest(batch->jobs[g->first_job].kind);
	}
	qsort(batch->groups, batch->n_groups, sizeof(ZimJobGroup), zim_group_by_size);
	for (int i = 0; i < batch->n_groups; i++)
	{
		ZimJobGroup *g = &batch->groups[i];

		memcpy(&jobs[k], &batch->jobs[g->first_job], sizeof(ZimJob) * g->n_jobs);
		g->first_job = k;
		k += g->n_jobs;
	}
	batch->jobs = jobs;
	ZimMergeBuild(batch);
}

/*
 * Claim due jobs by user into batch (whose cxt the caller set): at most
 * max_heads users, max_jobs jobs and about CLAIM_MAX_REQUESTS requests
 * (always at least one job); never the jobs in own, nor any other row of
 * the calling transaction.  Merges each user's jobs and builds the
 * requests.  Returns how many jobs; 0 also when the extension is not
 * installed here.
 */
int
ZimJobsClaim(int max_heads, int max_jobs, const int64 *own, int n_own, ZimJobBatch *batch)
{
	const char *schema = ZimJobsSchema();
	Datum	   *own_d = palloc(sizeof(Datum) * Max(n_own, 1));
	Datum		own_arr;
	ZimJob	   *heads;
	Follower   *fs;
	Datum	   *give_back;
	int			n_give_back = 0;
	int			n_heads;
	int			n_fs;
	double		cost;
	int			f = 0;
	MemoryContext old;

	batch->n_jobs = batch->n_groups = 0;
	if (schema == NULL)
		return 0;
	batch->schema = MemoryContextStrdup(batch->cxt, schema);
	batch->any_action = ZimJobsAnyAction();
	batch->lease = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   (int64) zim_job_lease_s * 1000);
	batch->renewed = 0;
	for (int i = 0; i < n_own; i++)
		own_d[i] = Int64GetDatum(own[i]);
	own_arr = ZimJobsArray(own_d, NULL, n_own, INT8OID);

	n_heads = zim_claim_heads(batch, Min(max_heads, max_jobs), own_arr, &heads, &cost);
	if (n_heads == 0)
		return 0;
	zim_claim_followers_read(batch, heads, n_heads, own_arr);
	old = MemoryContextSwitchTo(batch->cxt);
	n_fs = zim_claim_followers_choose(heads, n_heads, max_jobs, cost, &fs);
	MemoryContextSwitchTo(old);
	zim_claim_followers(batch, fs, n_fs);

	/* each group: its head, then its followers up to the first one missed */
	old = MemoryContextSwitchTo(batch->cxt);
	batch->jobs = palloc0(sizeof(ZimJob) * (n_heads + n_fs));
	batch->groups = palloc0(sizeof(ZimJobGroup) * n_heads);
	give_back = palloc(sizeof(Datum) * Max(n_fs, 1));
	for (int h = 0; h < n_heads; h++)
	{
		ZimJobGroup *g = &batch->groups[batch->n_groups++];
		bool		open = true;

		g->first_job = batch->n_jobs;
		g->n_jobs = 1;
		batch->jobs[batch->n_jobs++] = heads[h];
		for (; f < n_fs && fs[f].group == h; f++)
		{
			open &= fs[f].got;
			if (open)
			{
				batch->jobs[batch->n_jobs++] = fs[f].job;
				g->n_jobs++;
			}
			else if (fs[f].got)
				give_back[n_give_back++] = Int64GetDatum(fs[f].job.job_id);
		}
	}
	for (int j = 0; j < batch->n_jobs; j++)
		batch->jobs[j].exhausted = batch->jobs[j].attempts > zim_job_max_attempts;
	zim_claim_build(batch);
	MemoryContextSwitchTo(old);
	zim_claim_give_back(batch, give_back, n_give_back);
	return batch->n_jobs;
}

static bool
zim_group_lost(const ZimJobBatch *batch, const ZimJobGroup *g)
{
	return batch->jobs[g->first_job].lost;
}

/*
 * The chunk of a batch that starts where group from stands: the requests
 * that, each taking zim_pin.timeout_ms at the worst (ZIM_MAX_TRANSFERS at
 * a time) and paced at zim_pin.requests_per_second, are surely sent within
 * half a lease; with all_of_it, the whole rest.  At least one request.  A
 * group's requests may span chunks (the lease is renewed between them).
 * Sets each group's send_to; returns the end of the chunk's groups.
 */
int
ZimJobsChunkEnd(ZimJobBatch *batch, int from, bool all_of_it)
{
	double		per_req_ms = Max(1000.0 / zim_requests_per_second,
								 (double) zim_timeout_ms / ZIM_MAX_TRANSFERS);
	double		cap = all_of_it ? DBL_MAX : zim_job_lease_s * 1000.0 / 2 / per_req_ms;
	double		n_reqs = 0;
	int			to = from;

	while (to < batch->n_groups)
	{
		ZimJobGroup *g = &batch->groups[to];
		int			left = ZimMergeGroupRequests(g) - g->n_reqs_done;

		if (zim_group_lost(batch, g))
		{
			/* another runner has it: nothing to send, and it is done here */
			g->send_to = ZimMergeGroupRequests(g);
			to++;
			continue;
		}
		if (left > 0 && n_reqs + left > cap)
		{
			int			take = (int) Max(cap - n_reqs, 0);

			if (take == 0 && n_reqs > 0)
				break;
			g->send_to = g->n_reqs_done + Max(take, 1);
			to++;
			break;
		}
		g->send_to = g->n_reqs_done + left;
		n_reqs += left;
		to++;
	}
	return to;
}

/* the first group of [from, to) whose requests are not all sent, or to */
int
ZimJobsSentTo(const ZimJobBatch *batch, int from, int to)
{
	while (from < to &&
		   batch->groups[from].n_reqs_done >= ZimMergeGroupRequests(&batch->groups[from]))
		from++;
	return from;
}

/*
 * Send one phase of the chunk's groups [from, to): each group's part of
 * the phase between n_reqs_done and send_to, all in one ZimSendRequests
 * (each request to its own Action, each Action under its own ceiling).
 */
static void
zim_send_phase(ZimJobBatch *batch, int from, int to, int phase)
{
	ZimRequest *reqs = batch->reqs[phase];
	ZimRequest *out = palloc0(sizeof(ZimRequest) * Max(batch->n_reqs[phase], 1));
	int			n = 0;

	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = from; i < to; i++)
		{
			ZimJobGroup *g = &batch->groups[i];
			int			off = g->n_reqs[ZIM_PHASE_OFF];
			int			lo;
			int			hi;

			if (zim_group_lost(batch, g) || (phase == ZIM_PHASE_ON && !g->on_sent))
				continue;
			lo = phase == ZIM_PHASE_ON ? Max(g->n_reqs_done, off) - off : Min(g->n_reqs_done, off);
			hi = phase == ZIM_PHASE_ON ? Max(g->send_to, off) - off : Min(g->send_to, off);
			for (int r = lo; r < hi; r++)
			{
				ZimRequest *req = &reqs[g->first_req[phase] + r];

				/* gather them side by side, send, and put the answers back */
				if (pass == 0)
					out[n++] = *req;
				else
					*req = out[n++];
			}
		}
		if (pass == 0)
		{
			if (n > 0)
				ZimSendRequests(out[0].action, ZIM_RETRY_IDEMPOTENT, out, n, 0);
			n = 0;
		}
	}
	pfree(out);
}

/* did a group's "off" requests fail in a way a later attempt may cure? */
static bool
zim_off_failed_transiently(const ZimJobBatch *batch, const ZimJobGroup *g)
{
	for (int r = 0; r < g->n_reqs[ZIM_PHASE_OFF]; r++)
	{
		const ZimRequest *req = &batch->reqs[ZIM_PHASE_OFF][g->first_req[ZIM_PHASE_OFF] + r];

		if (ZimConvFailedWhole(g->kind, req) && ZimRequestTransient(req))
			return true;
	}
	return false;
}

/*
 * Send the chunk's groups [from, to) (ZimJobsChunkEnd), with no retry
 * inside: a job that fails transiently is retried as a whole job, later.
 * The "off" requests first, then the "on" ones of each group whose "off"
 * ones all went through (or failed for good).  Needs no transaction.
 */
void
ZimJobsSend(ZimJobBatch *batch, int from, int to)
{
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);

	zim_send_phase(batch, from, to, ZIM_PHASE_OFF);
	for (int i = from; i < to; i++)
	{
		ZimJobGroup *g = &batch->groups[i];

		if (g->send_to < g->n_reqs[ZIM_PHASE_OFF])
			continue;			/* its "off" requests are not all sent yet */
		g->on_sent = !zim_off_failed_transiently(batch, g);
	}
	zim_send_phase(batch, from, to, ZIM_PHASE_ON);
	for (int i = from; i < to; i++)
	{
		ZimJobGroup *g = &batch->groups[i];

		g->n_reqs_done = g->send_to;
		if (g->n_reqs_done >= g->n_reqs[ZIM_PHASE_OFF] && !g->on_sent)
			g->n_reqs_done = ZimMergeGroupRequests(g);	/* no "on" requests to send */
	}
	MemoryContextSwitchTo(old);
}

/* the arrays of one of the batched statements below */
typedef struct Column
{
	Datum	   *v;
	bool	   *null;
	Oid			type;
} Column;

typedef struct Rows
{
	int			n;
	int			cap;
	int			n_cols;
	Column		cols[5];
} Rows;

static void
zim_rows_init(Rows *rows, int cap, int n_cols, const Oid *types)
{
	rows->n = 0;
	rows->cap = Max(cap, 1);
	rows->n_cols = n_cols;
	for (int c = 0; c < n_cols; c++)
	{
		rows->cols[c].v = palloc0(sizeof(Datum) * rows->cap);
		rows->cols[c].null = palloc0(sizeof(bool) * rows->cap);
		rows->cols[c].type = types[c];
	}
}

static void
zim_rows_grow(Rows *rows)
{
	if (rows->n < rows->cap)
		return;
	for (int c = 0; c < rows->n_cols; c++)
	{
		rows->cols[c].v = repalloc(rows->cols[c].v, sizeof(Datum) * rows->cap * 2);
		rows->cols[c].null = repalloc(rows->cols[c].null, sizeof(bool) * rows->cap * 2);
		memset(rows->cols[c].null + rows->cap, 0, sizeof(bool) * rows->cap);
	}
	rows->cap *= 2;
}

/*
 * Run sql with the rows' columns as arrays $1.., then the lease, then the
 * time of this record (one for every job it finishes, so that a user's
 * jobs finished together share it)
 */
static void
zim_rows_exec(const ZimJobBatch *batch, const char *sql, Rows *rows)
{
	Oid			types[7];
	Datum		args[7];

	for (int c = 0; c < rows->n_cols; c++)
	{
		types[c] = get_array_type(rows->cols[c].type);
		args[c] = ZimJobsArray(rows->cols[c].v, rows->cols[c].null, rows->n, rows->cols[c].type);
	}
	types[rows->n_cols] = TIMESTAMPTZOID;
	args[rows->n_cols] = TimestampTzGetDatum(batch->lease);
	types[rows->n_cols + 1] = TIMESTAMPTZOID;
	args[rows->n_cols + 1] = TimestampTzGetDatum(GetCurrentTimestamp());
	zim_spi_exec(sql, rows->n_cols + 2, types, args, NULL);
}

/* the jobs of ids that the last statement's RETURNING did not name are lost */
static void
zim_mark_lost(ZimJobBatch *batch, int from, int to, ZimJobVerdict verdict, bool unsent)
{
	for (int i = from; i < to; i++)
		for (int j = batch->groups[i].first_job;
			 j < batch->groups[i].first_job + batch->groups[i].n_jobs; j++)
		{
			ZimJob	   *job = &batch->jobs[j];
			bool		kept = false;

			if (job->lost || job->verdict != verdict)
				continue;
			for (uint64 r = 0; r < SPI_processed && !kept; r++)
			{
				bool		isnull;

				kept = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
												   1, &isnull)) == job->job_id;
			}
			if (kept)
				continue;
			job->lost = true;
			/* of a group that spans chunks, a job may have gone out already */
			ereport(LOG,
					(errmsg(unsent && !ZimMergeJobSent(batch, i, j)
							? "zim_pin job " INT64_FORMAT " was given up unsent: its lease ran out and another runner took it"
							: "zim_pin job " INT64_FORMAT " was not recorded: its lease ran out and another runner took it",
							job->job_id),
					 errhint("Consider a longer zim_pin.job_lease.")));
		}
}

/* the finished jobs of groups [from, to): their state, then their failure rows */
static int
zim_write_finished(ZimJobBatch *batch, int from, int to)
{
	static const Oid fin_types[4] = {INT8OID, TEXTOID, INT8OID, TEXTOID};
	static const Oid row_types[5] = {INT8OID, TEXTOID, INT4OID, INT8OID, TEXTOID};
	Rows		fin;
	Rows		rows;
	int			finished = 0;
	int			first = batch->groups[from].first_job;
	int			end = batch->groups[to - 1].first_job + batch->groups[to - 1].n_jobs;

	zim_rows_init(&fin, end - first, 4, fin_types);
	for (int j = first; j < end; j++)
	{
		ZimJob	   *job = &batch->jobs[j];

		if (job->lost || (job->verdict != ZIM_JOB_DONE && job->verdict != ZIM_JOB_FAILED))
			continue;
		fin.cols[0].v[fin.n] = Int64GetDatum(job->job_id);
		fin.cols[1].v[fin.n] = CStringGetTextDatum(job->verdict == ZIM_JOB_DONE ? "done" : "failed");
		fin.cols[2].v[fin.n] = Int64GetDatum(job->code);
		fin.cols[2].null[fin.n] = !job->has_code;
		fin.cols[3].v[fin.n++] = CStringGetTextDatum(job->message);
	}
	if (fin.n == 0)
		return 0;
	zim_rows_exec(batch, psprintf("UPDATE %s.zim_pin_job j"
								  " SET state = u.state, finished_at = $6,"
								  "     last_code = u.code, last_message = u.message,"
								  "     claimed_by = NULL, claimed_until = NULL"
								  " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
								  "                pg_catalog.unnest($4)) AS u(job_id, state, code, message)"
								  " WHERE j.job_id " EQ " u.job_id"
								  "   AND j.claimed_by " EQ " pg_catalog.pg_backend_pid()"
								  "   AND j.claimed_until " EQ " $5 RETURNING j.job_id",
								  batch->schema), &fin);
	zim_mark_lost(batch, from, to, ZIM_JOB_DONE, false);
	zim_mark_lost(batch, from, to, ZIM_JOB_FAILED, false);

	zim_rows_init(&rows, 16, 5, row_types);
	for (int j = first; j < end; j++)
	{
		ZimJob	   *job = &batch->jobs[j];

		if (job->lost || (job->verdict != ZIM_JOB_DONE && job->verdict != ZIM_JOB_FAILED))
			continue;
		finished++;
		for (int k = 0; k < job->n_failures; k++)
		{
			ZimConvFailure *f = &job->failures[k];

			zim_rows_grow(&rows);
			rows.cols[0].v[rows.n] = Int64GetDatum(job->job_id);
			rows.cols[1].v[rows.n] = CStringGetTextDatum(f->conv_id);
			rows.cols[2].v[rows.n] = Int32GetDatum(f->conv_type);
			rows.cols[3].v[rows.n] = Int64GetDatum(f->sub_code);
			rows.cols[3].null[rows.n] = !f->has_code;
			rows.cols[4].v[rows.n] = f->sub_message ? CStringGetTextDatum(f->sub_message) : (Datum) 0;
			rows.cols[4].null[rows.n++] = f->sub_message == NULL;
		}
	}
	if (rows.n > 0)
		zim_rows_exec(batch, psprintf("INSERT INTO %s.zim_pin_job_failure"
									  " (job_id, conv_id, conv_type, sub_code, sub_message)"
									  " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
									  "  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5))",
									  batch->schema), &rows);
	return finished;
}

/* the jobs of groups [from, to) to send again later, with a backoff */
static void
zim_write_retries(ZimJobBatch *batch, int from, int to)
{
	static const Oid types[4] = {INT8OID, INT8OID, TEXTOID, INT8OID};
	Rows		rows;
	int			first = batch->groups[from].first_job;
	int			end = batch->groups[to - 1].first_job + batch->groups[to - 1].n_jobs;

	zim_rows_init(&rows, end - first, 4, types);
	for (int j = first; j < end; j++)
	{
		ZimJob	   *job = &batch->jobs[j];

		if (job->lost || job->verdict != ZIM_JOB_RETRY)
			continue;
		rows.cols[0].v[rows.n] = Int64GetDatum(job->job_id);
		rows.cols[1].v[rows.n] = Int64GetDatum(job->code);
		rows.cols[1].null[rows.n] = !job->has_code;
		rows.cols[2].v[rows.n] = CStringGetTextDatum(job->message);
		rows.cols[3].v[rows.n++] = Int64GetDatum(ZimBackoffMs(job->attempts - 1, JOB_BACKOFF_BASE_MS,
															  JOB_BACKOFF_CAP_MS));
	}
	if (rows.n == 0)
		return;
	zim_rows_exec(batch, psprintf("UPDATE %s.zim_pin_job j"
								  " SET last_code = u.code, last_message = u.message,"
								  "     next_attempt_at = pg_catalog.clock_timestamp() " PLUS
								  "       pg_catalog.make_interval(secs => u.ms OPERATOR(pg_catalog./) 1000.0::pg_catalog.float8),"
								  "     claimed_by = NULL, claimed_until = NULL"
								  " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
								  "                pg_catalog.unnest($4)) AS u(job_id, code, message, ms)"
								  " WHERE j.job_id " EQ " u.job_id"
								  "   AND j.claimed_by " EQ " pg_catalog.pg_backend_pid()"
								  "   AND j.claimed_until " EQ " $5 RETURNING j.job_id",
								  batch->schema), &rows);
	zim_mark_lost(batch, from, to, ZIM_JOB_RETRY, false);
}

/* the jobs of groups [from, to) held back: unsent, their attempt not counted */
static void
zim_write_held_back(ZimJobBatch *batch, int from, int to)
{
	static const Oid types[1] = {INT8OID};
	Rows		rows;
	int			first = batch->groups[from].first_job;
	int			end = batch->groups[to - 1].first_job + batch->groups[to - 1].n_jobs;

	zim_rows_init(&rows, end - first, 1, types);
	for (int j = first; j < end; j++)
		if (!batch->jobs[j].lost && batch->jobs[j].verdict == ZIM_JOB_HELD_BACK)
			rows.cols[0].v[rows.n++] = Int64GetDatum(batch->jobs[j].job_id);
	if (rows.n == 0)
		return;
	zim_rows_exec(batch, psprintf("UPDATE %s.zim_pin_job"
								  " SET attempts = attempts " MINUS " 1, claimed_by = NULL, claimed_until = NULL"
								  " WHERE job_id " EQ " ANY ($1)"
								  "   AND claimed_by " EQ " pg_catalog.pg_backend_pid()"
								  "   AND claimed_until " EQ " $2 RETURNING job_id",
								  batch->schema), &rows);
	zim_mark_lost(batch, from, to, ZIM_JOB_HELD_BACK, false);
}

static int
zim_write_jobs(ZimJobBatch *batch, int from, int to)
{
	int			finished;

	if (to <= from)
		return 0;
	finished = zim_write_finished(batch, from, to);
	zim_write_retries(batch, from, to);
	zim_write_held_back(batch, from, to);
	return finished;
}

/*
 * Record the outcome of every job of groups [from, to) of a sent batch
 * that is still held; SPI is connected.  Returns how many finished (done
 * or failed).
 */
int
ZimJobsRecord(ZimJobBatch *batch, int from, int to)
{
	int			finished;
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);

	for (int i = from; i < to; i++)
		if (!zim_group_lost(batch, &batch->groups[i]))
			ZimMergeOutcome(batch, i);
	finished = zim_write_jobs(batch, from, to);
	MemoryContextSwitchTo(old);
	return finished;
}

/*
 * Renew the lease of the jobs of groups [from, n_groups) that are still
 * held; a group any job of which is not (another runner took it) is lost,
 * and will be neither sent nor recorded here.  SPI is connected.
 */
void
ZimJobsRenew(ZimJobBatch *batch, int from)
{
	static const Oid types[1] = {INT8OID};
	Rows		rows;
	TimestampTz lease = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													(int64) zim_job_lease_s * 1000);
	char	   *sql = psprintf("UPDATE %s.zim_pin_job SET claimed_until = $3"
							   " WHERE job_id " EQ " ANY ($1)"
							   "   AND claimed_by " EQ " pg_catalog.pg_backend_pid()"
							   "   AND claimed_until " EQ " $2 RETURNING job_id", batch->schema);
	Oid			argtypes[3] = {INT8ARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		args[3];

	if (from >= batch->n_groups)
		return;
	zim_rows_init(&rows, batch->n_jobs, 1, types);
	for (int j = batch->groups[from].first_job; j < batch->n_jobs; j++)
	{
		batch->jobs[j].verdict = ZIM_JOB_HELD_BACK;	/* not judged yet */
		if (!batch->jobs[j].lost)
			rows.cols[0].v[rows.n++] = Int64GetDatum(batch->jobs[j].job_id);
	}
	args[0] = ZimJobsArray(rows.cols[0].v, NULL, rows.n, INT8OID);
	args[1] = TimestampTzGetDatum(batch->lease);
	args[2] = TimestampTzGetDatum(lease);
	zim_spi_exec(sql, 3, argtypes, args, NULL);
	zim_mark_lost(batch, from, batch->n_groups, ZIM_JOB_HELD_BACK, true);
	batch->renewed = lease;
	for (int i = from; i < batch->n_groups; i++)
	{
		ZimJobGroup *g = &batch->groups[i];
		bool		lost = false;

		for (int j = g->first_job; j < g->first_job + g->n_jobs; j++)
			lost |= batch->jobs[j].lost;
		if (lost)
			batch->jobs[g->first_job].lost = true;
	}
}

/*
 * The renewal's transaction committed: its lease is now the claim's token.
 * Until then the old one is (a renewal that failed to commit changed
 * nothing).
 */
void
ZimJobsRenewed(ZimJobBatch *batch)
{
	if (batch->renewed != 0)
		batch->lease = batch->renewed;
	batch->renewed = 0;
}

/*
 * An error ended the sending or recording of a claimed batch (an answer
 * that broke something, an out-of-memory): record it on every job of
 * groups [from, n_groups) that is still held, so that no job is reclaimed
 * and resent without end.  A job with attempts left is retried later; the
 * others fail, with a failure row per conversation.  A configuration error
 * (55000: zim_pin.app_id or the secret gone since the call began) is no
 * job's fault: the jobs go back to the queue unsent, their attempt not
 * counted.  SPI is connected, in
 * a transaction other than the one that failed.  Returns how many
 * finished.
 */
int
ZimJobsRecordError(ZimJobBatch *batch, int from, const ErrorData *edata)
{
	int			finished;
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);
	const char *message = psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode),
								   edata->message ? edata->message : "error");

	if (from >= batch->n_groups)
	{
		MemoryContextSwitchTo(old);
		return 0;
	}
	for (int j = batch->groups[from].first_job; j < batch->n_jobs; j++)
	{
		ZimJob	   *job = &batch->jobs[j];

		/* the configuration (not the job) is wrong: give them back, uncharged */
		if (edata->sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		{
			job->verdict = ZIM_JOB_HELD_BACK;
			continue;
		}
		job->has_code = false;
		job->code = 0;
		job->message = message;
		job->n_failures = 0;
		if (!job->exhausted && job->attempts < zim_job_max_attempts)
		{
			job->verdict = ZIM_JOB_RETRY;
			continue;
		}
		job->verdict = ZIM_JOB_FAILED;
		job->failures = palloc0(sizeof(ZimConvFailure) * Max(job->n, 1));
		for (int k = 0; k < job->n; k++)
		{
			job->failures[k].conv_id = job->convs[k].id;
			job->failures[k].conv_type = job->convs[k].type;
			job->failures[k].sub_message = message;
		}
		job->n_failures = job->n;
	}
	finished = zim_write_jobs(batch, from, batch->n_groups);
	MemoryContextSwitchTo(old);
	return finished;
}

/*
 * Delete up to max finished jobs (and by cascade their failure rows)
 * older than zim_pin.job_retention, oldest first, through the index on
 * finished_at, skipping rows that others lock; SPI is connected.  Returns
 * how many were deleted: max means that more may be left.
 */
int
ZimJobsPrune(const char *schema, int max)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		args[2] = {Int32GetDatum(zim_job_retention_min), Int32GetDatum(max)};

	zim_spi_exec(psprintf("DELETE FROM %1$s.zim_pin_job WHERE job_id " EQ " ANY (ARRAY("
						  " SELECT o.job_id FROM %1$s.zim_pin_job o"
						  " WHERE o.state " NE " 'pending'::pg_catalog.text"
						  "  AND o.finished_at " LT " (pg_catalog.clock_timestamp() " MINUS
						  "   pg_catalog.make_interval(mins => $1))"
						  " ORDER BY o.finished_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED))",
						  schema), 2, types, args, NULL);
	return (int) SPI_processed;
}

/*
 * When the earliest pending job is due (0: none); SPI is connected.
 */
TimestampTz
ZimJobsNextDue(const char *schema)
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
