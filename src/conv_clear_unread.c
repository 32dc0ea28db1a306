/*-------------------------------------------------------------------------
 *
 * conv_clear_unread.c
 *	  ClearConversationUnread: clear conversations' unread counts,
 *	  zim_clear_conversation_unread().
 *
 * The one GET of the family: no body, the parameters URL-encoded in the
 * query string after the signed ones (a user id may hold + & # = ? % and
 * spaces).  A request holds one conversation and its answer only a Code,
 * read as DeleteConv's: a Code that concerns that conversation alone
 * (660800002: not among the user's latest 1000, or no such conversation)
 * is its row.  Everything else is conv_family.c's.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

PG_FUNCTION_INFO_V1(zim_clear_conversation_unread);
PG_FUNCTION_INFO_V1(zim_clear_conversation_unread_one_type);

static int
zim_clear_n_requests(const ZimConvCall *call)
{
	return call->n;
}

static void
zim_clear_build(ZimConvCall *call, ZimRequest *reqs, ZimConvSpan *spans)
{
	for (int i = 0; i < call->n; i++)
	{
		StringInfoData query;

		initStringInfo(&query);
		ZimConvQueryParam(&query, "FromUserId", call->from_user_id);
		ZimConvQueryParam(&query, "ConvId", call->convs[i].id);
		appendStringInfo(&query, "&ConvType=%d", call->convs[i].type);
		reqs[i].body = NULL;
		reqs[i].query = query.data;
		spans[i].first = i;
		spans[i].n = 1;
	}
}

const ZimConvKind ZimClearUnreadKind = {
	.action = "ClearConversationUnread",
	.per_request = 1,
	.n_requests = zim_clear_n_requests,
	.build = zim_clear_build,
	.code_is_item = ZimConvCodeIsOwn,
};

/* zim_clear_conversation_unread(from_user_id text, conv_ids text[], conv_types int[]) */
Datum
zim_clear_conversation_unread(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimClearUnreadKind, false);
}

/* zim_clear_conversation_unread(from_user_id text, conv_ids text[], conv_type int) */
Datum
zim_clear_conversation_unread_one_type(PG_FUNCTION_ARGS)
{
	return ZimConvFamilyCall(fcinfo, &ZimClearUnreadKind, true);
}
