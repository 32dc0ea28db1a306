/*-------------------------------------------------------------------------
 *
 * conv_silence.c
 *	  SilenceConvNotification: mute or unmute conversations' notifications,
 *	  zim_silence_conv_notification().
 *
 * A request holds at most ten conversations, all of one type; its
 * ErrorList entries carry no ConvType, so a row takes the type its request
 * asked for.  660800051 (already muted) and 660800052 (already unmuted)
 * say that the state asked for holds: no row.  Everything else is
 * conv_family.c's.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(zim_silence_conv_notification);
PG_FUNCTION_INFO_V1(zim_silence_conv_notification_one_type);

/* the vendor's limit of conversations in one request */
#define SILENCE_MAX_CONVS	10

#define CODE_ALREADY_MUTED		660800051
#define CODE_ALREADY_UNMUTED	660800052

static void
zim_silence_read_args(FunctionCallInfo fcinfo, ZimConvCall *call)
{
	call->on = PG_GETARG_BOOL(3);
}

static int
zim_silence_n_requests(const ZimConvCall *call)
{
	int			n0 = 0;

	for (int i = 0; i < call->n; i++)
		n0 += call->convs[i].type == 0;
	return (n0 + SILENCE_MAX_CONVS - 1) / SILENCE_MAX_CONVS +
		(call->n - n0 + SILENCE_MAX_CONVS - 1) / SILENCE_MAX_CONVS;
}

/* the conversations by type (one-to-one first, each in the order given), in chunks */
static void
zim_silence_build(ZimConvCall *call, ZimRequest *reqs, ZimConvSpan *spans)
{
	ZimConv    *sorted = palloc(sizeof(ZimConv) * call->n);
	int			k = 0;
	int			r = 0;

	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < call->n; i++)
			if ((call->convs[i].type == 0) == (pass == 0))
				sorted[k++] = call->convs[i];
	call->convs = sorted;

	for (int first = 0; first < call->n; r++)
	{
		int			type = call->convs[first].type;
		int			n = 0;
		StringInfoData buf;

		while (first + n < call->n && n < SILENCE_MAX_CONVS && call->convs[first + n].type == type)
			n++;
		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"FromUserId\":");
		escape_json(&buf, call->from_user_id);
		appendStringInfo(&buf, ",\"ConvType\":%d,\"ConvIds\":[", type);
		for (int i = 0; i < n; i++)
		{
			if (i > 0)
				appendStringInfoChar(&buf, ',');
			escape_json(&buf, call->convs[first + i].id);
		}
		appendStringInfo(&buf, "],\"Enable\":%s}", call->on ? "true" : "false");
		reqs[r].body = ZimConvUtf8(&buf);
		spans[r].first = first;
		spans[r].n = n;
		first += n;
	}
}

/* each ErrorList entry {ConvId, SubCode, SubMessage}, with its request's type */
static void
zim_silence_items(const ZimConvCall *call, const ZimRequest *req, const ZimConvSpan *span,
				  bool strict, ZimConvFailureFn fn, void *arg)
{
	JsonbValue *list = ZimJsonGet(req->response.jsonb, "ErrorList");
	int			n = list && list->type == jbvBinary ? JsonContainerSize(list->val.binary.data) : 0;

	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(list->val.binary.data, i);
		JsonbValue	id;
		JsonbValue	sub;
		JsonbValue	msg;
		ZimConvFailure f = {0};

		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data) ||
			!getKeyJsonValueFromContainer(v->val.binary.data, "ConvId", 6, &id) ||
			id.type != jbvString ||
			!getKeyJsonValueFromContainer(v->val.binary.data, "SubCode", 7, &sub) ||
			!ZimJsonInt64(&sub, &f.sub_code))
		{
			if (!strict)
				continue;		/* the queue records what it can */
			ereport(ERROR,
					(errcode(ERRCODE_ZIM_BAD_RESPONSE),
					 errmsg("invalid answer from the ZIM server"),
					 errdetail("An entry of \"ErrorList\" has no string \"ConvId\" and integer \"SubCode\"."),
					 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
		}
		f.conv_id = pnstrdup(id.val.string.val, id.val.string.len);
		f.conv_type = call->convs[span->first].type;
		f.has_code = true;
		if (getKeyJsonValueFromContainer(v->val.binary.data, "SubMessage", 10, &msg) &&
			msg.type == jbvString)
			f.sub_message = pnstrdup(msg.val.string.val, msg.val.string.len);
		fn(&f, arg);
	}
}

static bool
zim_silence_done(int64 code)
{
	return code == CODE_ALREADY_MUTED || code == CODE_ALREADY_UNMUTED;
}

static const char *const silence_args[] = {"silenced"};

const ZimConvKind ZimSilenceKind = {
	.action = "SilenceConvNotification",
	.arg_names = silence_args,
	.n_args = 1,
	.per_request = SILENCE_MAX_CONVS,
	.read_args = zim_silence_read_args,
	.n_requests = zim_silence_n_requests,
	.build = zim_silence_build,
	.items = zim_silence_items,
	.code_is_done = zim_silence_done,
};

/*
 * zim_silence_conv_notification(from_user_id text, conv_ids text[],
 *								 conv_types int[], silenced boolean)
 */
Datum
zim_silence_conv_notification(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimSilenceKind, false);
}

/*
 * zim_silence_conv_notification(from_user_id text, conv_ids text[],
 *								 conv_type int, silenced boolean)
 */
Datum
zim_silence_conv_notification_one_type(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimSilenceKind, true);
}
