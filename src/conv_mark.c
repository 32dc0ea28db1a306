/*-------------------------------------------------------------------------
 *
 * conv_mark.c
 *	  SetConvMark: set or cancel a mark (1..30) on conversations,
 *	  zim_set_conv_mark().
 *
 * A request holds one user's entry (FromUserId and the entry's UserId are
 * both from_user_id) with at most 100 conversations in each of its two
 * maps, one-to-one and group; a conversation named twice is one key.  The
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
}

static int
zim_mark_count(const ZimConvCall *call, int type)
{
	int			n = 0;

	for (int i = 0; i < call->n; i++)
		n += call->convs[i].type == type;
	return n;
}

static int
zim_mark_n_requests(const ZimConvCall *call)
{
	int			n0 = zim_mark_count(call, 0);
	int			n2 = call->n - n0;

	return Max((n0 + MARK_MAX_PER_MAP - 1) / MARK_MAX_PER_MAP,
			   (n2 + MARK_MAX_PER_MAP - 1) / MARK_MAX_PER_MAP);
}

/* one map of an entry: the conversations of one type, each key once */
static void
zim_mark_map(StringInfo buf, const char *name, const ZimConv *convs, int n, int32 mark)
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
		appendStringInfo(buf, ":{\"MarkContent\":%d}", mark);
	}
	appendStringInfoChar(buf, '}');
}

/*
 * Request r takes the r-th hundred of each type: its conversations are
 * put side by side (one-to-one, then group), so that its span is a range.
 */
static void
zim_mark_build(ZimConvCall *call, ZimRequest *reqs, ZimConvSpan *spans)
{
	int			n_reqs = zim_mark_n_requests(call);
	ZimConv    *by_type[2];
	int			n_by_type[2] = {0, 0};
	ZimConv    *sorted = palloc(sizeof(ZimConv) * call->n);
	int			k = 0;

	by_type[0] = palloc(sizeof(ZimConv) * call->n);
	by_type[1] = palloc(sizeof(ZimConv) * call->n);
	for (int i = 0; i < call->n; i++)
	{
		int			t = call->convs[i].type == 0 ? 0 : 1;

		by_type[t][n_by_type[t]++] = call->convs[i];
	}
	for (int r = 0; r < n_reqs; r++)
	{
		StringInfoData buf;
		int			first = k;
		int			n[2];

		for (int t = 0; t < 2; t++)
		{
			int			from = r * MARK_MAX_PER_MAP;

			n[t] = Max(0, Min(MARK_MAX_PER_MAP, n_by_type[t] - from));
			for (int i = 0; i < n[t]; i++)
				sorted[k++] = by_type[t][from + i];
		}
		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"FromUserId\":");
		escape_json(&buf, call->from_user_id);
		appendStringInfoString(&buf, ",\"ConvMarkInfoList\":[{\"UserId\":");
		escape_json(&buf, call->from_user_id);
		zim_mark_map(&buf, "SetMarkC2c", sorted + first, n[0], call->mark);
		zim_mark_map(&buf, "SetMarkGroup", sorted + first + n[0], n[1], call->mark);
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

/* the inner entries {ConvId, ConvType, Code, Message} of one user's entry */
static int
zim_mark_inner(JsonbContainer *entry, ZimConvFailureFn fn, void *arg)
{
	JsonbValue	list;
	int			n;

	if (!getKeyJsonValueFromContainer(entry, "FailList", 8, &list) || list.type == jbvNull)
		return 0;
	if (list.type != jbvBinary || !JsonContainerIsArray(list.val.binary.data))
		zim_mark_bad_answer("has a \"FailList\" that is not an array");
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
			zim_mark_bad_answer("has an inner entry without string \"ConvId\", integer \"ConvType\" and \"Code\"");
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
			   ZimConvFailureFn fn, void *arg)
{
	JsonbValue *list = ZimJsonGet(req->response.jsonb, "FailList");
	int			n = list && list->type == jbvBinary ? JsonContainerSize(list->val.binary.data) : 0;

	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(list->val.binary.data, i);
		JsonbValue	sub;
		int64		sub_code = 0;

		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			zim_mark_bad_answer("is not an object");
		if (getKeyJsonValueFromContainer(v->val.binary.data, "SubCode", 7, &sub) &&
			sub.type != jbvNull && !ZimJsonInt64(&sub, &sub_code))
			zim_mark_bad_answer("has a \"SubCode\" that is not an integer");
		if (zim_mark_inner(v->val.binary.data, fn, arg) > 0 || sub_code == 0)
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

static const ZimConvKind mark_kind = {
	.action = "SetConvMark",
	.arg_names = mark_args,
	.n_args = 2,
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
	return ZimConvFamilyCall(fcinfo, &mark_kind, false);
}

/*
 * zim_set_conv_mark(from_user_id text, conv_ids text[], conv_type int,
 *					 mark int, marked boolean)
 */
Datum
zim_set_conv_mark_one_type(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &mark_kind, true);
}
