/*-------------------------------------------------------------------------
 *
 * zim_pin.c
 *	  The module's entry point: _PG_init, and nothing else.
 *
 * It defines the settings when the library loads; when preloaded, it also
 * asks for the shared area (shmem.c), hooks COMMIT PREPARED (queue.c)
 * and registers the queue's launcher (worker.c).  It must never touch libcurl: http.c sets libcurl up lazily
 * in each backend, never in the postmaster.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include "miscadmin.h"

ZIM_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	ZimDefineSettings();
	if (process_shared_preload_libraries_in_progress)
	{
		ZimShmemInstallHooks();
		ZimQueueInstallHooks();
		ZimWorkerRegister();
	}
}
