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
 * The window is one second plus a margin, because we stamp a request when
 * it leaves and the vendor counts it when it arrives.  Two requests N
 * apart that leave a window apart arrive less than a second apart if the
 * earlier one was delayed more on the way in, and then the vendor refuses
 * the later one: so the margin must cover how much the delays of the way
 * in vary (the network's jitter).  The limiter cannot see the way in
 * alone, but it sees each exchange's wire time (from the request out to
 * the answer in), which contains it, and keeps the spread (the most minus
 * the least) of the wire times of the Action's last ZIM_RATE_WIRE_SAMPLES
 * exchanges.  The margin is
 *
 *	 25 ms + max(half that spread, at most 50 ms; the widening)
 *
 * 25 ms because the first request on a new connection arrives a TLS
 * handshake later than one on a warm connection.  Half the spread is the
 * jitter of the way in if the network varies alike both ways; capped, so
 * that answers slow for other reasons (a busy vendor) cost little
 * throughput.
 * The widening is the vendor's word that the margin was too narrow
 * anyway: each refusal (660300005 and the other rate-limit Codes;
 * ZimRateExceeded) sets it to the whole spread (at most 250 ms) plus
 * 25 ms, or to twice its current value if that is more, at most 1 s (half
 * the rate: as when another server uses the AppId as much).  Only the
 * refusal of a request that passed the gate after the last widening
 * counts: the others were sent under the narrower margin and tell nothing
 * new.  Without refusals the widening halves every minute, so a jitter
 * that has passed costs little for long.
 *
 * A refusal also holds back every request of that Action, from every
 * backend, for a moment (another server may share the AppId): the pause.
 * Requests already given a send time wait for it at the gate.
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

#include <math.h>
#include <time.h>

#include "storage/ipc.h"

/* the vendor's window, and the fixed part of the margin */
#define RATE_WINDOW_US			(1000 * 1000)
#define RATE_BASE_MARGIN_US		(25 * 1000)
/* the margin for half the spread of the wire times, at most */
#define RATE_SEEN_JITTER_MAX_US	(50 * 1000)
/* the widening a refusal sets: the spread, at most, plus a step; at most */
#define RATE_WIDEN_SPREAD_US	(250 * 1000)
#define RATE_WIDEN_STEP_US		(25 * 1000)
#define RATE_WIDEN_MAX_US		(1000 * 1000)
/* the widest window there can be */
#define RATE_WINDOW_MAX_US \
	(RATE_WINDOW_US + RATE_BASE_MARGIN_US + Max(RATE_WIDEN_MAX_US, RATE_SEEN_JITTER_MAX_US))
/* without refusals the widening halves in this time */
#define RATE_NARROW_HALF_LIFE_US	(60.0 * 1000 * 1000)

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

/* the Action's widening of the margin at now (caller holds the lock) */
static int64
zim_rate_widening(const ZimActionState *st, ZimMonoTime now)
{
	double		halvings;

	if (st->widened_us <= 0)
		return 0;
	halvings = (double) (now - st->widened_at) / RATE_NARROW_HALF_LIFE_US;
	if (halvings <= 0)
		return st->widened_us;
	if (halvings >= 32)
		return 0;
	return (int64) (st->widened_us * exp2(-halvings));
}

/*
 * The Action's window at now: no window of this length may hold more send
 * times than the limit (caller holds the lock).  It changes at any moment;
 * the rings keep every send time that the widest window can hold.
 */
static int64
zim_rate_window(const ZimActionState *st, ZimMonoTime now)
{
	int64		seen = Min(st->wire_spread_us / 2, RATE_SEEN_JITTER_MAX_US);

	return RATE_WINDOW_US + RATE_BASE_MARGIN_US + Max(seen, zim_rate_widening(st, now));
}

/*
 * Add a wire time to the Action's recent ones, and update how much they
 * vary: the most minus the least (caller holds the lock).
 */
static void
zim_rate_add_wire(ZimActionState *st, int64 wire_us)
{
	int32		lo,
				hi;

	st->wire_us[st->wire_next] = (int32) Min(wire_us, PG_INT32_MAX);
	st->wire_next = (st->wire_next + 1) % ZIM_RATE_WIRE_SAMPLES;
	st->wire_count = Min(st->wire_count + 1, ZIM_RATE_WIRE_SAMPLES);

	lo = hi = st->wire_us[0];
	for (int i = 1; i < st->wire_count; i++)
	{
		lo = Min(lo, st->wire_us[i]);
		hi = Max(hi, st->wire_us[i]);
	}
	st->wire_spread_us = hi - lo;
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
	int64		window;

	ZimShmemLock();
	st = ZimActionLookup(action);
	window = zim_rate_window(st, now);

	/* forget send times no future window can contain */
	while (st->count > 0 && ZimReservation(st, 0) <= now - RATE_WINDOW_MAX_US)
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

		if (nth + window > t)
			t = nth + window;
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
 * while that is under the limit, and the Action is not paused, may another
 * start.  Returns false, and when to try again, if not.
 */
bool
ZimRateGate(const char *action, ZimMonoTime now, ZimMonoTime reserved_at,
			ZimMonoTime *retry_at)
{
	ZimActionState *st;
	int64		window;
	int			room;
	bool		full;
	bool		ok;

	ZimShmemLock();
	st = ZimActionLookup(action);
	window = zim_rate_window(st, now);
	while (st->sent_count > 0 && ZimSent(st, 0) <= now - RATE_WINDOW_MAX_US)
	{
		st->sent_head = (st->sent_head + 1) % st->capacity;
		st->sent_count--;
	}

	/*
	 * The window may hold fewer than room confirmed sends: so the room'th
	 * newest, if any, must lie outside it.
	 */
	room = zim_requests_per_second - st->inflight;
	full = room <= 0 ||
		(st->sent_count >= room && ZimSent(st, st->sent_count - room) > now - window);
	ok = st->paused_until <= now && !full;
	if (ok)
	{
		st->inflight++;
		my_inflight[ZimActionIndex(st)]++;
		/* the reservation is used: the request goes now */
		(void) zim_forget_mine(ZimActionIndex(st), reserved_at);
	}
	else if (st->paused_until > now)
		*retry_at = st->paused_until;
	else if (room > 0)
	{
		/* when the room'th newest leaves the window */
		*retry_at = ZimSent(st, st->sent_count - room) + window;
	}
	else
	{
		/*
		 * Every request the window may hold is still in flight (a transfer
		 * that confirms still counts, now as sent): look again shortly.
		 */
		*retry_at = now + 5 * 1000;
	}
	ZimShmemUnlock();

	if (ok)
		zim_rate_register_exit();
	return ok;
}

/*
 * A transfer that passed the gate is over: record when it left (0 if it
 * surely never left) and, if it was answered, its wire time: from when it
 * left until the answer was in (-1 if none).
 */
void
ZimRateSent(const char *action, ZimMonoTime sent_at, int64 wire_us)
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
	if (wire_us >= 0)
		zim_rate_add_wire(st, wire_us);
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
 * The vendor refused a request of this Action that passed the gate at
 * started, for its rate: widen the Action's margin (see the top of this
 * file) unless the request was sent before the last widening, and hold
 * back every request of the Action for pause_ms from now.
 */
void
ZimRateExceeded(const char *action, ZimMonoTime started, int pause_ms)
{
	ZimMonoTime now = ZimRateNow();
	int64		pause = (int64) pause_ms * 1000;
	int64		widened = -1;
	ZimActionState *st;

	ZimShmemLock();
	st = ZimActionLookup(action);
	if (started >= st->widened_at)
	{
		int64		current = zim_rate_widening(st, now);

		widened = Max(2 * current,
					  Min(st->wire_spread_us, RATE_WIDEN_SPREAD_US) + RATE_WIDEN_STEP_US);
		widened = Min(widened, RATE_WIDEN_MAX_US);
		st->widened_us = widened;
		st->widened_at = now;
	}
	if (st->paused_until < now + pause)
		st->paused_until = now + pause;
	ZimShmemUnlock();

	if (widened >= 0)
		elog(DEBUG1, "zim_pin: %s rate exceeded: margin widened to %.1f ms",
			 action, (RATE_BASE_MARGIN_US + widened) / 1000.0);
}
