/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every difference between the PostgreSQL majors zim_pin supports (15,
 *	  16, 17 and 18), in one place.
 *
 * The rest of the code is written once, against the names defined here;
 * no other file tests PG_VERSION_NUM.  Each block says which major
 * changed what.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ZIM_PIN_COMPAT_H
#define ZIM_PIN_COMPAT_H

#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#if PG_VERSION_NUM < 150000
#error "zim_pin needs PostgreSQL 15 or later"
#endif

/*
 * 16: JSON semantic callbacks return a JsonParseErrorType.
 */
#if PG_VERSION_NUM >= 160000
#define ZIM_JSON_CB_TYPE	JsonParseErrorType
#define ZIM_JSON_CB_RETURN	return JSON_SUCCESS
#else
#define ZIM_JSON_CB_TYPE	void
#define ZIM_JSON_CB_RETURN	return
#endif

/*
 * 17: makeJsonLexContextCstringLen takes the context to fill first (NULL:
 * allocate one).
 */
#if PG_VERSION_NUM >= 170000
#define zim_make_json_lex(text, len, enc) \
	makeJsonLexContextCstringLen(NULL, (text), (len), (enc), true)
#else
#define zim_make_json_lex(text, len, enc) \
	makeJsonLexContextCstringLen((text), (len), (enc), true)
#endif

/*
 * 17: CreateWaitEventSet takes a ResourceOwner, not a memory context.  We
 * free the set ourselves (also after an ERROR), so it belongs to no owner.
 */
#if PG_VERSION_NUM >= 170000
#define zim_create_wait_event_set(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define zim_create_wait_event_set(nevents) \
	CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * 17: PGPROC.pgprocno is gone; GetNumberFromPGProc computes it.
 */
#if PG_VERSION_NUM >= 170000
#define zim_procno(proc)	GetNumberFromPGProc(proc)
#else
#define zim_procno(proc)	((proc)->pgprocno)
#endif

/*
 * 16: guc.c frees a check hook's "extra" and replaced values with
 * guc_free(); up to 15 with free().
 */
#if PG_VERSION_NUM >= 160000
#define zim_guc_malloc(sz)	guc_malloc(LOG, (sz))
#define zim_guc_free(p)		guc_free(p)
#else
#define zim_guc_malloc(sz)	malloc(sz)
#define zim_guc_free(p)		free(p)
#endif

/*
 * 17: extensions name their own wait events (WaitEventExtensionNew), so
 * pg_stat_activity.wait_event says what a backend waits for.  Up to 16
 * every wait shows as "Extension".
 */
typedef enum ZimWaitEvent
{
	ZIM_WAIT_NETWORK,			/* ZimPinNetwork: an exchange with ZIM */
	ZIM_WAIT_RATE_LIMIT,		/* ZimPinRateLimit: a send time ahead */
	ZIM_WAIT_BACKOFF,			/* ZimPinBackoff: before a retry */
	ZIM_WAIT_WORKER_IDLE,		/* ZimPinWorkerIdle: worker or launcher */
	ZIM_WAIT_COUNT
} ZimWaitEvent;

#if PG_VERSION_NUM >= 170000
static inline uint32
zim_wait_event(ZimWaitEvent which)
{
	static uint32 ids[ZIM_WAIT_COUNT];
	static const char *const names[ZIM_WAIT_COUNT] = {
		"ZimPinNetwork", "ZimPinRateLimit", "ZimPinBackoff", "ZimPinWorkerIdle"
	};

	/* registered on first use in each process (it takes a lock) */
	if (ids[which] == 0)
		ids[which] = WaitEventExtensionNew(names[which]);
	return ids[which];
}
#else
static inline uint32
zim_wait_event(ZimWaitEvent which)
{
	return PG_WAIT_EXTENSION;
}
#endif

/*
 * 16: pg_unicode_to_server_noerror converts one code point to the database
 * encoding, or says it cannot.  Before, only pg_unicode_to_server, which
 * raises; the conversion function it calls holds no resource, so catching
 * its error without a subtransaction is safe.  Both use the converter
 * that every backend prepares when it connects, so they work outside a
 * transaction too (the queue's worker reads answers with none open).
 */
#if PG_VERSION_NUM >= 160000
#define zim_unicode_to_server_noerror(c, s) pg_unicode_to_server_noerror((c), (s))
#else
static inline bool
zim_unicode_to_server_noerror(pg_wchar c, unsigned char *s)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		pg_unicode_to_server(c, s);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	return ok;
}
#endif

/*
 * 18: the module magic block can carry the module's name and version.
 */
#if PG_VERSION_NUM >= 180000
#define ZIM_MODULE_MAGIC	PG_MODULE_MAGIC_EXT(.name = "zim_pin", .version = "1.5")
#else
#define ZIM_MODULE_MAGIC	PG_MODULE_MAGIC
#endif

/*
 * Settings the worker overrides beyond those every supported major has
 * (worker.c): transaction_timeout came in 17.
 */
#if PG_VERSION_NUM >= 170000
#define ZIM_WORKER_COMPAT_SETTINGS() \
	SetConfigOption("transaction_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE)
#else
#define ZIM_WORKER_COMPAT_SETTINGS() ((void) 0)
#endif

#endif							/* ZIM_PIN_COMPAT_H */
