/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  The outgoing rate limit: at most zim_pin.requests_per_second requests
 *	  per Action in any sliding one-second window, in this backend.
 *
 * Each Action keeps the send times of its last N requests in a ring
 * (N = the limit).  A request may go when the oldest of the N is more than
 * a window old; otherwise the backend sleeps on its latch until then, so a
 * cancel or statement_timeout ends the wait at once.
 *
 * The window is one second plus a small margin: we stamp a request when
 * it leaves, the vendor when it arrives, and the first request on a new
 * connection arrives a TLS handshake later than one on a warm connection.
 * The margin keeps the vendor's count, in any one-second window, at or
 * under the limit whether it counts sliding windows or fixed buckets.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define RATE_WINDOW_US		(1000 * 1000 + 25 * 1000)

typedef struct ActionWindow
{
	char		action[ZIM_MAX_ACTION_LEN + 1]; /* hash key */
	int			capacity;		/* the limit the ring was sized for */
	int			count;			/* stamps in the ring */
	int			head;			/* index of the oldest stamp */
	TimestampTz *sent;			/* ring of send times, TopMemoryContext */
} ActionWindow;

static HTAB *windows = NULL;

static ActionWindow *
window_for(const char *action)
{
	ActionWindow *w;
	bool		found;
	char		key[ZIM_MAX_ACTION_LEN + 1] = {0};

	if (windows == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(key);
		ctl.entrysize = sizeof(ActionWindow);
		ctl.hcxt = TopMemoryContext;
		windows = hash_create("zim_pin rate windows", 16, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	strlcpy(key, action, sizeof(key));
	w = hash_search(windows, key, HASH_ENTER, &found);
	if (!found)
	{
		w->capacity = 0;
		w->count = 0;
		w->head = 0;
		w->sent = NULL;
	}

	/* size (or resize, after a reload) the ring, keeping the newest stamps */
	if (w->capacity != zim_requests_per_second)
	{
		int			newcap = zim_requests_per_second;
		TimestampTz *ring = MemoryContextAlloc(TopMemoryContext,
											   sizeof(TimestampTz) * newcap);
		int			keep = Min(w->count, newcap);

		for (int i = 0; i < keep; i++)
			ring[i] = w->sent[(w->head + w->count - keep + i) % w->capacity];
		if (w->sent)
			pfree(w->sent);
		w->sent = ring;
		w->capacity = newcap;
		w->count = keep;
		w->head = 0;
	}
	return w;
}

/*
 * Wait until one more request of this Action may be sent, and count it.
 */
void
ZimRateLimitAcquire(const char *action)
{
	ActionWindow *w = window_for(action);

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz oldest;
		long		wait_ms;

		/* forget stamps that have left the window */
		while (w->count > 0 &&
			   w->sent[w->head] <= now - RATE_WINDOW_US)
		{
			w->head = (w->head + 1) % w->capacity;
			w->count--;
		}

		if (w->count < w->capacity)
		{
			w->sent[(w->head + w->count) % w->capacity] = now;
			w->count++;
			return;
		}

		oldest = w->sent[w->head];
		wait_ms = (long) ((oldest + RATE_WINDOW_US - now + 999) / 1000);
		if (wait_ms < 1)
			wait_ms = 1;

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}
