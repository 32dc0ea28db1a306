/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  The outgoing rate limit: at most zim_pin.requests_per_second requests
 *	  per Action in any sliding one-second window, across every backend of
 *	  the server when preloaded (per backend otherwise); and its clock.
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
 * Every time here is a ZimMonoTime, of CLOCK_MONOTONIC (ZimRateNow): a
 * step of the wall clock (NTP, an administrator) neither stalls the limiter
 * nor lets a burst out.  The clock is the machine's, the same in every
 * backend, so the times in shared memory compare across processes.
 *
 * The limiter only decides times: it never waits (client.c does, on the
 * latch), never raises while it holds the lock, and counts nothing (the
 * caller tells stats.c).
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include <time.h>

#include "storage/ipc.h"

#define RATE_WINDOW_US		(1000 * 1000 + 25 * 1000)

/* transfers of this backend counted in an Action's inflight, by slot */
static int	my_inflight[ZIM_MAX_ACTIONS];

/*
 * This backend's reservations not yet used or given back, so that a
 * backend that exits (even by FATAL, which runs no PG_FINALLY) gives them
 * back.  A call holds at most ZIM_MAX_TRANSFERS at once.
 */
typedef struct MyReservation
{
	int			slot;
	ZimMonoTime at;
} MyReservation;

static MyReservation my_reservations[ZIM_MAX_TRANSFERS * 2];
static int	n_my_reservations = 0;
static bool exit_callback_registered = false;

static void zim_rate_at_exit(int code, Datum arg);

/*
 * Now, on the limiter's clock.  Never called with the lock held.
 */
ZimMonoTime
ZimRateNow(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		elog(ERROR, "clock_gettime(CLOCK_MONOTONIC) failed: %m");
	return (ZimMonoTime) ts.tv_sec * USECS_PER_SEC + ts.tv_nsec / 1000;
}

static void
zim_rate_register_exit(void)
{
	if (ZimShmemIsShared() && !exit_callback_registered)
	{
		before_shmem_exit(zim_rate_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}
}

/* forget one of this backend's reservations; false if it is not one */
static bool
zim_forget_mine(int slot, ZimMonoTime at)
{
	for (int i = n_my_reservations - 1; i >= 0; i--)
		if (my_reservations[i].slot == slot && my_reservations[i].at == at)
		{
			my_reservations[i] = my_reservations[--n_my_reservations];
			return true;
		}
	return false;
}

/*
 * Take a reserved send time out of an Action's ring (caller holds the
 * lock).  Later reservations keep their times: they only ever lie later
 * than the limit needs, so every window still holds at most the limit.
 */
static void
zim_ring_remove(ZimActionState *st, ZimMonoTime at)
{
	for (int i = st->count - 1; i >= 0; i--)
	{
		if (ZimReservation(st, i) != at)
			continue;
		for (int k = i; k < st->count - 1; k++)
			ZimReservation(st, k) = ZimReservation(st, k + 1);
		st->count--;
		return;
	}
}

/*
 * Reserve the send time of one request of this Action; returns it (it may
 * lie in the future; the caller waits, interruptibly, and counts the wait).
 */
ZimMonoTime
ZimRateReserve(const char *action, ZimMonoTime now)
{
	ZimActionState *st;
	ZimMonoTime t = now;
	int			limit = zim_requests_per_second;

	ZimShmemLock();
	st = ZimActionLookup(action);

	/* forget send times no future window can contain */
	while (st->count > 0 && ZimReservation(st, 0) <= now - RATE_WINDOW_US)
	{
		st->head = (st->head + 1) % st->capacity;
		st->count--;
	}

	if (st->paused_until > t)
		t = st->paused_until;
	if (st->count > 0)
	{
		ZimMonoTime last = ZimReservation(st, st->count - 1);

		if (last > t)
			t = last;
	}
	if (st->count >= limit)
	{
		ZimMonoTime nth = ZimReservation(st, st->count - limit);

		if (nth + RATE_WINDOW_US > t)
			t = nth + RATE_WINDOW_US;
	}

	/* a full ring holds only entries older than the limit looks back */
	if (st->count == st->capacity)
	{
		st->head = (st->head + 1) % st->capacity;
		st->count--;
	}
	st->count++;
	ZimReservation(st, st->count - 1) = t;

	if (n_my_reservations < (int) lengthof(my_reservations))
		my_reservations[n_my_reservations++] = (MyReservation)
		{
			ZimActionIndex(st), t
		};
	ZimShmemUnlock();
	zim_rate_register_exit();

	return t;
}

/*
 * A request that reserved send time at will not be sent (its call was
 * cancelled, timed out or failed): give the time back, so that abandoned
 * calls cannot push everyone's next send time into the future.
 */
void
ZimRateRelease(const char *action, ZimMonoTime at)
{
	ZimActionState *st;

	ZimShmemLock();
	st = ZimActionLookup(action);
	if (zim_forget_mine(ZimActionIndex(st), at))
		zim_ring_remove(st, at);
	ZimShmemUnlock();
}

/*
 * The gate a request passes when its reserved time has come, just before
 * it starts.  Reservations assume a request leaves when it starts; one
 * that must first open a TLS connection leaves later, and a burst of them
 * can leave well after the next second's requests on warm connections were
 * reserved.  So the gate counts what really happened: the send times that
 * transfers have confirmed in the last window, plus every transfer started
 * whose send time is not yet known (it may leave at any moment).  Only
 * while that is under the limit may another start.  Returns false, and
 * when to try again, if not.
 */
bool
ZimRateGate(const char *action, ZimMonoTime now, ZimMonoTime reserved_at,
			ZimMonoTime *retry_at)
{
	ZimActionState *st;
	int			limit = zim_requests_per_second;
	bool		ok;

	ZimShmemLock();
	st = ZimActionLookup(action);
	while (st->sent_count > 0 && ZimSent(st, 0) <= now - RATE_WINDOW_US)
	{
		st->sent_head = (st->sent_head + 1) % st->capacity;
		st->sent_count--;
	}
	ok = st->sent_count + st->inflight < limit;
	if (ok)
	{
		st->inflight++;
		my_inflight[ZimActionIndex(st)]++;
		/* the reservation is used: the request goes now */
		(void) zim_forget_mine(ZimActionIndex(st), reserved_at);
	}
	else
	{
		/*
		 * The count drops only when the oldest confirmed send leaves the
		 * window (a transfer that confirms still counts, now as sent).  If
		 * every counted request is still in flight, look again shortly.
		 */
		if (st->sent_count > 0)
			*retry_at = ZimSent(st, 0) + RATE_WINDOW_US;
		else
			*retry_at = now + 5 * 1000;
	}
	ZimShmemUnlock();

	if (ok)
		zim_rate_register_exit();
	return ok;
}

/*
 * A transfer that passed the gate is over: record when it left (0 if it
 * surely never left).
 */
void
ZimRateSent(const char *action, ZimMonoTime sent_at)
{
	ZimActionState *st;

	ZimShmemLock();
	st = ZimActionLookup(action);
	if (st->inflight > 0)
		st->inflight--;
	if (my_inflight[ZimActionIndex(st)] > 0)
		my_inflight[ZimActionIndex(st)]--;
	if (sent_at != 0)
	{
		int			i;

		/* a full ring holds only entries older than the limit looks back */
		if (st->sent_count == st->capacity)
		{
			st->sent_head = (st->sent_head + 1) % st->capacity;
			st->sent_count--;
		}
		/* insert in order: transfers confirm roughly in send order */
		st->sent_count++;
		for (i = st->sent_count - 1; i > 0 && ZimSent(st, i - 1) > sent_at; i--)
			ZimSent(st, i) = ZimSent(st, i - 1);
		ZimSent(st, i) = sent_at;
	}
	ZimShmemUnlock();
}

/*
 * A backend that exits (even by FATAL, which runs no PG_FINALLY) must not
 * leave transfers counted as in flight, nor send times reserved, in shared
 * memory.
 */
static void
zim_rate_at_exit(int code, Datum arg)
{
	ZimMonoTime now = ZimRateNow();

	if (ZimShmemLockHeld())
		return;					/* LWLockReleaseAll comes later; skip */
	ZimShmemLock();
	for (int i = 0; i < ZimActionCount() && i < ZIM_MAX_ACTIONS; i++)
	{
		ZimActionState *st = ZimActionByIndex(i);

		while (my_inflight[i] > 0)
		{
			my_inflight[i]--;
			if (st->inflight > 0)
				st->inflight--;
			/* it may have left: count it as sent now, conservatively */
			if (st->sent_count < st->capacity)
			{
				st->sent_count++;
				ZimSent(st, st->sent_count - 1) = now;
			}
		}
	}
	for (int i = 0; i < n_my_reservations; i++)
		if (my_reservations[i].slot < ZimActionCount())
			zim_ring_remove(ZimActionByIndex(my_reservations[i].slot), my_reservations[i].at);
	n_my_reservations = 0;
	ZimShmemUnlock();
}

/*
 * Hold back every request of this Action for ms milliseconds from now.
 */
void
ZimRatePause(const char *action, int ms)
{
	ZimMonoTime until = ZimRateNow() + (int64) ms * 1000;
	ZimActionState *st;

	ZimShmemLock();
	st = ZimActionLookup(action);
	if (st->paused_until < until)
		st->paused_until = until;
	ZimShmemUnlock();
}
