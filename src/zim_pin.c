/*-------------------------------------------------------------------------
 *
 * zim_pin.c
 *	  Module entry point: defines the settings when the library loads.
 *
 * When preloaded, it also asks for the shared memory of shared.c.  libcurl
 * is set up lazily by the first request of each backend (http.c), never in
 * the postmaster.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "fmgr.h"
#include "miscadmin.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	ZimDefineSettings();
	if (process_shared_preload_libraries_in_progress)
	{
		ZimSharedInstallHooks();
		ZimQueueRegisterWorkers();
	}
}
