/*-------------------------------------------------------------------------
 *
 * conv_pinned.c
 *	  ConvPinned: its arguments, request bodies and chunks, its ErrorList,
 *	  what each request did to its conversations, and zim_conv_pinned().
 *
 * zim_conv_pinned checks all of its input before it sends anything, so
 * bad input never leaves half the work done; then it sends one signed
 * request per chunk of zim_pin.max_convs_per_request conversations, all
 * at once as the limiter allows, and returns the conversations that were
 * not changed, from every chunk, as rows.  A chunk that fails as a whole
 * is raised once every chunk has finished, so the error can say what the
 * others did.
 *
 * The queue (above) stores and sends the same calls later, through
 * ZimConvPinnedKind, the same bodies, chunks and ErrorList as a kind of
 * the family, so ConvPinned's rules live in this file only.  This file
 * never touches the queue's tables and never sends except through
 * client.c.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(zim_conv_pinned);
PG_FUNCTION_INFO_V1(zim_conv_pinned_one_type);

/*
 * Read and check every argument of zim_conv_pinned() or of the queue's
 * zim_conv_pinned_enqueue() (same arguments); returns the number of
 * conversations.  Raises 22004 or 22023 before anything is sent or stored.
 */
int
ZimConvPinnedReadArgs(FunctionCallInfo fcinfo, bool one_type,
				   char **from_user_id, ZimConv **convs, bool *pinned)
{
	static const char *const names[] = {"pinned"};
	int			n = ZimConvReadTargets(fcinfo, one_type, names, 1, from_user_id, convs);

	*pinned = PG_GETARG_BOOL(3);
	return n;
}

/* the body of one ConvPinned request, in UTF-8 */
static char *
zim_conv_pinned_body(const char *from_user_id, const ZimConv *convs, int n,
					 bool pinned)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"FromUserId\":");
	escape_json(&buf, from_user_id);
	appendStringInfoString(&buf, ",\"ConvList\":[");
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, "{\"ConvId\":");
		escape_json(&buf, convs[i].id);
		appendStringInfo(&buf, ",\"ConvType\":%d}", convs[i].type);
	}
	appendStringInfo(&buf, "],\"PinnedType\":%d}", pinned ? 1 : 0);
	return ZimConvUtf8(&buf);
}

/* how many ConvPinned requests n conversations take (0 for none) */
int
ZimConvPinnedRequestCount(int n_convs)
{
	return (n_convs + zim_max_convs_per_request - 1) / zim_max_convs_per_request;
}

/*
 * Fill the bodies of the ZimConvPinnedRequestCount(n_convs) requests that
 * carry n_convs conversations, one chunk of zim_pin.max_convs_per_request
 * each.
 */
void
ZimConvPinnedRequests(const char *from_user_id, const ZimConv *convs, int n_convs,
					  bool pinned, ZimRequest *reqs)
{
	int			chunk = zim_max_convs_per_request;

	for (int c = 0; c * chunk < n_convs; c++)
		reqs[c].body = zim_conv_pinned_body(from_user_id, convs + c * chunk,
											Min(chunk, n_convs - c * chunk), pinned);
}

/* the reason an ErrorList entry is malformed, or NULL */
static const char *
zim_error_item(JsonbContainer *obj, ZimConvFailure *item)
{
	JsonbValue	v;
	int64		type;

	if (!getKeyJsonValueFromContainer(obj, "ConvId", 6, &v) || v.type != jbvString)
		return "has no string \"ConvId\"";
	item->conv_id = pnstrdup(v.val.string.val, v.val.string.len);
	item->has_code = true;

	if (!getKeyJsonValueFromContainer(obj, "ConvType", 8, &v) ||
		!ZimJsonInt64(&v, &type) || type < PG_INT32_MIN || type > PG_INT32_MAX)
		return "has no integer \"ConvType\"";
	item->conv_type = (int32) type;

	if (!getKeyJsonValueFromContainer(obj, "SubCode", 7, &v) ||
		!ZimJsonInt64(&v, &item->sub_code))
		return "has no integer \"SubCode\"";

	item->sub_message = NULL;
	if (getKeyJsonValueFromContainer(obj, "SubMessage", 10, &v) && v.type == jbvString)
		item->sub_message = pnstrdup(v.val.string.val, v.val.string.len);
	return NULL;
}

/*
 * The entries of a ConvPinned answer's ErrorList.  strict: a malformed
 * entry raises ZP005; otherwise it is skipped (the queue records what it
 * can rather than fail a job forever on one bad entry).
 */
static int
zim_error_list(Jsonb *jb, bool strict, ZimConvFailure **items_out)
{
	JsonbValue *list = ZimJsonGet(jb, "ErrorList");
	ZimConvFailure *items;
	int			n;
	int			k = 0;

	*items_out = NULL;
	if (list == NULL || list->type != jbvBinary)
		return 0;
	n = JsonContainerSize(list->val.binary.data);
	items = palloc0(sizeof(ZimConvFailure) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(list->val.binary.data, i);
		const char *why = "is not an object";

		if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
			why = zim_error_item(v->val.binary.data, &items[k]);
		if (why == NULL)
			k++;
		else if (strict)
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("invalid answer from the ZIM server"),
					 errdetail("An entry of \"ErrorList\" %s.", why),
					 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
	}
	*items_out = items;
	return k;
}

/* did this ConvPinned request fail as a whole (no conversation changed)? */
static bool
zim_failed_whole(const ZimRequest *req)
{
	return req->state == ZIM_REQ_FAILED ||
		(req->response.code != 0 && !req->response.has_items);
}

/*
 * Which of the requests of one call (n_convs conversations) failed as a
 * whole, and may a later attempt cure them.  Counts nothing.
 */
void
ZimConvPinnedTally(const ZimRequest *reqs, int n_convs, ZimConvTally *tally)
{
	int			n_reqs = ZimConvPinnedRequestCount(n_convs);

	memset(tally, 0, sizeof(*tally));
	tally->first_whole = -1;
	for (int r = 0; r < n_reqs; r++)
	{
		if (!zim_failed_whole(&reqs[r]))
			continue;
		if (tally->first_whole < 0)
			tally->first_whole = r;
		tally->n_whole++;
		if (ZimRequestTransient(&reqs[r]))
			tally->transient = true;
	}
}

/*
 * Hand fn each conversation that the requests of one call did not change:
 * each ErrorList entry (strict: a malformed entry raises ZP005, else it is
 * skipped) and, if whole_too, every conversation of a request that failed
 * as a whole, with that request's Code and text.  Fills *tally and counts
 * the conversations in the statistics.
 */
void
ZimConvPinnedFailures(const ZimRequest *reqs, const ZimConv *convs, int n_convs,
					  bool strict, bool whole_too, ZimConvFailureFn fn, void *arg,
					  ZimConvTally *tally)
{
	int			n_reqs = ZimConvPinnedRequestCount(n_convs);
	int			chunk = zim_max_convs_per_request;

	ZimConvPinnedTally(reqs, n_convs, tally);
	for (int r = 0; r < n_reqs; r++)
	{
		const ZimRequest *req = &reqs[r];
		int			first = r * chunk;
		int			count = Min(chunk, n_convs - first);

		if (zim_failed_whole(req))
		{
			ZimConvFailure f;

			tally->failed += count;
			if (!whole_too)
				continue;
			ZimRequestOutcome(req, &f.has_code, &f.sub_code, &f.sub_message);
			for (int k = 0; k < count; k++)
			{
				f.conv_id = convs[first + k].id;
				f.conv_type = convs[first + k].type;
				fn(&f, arg);
			}
		}
		else
		{
			ZimConvFailure *items;
			int			rows = zim_error_list(req->response.jsonb, strict, &items);

			for (int k = 0; k < rows; k++)
				fn(&items[k], arg);
			tally->failed += rows;
			tally->changed += count - rows;
		}
	}
	ZimStatsConvs("ConvPinned", tally->changed, tally->failed);
}

/*
 * ConvPinned as a kind of the family, for the queue: the same bodies and
 * chunks as zim_conv_pinned, and its ErrorList.
 */
static void
zim_pinned_read_args(FunctionCallInfo fcinfo, ZimConvCall *call)
{
	call->on = PG_GETARG_BOOL(3);
}

static int
zim_pinned_n_requests(const ZimConvCall *call)
{
	return ZimConvPinnedRequestCount(call->n);
}

static void
zim_pinned_build(ZimConvCall *call, ZimRequest *reqs, ZimConvSpan *spans)
{
	int			chunk = zim_max_convs_per_request;

	ZimConvPinnedRequests(call->from_user_id, call->convs, call->n, call->on, reqs);
	for (int c = 0; c * chunk < call->n; c++)
	{
		spans[c].first = c * chunk;
		spans[c].n = Min(chunk, call->n - c * chunk);
	}
}

static void
zim_pinned_items(const ZimConvCall *call, const ZimRequest *req, const ZimConvSpan *span,
				 bool strict, ZimConvFailureFn fn, void *arg)
{
	ZimConvFailure *items;
	int			rows = zim_error_list(req->response.jsonb, strict, &items);

	for (int k = 0; k < rows; k++)
		fn(&items[k], arg);
}

static const char *const pinned_args[] = {"pinned"};

const ZimConvKind ZimConvPinnedKind = {
	.action = "ConvPinned",
	.arg_names = pinned_args,
	.n_args = 1,
	.per_request = 0,
	.read_args = zim_pinned_read_args,
	.n_requests = zim_pinned_n_requests,
	.build = zim_pinned_build,
	.items = zim_pinned_items,
};

/* a failure as a result row of zim_conv_pinned */
static void
zim_put_row(const ZimConvFailure *f, void *arg)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) arg;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	values[0] = CStringGetTextDatum(f->conv_id);
	values[1] = Int32GetDatum(f->conv_type);
	values[2] = Int64GetDatum(f->sub_code);
	if (f->sub_message)
		values[3] = CStringGetTextDatum(f->sub_message);
	else
		nulls[3] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* raise the first whole failure of a call, saying what the others did */
static void
zim_raise_whole(const ZimRequest *reqs, int n_convs, const ZimConvTally *tally)
{
	const ZimRequest *bad = &reqs[tally->first_whole];
	int			chunk = zim_max_convs_per_request;
	int			n_reqs = ZimConvPinnedRequestCount(n_convs);
	int			first = tally->first_whole * chunk;
	char	   *where = NULL;

	if (n_reqs > 1)
		where = psprintf("Request %d of %d (conversations %d to %d) failed; "
						 "%d of the %d requests failed, the others changed their conversations.",
						 tally->first_whole + 1, n_reqs, first + 1, Min(first + chunk, n_convs),
						 tally->n_whole, n_reqs);
	if (bad->state == ZIM_REQ_FAILED)
		ZimRaiseFailure("ConvPinned", ZIM_RETRY_IDEMPOTENT, bad, where);
	ZimRaiseForCode("ConvPinned", bad, where);
}

static Datum
zim_conv_pinned_common(FunctionCallInfo fcinfo, bool one_type)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *from_user_id;
	ZimConv    *convs;
	bool		pinned;
	int			n;
	int			n_reqs;
	ZimRequest *reqs;
	ZimConvTally tally;
	MemoryContext work;
	MemoryContext oldcxt;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	/*
	 * Everything but the rows lives in a context of this call, deleted
	 * before it returns: a statement that calls us once per row must not
	 * keep every call's requests and answers until it ends.
	 */
	work = AllocSetContextCreate(CurrentMemoryContext, "zim_pin call",
								 ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(work);

	n = ZimConvPinnedReadArgs(fcinfo, one_type, &from_user_id, &convs, &pinned);
	if (n > 0)
	{
		/* one signed request per chunk, all sent concurrently */
		n_reqs = ZimConvPinnedRequestCount(n);
		reqs = palloc0(sizeof(ZimRequest) * n_reqs);
		ZimConvPinnedRequests(from_user_id, convs, n, pinned, reqs);

		ZimSendRequests("ConvPinned", ZIM_RETRY_IDEMPOTENT, reqs, n_reqs, -1);

		ZimConvPinnedFailures(reqs, convs, n, true, false, zim_put_row, rsinfo, &tally);
		if (tally.first_whole >= 0)
			zim_raise_whole(reqs, n, &tally);
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(work);
	return (Datum) 0;
}

/*
 * zim_conv_pinned(from_user_id text, conv_ids text[], conv_types int[],
 *				   pinned boolean)
 */
Datum
zim_conv_pinned(PG_FUNCTION_ARGS)
{
	return zim_conv_pinned_common(fcinfo, false);
}

/*
 * zim_conv_pinned(from_user_id text, conv_ids text[], conv_type int,
 *				   pinned boolean)
 */
Datum
zim_conv_pinned_one_type(PG_FUNCTION_ARGS)
{
	return zim_conv_pinned_common(fcinfo, true);
}
