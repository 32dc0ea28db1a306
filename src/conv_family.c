/*-------------------------------------------------------------------------
 *
 * conv_family.c
 *	  What the conversation family's Actions share: reading and checking
 *	  a user id and a list of conversations, the checks of a stored job,
 *	  the wire's UTF-8 and URL encoding, and the run of a writing call
 *	  (ZimConvFamilyCall) that each Action's file drives through its
 *	  ZimConvKind.
 *
 * A writing call checks all of its input before it sends anything, builds
 * its requests as its kind says (how many conversations a request holds,
 * and of which types), sends them all at once under the limiter, and
 * returns one row per conversation whose requested state ZIM did not
 * confirm.  A request that failed as a whole raises, once every request
 * has finished, unless its Code concerns only its one conversation (that
 * conversation's row) or says that the state already holds (no row).
 * Every Action of the family sets an absolute state, so transient
 * failures are retried like ConvPinned's.
 *
 * The kinds' files (above) know their Action's body and failure list; this
 * file knows none, and never sends except through client.c.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

/* the characters the vendor allows in a user id */
static const char user_id_chars[] =
"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"!#$%&()+-:;<=.>?@[]^_ {}|~";

/* raise 22023 unless id is a user id ZIM accepts; name is the argument's */
void
ZimConvCheckUserId(const char *id, const char *name)
{
	size_t		len = strlen(id);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", name)));
	if (len > ZIM_MAX_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be longer than %d bytes", name, ZIM_MAX_ID_LEN)));
	if (strspn(id, user_id_chars) != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s contains a character that ZIM does not allow", name),
				 errdetail("User ids may contain only letters, digits, spaces and !#$%%&()+-:;<=.>?@[]^_{}|~.")));
}

static void
zim_check_conv_type(int32 type, int index)
{
	if (type != 0 && type != 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("conversation type must be 0 (one-to-one) or 2 (group)"),
				 index >= 0
				 ? errdetail("Element %d of conv_types is %d.", index + 1, type)
				 : errdetail("conv_type is %d.", type)));
}

/*
 * Deconstruct a one-dimensional array without nulls.
 */
static int
zim_array_elems(ArrayType *arr, Oid elemtype, const char *name, Datum **elems)
{
	bool	   *nulls;
	int			n;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", name)));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign,
					  elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", name),
					 errdetail("Element %d is null.", i + 1)));
	return n;
}

/*
 * How many bytes id takes in UTF-8, the wire's encoding, or -1 if the
 * database's encoding cannot give it in UTF-8.  Never raises: the queue
 * checks stored rows with it.
 */
static int
zim_utf8_len(const char *id, int len)
{
	int			enc = GetDatabaseEncoding();
	unsigned char *out;
	int			done;

	/* SQL_ASCII's bytes go out as they are: they must be UTF-8 already */
	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return pg_verify_mbstr(PG_UTF8, id, len, true) ? len : -1;
	if (!pg_verify_mbstr(enc, id, len, true))
		return -1;
	out = palloc((Size) len * MAX_CONVERSION_GROWTH + 1);
	done = pg_do_encoding_conversion_buf(FindDefaultConversionProc(enc, PG_UTF8),
										 enc, PG_UTF8, (unsigned char *) id, len,
										 out, len * MAX_CONVERSION_GROWTH + 1, true);
	len = done == len ? (int) strlen((char *) out) : -1;
	pfree(out);
	return len;
}

/*
 * Raise 22023 unless id is a conversation (or group) id ZIM accepts: not
 * empty, at most 32 bytes in UTF-8, as it goes on the wire.  An id the
 * database's encoding cannot give in UTF-8 (any non-ASCII byte in
 * SQL_ASCII, an unmapped one in WIN1252) is refused with PostgreSQL's own
 * SQLSTATE.  what names it in the detail.
 */
void
ZimConvCheckId(const char *id, const char *what)
{
	size_t		len = strlen(id);

	if (len > 0 && GetDatabaseEncoding() != PG_UTF8)
		len = strlen(pg_server_to_any(id, len, PG_UTF8));
	if (len == 0 || len > ZIM_MAX_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 len == 0
				 ? errmsg("conversation id must not be empty")
				 : errmsg("conversation id must not be longer than %d bytes in UTF-8",
						  ZIM_MAX_ID_LEN),
				 errdetail("%s.", what)));
}

/*
 * Read and check the arguments every writing function of the family
 * starts with: from_user_id text (0), conv_ids text[] (1), and conv_types
 * integer[] or conv_type integer (2); and that none of the n_args after
 * them (named arg_names) is NULL.  Returns the number of conversations.  Raises 22004 or 22023 before anything is sent or stored.
 */
int
ZimConvReadTargets(FunctionCallInfo fcinfo, bool one_type,
				   const char *const *arg_names, int n_args,
				   char **from_user_id, ZimConv **convs)
{
	Datum	   *ids;
	Datum	   *types = NULL;
	int			n_ids;
	int			n_types = 0;
	int32		one = 0;

	ZimRequireNotNull(fcinfo, 0, "from_user_id");
	ZimRequireNotNull(fcinfo, 1, "conv_ids");
	ZimRequireNotNull(fcinfo, 2, one_type ? "conv_type" : "conv_types");
	for (int i = 0; i < n_args; i++)
		ZimRequireNotNull(fcinfo, 3 + i, arg_names[i]);

	*from_user_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ZimConvCheckUserId(*from_user_id, "from_user_id");

	n_ids = zim_array_elems(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, "conv_ids", &ids);
	if (one_type)
	{
		one = PG_GETARG_INT32(2);
		zim_check_conv_type(one, -1);
	}
	else
	{
		n_types = zim_array_elems(PG_GETARG_ARRAYTYPE_P(2), INT4OID,
								  "conv_types", &types);
		if (n_types != n_ids)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("conv_ids and conv_types must have the same length"),
					 errdetail("conv_ids has %d elements and conv_types has %d.",
							   n_ids, n_types)));
	}

	*convs = palloc(sizeof(ZimConv) * Max(n_ids, 1));
	for (int i = 0; i < n_ids; i++)
	{
		(*convs)[i].id = TextDatumGetCString(ids[i]);
		ZimConvCheckId((*convs)[i].id, psprintf("Element %d of conv_ids", i + 1));
		if (one_type)
			(*convs)[i].type = one;
		else
		{
			(*convs)[i].type = DatumGetInt32(types[i]);
			zim_check_conv_type((*convs)[i].type, i);
		}
	}
	return n_ids;
}

/*
 * What makes a stored job impossible to send, as "SQLSTATE: message", or
 * NULL if it can be sent.  A job stored by an enqueue function always
 * can; one inserted by hand or restored from elsewhere may not, and the
 * queue then fails it alone instead of failing its whole claim.  The
 * checks are those of ZimConvReadTargets, without raising.
 */
const char *
ZimConvStoredProblem(const char *from_user_id, const ZimConv *convs, int n)
{
	size_t		len = strlen(from_user_id);

	if (len == 0 || len > ZIM_MAX_ID_LEN || strspn(from_user_id, user_id_chars) != len)
		return "22023: from_user_id is not a user id ZIM accepts";
	for (int i = 0; i < n; i++)
	{
		int			utf8;

		if (convs[i].id == NULL)
			return psprintf("22004: element %d of conv_ids is null", i + 1);
		if (convs[i].type != 0 && convs[i].type != 2)
			return psprintf("22023: element %d of conv_types is %d, not 0 or 2", i + 1,
							convs[i].type);
		utf8 = zim_utf8_len(convs[i].id, strlen(convs[i].id));
		if (utf8 < 0)
			return psprintf("22021: element %d of conv_ids cannot be converted to UTF-8", i + 1);
		if (utf8 == 0 || utf8 > ZIM_MAX_ID_LEN)
			return psprintf("22023: element %d of conv_ids is empty or longer than %d bytes in UTF-8",
							i + 1, ZIM_MAX_ID_LEN);
	}
	return NULL;
}

/* a body built in the database's encoding, as the wire's UTF-8 */
char *
ZimConvUtf8(StringInfo buf)
{
	return pg_server_to_any(buf->data, buf->len, PG_UTF8);
}

/*
 * Append name=value to a query string, value (in the database's encoding)
 * as UTF-8 and percent-encoded but for RFC 3986's unreserved characters,
 * so that a user id's + & # = ? % and spaces arrive as they are.
 */
void
ZimConvQueryParam(StringInfo query, const char *name, const char *value)
{
	const unsigned char *p = (const unsigned char *) pg_server_to_any(value, strlen(value), PG_UTF8);

	if (query->len > 0)
		appendStringInfoChar(query, '&');
	appendStringInfo(query, "%s=", name);
	for (; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~')
			appendStringInfoChar(query, (char) *p);
		else
			appendStringInfo(query, "%%%02X", *p);
	}
}

/*
 * Does a whole request's Code concern only its one conversation, for the
 * Actions whose request holds one (DeleteConv, ClearConversationUnread)?
 * Bad input (660000002), no such conversation (660800002), a group's
 * codes (6606xxxxx), an unregistered peer (660700015).
 */
bool
ZimConvCodeIsOwn(int64 code)
{
	return code == 660000002 || code == 660800002 || code == 660700015 ||
		(code >= 660600000 && code <= 660699999);
}

/*
 * Read and check every argument of a writing function of the family, or
 * of its enqueue function (the same arguments), into *call; returns the
 * number of conversations.  Raises 22004 or 22023 before anything is sent
 * or stored.
 */
int
ZimConvReadCall(FunctionCallInfo fcinfo, const ZimConvKind *kind, bool one_type,
				ZimConvCall *call)
{
	memset(call, 0, sizeof(*call));
	call->n = ZimConvReadTargets(fcinfo, one_type, kind->arg_names, kind->n_args,
								 &call->from_user_id, &call->convs);
	if (kind->read_args)
		kind->read_args(fcinfo, call);
	return call->n;
}

/*
 * Did a request of kind fail as a whole: no answer, or a Code without a
 * failure list that neither says the state holds nor concerns only its
 * one conversation?
 */
bool
ZimConvFailedWhole(const ZimConvKind *kind, const ZimRequest *req)
{
	int64		code = req->response.code;

	if (req->state == ZIM_REQ_FAILED)
		return true;
	if (code == 0 || req->response.has_items)
		return false;
	if (kind->code_is_done && kind->code_is_done(code))
		return false;
	return !(kind->code_is_item && kind->code_is_item(code));
}

/* the state of one writing call while its answers are read */
typedef struct FamilyRun
{
	const ZimConvKind *kind;
	ReturnSetInfo *rsinfo;
	int64		rows;			/* failure rows put */
} FamilyRun;

/* one failure as a result row, unless its Code says the state holds */
static void
zim_family_row(const ZimConvFailure *f, void *arg)
{
	FamilyRun  *run = (FamilyRun *) arg;
	Datum		values[4];
	bool		nulls[4] = {false, false, !f->has_code, f->sub_message == NULL};

	if (f->has_code && run->kind->code_is_done && run->kind->code_is_done(f->sub_code))
		return;
	values[0] = CStringGetTextDatum(f->conv_id);
	values[1] = Int32GetDatum(f->conv_type);
	values[2] = Int64GetDatum(f->sub_code);
	values[3] = f->sub_message ? CStringGetTextDatum(f->sub_message) : (Datum) 0;
	tuplestore_putvalues(run->rsinfo->setResult, run->rsinfo->setDesc, values, nulls);
	run->rows++;
}

/* raise the first whole failure of a call, saying what the others did */
static void
zim_family_raise(const ZimConvKind *kind, const ZimRequest *reqs, const ZimConvSpan *spans,
				 int n_reqs, int first_whole, int n_whole)
{
	const ZimRequest *bad = &reqs[first_whole];
	char	   *where = NULL;

	if (n_reqs > 1)
		where = psprintf("Request %d of %d (conversations %d to %d) failed; "
						 "%d of the %d requests failed, the others took effect.",
						 first_whole + 1, n_reqs, spans[first_whole].first + 1,
						 spans[first_whole].first + spans[first_whole].n, n_whole, n_reqs);
	if (bad->state == ZIM_REQ_FAILED)
		ZimRaiseFailure(kind->action, ZIM_RETRY_IDEMPOTENT, bad, where);
	ZimRaiseForCode(kind->action, bad, where);
}

/* send the call's requests and put its rows; raise a whole failure */
static void
zim_family_send(const ZimConvKind *kind, ZimConvCall *call, ReturnSetInfo *rsinfo)
{
	int			n_reqs = kind->n_requests(call);
	ZimRequest *reqs = palloc0(sizeof(ZimRequest) * n_reqs);
	ZimConvSpan *spans = palloc0(sizeof(ZimConvSpan) * n_reqs);
	FamilyRun	run = {kind, rsinfo, 0};
	int			first_whole = -1;
	int			n_whole = 0;
	int64		failed_whole = 0;

	kind->build(call, reqs, spans);
	ZimSendRequests(kind->action, ZIM_RETRY_IDEMPOTENT, reqs, n_reqs, -1);

	for (int r = 0; r < n_reqs; r++)
	{
		const ZimRequest *req = &reqs[r];
		int64		code = req->response.code;

		if (req->state != ZIM_REQ_FAILED && (code == 0 || req->response.has_items))
		{
			if (kind->items)
				kind->items(call, req, &spans[r], true, zim_family_row, &run);
			continue;
		}
		if (req->state != ZIM_REQ_FAILED && kind->code_is_done && kind->code_is_done(code))
			continue;
		if (req->state != ZIM_REQ_FAILED && kind->code_is_item && kind->code_is_item(code))
		{
			for (int k = spans[r].first; k < spans[r].first + spans[r].n; k++)
			{
				ZimConvFailure f = {call->convs[k].id, call->convs[k].type, true, code,
				req->response.message};

				zim_family_row(&f, &run);
			}
			continue;
		}
		if (first_whole < 0)
			first_whole = r;
		n_whole++;
		failed_whole += spans[r].n;
	}
	ZimStatsConvs(kind->action, call->n - run.rows - failed_whole, run.rows + failed_whole);
	if (first_whole >= 0)
		zim_family_raise(kind, reqs, spans, n_reqs, first_whole, n_whole);
}

/*
 * A writing function of the family: reads from_user_id, the conversations
 * and the kind's own arguments, sends, and returns the failure rows (see
 * the file's comment).
 */
Datum
ZimConvFamilyCall(FunctionCallInfo fcinfo, const ZimConvKind *kind, bool one_type)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ZimConvCall call = {0};
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

	(void) ZimConvReadCall(fcinfo, kind, one_type, &call);
	if (call.n > 0)
		zim_family_send(kind, &call, rsinfo);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(work);
	return (Datum) 0;
}

/* ---- reading calls: pages ---------------------------------------------- */

/* max_rows (argument argno): NULL raises 22004, below 1 22023 */
int
ZimConvReadMaxRows(FunctionCallInfo fcinfo, int argno)
{
	int32		max_rows;

	ZimRequireNotNull(fcinfo, argno, "max_rows");
	max_rows = PG_GETARG_INT32(argno);
	if (max_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1"),
				 errdetail("max_rows is %d.", max_rows)));
	return max_rows;
}

/*
 * ZIM's milliseconds since the Unix epoch as a timestamptz; false if out
 * of timestamptz's range.
 */
bool
ZimConvMsToTimestamp(int64 ms, TimestampTz *ts)
{
	int64		unix_2000_ms = (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	if (ms < MIN_TIMESTAMP / 1000 + unix_2000_ms || ms > END_TIMESTAMP / 1000 + unix_2000_ms)
		return false;
	*ts = (ms - unix_2000_ms) * 1000;
	return true;
}

/* raise ZP005 for an answer whose List is not what the Action documents */
void
ZimConvBadAnswer(const char *action, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_ZIM_BAD_RESPONSE),
			 errmsg("invalid answer from the ZIM server"),
			 errdetail("The %s answer %s.", action, what),
			 errhint("Check that zim_pin.api_url points to the ZIM server API.")));
}

void
ZimConvPagerInit(ZimConvPager *pager, const char *action, int max_rows, int page_max)
{
	HASHCTL		ctl = {0};

	memset(pager, 0, sizeof(*pager));
	pager->action = action;
	pager->max_rows = max_rows;
	pager->page_max = page_max;
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	pager->seen = hash_create("zim_pin page cursors", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* the next page's Limit: as large as the Action allows, never more than needed */
int
ZimConvPagerLimit(const ZimConvPager *pager)
{
	return Min(pager->page_max, pager->max_rows - pager->rows);
}

/*
 * Send one page (body, UTF-8) and return its List (an array), or NULL if
 * it has none; a page that fails raises as a failed request does.
 */
JsonbContainer *
ZimConvPagerFetch(ZimConvPager *pager, char *body)
{
	ZimRequest *req = &pager->req;
	JsonbValue *list;

	memset(req, 0, sizeof(*req));
	req->body = body;
	ZimSendRequests(pager->action, ZIM_RETRY_IDEMPOTENT, req, 1, -1);
	if (req->state == ZIM_REQ_FAILED)
		ZimRaiseFailure(pager->action, ZIM_RETRY_IDEMPOTENT, req, NULL);
	if (req->response.code != 0)
		ZimRaiseForCode(pager->action, req, NULL);
	pager->pages++;
	list = ZimJsonGet(req->response.jsonb, "List");
	if (list == NULL || list->type == jbvNull)
		return NULL;
	if (list->type != jbvBinary || !JsonContainerIsArray(list->val.binary.data))
		ZimConvBadAnswer(pager->action, "has a \"List\" that is not an array");
	return list->val.binary.data;
}

/*
 * Page through a reading call: each page's body is {head, Limit, Next,
 * tail} (head and tail the Action's own members, tail with its leading
 * comma or empty), and row gets each entry of each page's List, at most
 * as many as asked for.
 */
void
ZimConvPages(ZimConvPager *pager, const char *head, const char *tail,
			 ZimConvRowFn row, void *arg)
{
	for (;;)
	{
		StringInfoData buf;
		JsonbContainer *list;
		int			n = 0;
		int			limit = ZimConvPagerLimit(pager);

		initStringInfo(&buf);
		appendStringInfo(&buf, "{%s,\"Limit\":%d,\"Next\":" INT64_FORMAT "%s}",
						 head, limit, pager->next, tail);
		list = ZimConvPagerFetch(pager, ZimConvUtf8(&buf));
		if (list)
			n = Min((int) JsonContainerSize(list), limit);
		for (int i = 0; i < n; i++)
			row(arg, getIthJsonbValueFromContainer(list, i));
		if (!ZimConvPagerNext(pager, n))
			break;
	}
}

/*
 * After a page that brought page_rows rows: whether to ask for another,
 * with the page's Next.  Paging stops when Next is 0, when max_rows rows
 * have come, when a page brought no row, or when Next is one ZIM gave
 * before: so it always ends, after at most max_rows pages.
 */
bool
ZimConvPagerNext(ZimConvPager *pager, int page_rows)
{
	JsonbValue *v = ZimJsonGet(pager->req.response.jsonb, "Next");
	int64		next = 0;
	bool		found;

	pager->rows += page_rows;
	if (v != NULL && v->type != jbvNull && !ZimJsonInt64(v, &next))
		ZimConvBadAnswer(pager->action, "has a \"Next\" that is not an integer");
	if (next == 0 || pager->rows >= pager->max_rows)
		return false;
	if (page_rows == 0)
	{
		ereport(NOTICE,
				(errmsg("ZIM %s gave an empty page that is not the last; no more pages were read",
						pager->action)));
		return false;
	}
	(void) hash_search(pager->seen, &next, HASH_ENTER, &found);
	if (found)
	{
		ereport(NOTICE,
				(errmsg("ZIM %s gave a page cursor it had given before; no more pages were read",
						pager->action)));
		return false;
	}
	pager->next = next;
	return true;
}
