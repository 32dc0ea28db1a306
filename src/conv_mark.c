/*-------------------------------------------------------------------------
 *
 * conv_mark.c
 *	  SetConvMark: set or cancel a mark (1..30) on conversations,
 *	  zim_set_conv_mark().
 *
 * A request holds one user's entry (FromUserId and the entry's UserId are
 * both from_user_id) with at most 100 conversations in each of its two
 * maps, one-to-one and group; a conversation named twice with one mark is
 * one key, and one that carries several marks (as the queue merges jobs)
 * goes into as many requests.  The
 * answer's failures have two levels: the entry's SubCode, and its inner
 * FailList of {ConvId, ConvType, Code, Message}.  Inner entries are rows,
 * with their Code and Message; an entry with a non-zero SubCode and no
 * inner list fails each of its conversations with that SubCode.
 * Everything else is conv_family.c's.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(zim_set_conv_mark);
PG_FUNCTION_INFO_V1(zim_set_conv_mark_one_type);

/* the vendor's limit of conversations in one map of an entry */
#define MARK_MAX_PER_MAP	100
#define MARK_MIN			1
#define MARK_MAX			30

static void
zim_mark_read_args(FunctionCallInfo fcinfo, ZimConvCall *call)
{
	call->mark = PG_GETARG_INT32(3);
	call->on = PG_GETARG_BOOL(4);
	if (call->mark < MARK_MIN || call->mark > MARK_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mark must be between %d and %d", MARK_MIN, MARK_MAX),
				 errdetail("mark is %d.", call->mark)));
	for (int i = 0; i < call->n; i++)
		call->convs[i].mark = call->mark;
}

/*
 * Where the conversations of one map go.  A conversation is one key of a
 * map, so a conversation that carries several marks (the queue merges
 * jobs of different marks) goes into as many requests; a key named twice
 * with one mark is sent once, in the request of its first.  A map needs
 * max(ceil(keys / 100), most marks of one conversation) requests, the
 * fewest there can be.  With one mark per conversation (every synchronous
 * call) the keys go in the order given, a hundred a request; otherwise a
 * key's request is its rank among the keys sorted by id, modulo that
 * number, which puts a conversation's marks into different requests and
 * at most 100 keys into each.
 */
typedef struct MarkSlot
{
	int			index;			/* in the call's conversations */
	int			first;			/* the index of the first of its key */
} MarkSlot;

static int
zim_mark_slot_by_key(const void *a, const void *b, void *arg)
{
	const ZimConv *convs = (const ZimConv *) arg;
	const ZimConv *x = &convs[((const MarkSlot *) a)->index];
	const ZimConv *y = &convs[((const MarkSlot *) b)->index];
	int			c = strcmp(x->id, y->id);

	if (c != 0)
		return c;
	if (x->mark != y->mark)
		return x->mark < y->mark ? -1 : 1;
	return ((const MarkSlot *) a)->index - ((const MarkSlot *) b)->index;
}

/* fill req_of for the conversations of one type; returns the requests they need */
static int
zim_mark_place(const ZimConv *convs, int n_convs, int type, int *req_of)
{
	MarkSlot   *slots = palloc(sizeof(MarkSlot) * Max(n_convs, 1));
	int			n = 0;
	int			keys = 0;
	int			most = 0;
	int			run = 0;
	int			n_reqs;
	int			rank = 0;

	for (int i = 0; i < n_convs; i++)
		if (convs[i].type == type)
			slots[n++] = (MarkSlot) {i, i};
	qsort_arg(slots, n, sizeof(MarkSlot), zim_mark_slot_by_key, (void *) convs);
	for (int i = 0; i < n; i++)
	{
		const ZimConv *c = &convs[slots[i].index];
		const ZimConv *p = i > 0 ? &convs[slots[i - 1].index] : NULL;

		if (p && strcmp(p->id, c->id) == 0 && p->mark == c->mark)
		{
			slots[i].first = slots[i - 1].first;
			continue;
		}
		keys++;
		run = p && strcmp(p->id, c->id) == 0 ? run + 1 : 1;
		most = Max(most, run);
	}
	n_reqs = Max((keys + MARK_MAX_PER_MAP - 1) / MARK_MAX_PER_MAP, most);
	if (most <= 1)
	{
		/* in the order given: every first of a key comes before its repeats */
		for (int i = 0; i < n; i++)
			req_of[slots[i].index] = slots[i].first;	/* for now: its first */
		for (int i = 0; i < n_convs; i++)
			if (convs[i].type == type)
				req_of[i] = req_of[i] == i ? rank++ / MARK_MAX_PER_MAP : req_of[req_of[i]];
	}
	else
		for (int i = 0; i < n; i++)
			req_of[slots[i].index] = slots[i].first == slots[i].index
				? rank++ % n_reqs : req_of[slots[i].first];
	pfree(slots);
	return n_reqs;
}

/* every conversation in no request yet */
static int *
zim_mark_req_of(int n)
{
	int		   *req_of = palloc(sizeof(int) * Max(n, 1));

	for (int i = 0; i < n; i++)
		req_of[i] = -1;
	return req_of;
}

static int
zim_mark_n_requests(const ZimConvCall *call)
{
	int		   *req_of = zim_mark_req_of(call->n);
	int			n = Max(zim_mark_place(call->convs, call->n, 0, req_of),
						zim_mark_place(call->convs, call->n, 2, req_of));

	pfree(req_of);
	return n;
}

/* one map of an entry: the conversations of one type, each key once */
static void
zim_mark_map(StringInfo buf, const char *name, const ZimConv *convs, int n)
{
	bool		first = true;

	if (n == 0)
		return;
	appendStringInfo(buf, ",\"%s\":{", name);
	for (int i = 0; i < n; i++)
	{
		bool		dup = false;

		for (int j = 0; j < i && !dup; j++)
			dup = strcmp(convs[j].id, convs[i].id) == 0;
		if (dup)
			continue;
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		escape_json(buf, convs[i].id);
		appendStringInfo(buf, ":{\"MarkContent\":%d}", convs[i].mark);
	}
	appendStringInfoChar(buf, '}');
}

/*
 * Each request takes the conversations placed in it (zim_mark_place), put
 * side by side (one-to-one, then group, each in the order given), so that
 * its span is a range.
 */
static void
zim_mark_build(ZimConvCall *call, ZimRequest *reqs, ZimConvSpan *spans)
{
	int		   *req_of = zim_mark_req_of(call->n);
	int			n_reqs = Max(zim_mark_place(call->convs, call->n, 0, req_of),
							 zim_mark_place(call->convs, call->n, 2, req_of));
	ZimConv    *sorted = palloc(sizeof(ZimConv) * Max(call->n, 1));
	int			k = 0;

	for (int r = 0; r < n_reqs; r++)
	{
		StringInfoData buf;
		int			first = k;
		int			n0 = 0;

		for (int t = 0; t < 2; t++)
		{
			for (int i = 0; i < call->n; i++)
				if ((call->convs[i].type == 0) == (t == 0) && req_of[i] == r)
					sorted[k++] = call->convs[i];
			if (t == 0)
				n0 = k - first;
		}
		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"FromUserId\":");
		escape_json(&buf, call->from_user_id);
		appendStringInfoString(&buf, ",\"ConvMarkInfoList\":[{\"UserId\":");
		escape_json(&buf, call->from_user_id);
		zim_mark_map(&buf, "SetMarkC2c", sorted + first, n0);
		zim_mark_map(&buf, "SetMarkGroup", sorted + first + n0, k - first - n0);
		appendStringInfo(&buf, ",\"Action\":%s}]}", call->on ? "true" : "false");
		reqs[r].body = ZimConvUtf8(&buf);
		spans[r].first = first;
		spans[r].n = k - first;
	}
	call->convs = sorted;
}

static void
zim_mark_bad_answer(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_ZIM_BAD_RESPONSE),
			 errmsg("invalid answer from the ZIM server"),
			 errdetail("An entry of \"FailList\" %s.", what),
			 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
}

/* a string member of obj, or NULL */
static char *
zim_mark_string(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!getKeyJsonValueFromContainer(obj, key, strlen(key), &v) || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * The inner entries {ConvId, ConvType, Code, Message} of one user's entry;
 * returns how many there are.  strict: a malformed one raises ZP005, else
 * it is skipped.
 */
static int
zim_mark_inner(JsonbContainer *entry, bool strict, ZimConvFailureFn fn, void *arg)
{
	JsonbValue	list;
	int			n;

	if (!getKeyJsonValueFromContainer(entry, "FailList", 8, &list) || list.type == jbvNull)
		return 0;
	if (list.type != jbvBinary || !JsonContainerIsArray(list.val.binary.data))
	{
		if (strict)
			zim_mark_bad_answer("has a \"FailList\" that is not an array");
		return 0;
	}
	n = JsonContainerSize(list.val.binary.data);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(list.val.binary.data, i);
		JsonbValue	t;
		JsonbValue	c;
		int64		type;
		ZimConvFailure f = {0};

		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data) ||
			(f.conv_id = zim_mark_string(v->val.binary.data, "ConvId")) == NULL ||
			!getKeyJsonValueFromContainer(v->val.binary.data, "ConvType", 8, &t) ||
			!ZimJsonInt64(&t, &type) || (type != 0 && type != 2) ||
			!getKeyJsonValueFromContainer(v->val.binary.data, "Code", 4, &c) ||
			!ZimJsonInt64(&c, &f.sub_code))
		{
			if (strict)
				zim_mark_bad_answer("has an inner entry without string \"ConvId\", integer \"ConvType\" and \"Code\"");
			continue;
		}
		f.conv_type = (int32) type;
		f.has_code = true;
		f.sub_message = zim_mark_string(v->val.binary.data, "Message");
		fn(&f, arg);
	}
	return n;
}

/* the FailList of an answered request (one user's entry at most) */
static void
zim_mark_items(const ZimConvCall *call, const ZimRequest *req, const ZimConvSpan *span,
			   bool strict, ZimConvFailureFn fn, void *arg)
{
	JsonbValue *list = ZimJsonGet(req->response.jsonb, "FailList");
	int			n = list && list->type == jbvBinary ? JsonContainerSize(list->val.binary.data) : 0;

	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(list->val.binary.data, i);
		JsonbValue	sub;
		int64		sub_code = 0;

		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		{
			if (strict)
				zim_mark_bad_answer("is not an object");
			continue;
		}
		if (getKeyJsonValueFromContainer(v->val.binary.data, "SubCode", 7, &sub) &&
			sub.type != jbvNull && !ZimJsonInt64(&sub, &sub_code))
		{
			if (strict)
				zim_mark_bad_answer("has a \"SubCode\" that is not an integer");
			continue;
		}
		if (zim_mark_inner(v->val.binary.data, strict, fn, arg) > 0 || sub_code == 0)
			continue;
		/* the user's entry failed with no list: each of its conversations */
		for (int k = span->first; k < span->first + span->n; k++)
		{
			ZimConvFailure f = {call->convs[k].id, call->convs[k].type, true, sub_code,
			zim_mark_string(v->val.binary.data, "SubMessage")};

			fn(&f, arg);
		}
	}
}

static const char *const mark_args[] = {"mark", "marked"};

const ZimConvKind ZimMarkKind = {
	.action = "SetConvMark",
	.arg_names = mark_args,
	.n_args = 2,
	.per_request = MARK_MAX_PER_MAP,
	.read_args = zim_mark_read_args,
	.n_requests = zim_mark_n_requests,
	.build = zim_mark_build,
	.items = zim_mark_items,
};

/*
 * zim_set_conv_mark(from_user_id text, conv_ids text[], conv_types int[],
 *					 mark int, marked boolean)
 */
Datum
zim_set_conv_mark(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimMarkKind, false);
}

/*
 * zim_set_conv_mark(from_user_id text, conv_ids text[], conv_type int,
 *					 mark int, marked boolean)
 */
Datum
zim_set_conv_mark_one_type(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimMarkKind, true);
}
