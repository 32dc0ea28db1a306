/*-------------------------------------------------------------------------
 *
 * merge.c
 *	  A user's consecutive queued jobs of one Action as the fewest requests
 *	  that reach the same final state as sending them one by one, in order;
 *	  and each job's own outcome from the answers.
 *
 * Every Action of the family is a ZimConvKind (its file knows its bodies,
 * limits and failure list); this file knows only what merging needs: that
 * each sets an absolute state per conversation, and for SetConvMark per
 * conversation and mark.
 *
 * Merging.  Per conversation (id, type and, for SetConvMark, mark) the last
 * job of the group that names it wins: only its intent is sent, for that
 * job (the owner).  An earlier job that named the conversation leaves it
 * to the later one: it is neither sent for it nor one of its failures
 * (its row says how many it left, and to which job).  So a DeleteConv or
 * ClearConversationUnread repeated in a group is sent once, and a mark set
 * and then cancelled is only cancelled.  The "off" intents (unpin, unmute,
 * cancel a mark) go out before the "on" ones, in two phases of the whole
 * batch, so that an "off" frees a slot for an "on" under a per-user cap (100
 * pins, 500 mutes, 30 marks a conversation); a group whose "off" requests
 * failed transiently sends no "on" ones.  The kind then packs each phase
 * into its requests: 20 pins, 10 mutes of one type, 100 marks a map with
 * each conversation once, one delete or clear.  A job whose attempts
 * runners that died used up, or that cannot be sent at all (a poison row),
 * takes no part: it fails unsent, as if it had come and gone in its place.
 *
 * Outcomes.  A job's failures are exactly the conversations it owned that
 * failed: its entries of the failure lists, each conversation of a request
 * that failed whole, and the one conversation of a request whose Code
 * concerns only it.  Its verdict: RETRY if a request it owned a part of
 * failed whole and transiently, with attempts left; else HELD_BACK if a
 * part of it was not sent or a job before it in the group is sent again or
 * held back; else FAILED if a request it owned a part of failed whole;
 * else DONE.  Held-back jobs return to the queue unsent, their attempt not
 * counted, so that a user's jobs still take effect in order.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

/* the Actions the queue sends, by the name stored in zim_pin_job.action */
static const ZimConvKind *const kinds[] = {
	&ZimConvPinnedKind,
	&ZimSilenceKind,
	&ZimMarkKind,
	&ZimDeleteKind,
	&ZimClearUnreadKind,
};

/* the kind of a stored Action name, or NULL if the queue sends no such Action */
const ZimConvKind *
ZimMergeKind(const char *action)
{
	for (int i = 0; i < (int) lengthof(kinds); i++)
		if (strcmp(kinds[i]->action, action) == 0)
			return kinds[i];
	return NULL;
}

/* how many conversations one request of kind holds at most */
int
ZimMergePerRequest(const ZimConvKind *kind)
{
	return kind && kind->per_request > 0 ? kind->per_request : zim_max_convs_per_request;
}

/* a group's requests, both phases */
int
ZimMergeGroupRequests(const ZimJobGroup *g)
{
	return g->n_reqs[ZIM_PHASE_OFF] + g->n_reqs[ZIM_PHASE_ON];
}

/*
 * Has a request of a group that carries a conversation job j (a batch
 * index) owns gone out?  Its requests go in order, "off" then "on", up to
 * n_reqs_done; the "on" ones only if on_sent.
 */
bool
ZimMergeJobSent(const ZimJobBatch *batch, int group, int j)
{
	const ZimJobGroup *g = &batch->groups[group];

	for (int p = 0; p < ZIM_PHASES; p++)
		for (int r = 0; r < g->n_reqs[p]; r++)
		{
			int			index = p == ZIM_PHASE_OFF ? r : g->n_reqs[ZIM_PHASE_OFF] + r;
			const ZimConvSpan *span = &g->spans[p][r];

			if (index >= g->n_reqs_done || (p == ZIM_PHASE_ON && !g->on_sent))
				continue;
			for (int k = span->first; k < span->first + span->n; k++)
				if (g->owner[g->calls[p].convs[k].tag] == j)
					return true;
		}
	return false;
}

/* one conversation named by one job of a group */
typedef struct ConvRef
{
	const ZimConv *conv;
	int			job;			/* batch index */
	int			pos;			/* in the job's list */
} ConvRef;

static int
zim_conv_cmp(const ZimConv *a, const ZimConv *b)
{
	int			c;

	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	if (a->mark != b->mark)
		return a->mark < b->mark ? -1 : 1;
	c = strcmp(a->id, b->id);
	return c;
}

/* by conversation, then the last job first */
static int
zim_ref_by_conv(const void *a, const void *b)
{
	const ConvRef *x = (const ConvRef *) a;
	const ConvRef *y = (const ConvRef *) b;
	int			c = zim_conv_cmp(x->conv, y->conv);

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
	return job->exhausted || job->poison != NULL || job->kind == NULL;
}

static bool
zim_same_conv(const ZimConv *a, const ZimConv *b)
{
	return a->type == b->type && strcmp(a->id, b->id) == 0;
}

/* which conversations one group sends, for which job: "off" first */
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

		if (i == 0 || zim_conv_cmp(refs[i].conv, refs[i - 1].conv) != 0)
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
	g->n_off = 0;
	k = 0;
	for (int phase = 0; phase < ZIM_PHASES; phase++)
		for (int i = 0; i < n_own; i++)
			if (batch->jobs[own[i].job].on == (phase == ZIM_PHASE_ON))
			{
				g->sent[k] = *own[i].conv;
				g->sent[k].tag = k;
				g->owner[k++] = own[i].job;
				if (phase == ZIM_PHASE_OFF)
					g->n_off = k;
			}
	pfree(refs);
	pfree(own);
}

/* a group's call of one phase: its conversations, not yet built */
static void
zim_merge_phase_call(ZimJobBatch *batch, ZimJobGroup *g, int phase)
{
	ZimConvCall *call = &g->calls[phase];
	int			from = phase == ZIM_PHASE_OFF ? 0 : g->n_off;

	memset(call, 0, sizeof(*call));
	call->from_user_id = batch->jobs[g->first_job].from_user_id;
	call->n = phase == ZIM_PHASE_OFF ? g->n_off : g->n_sent - g->n_off;
	call->convs = palloc(sizeof(ZimConv) * Max(call->n, 1));
	memcpy(call->convs, g->sent + from, sizeof(ZimConv) * call->n);
	call->on = phase == ZIM_PHASE_ON;
	g->n_reqs[phase] = call->n > 0 && g->kind ? g->kind->n_requests(call) : 0;
}

/*
 * Merge every group of a claimed batch and build its requests (in the
 * claim's transaction: bodies are converted to UTF-8).
 */
void
ZimMergeBuild(ZimJobBatch *batch)
{
	for (int p = 0; p < ZIM_PHASES; p++)
		batch->n_reqs[p] = 0;
	for (int i = 0; i < batch->n_groups; i++)
	{
		ZimJobGroup *g = &batch->groups[i];

		g->kind = batch->jobs[g->first_job].kind;
		zim_merge_group(batch, g);
		for (int p = 0; p < ZIM_PHASES; p++)
		{
			zim_merge_phase_call(batch, g, p);
			g->first_req[p] = batch->n_reqs[p];
			batch->n_reqs[p] += g->n_reqs[p];
		}
	}
	for (int p = 0; p < ZIM_PHASES; p++)
		batch->reqs[p] = palloc0(sizeof(ZimRequest) * Max(batch->n_reqs[p], 1));
	for (int i = 0; i < batch->n_groups; i++)
	{
		ZimJobGroup *g = &batch->groups[i];

		for (int p = 0; p < ZIM_PHASES; p++)
		{
			ZimRequest *reqs = batch->reqs[p] + g->first_req[p];

			g->spans[p] = palloc0(sizeof(ZimConvSpan) * Max(g->n_reqs[p], 1));
			if (g->n_reqs[p] == 0)
				continue;
			g->kind->build(&g->calls[p], reqs, g->spans[p]);
			for (int r = 0; r < g->n_reqs[p]; r++)
				reqs[r].action = g->kind->action;
		}
	}
}

/* what happened to one conversation a group sent */
typedef struct ConvStatus
{
	bool		not_sent;
	const ZimRequest *whole;	/* its request failed whole */
	bool		item;			/* a failure entry names it */
	ZimConvFailure failure;
	const ZimRequest *req;		/* its request */
} ConvStatus;

typedef struct ItemSink
{
	const ZimConvKind *kind;
	const ZimConv *convs;		/* the request's conversations */
	int			n;
	ConvStatus *st;				/* by tag */
} ItemSink;

/* a failure entry: the conversation of its request that it names */
static void
zim_merge_item(const ZimConvFailure *f, void *arg)
{
	ItemSink   *sink = (ItemSink *) arg;
	ZimConv		c = {(char *) f->conv_id, f->conv_type};

	if (f->has_code && sink->kind->code_is_done && sink->kind->code_is_done(f->sub_code))
		return;					/* the state asked for holds */
	for (int k = 0; k < sink->n; k++)
	{
		ConvStatus *st = &sink->st[sink->convs[k].tag];

		if (!st->item && zim_same_conv(&sink->convs[k], &c))
		{
			st->item = true;
			st->failure = *f;
			st->failure.conv_id = sink->convs[k].id;
			return;
		}
	}
}

/* the status of each conversation of one request of a group */
static void
zim_merge_request(const ZimJobGroup *g, int phase, const ZimRequest *req,
				  const ZimConvSpan *span, bool sent, ConvStatus *st)
{
	const ZimConvCall *call = &g->calls[phase];
	const ZimConv *convs = call->convs + span->first;
	ItemSink	sink = {g->kind, convs, span->n, st};

	for (int k = 0; k < span->n; k++)
	{
		st[convs[k].tag].not_sent = !sent;
		st[convs[k].tag].req = req;
	}
	if (!sent)
		return;
	if (ZimConvFailedWhole(g->kind, req))
	{
		for (int k = 0; k < span->n; k++)
			st[convs[k].tag].whole = req;
		return;
	}
	if (req->response.code != 0 && !req->response.has_items)
	{
		/* a Code that says the state holds, or that concerns its one conversation */
		if (g->kind->code_is_item && g->kind->code_is_item(req->response.code))
			for (int k = 0; k < span->n; k++)
			{
				ConvStatus *s = &st[convs[k].tag];

				s->item = true;
				s->failure = (ZimConvFailure)
				{
					convs[k].id, convs[k].type, true, req->response.code, req->response.message
				};
			}
		return;
	}
	if (g->kind->items)
		g->kind->items(call, req, span, false, zim_merge_item, &sink);
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

/* does this answered request carry a Code worth a job's row? */
static bool
zim_coded(const ZimConvKind *kind, const ZimRequest *req)
{
	int64		code = req->response.code;

	return code != 0 && !(kind->code_is_done && kind->code_is_done(code));
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
		else if (!st[k].not_sent && coded == NULL && st[k].req && zim_coded(g->kind, st[k].req))
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

/* count a group's conversations in the statistics of its Action */
static void
zim_merge_stats(const ZimJobGroup *g, const ConvStatus *st)
{
	int64		changed = 0;
	int64		failed = 0;

	for (int k = 0; k < g->n_sent; k++)
	{
		if (st[k].not_sent)
			continue;
		if (st[k].whole || st[k].item)
			failed++;
		else
			changed++;
	}
	if (g->kind && g->n_sent > 0)
		ZimStatsConvs(g->kind->action, changed, failed);
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

	for (int p = 0; p < ZIM_PHASES; p++)
		for (int r = 0; r < g->n_reqs[p]; r++)
			zim_merge_request(g, p, &batch->reqs[p][g->first_req[p] + r], &g->spans[p][r],
							  p == ZIM_PHASE_OFF || g->on_sent, st);
	zim_merge_stats(g, st);
	for (int j = g->first_job; j < g->first_job + g->n_jobs; j++)
	{
		if (zim_sits_out(&batch->jobs[j]))
			zim_job_sat_out(&batch->jobs[j]);
		else
			zim_job_verdict(g, j, &batch->jobs[j], st, &behind);
	}
	pfree(st);
}
