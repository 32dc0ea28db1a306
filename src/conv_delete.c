/*-------------------------------------------------------------------------
 *
 * conv_delete.c
 *	  DeleteConv: delete conversations for one user only (others keep
 *	  theirs), zim_delete_conv().
 *
 * A request holds one conversation and its answer only a Code: a Code
 * that concerns that conversation alone (ZimConvCodeIsOwn) is its row, and
 * the others fail the call as a failed ConvPinned request does.  The
 * requests go out concurrently under the limiter.  Everything else is
 * conv_family.c's.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "utils/json.h"

PG_FUNCTION_INFO_V1(zim_delete_conv);
PG_FUNCTION_INFO_V1(zim_delete_conv_one_type);

static int
zim_delete_n_requests(const ZimConvCall *call)
{
	return call->n;
}

static void
zim_delete_build(ZimConvCall *call, ZimRequest *reqs, ZimConvSpan *spans)
{
	for (int i = 0; i < call->n; i++)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"FromUserId\":");
		escape_json(&buf, call->from_user_id);
		appendStringInfoString(&buf, ",\"ConvId\":");
		escape_json(&buf, call->convs[i].id);
		appendStringInfo(&buf, ",\"ConvType\":%d}", call->convs[i].type);
		reqs[i].body = ZimConvUtf8(&buf);
		spans[i].first = i;
		spans[i].n = 1;
	}
}

const ZimConvKind ZimDeleteKind = {
	.action = "DeleteConv",
	.per_request = 1,
	.n_requests = zim_delete_n_requests,
	.build = zim_delete_build,
	.code_is_item = ZimConvCodeIsOwn,
};

/* zim_delete_conv(from_user_id text, conv_ids text[], conv_types int[]) */
Datum
zim_delete_conv(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimDeleteKind, false);
}

/* zim_delete_conv(from_user_id text, conv_ids text[], conv_type int) */
Datum
zim_delete_conv_one_type(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimDeleteKind, true);
}
