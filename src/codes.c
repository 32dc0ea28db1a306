/*-------------------------------------------------------------------------
 *
 * codes.c
 *	  What ZIM's return codes mean to zim_pin, and the backoff formula.
 *
 * One table per question the client asks of a Code: may it be retried
 * (under each retry policy), is it a rate limit, is it an authentication
 * failure.  The README's tables of retried codes and SQLSTATEs follow
 * these; change both together.  The backoff formula is shared by the
 * retries of one call (client.c) and the retries of a queued job
 * (queue.c).
 *
 * This file is pure: it keeps no state, takes no lock and never raises.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "common/pg_prng.h"

static bool
code_in(int64 code, const int64 *codes, int n)
{
	for (int i = 0; i < n; i++)
		if (codes[i] == code)
			return true;
	return false;
}

/*
 * Codes that mean "the request was not processed because of the rate":
 * the gateway's 7, the AppId's 660300005, UserRegister's 660700001.
 */
bool
ZimCodeIsRateLimit(int64 code)
{
	static const int64 codes[] = {7, 660300005, 660700001};

	return code_in(code, codes, lengthof(codes));
}

/*
 * May a request answered with this Code be sent again?  Every rate-limit
 * Code, under either policy: the request was not processed.  An idempotent
 * request (ConvPinned sets an absolute state) also after the transient
 * service failures; any other only after "busy" (1), which the gateway
 * answers before processing.
 */
bool
ZimCodeIsRetryable(int64 code, ZimRetryPolicy policy)
{
	static const int64 idempotent[] = {1, 660000001, 660000003};
	static const int64 unsent[] = {1};

	if (ZimCodeIsRateLimit(code))
		return true;
	if (policy == ZIM_RETRY_IDEMPOTENT)
		return code_in(code, idempotent, lengthof(idempotent));
	return code_in(code, unsent, lengthof(unsent));
}

/* signature, AppId or secret refused */
bool
ZimCodeIsAuth(int64 code)
{
	static const int64 codes[] = {3, 100000001, 100000004, 100000005, 100000010};

	return code_in(code, codes, lengthof(codes));
}

/*
 * The delay before retry number retry (0-based): base_ms doubled per
 * retry, capped at cap_ms, with "equal jitter" (half fixed, half random)
 * so that many waiting requests do not come back at the same moment.
 */
long
ZimBackoffMs(int retry, long base_ms, long cap_ms)
{
	long		delay = base_ms;

	for (int i = 0; i < retry && delay < cap_ms; i++)
		delay *= 2;
	delay = Min(delay, cap_ms);
	return delay / 2 + (long) (pg_prng_double(&pg_global_prng_state) * (delay / 2));
}
