/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The per-Action counters: counting, reading (zim_pin_stats()) and
 *	  resetting (zim_pin_stats_reset()).
 *
 * The counters live in each Action's slot of the shared area (shmem.c):
 * shared by every backend when preloaded, this backend's own otherwise.
 * Every update takes the lock for a few instructions.  This file is the
 * only one that writes ZimStats; it must never wait or raise while it holds
 * the lock.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(zim_pin_stats);
PG_FUNCTION_INFO_V1(zim_pin_stats_reset);

/*
 * One finished exchange: its latency and outcome, and whether its request
 * will be tried again.
 */
void
ZimStatsAttempt(const char *action, double latency_ms, ZimAttemptOutcome outcome,
				bool will_retry)
{
	ZimStats   *st;

	ZimShmemLock();
	st = &ZimActionLookup(action)->stats;
	st->requests++;
	st->latency_sum_ms += latency_ms;
	st->latency_count++;
	if (latency_ms > st->latency_max_ms)
		st->latency_max_ms = latency_ms;
	switch (outcome)
	{
		case ZIM_OUTCOME_SUCCEEDED:
			st->succeeded++;
			break;
		case ZIM_OUTCOME_FAILED_CONNECTION:
			st->failed_connection++;
			break;
		case ZIM_OUTCOME_FAILED_SERVICE:
			st->failed_service++;
			break;
	}
	if (will_retry)
		st->retries++;
	ZimShmemUnlock();
}

/* a request that waited wait_ms for its send time */
void
ZimStatsThrottled(const char *action, double wait_ms)
{
	ZimStats   *st;

	ZimShmemLock();
	st = &ZimActionLookup(action)->stats;
	st->throttled++;
	st->throttled_ms += wait_ms;
	ZimShmemUnlock();
}

/* n exchanges abandoned by a cancel, a timeout or an error */
void
ZimStatsCanceled(const char *action, int n)
{
	if (n == 0 || ZimShmemLockHeld())
		return;
	ZimShmemLock();
	ZimActionLookup(action)->stats.canceled += n;
	ZimShmemUnlock();
}

/* conversations a ConvPinned call changed and did not change */
void
ZimStatsConvs(const char *action, int64 changed, int64 failed)
{
	ZimStats   *st;

	ZimShmemLock();
	st = &ZimActionLookup(action)->stats;
	st->convs_changed += changed;
	st->convs_failed += failed;
	ZimShmemUnlock();
}

/*
 * zim_pin_stats(): one row per Action, from shared memory when preloaded
 * (all backends), else this backend's own counts.
 */
Datum
zim_pin_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		(*names)[ZIM_MAX_ACTION_LEN + 1];
	ZimStats   *copy;
	int			n;
	TimestampTz reset;

	InitMaterializedSRF(fcinfo, 0);

	/* copy under the lock, build tuples after it */
	names = palloc(sizeof(*names) * ZIM_MAX_ACTIONS);
	copy = palloc(sizeof(ZimStats) * ZIM_MAX_ACTIONS);
	ZimShmemLock();
	n = ZimActionCount();
	for (int i = 0; i < n; i++)
	{
		memcpy(names[i], ZimActionByIndex(i)->action, sizeof(names[i]));
		copy[i] = ZimActionByIndex(i)->stats;
	}
	reset = *ZimShmemStatsReset();
	ZimShmemUnlock();

	for (int i = 0; i < n; i++)
	{
		ZimStats   *st = &copy[i];
		Datum		values[14];
		bool		nulls[14] = {0};
		int			k = 0;

		values[k++] = CStringGetTextDatum(names[i]);
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
 * zim_pin_stats_reset(): zero the counters of every Action (not the
 * limiter's state).
 */
Datum
zim_pin_stats_reset(PG_FUNCTION_ARGS)
{
	int			n;

	ZimShmemLock();
	n = ZimActionCount();
	for (int i = 0; i < n; i++)
		memset(&ZimActionByIndex(i)->stats, 0, sizeof(ZimStats));
	*ZimShmemStatsReset() = GetCurrentTimestamp();
	ZimShmemUnlock();
	PG_RETURN_VOID();
}
