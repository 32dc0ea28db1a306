/*-------------------------------------------------------------------------
 *
 * functions.c
 *	  The SQL-callable functions of zim_pin.
 *
 * zim_conv_pinned checks all of its input before it sends anything, so
 * bad input never leaves half the work done; then it sends one signed
 * request per chunk of zim_pin.max_convs_per_request conversations, all
 * at once as the limiter allows, and returns the conversations that were
 * not changed, from every chunk, as rows.  A chunk that fails as a whole
 * is raised once every chunk has finished, so the error can say what the
 * others did.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(zim_conv_pinned);
PG_FUNCTION_INFO_V1(zim_conv_pinned_one_type);
PG_FUNCTION_INFO_V1(zim_api);
PG_FUNCTION_INFO_V1(zim_pin_signature);
PG_FUNCTION_INFO_V1(zim_pin_stats);
PG_FUNCTION_INFO_V1(zim_conv_pinned_enqueue);
PG_FUNCTION_INFO_V1(zim_conv_pinned_enqueue_one_type);
PG_FUNCTION_INFO_V1(zim_pin_run_jobs);
PG_FUNCTION_INFO_V1(zim_pin_stats_reset);

/* the characters the vendor allows in a user id */
static const char user_id_chars[] =
"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"!#$%&()+-:;<=.>?@[]^_ {}|~";


static void
zim_require_not_null(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

static void
zim_check_user_id(const char *id)
{
	size_t		len = strlen(id);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_user_id must not be empty")));
	if (len > ZIM_MAX_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_user_id must not be longer than %d bytes",
						ZIM_MAX_ID_LEN)));
	if (strspn(id, user_id_chars) != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_user_id contains a character that ZIM does not allow"),
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
 * Read and check every argument; returns the number of conversations.
 */
static int
zim_read_conv_args(FunctionCallInfo fcinfo, bool one_type,
				   char **from_user_id, ZimConv **convs, bool *pinned)
{
	Datum	   *ids;
	Datum	   *types = NULL;
	int			n_ids;
	int			n_types = 0;
	int32		one = 0;

	zim_require_not_null(fcinfo, 0, "from_user_id");
	zim_require_not_null(fcinfo, 1, "conv_ids");
	zim_require_not_null(fcinfo, 2, one_type ? "conv_type" : "conv_types");
	zim_require_not_null(fcinfo, 3, "pinned");

	*from_user_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	zim_check_user_id(*from_user_id);

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
	*pinned = PG_GETARG_BOOL(3);

	*convs = palloc(sizeof(ZimConv) * Max(n_ids, 1));
	for (int i = 0; i < n_ids; i++)
	{
		char	   *id = TextDatumGetCString(ids[i]);
		size_t		len = strlen(id);

		if (len == 0 || len > ZIM_MAX_ID_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 len == 0
					 ? errmsg("conversation id must not be empty")
					 : errmsg("conversation id must not be longer than %d bytes",
							  ZIM_MAX_ID_LEN),
					 errdetail("Element %d of conv_ids.", i + 1)));
		(*convs)[i].id = id;
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
	return pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/* how many ConvPinned requests n conversations take (0 for none) */
int
ZimConvPinnedChunkCount(int n)
{
	return (n + zim_max_convs_per_request - 1) / zim_max_convs_per_request;
}

/*
 * Fill the bodies of the ZimConvPinnedChunkCount(n) requests that carry n
 * conversations, zim_pin.max_convs_per_request at a time.
 */
void
ZimConvPinnedChunks(const char *from_user_id, const ZimConv *convs, int n,
					bool pinned, ZimRequest *reqs)
{
	int			chunk = zim_max_convs_per_request;

	for (int c = 0; c * chunk < n; c++)
		reqs[c].body = zim_conv_pinned_body(from_user_id, convs + c * chunk,
											Min(chunk, n - c * chunk), pinned);
}

/*
 * Add one row per ErrorList entry of a ConvPinned answer; returns how many.
 */
static int
zim_put_error_rows(ReturnSetInfo *rsinfo, Jsonb *jb)
{
	ZimErrorItem *items;
	int			n = ZimErrorListItems(jb, true, &items);

	for (int i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(items[i].conv_id);
		values[1] = Int32GetDatum(items[i].conv_type);
		values[2] = Int64GetDatum(items[i].sub_code);
		if (items[i].sub_message)
			values[3] = CStringGetTextDatum(items[i].sub_message);
		else
			nulls[3] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return n;
}

/* was this request of ConvPinned a failure of the whole request? */
bool
ZimRequestFailedWhole(const ZimRequest *req)
{
	return req->state == ZIM_REQ_FAILED ||
		(req->response.code != 0 && !ZimHasErrorList(req->response.jsonb));
}

static Datum
zim_conv_pinned_common(FunctionCallInfo fcinfo, bool one_type)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *from_user_id;
	ZimConv    *convs;
	bool		pinned;
	int			n;
	int			chunk = zim_max_convs_per_request;
	int			n_chunks;
	ZimRequest *reqs;
	int			first_bad = -1;
	int			n_bad = 0;
	int64		changed = 0;
	int64		failed = 0;
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

	n = zim_read_conv_args(fcinfo, one_type, &from_user_id, &convs, &pinned);
	if (n == 0)
	{
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(work);
		return (Datum) 0;
	}

	/* one signed request per chunk, all sent concurrently */
	n_chunks = ZimConvPinnedChunkCount(n);
	reqs = palloc0(sizeof(ZimRequest) * n_chunks);
	ZimConvPinnedChunks(from_user_id, convs, n, pinned, reqs);

	ZimCallMany("ConvPinned", ZIM_RETRY_IDEMPOTENT, reqs, n_chunks, -1);

	for (int c = 0; c < n_chunks; c++)
	{
		int			count = Min(chunk, n - c * chunk);

		if (ZimRequestFailedWhole(&reqs[c]))
		{
			if (first_bad < 0)
				first_bad = c;
			n_bad++;
			failed += count;
		}
		else
		{
			int			rows = zim_put_error_rows(rsinfo, reqs[c].response.jsonb);

			changed += count - rows;
			failed += rows;
		}
	}
	ZimStatsCountConvs("ConvPinned", changed, failed);

	if (first_bad >= 0)
	{
		ZimRequest *bad = &reqs[first_bad];
		char	   *where = NULL;
		int			first = first_bad * chunk;

		if (n_chunks > 1)
			where = psprintf("Request %d of %d (conversations %d to %d) failed; "
							 "%d of the %d requests failed, the others changed their conversations.",
							 first_bad + 1, n_chunks, first + 1, Min(first + chunk, n),
							 n_bad, n_chunks);
		if (bad->state == ZIM_REQ_FAILED)
			ZimRaiseFailure("ConvPinned", ZIM_RETRY_IDEMPOTENT, bad, where);
		ZimRaiseForCode("ConvPinned", bad, where);
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

/*
 * zim_api(action text, body jsonb) returns jsonb
 */
Datum
zim_api(PG_FUNCTION_ARGS)
{
	char	   *action;
	Jsonb	   *body;
	char	   *body_text;
	size_t		len;
	ZimRequest	req = {0};
	Jsonb	   *result;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "zim_pin call",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(work);

	zim_require_not_null(fcinfo, 0, "action");
	zim_require_not_null(fcinfo, 1, "body");

	action = text_to_cstring(PG_GETARG_TEXT_PP(0));
	len = strlen(action);
	if (len == 0 || len > ZIM_MAX_ACTION_LEN ||
		strspn(action, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid ZIM action name"),
				 errdetail("An action name is 1 to %d ASCII letters and digits.",
						   ZIM_MAX_ACTION_LEN)));

	body = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(body))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("body must be a JSON object")));
	body_text = JsonbToCString(NULL, &body->root, VARSIZE(body));
	body_text = pg_server_to_any(body_text, strlen(body_text), PG_UTF8);

	req.body = body_text;
	ZimCallMany(action, ZIM_RETRY_UNSENT_ONLY, &req, 1, -1);
	if (req.state == ZIM_REQ_FAILED)
		ZimRaiseFailure(action, ZIM_RETRY_UNSENT_ONLY, &req, NULL);

	MemoryContextSwitchTo(oldcxt);
	result = (Jsonb *) palloc(VARSIZE(req.response.jsonb));
	memcpy(result, req.response.jsonb, VARSIZE(req.response.jsonb));
	MemoryContextDelete(work);
	PG_RETURN_JSONB_P(result);
}

/*
 * zim_pin_signature(app_id bigint, nonce text, secret text, ts bigint)
 *
 * The v2.0 signature of the given values, to check the signing code
 * against the vendor's test vector.  It knows nothing of the settings.
 */
Datum
zim_pin_signature(PG_FUNCTION_ARGS)
{
	int64		app_id;
	char		out[33];
	char	   *nonce;
	char	   *secret;

	for (int i = 0; i < 4; i++)
		zim_require_not_null(fcinfo, i,
							 i == 0 ? "app_id" : i == 1 ? "nonce" : i == 2 ? "secret" : "ts");
	app_id = PG_GETARG_INT64(0);
	if (app_id < 1 || app_id > UINT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("app_id must be between 1 and 4294967295")));
	nonce = text_to_cstring(PG_GETARG_TEXT_PP(1));
	secret = text_to_cstring(PG_GETARG_TEXT_PP(2));
	ZimSignature((uint32) app_id, nonce, secret, PG_GETARG_INT64(3), out);
	explicit_bzero(secret, strlen(secret));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * zim_pin_stats(): one row per Action, from shared memory when preloaded
 * (all backends), else this backend's own counts.
 */
Datum
zim_pin_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ZimActionState *copy;
	int			n;
	TimestampTz reset;

	InitMaterializedSRF(fcinfo, 0);

	/* copy under the lock, build tuples after it */
	copy = palloc(sizeof(ZimActionState) * ZIM_MAX_ACTIONS);
	ZimStateLock();
	n = ZimActionCount();
	for (int i = 0; i < n; i++)
		memcpy(&copy[i], ZimActionByIndex(i), offsetof(ZimActionState, log));
	ZimStateUnlock();
	reset = ZimStatsResetTime();

	for (int i = 0; i < n; i++)
	{
		ZimStats   *st = &copy[i].stats;
		Datum		values[14];
		bool		nulls[14] = {0};
		int			k = 0;

		values[k++] = CStringGetTextDatum(copy[i].action);
		values[k++] = Int64GetDatum(st->requests);
		values[k++] = Int64GetDatum(st->succeeded);
		values[k++] = Int64GetDatum(st->failed_connection);
		values[k++] = Int64GetDatum(st->failed_service);
		values[k++] = Int64GetDatum(st->canceled);
		values[k++] = Int64GetDatum(st->retries);
		values[k++] = Int64GetDatum(st->throttled);
		values[k++] = Float8GetDatum(st->throttled_ms);
		values[k++] = Int64GetDatum(st->convs_changed);
		values[k++] = Int64GetDatum(st->convs_failed);
		if (st->latency_count > 0)
			values[k] = Float8GetDatum(st->latency_sum_ms / st->latency_count);
		else
			nulls[k] = true;
		k++;
		if (st->latency_count > 0)
			values[k] = Float8GetDatum(st->latency_max_ms);
		else
			nulls[k] = true;
		k++;
		values[k++] = TimestampTzGetDatum(reset);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * zim_pin_stats_reset(): zero the counters of every Action.
 */
Datum
zim_pin_stats_reset(PG_FUNCTION_ARGS)
{
	ZimStatsResetAll();
	PG_RETURN_VOID();
}

static Datum
zim_enqueue_common(FunctionCallInfo fcinfo, bool one_type)
{
	char	   *from_user_id;
	ZimConv    *convs;
	bool		pinned;
	int			n;

	n = zim_read_conv_args(fcinfo, one_type, &from_user_id, &convs, &pinned);
	PG_RETURN_INT64(ZimJobEnqueue(from_user_id, convs, n, pinned));
}

/*
 * zim_conv_pinned_enqueue(from_user_id text, conv_ids text[],
 *						   conv_types int[], pinned boolean) returns bigint
 */
Datum
zim_conv_pinned_enqueue(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, false);
}

/*
 * zim_conv_pinned_enqueue(from_user_id text, conv_ids text[],
 *						   conv_type int, pinned boolean) returns bigint
 */
Datum
zim_conv_pinned_enqueue_one_type(PG_FUNCTION_ARGS)
{
	return zim_enqueue_common(fcinfo, true);
}

/*
 * zim_pin_run_jobs(max_jobs int) returns int: process due jobs now, in the
 * calling transaction; returns how many finished.
 */
Datum
zim_pin_run_jobs(PG_FUNCTION_ARGS)
{
	int32		max_jobs = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);

	if (max_jobs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must not be negative")));
	if (max_jobs == 0)
		PG_RETURN_INT32(0);
	ZimCheckConfigured();
	PG_RETURN_INT32(ZimRunJobs(max_jobs, false));
}
