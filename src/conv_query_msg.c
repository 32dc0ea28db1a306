/*-------------------------------------------------------------------------
 *
 * conv_query_msg.c
 *	  QueryPeerMsg and QueryGroupMsg: the messages of a one-to-one chat or
 *	  of a group as rows, zim_query_peer_msg() and zim_query_group_msg().
 *
 * The two Actions differ only in who the chat is (FromUserId and ToUserId,
 * or GroupId), so they share this file.  Pages of up to 100 (never more
 * than the rows still wanted) through the limiter, until Next is 0 or
 * max_rows rows have come (conv_family.c's pager says when else paging
 * stops); rows in ZIM's order, newest first.  MsgId and MsgSeq are read
 * exactly from the JSON text (jsonb keeps numbers as numeric, never as a
 * double).  A media message's (MsgType 10 to 14) MsgBody is URL-encoded
 * JSON: media is that JSON, decoded (%XX sequences only, as RFC 3986
 * encodes; a "+" stays a "+"), or NULL if it is not JSON.  A page that
 * fails raises, and nothing is returned.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(zim_query_peer_msg);
PG_FUNCTION_INFO_V1(zim_query_group_msg);

#define MSG_PAGE_MAX	100
#define MSG_COLUMNS		10

static int
zim_hex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* a media body, URL-decoded (as UTF-8) and read as JSON; NULL if it is not */
static Jsonb *
zim_msg_media(const char *body)
{
	char	   *utf8 = pg_server_to_any(body, strlen(body), PG_UTF8);
	char	   *out = palloc(strlen(utf8) + 1);
	int			o = 0;

	for (const char *p = utf8; *p; p++)
	{
		if (*p == '%' && zim_hex(p[1]) >= 0 && zim_hex(p[2]) >= 0)
		{
			out[o++] = (char) (zim_hex(p[1]) * 16 + zim_hex(p[2]));
			p += 2;
		}
		else
			out[o++] = *p;
	}
	out[o] = '\0';
	return o > 0 ? ZimJsonParseText(out, o) : NULL;
}

/* a member of an entry: an exact integer, or a string; false if absent or another type */
static bool
zim_msg_int(JsonbContainer *obj, const char *key, int64 *out)
{
	JsonbValue	v;

	return getKeyJsonValueFromContainer(obj, key, strlen(key), &v) && ZimJsonInt64(&v, out);
}

static bool
zim_msg_text(JsonbContainer *obj, const char *key, Datum *out, bool *isnull)
{
	JsonbValue	v;

	*isnull = true;
	if (!getKeyJsonValueFromContainer(obj, key, strlen(key), &v) || v.type == jbvNull)
		return true;
	if (v.type != jbvString)
		return false;
	*out = PointerGetDatum(cstring_to_text_with_len(v.val.string.val, v.val.string.len));
	*isnull = false;
	return true;
}

/* one List entry as a row */
/* what zim_msg_row needs */
typedef struct MsgRows
{
	ReturnSetInfo *rsinfo;
	const char *action;
} MsgRows;

static void
zim_msg_row(void *arg, JsonbValue *v)
{
	ReturnSetInfo *rsinfo = ((MsgRows *) arg)->rsinfo;
	const char *action = ((MsgRows *) arg)->action;
	Datum		values[MSG_COLUMNS];
	bool		nulls[MSG_COLUMNS] = {0};
	JsonbContainer *obj;
	int64		id;
	int64		seq;
	int64		type;
	int64		sub = 0;
	int64		ms;
	int64		empty = 0;
	TimestampTz ts = 0;

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ZimConvBadAnswer(action, "has a \"List\" entry that is not an object");
	obj = v->val.binary.data;
	if (!zim_msg_int(obj, "MsgId", &id) || !zim_msg_int(obj, "MsgSeq", &seq) ||
		!zim_msg_int(obj, "MsgType", &type) || type < PG_INT32_MIN || type > PG_INT32_MAX ||
		!zim_msg_int(obj, "MsgTime", &ms) || !ZimConvMsToTimestamp(ms, &ts))
		ZimConvBadAnswer(action, "has a message without integer \"MsgId\", \"MsgSeq\", \"MsgType\" and \"MsgTime\"");
	(void) zim_msg_int(obj, "SubMsgType", &sub);
	(void) zim_msg_int(obj, "IsEmpty", &empty);
	if (sub < PG_INT32_MIN || sub > PG_INT32_MAX || empty < PG_INT32_MIN || empty > PG_INT32_MAX ||
		!zim_msg_text(obj, "Sender", &values[2], &nulls[2]) ||
		!zim_msg_text(obj, "MsgBody", &values[5], &nulls[5]) ||
		!zim_msg_text(obj, "Payload", &values[7], &nulls[7]))
		ZimConvBadAnswer(action, "has a message whose \"Sender\", \"MsgBody\" or \"Payload\" is not a string");

	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(seq);
	values[3] = Int32GetDatum((int32) type);
	values[4] = Int32GetDatum((int32) sub);
	nulls[6] = true;
	if (type >= 10 && type <= 14 && !nulls[5])
	{
		Jsonb	   *media = zim_msg_media(TextDatumGetCString(values[5]));

		if (media)
		{
			values[6] = JsonbPGetDatum(media);
			nulls[6] = false;
		}
	}
	values[8] = TimestampTzGetDatum(ts);
	values[9] = Int32GetDatum((int32) empty);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* page through one chat's messages: who is the body's opening members */
static void
zim_msg_pages(ReturnSetInfo *rsinfo, const char *action, const char *who, int max_rows,
			  bool with_empty)
{
	ZimConvPager pager;
	MsgRows		rows = {rsinfo, action};

	ZimConvPagerInit(&pager, action, max_rows, MSG_PAGE_MAX);
	ZimConvPages(&pager, who, with_empty ? ",\"WithEmptyMsg\":1" : ",\"WithEmptyMsg\":0",
				 zim_msg_row, &rows);
}

/*
 * zim_query_peer_msg(from_user_id text, to_user_id text, max_rows int,
 *					  with_empty boolean)
 */
Datum
zim_query_peer_msg(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext work;
	MemoryContext oldcxt;
	StringInfoData who;
	char	   *from;
	char	   *to;
	int			max_rows;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	work = AllocSetContextCreate(CurrentMemoryContext, "zim_pin call", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(work);

	ZimRequireNotNull(fcinfo, 0, "from_user_id");
	ZimRequireNotNull(fcinfo, 1, "to_user_id");
	ZimRequireNotNull(fcinfo, 3, "with_empty");
	from = text_to_cstring(PG_GETARG_TEXT_PP(0));
	to = text_to_cstring(PG_GETARG_TEXT_PP(1));
	max_rows = ZimConvReadMaxRows(fcinfo, 2);
	ZimConvCheckUserId(from, "from_user_id");
	ZimConvCheckUserId(to, "to_user_id");

	initStringInfo(&who);
	appendStringInfoString(&who, "\"FromUserId\":");
	escape_json(&who, from);
	appendStringInfoString(&who, ",\"ToUserId\":");
	escape_json(&who, to);
	zim_msg_pages(rsinfo, "QueryPeerMsg", who.data, max_rows, PG_GETARG_BOOL(3));

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(work);
	return (Datum) 0;
}

/* zim_query_group_msg(group_id text, max_rows int, with_empty boolean) */
Datum
zim_query_group_msg(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext work;
	MemoryContext oldcxt;
	StringInfoData who;
	char	   *group;
	int			max_rows;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	work = AllocSetContextCreate(CurrentMemoryContext, "zim_pin call", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(work);

	ZimRequireNotNull(fcinfo, 0, "group_id");
	ZimRequireNotNull(fcinfo, 2, "with_empty");
	group = text_to_cstring(PG_GETARG_TEXT_PP(0));
	max_rows = ZimConvReadMaxRows(fcinfo, 1);
	ZimConvCheckId(group, "group_id");

	initStringInfo(&who);
	appendStringInfoString(&who, "\"GroupId\":");
	escape_json(&who, group);
	zim_msg_pages(rsinfo, "QueryGroupMsg", who.data, max_rows, PG_GETARG_BOOL(2));

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(work);
	return (Datum) 0;
}
