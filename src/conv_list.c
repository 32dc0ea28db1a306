/*-------------------------------------------------------------------------
 *
 * conv_list.c
 *	  QueryConversationList: a user's conversations as rows,
 *	  zim_query_conversation_list().
 *
 * Pages of up to 500 (never more than the rows still wanted) through the
 * limiter, until Next is 0 or max_rows rows have come (conv_family.c's
 * pager says when else paging stops).  Rows come in ZIM's order,
 * ascending UpdateTime; a missing ConvType is 0 (one-to-one).  A page that
 * fails raises, and nothing is returned.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(zim_query_conversation_list);

#define LIST_PAGE_MAX	500

/* one List entry {ConvId, ConvType?, UpdateTime} as a row */
static void
zim_list_row(void *arg, JsonbValue *v)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) arg;
	JsonbValue	id;
	JsonbValue	t;
	JsonbValue	u;
	int64		type = 0;
	int64		ms;
	TimestampTz ts = 0;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data) ||
		!getKeyJsonValueFromContainer(v->val.binary.data, "ConvId", 6, &id) ||
		id.type != jbvString)
		ZimConvBadAnswer("QueryConversationList", "has a \"List\" entry without a string \"ConvId\"");
	if (getKeyJsonValueFromContainer(v->val.binary.data, "ConvType", 8, &t) &&
		t.type != jbvNull && (!ZimJsonInt64(&t, &type) || (type != 0 && type != 2)))
		ZimConvBadAnswer("QueryConversationList", "has a \"ConvType\" that is not 0 or 2");
	if (!getKeyJsonValueFromContainer(v->val.binary.data, "UpdateTime", 10, &u) ||
		u.type == jbvNull)
		nulls[2] = true;
	else if (!ZimJsonInt64(&u, &ms) || !ZimConvMsToTimestamp(ms, &ts))
		ZimConvBadAnswer("QueryConversationList", "has an \"UpdateTime\" that is not a time in milliseconds");

	values[0] = PointerGetDatum(cstring_to_text_with_len(id.val.string.val, id.val.string.len));
	values[1] = Int32GetDatum((int32) type);
	values[2] = TimestampTzGetDatum(ts);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * zim_query_conversation_list(from_user_id text, max_rows int)
 *	 RETURNS TABLE (conv_id text, conv_type int, update_time timestamptz)
 */
Datum
zim_query_conversation_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ZimConvPager pager;
	StringInfoData head;
	char	   *user;
	int			max_rows;
	MemoryContext work;
	MemoryContext oldcxt;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	work = AllocSetContextCreate(CurrentMemoryContext, "zim_pin call", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(work);

	ZimRequireNotNull(fcinfo, 0, "from_user_id");
	user = text_to_cstring(PG_GETARG_TEXT_PP(0));
	max_rows = ZimConvReadMaxRows(fcinfo, 1);
	ZimConvCheckUserId(user, "from_user_id");

	initStringInfo(&head);
	appendStringInfoString(&head, "\"FromUserId\":");
	escape_json(&head, user);
	ZimConvPagerInit(&pager, "QueryConversationList", max_rows, LIST_PAGE_MAX);
	ZimConvPages(&pager, head.data, "", zim_list_row, rsinfo);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(work);
	return (Datum) 0;
}
