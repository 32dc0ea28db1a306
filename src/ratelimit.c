/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  The outgoing rate limit: at most zim_pin.requests_per_second requests
 *	  per Action in any sliding one-second window, across every backend of
 *	  the server when preloaded (per backend otherwise).
 *
 * A request does not wait for a free slot and then race for it: it
 * reserves the earliest send time that keeps every window within the limit
 * and then sleeps until that time.  Each Action keeps the send times of its
 * recent requests, ascending; a new request gets
 *
 *	 t = max(now, the Action's pause, the last reserved time,
 *			 the time N requests back + the window)
 *
 * where N is the limit.  So no window of the given length ever holds more
 * than N send times, whatever order the backends come in, and requests are
 * served in the order they asked, none starved.  A request that is then
 * cancelled leaves its slot unused: the limit still holds.
 *
 * The window is one second plus a small margin: we stamp a request when it
 * leaves, the vendor when it arrives, and the first request on a new
 * connection arrives a TLS handshake later than one on a warm connection.
 *
 * When the vendor still answers that the AppId's rate is exceeded (another
 * server shares the AppId), ZimRatePause holds back every request of that
 * Action, from every backend, for a moment.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "utils/timestamp.h"

#define RATE_WINDOW_US		(1000 * 1000 + 25 * 1000)

/*
 * Reserve the send time of one request of this Action; returns it (it may
 * lie in the future; the caller waits, interruptibly).
 */
TimestampTz
ZimRateReserve(const char *action, TimestampTz now)
{
	ZimActionState *st;
	TimestampTz t = now;
	int			limit = zim_requests_per_second;

	ZimStateLock();
	st = ZimActionLookup(action);

	/* forget send times no future window can contain */
	while (st->count > 0 && st->log[st->head] <= now - RATE_WINDOW_US)
	{
		st->head = (st->head + 1) % st->capacity;
		st->count--;
	}

	if (st->paused_until > t)
		t = st->paused_until;
	if (st->count > 0)
	{
		TimestampTz last = st->log[(st->head + st->count - 1) % st->capacity];

		if (last > t)
			t = last;
	}
	if (st->count >= limit)
	{
		TimestampTz nth = st->log[(st->head + st->count - limit) % st->capacity];

		if (nth + RATE_WINDOW_US > t)
			t = nth + RATE_WINDOW_US;
	}

	/* a full ring holds only entries older than the limit looks back */
	if (st->count == st->capacity)
	{
		st->head = (st->head + 1) % st->capacity;
		st->count--;
	}
	st->log[(st->head + st->count) % st->capacity] = t;
	st->count++;

	if (t > now)
	{
		st->stats.throttled++;
		st->stats.throttled_ms += (double) (t - now) / 1000.0;
	}
	ZimStateUnlock();

	return t;
}

/*
 * Hold back every request of this Action for ms milliseconds from now.
 */
void
ZimRatePause(const char *action, int ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	ZimActionState *st;

	ZimStateLock();
	st = ZimActionLookup(action);
	if (st->paused_until < until)
		st->paused_until = until;
	ZimStateUnlock();
}
