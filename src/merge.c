/*-------------------------------------------------------------------------
 *
 * merge.c
 *	  A user's consecutive queued jobs as the fewest ConvPinned requests
 *	  that reach the same final state as sending them one by one, in order;
 *	  and each job's own outcome from the answers.
 *
 * Merging.  Per conversation (id and type) the last job of the group that
 * names it wins: only its intent is sent, for that job (the owner).  An
 * earlier job that named the conversation leaves it to the later one: it
 * is neither sent for it nor one of its failures (its row says how many it
 * left, and to which job).  Unpins go out before pins, in two phases of the
 * whole batch, so that an unpin frees a slot for a pin at the vendor's
 * 100-pin limit; a group whose unpins failed transiently sends no pins.  A
 * job whose attempts runners that died used up, or that cannot be sent at
 * all (a poison row), takes no part: it fails unsent, as if it had come
 * and gone in its place.
 *
 * Outcomes.  A job's failures are exactly the conversations it owned that
 * failed: its entries of the ErrorLists, and each conversation of a request
 * that failed whole.  Its verdict: RETRY if a request it owned a part of
 * failed whole and transiently, with attempts left; else HELD_BACK if a part
 * of it was not sent or a job before it in the group is sent again or held
 * back; else FAILED if a request it owned a part of failed whole; else DONE.
 * Held-back jobs return to the queue unsent, their attempt not counted, so
 * that a user's jobs still take effect in order.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

/* one conversation named by one job of a group */
typedef struct ConvRef
{
	const ZimConv *conv;
	int			job;			/* batch index */
	int			pos;			/* in the job's list */
} ConvRef;

/* by conversation, then the last job first */
static int
zim_ref_by_conv(const void *a, const void *b)
{
	const ConvRef *x = (const ConvRef *) a;
	const ConvRef *y = (const ConvRef *) b;
	int			c;

	if (x->conv->type != y->conv->type)
		return x->conv->type < y->conv->type ? -1 : 1;
	c = strcmp(x->conv->id, y->conv->id);
	if (c != 0)
		return c;
	if (x->job != y->job)
		return x->job > y->job ? -1 : 1;
	return x->pos - y->pos;
}

/* in the order the jobs named them */
static int
zim_ref_by_job(const void *a, const void *b)
{
	const ConvRef *x = (const ConvRef *) a;
	const ConvRef *y = (const ConvRef *) b;

	if (x->job != y->job)
		return x->job - y->job;
	return x->pos - y->pos;
}

/* a job that takes no part in its group: it fails unsent */
static bool
zim_sits_out(const ZimJob *job)
{
	return job->exhausted || job->poison != NULL;
}

static bool
zim_same_conv(const ZimConv *a, const ZimConv *b)
{
	return a->type == b->type && strcmp(a->id, b->id) == 0;
}

/* which conversations one group sends, for which job: unpins first */
static void
zim_merge_group(ZimJobBatch *batch, ZimJobGroup *g)
{
	int			total = 0;
	int			n_own = 0;
	int			k = 0;
	ConvRef    *refs;
	ConvRef    *own;

	for (int j = g->first_job; j < g->first_job + g->n_jobs; j++)
		if (!zim_sits_out(&batch->jobs[j]))
			total += batch->jobs[j].n;
	refs = palloc(sizeof(ConvRef) * Max(total, 1));
	own = palloc(sizeof(ConvRef) * Max(total, 1));
	for (int j = g->first_job; j < g->first_job + g->n_jobs; j++)
		for (int c = 0; !zim_sits_out(&batch->jobs[j]) && c < batch->jobs[j].n; c++)
			refs[k++] = (ConvRef)
		{
			&batch->jobs[j].convs[c], j, c
		};
	qsort(refs, total, sizeof(ConvRef), zim_ref_by_conv);
	for (int i = 0; i < total; i++)
	{
		ZimJob	   *owner;

		if (i == 0 || !zim_same_conv(refs[i].conv, refs[i - 1].conv))
		{
			own[n_own++] = refs[i];
			continue;
		}
		owner = &batch->jobs[own[n_own - 1].job];
		if (refs[i].job == own[n_own - 1].job)
			continue;			/* named twice by one job */
		batch->jobs[refs[i].job].n_superseded++;
		batch->jobs[refs[i].job].superseded_by =
			Max(batch->jobs[refs[i].job].superseded_by, owner->job_id);
	}
	qsort(own, n_own, sizeof(ConvRef), zim_ref_by_job);

	g->sent = palloc(sizeof(ZimConv) * Max(n_own, 1));
	g->owner = palloc(sizeof(int) * Max(n_own, 1));
	g->n_sent = n_own;
	k = 0;
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < n_own; i++)
			if (batch->jobs[own[i].job].pinned == (pass == 1))
			{
				g->sent[k] = *own[i].conv;
				g->owner[k++] = own[i].job;
				if (pass == 0)
					g->n_unpin = k;
			}
	pfree(refs);
	pfree(own);
}

/*
 * Merge every group of a claimed batch and build its requests (in the
 * claim's transaction: bodies are converted to UTF-8).
 */
void
ZimMergeBuild(ZimJobBatch *batch)
{
	int			n_unpin = 0;
	int			n_pin = 0;

	for (int i = 0; i < batch->n_groups; i++)
	{
		ZimJobGroup *g = &batch->groups[i];

		zim_merge_group(batch, g);
		g->first_unpin_req = n_unpin;
		g->n_unpin_reqs = ZimConvPinnedRequestCount(g->n_unpin);
		n_unpin += g->n_unpin_reqs;
		g->first_pin_req = n_pin;
		g->n_pin_reqs = ZimConvPinnedRequestCount(g->n_sent - g->n_unpin);
		n_pin += g->n_pin_reqs;
	}
	batch->unpin_reqs = palloc0(sizeof(ZimRequest) * Max(n_unpin, 1));
	batch->n_unpin_reqs = n_unpin;
	batch->pin_reqs = palloc0(sizeof(ZimRequest) * Max(n_pin, 1));
	batch->n_pin_reqs = n_pin;
	for (int i = 0; i < batch->n_groups; i++)
	{
		ZimJobGroup *g = &batch->groups[i];
		const char *user = batch->jobs[g->first_job].from_user_id;

		if (g->n_unpin > 0)
			ZimConvPinnedRequests(user, g->sent, g->n_unpin, false,
								  batch->unpin_reqs + g->first_unpin_req);
		if (g->n_sent > g->n_unpin)
			ZimConvPinnedRequests(user, g->sent + g->n_unpin, g->n_sent - g->n_unpin, true,
								  batch->pin_reqs + g->first_pin_req);
	}
}

/* what happened to one conversation a group sent */
typedef struct ConvStatus
{
	bool		not_sent;
	const ZimRequest *whole;	/* its request failed whole */
	bool		item;			/* an ErrorList entry names it */
	ZimConvFailure failure;
	const ZimRequest *req;		/* its request */
} ConvStatus;

typedef struct ItemSink
{
	const ZimConv *convs;
	int			n;
	ConvStatus *st;
} ItemSink;

/* an ErrorList entry: the conversation it names, if the phase sent it */
static void
zim_merge_item(const ZimConvFailure *f, void *arg)
{
	ItemSink   *sink = (ItemSink *) arg;
	ZimConv		c = {(char *) f->conv_id, f->conv_type};

	for (int k = 0; k < sink->n; k++)
		if (!sink->st[k].item && zim_same_conv(&sink->convs[k], &c))
		{
			sink->st[k].item = true;
			sink->st[k].failure = *f;
			return;
		}
}

/* the status of each conversation of one phase of a group */
static void
zim_merge_phase(const ZimRequest *reqs, const ZimConv *convs, int n, bool sent,
				ConvStatus *st)
{
	ZimConvTally tally;
	ItemSink	sink = {convs, n, st};
	int			chunk = zim_max_convs_per_request;

	for (int k = 0; k < n; k++)
	{
		st[k].not_sent = !sent;
		st[k].req = &reqs[k / chunk];
	}
	if (n == 0 || !sent)
		return;
	ZimConvPinnedFailures(reqs, convs, n, false, false, zim_merge_item, &sink, &tally);
	for (int k = 0; k < n; k++)
		if (ZimConvPinnedFailedWhole(st[k].req))
			st[k].whole = st[k].req;
}

/* the failure row of a conversation whose request failed whole */
static ZimConvFailure
zim_whole_failure(const ZimConv *conv, const ZimRequest *req)
{
	ZimConvFailure f;

	ZimRequestOutcome(req, &f.has_code, &f.sub_code, &f.sub_message);
	f.conv_id = conv->id;
	f.conv_type = conv->type;
	return f;
}

/*
 * A job that takes no part: the runners that died used up its attempts,
 * or it cannot be sent at all (a row inserted by hand or restored, with a
 * null element or an id not valid in UTF-8).  It fails unsent, with a row
 * for each conversation it names (but a null one).
 */
static void
zim_job_sat_out(ZimJob *job)
{
	job->verdict = ZIM_JOB_FAILED;
	job->has_code = false;
	job->code = 0;
	job->message = job->poison
		? psprintf("cannot be sent: %s", job->poison)
		: psprintf("gave up after %d attempts, the last of which ended without an outcome",
				   job->attempts - 1);
	job->failures = palloc0(sizeof(ZimConvFailure) * Max(job->n, 1));
	job->n_failures = 0;
	for (int k = 0; k < job->n; k++)
	{
		if (job->convs[k].id == NULL)
			continue;
		job->failures[job->n_failures].conv_id = job->convs[k].id;
		job->failures[job->n_failures].conv_type = job->convs[k].type;
		job->failures[job->n_failures++].sub_message = job->message;
	}
}

/* one job's verdict, Code, text and failures; *behind: an earlier job waits */
static void
zim_job_verdict(const ZimJobGroup *g, int j, ZimJob *job, const ConvStatus *st,
				bool *behind)
{
	const ZimRequest *whole = NULL;
	const ZimRequest *coded = NULL;
	bool		transient = false;
	bool		not_sent = false;

	job->failures = palloc0(sizeof(ZimConvFailure) * Max(job->n, 1));
	for (int k = 0; k < g->n_sent; k++)
	{
		if (g->owner[k] != j)
			continue;
		not_sent |= st[k].not_sent;
		if (st[k].whole && whole == NULL)
			whole = st[k].whole;
		if (st[k].whole)
			transient |= ZimRequestTransient(st[k].whole);
		else if (!st[k].not_sent && coded == NULL && st[k].req->response.code != 0)
			coded = st[k].req;
		if (!st[k].not_sent && job->n_failures < job->n && (st[k].item || st[k].whole))
			job->failures[job->n_failures++] =
				st[k].whole ? zim_whole_failure(&g->sent[k], st[k].whole) : st[k].failure;
	}

	job->has_code = true;
	job->code = 0;
	job->message = "success";
	if (whole)
		ZimRequestOutcome(whole, &job->has_code, &job->code, &job->message);
	else if (coded)
	{
		job->code = coded->response.code;
		job->message = coded->response.message;
	}

	if (whole && transient && job->attempts < zim_job_max_attempts)
		job->verdict = ZIM_JOB_RETRY;
	else if (*behind || not_sent)
		job->verdict = ZIM_JOB_HELD_BACK;
	else
		job->verdict = whole ? ZIM_JOB_FAILED : ZIM_JOB_DONE;
	if (job->verdict == ZIM_JOB_RETRY || job->verdict == ZIM_JOB_HELD_BACK)
		*behind = true;
	if (job->verdict == ZIM_JOB_DONE && job->n_superseded > 0)
		job->message = psprintf("%s; %d conversation%s left to job " INT64_FORMAT,
								job->message, job->n_superseded,
								job->n_superseded == 1 ? "" : "s", job->superseded_by);
}

/*
 * Judge every job of a sent group: verdict, Code and text, failures (see
 * the file's comment).
 */
void
ZimMergeOutcome(ZimJobBatch *batch, int group)
{
	ZimJobGroup *g = &batch->groups[group];
	ConvStatus *st = palloc0(sizeof(ConvStatus) * Max(g->n_sent, 1));
	bool		behind = false;

	zim_merge_phase(batch->unpin_reqs + g->first_unpin_req, g->sent, g->n_unpin, true, st);
	zim_merge_phase(batch->pin_reqs + g->first_pin_req, g->sent + g->n_unpin,
					g->n_sent - g->n_unpin, g->pins_sent, st + g->n_unpin);
	for (int j = g->first_job; j < g->first_job + g->n_jobs; j++)
	{
		if (zim_sits_out(&batch->jobs[j]))
			zim_job_sat_out(&batch->jobs[j]);
		else
			zim_job_verdict(g, j, &batch->jobs[j], st, &behind);
	}
	pfree(st);
}
