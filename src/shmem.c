/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared area: its layout, the hooks that create it, its lock, the
 *	  per-Action slots and the queue's coordination.
 *
 * When zim_pin is in shared_preload_libraries, the area lives in shared
 * memory (shmem_request_hook / shmem_startup_hook) and is shared by every
 * backend of the server; otherwise each backend keeps its own Action slots
 * in TopMemoryContext, the limits and counts are per backend, and there is
 * no queue coordination (ZimShmemQueue returns NULL).
 *
 * Layout (one ShmemInitStruct named "zim_pin"):
 *
 *	 ZimShared		stats_reset, n_actions, other_reported, the
 *					ZimQueueShared of the launcher, worker and enqueuing
 *					backends
 *	 slot 0 .. 15	ZIM_MAX_ACTIONS ZimActionState of SHARED_SLOT_SIZE each:
 *					the Action's name, counters, and the limiter's state:
 *					pause, margin, recent wire times and two rings of
 *					ZIM_MAX_RATE send times (ratelimit.c); the first nine are
 *					the documented Actions (ZIM_KNOWN_ACTIONS), then others
 *					as they come; the last slot is "(other)", shared by the
 *					Actions that found no free slot
 *
 * Slots are never freed (an Action's limiter state must outlive its
 * calls).  The first time an Action finds no free slot, one LOG line says
 * so, once for the life of the shared area (other_reported; per backend in
 * per-backend mode).
 *
 * Locking: one LWLock of the named tranche "zim_pin" protects all of it.
 * It is held only for a few instructions at a time (a slot lookup, a
 * reservation, a counter update, a flag), never across a wait, an ereport
 * or anything that can CHECK_FOR_INTERRUPTS: that LOG line is written by
 * ZimShmemUnlock after it releases the lock.  ZimShmemLock and
 * ZimShmemUnlock take no lock in per-backend mode.
 *
 * This file must never hold a pointer in shared memory: slots are found by
 * index.  It knows the layout, not what the fields mean: the limiter,
 * the counters and the queue own those.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/* the shared area: a header and ZIM_MAX_ACTIONS slots of fixed size */
typedef struct ZimShared
{
	TimestampTz stats_reset;
	int			n_actions;
	bool		other_reported; /* the slots' exhaustion has been logged */
	ZimQueueShared queue;
} ZimShared;

#define SHARED_SLOT_SIZE \
	MAXALIGN(offsetof(ZimActionState, rings) + 2 * sizeof(ZimMonoTime) * ZIM_MAX_RATE)

static ZimShared *zim_shared = NULL;
static LWLock *zim_lock = NULL;


/* per-backend mode */
static ZimActionState *local_actions[ZIM_MAX_ACTIONS];
static int	local_n_actions = 0;
static bool local_other_reported = false;
static TimestampTz local_stats_reset = 0;

/* the Action that first found no free slot, to be logged at unlock */
static char other_report[ZIM_MAX_ACTION_LEN + 1];

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
zim_shared_size(void)
{
	return add_size(MAXALIGN(sizeof(ZimShared)),
					mul_size(ZIM_MAX_ACTIONS, SHARED_SLOT_SIZE));
}

static ZimActionState *
shared_slot(int i)
{
	return (ZimActionState *) ((char *) zim_shared + MAXALIGN(sizeof(ZimShared)) +
							   (Size) i * SHARED_SLOT_SIZE);
}

static void
zim_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(zim_shared_size());
	RequestNamedLWLockTranche("zim_pin", 1);
}

static void
zim_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	zim_shared = ShmemInitStruct("zim_pin", zim_shared_size(), &found);
	zim_lock = &(GetNamedLWLockTranche("zim_pin"))->lock;
	if (!found)
	{
		memset(zim_shared, 0, zim_shared_size());
		zim_shared->stats_reset = GetCurrentTimestamp();
		zim_shared->queue.launcher_procno = -1;
		zim_shared->queue.worker_procno = -1;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from _PG_init while shared_preload_libraries are processed.
 */
void
ZimShmemInstallHooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = zim_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = zim_shmem_startup;
}

bool
ZimShmemIsShared(void)
{
	return zim_shared != NULL;
}

void
ZimShmemLock(void)
{
	if (zim_shared)
		LWLockAcquire(zim_lock, LW_EXCLUSIVE);
}

void
ZimShmemUnlock(void)
{
	if (zim_shared)
		LWLockRelease(zim_lock);

	/* what ZimActionLookup found while the lock was held */
	if (other_report[0] != '\0')
	{
		char		action[ZIM_MAX_ACTION_LEN + 1];

		strlcpy(action, other_report, sizeof(action));
		other_report[0] = '\0';
		ereport(LOG,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("zim_pin has no free Action slot for Action \"%s\"", action),
				 errdetail("All %d slots are taken. This Action and every further one without a slot share the rate limit and statistics of \"(other)\" until the server restarts.",
						   ZIM_MAX_ACTIONS),
				 errhint("Action names given to zim_api() take slots, made-up ones too. This is logged once.")));
	}
}

/*
 * True if this backend holds the lock: only after an ERROR escaped a locked
 * section (which does not happen by design); transaction abort releases it.
 */
bool
ZimShmemLockHeld(void)
{
	return zim_shared && LWLockHeldByMe(zim_lock);
}

/*
 * In per-backend mode, make sure the slot's log can hold the current limit
 * (the limit can grow on reload).  There is no lock in this mode, so the
 * allocation is safe here.
 */
static ZimActionState *
local_ensure_capacity(int i)
{
	ZimActionState *old = local_actions[i];
	int			want = zim_requests_per_second;
	ZimActionState *new;

	if (old && old->capacity >= want)
		return old;

	new = MemoryContextAllocZero(TopMemoryContext,
								 offsetof(ZimActionState, rings) + 2 * sizeof(ZimMonoTime) * want);
	if (old)
	{
		memcpy(new, old, offsetof(ZimActionState, rings));
		new->capacity = want;
		new->head = 0;
		new->sent_head = 0;
		for (int k = 0; k < old->count; k++)
			ZimReservation(new, k) = ZimReservation(old, k);
		for (int k = 0; k < old->sent_count; k++)
			ZimSent(new, k) = ZimSent(old, k);
		pfree(old);
	}
	new->capacity = want;
	local_actions[i] = new;
	return new;
}

/* add a slot named name as number n_actions (caller holds the lock) */
static int
zim_add_slot(const char *name)
{
	int			i;
	ZimActionState *st;

	if (zim_shared)
	{
		i = zim_shared->n_actions++;
		st = shared_slot(i);
		memset(st, 0, offsetof(ZimActionState, rings));
		st->capacity = ZIM_MAX_RATE;
	}
	else
	{
		i = local_n_actions++;
		local_actions[i] = NULL;
		st = local_ensure_capacity(i);
	}
	strlcpy(st->action, name, sizeof(st->action));
	return i;
}

/*
 * The state of an Action; the caller holds ZimShmemLock.  The documented
 * Actions have slots of their own from the start, whatever names zim_api
 * is called with.  Other Actions take the free slots as they come; when
 * those are gone, the last slot, "(other)", is shared by every further
 * Action (a stricter limit, so still safe), and the first of them is
 * logged once.
 */
ZimActionState *
ZimActionLookup(const char *action)
{
	static const char *const known[] = {ZIM_KNOWN_ACTIONS};
	int			n;
	int			i;

	if ((zim_shared ? zim_shared->n_actions : local_n_actions) == 0)
		for (int k = 0; k < (int) lengthof(known); k++)
			(void) zim_add_slot(known[k]);

	n = zim_shared ? zim_shared->n_actions : local_n_actions;
	for (i = 0; i < n; i++)
	{
		ZimActionState *st = zim_shared ? shared_slot(i) : local_actions[i];

		if (strcmp(st->action, action) == 0)
			return zim_shared ? st : local_ensure_capacity(i);
	}
	if (n < ZIM_MAX_ACTIONS - 1)
		i = zim_add_slot(action);
	else
	{
		bool	   *reported = zim_shared ? &zim_shared->other_reported
			: &local_other_reported;

		i = (n == ZIM_MAX_ACTIONS) ? ZIM_MAX_ACTIONS - 1 : zim_add_slot("(other)");
		if (!*reported)
		{
			/* logged by ZimShmemUnlock, once the lock is released */
			*reported = true;
			strlcpy(other_report, action, sizeof(other_report));
		}
	}
	return zim_shared ? shared_slot(i) : local_ensure_capacity(i);
}

/*
 * The slot number of an Action's state.
 */
int
ZimActionIndex(const ZimActionState *st)
{
	int			n = ZimActionCount();

	for (int i = 0; i < n; i++)
		if (ZimActionByIndex(i) == st)
			return i;
	return ZIM_MAX_ACTIONS - 1;
}

/*
 * Iterate over the Actions seen so far (caller holds the lock).
 */
int
ZimActionCount(void)
{
	return zim_shared ? zim_shared->n_actions : local_n_actions;
}

ZimActionState *
ZimActionByIndex(int i)
{
	return zim_shared ? shared_slot(i) : local_actions[i];
}

/*
 * When the counters were last reset, in the shared area or this backend's
 * (caller holds the lock).
 */
TimestampTz *
ZimShmemStatsReset(void)
{
	if (zim_shared)
		return &zim_shared->stats_reset;
	if (local_stats_reset == 0)
		local_stats_reset = GetCurrentTimestamp();
	return &local_stats_reset;
}

/*
 * The queue's coordination state (caller holds the lock); NULL when not
 * preloaded.
 */
ZimQueueShared *
ZimShmemQueue(void)
{
	return zim_shared ? &zim_shared->queue : NULL;
}
