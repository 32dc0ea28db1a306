/*
 * step_clock.c: a test fixture (LD_PRELOAD) standing for a wall clock that
 * steps, as an administrator or NTP may step it.  The wall clock, as
 * gettimeofday(), time() and clock_gettime(CLOCK_REALTIME) read it, is off
 * by the seconds written as decimal text at the start of the file named by
 * ZIM_CLOCK_STEP_FILE (32 bytes, rewritten in place, never truncated: every
 * process maps it).  CLOCK_MONOTONIC and the other clocks are the C
 * library's.  028_clock_step.pl preloads it into a cluster and steps the
 * cluster's wall clock while the limiter is busy.
 *
 *	cc -shared -fPIC -o step_clock.so step_clock.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define STEP_FILE_SIZE 32

typedef int (*gettimeofday_fn) (struct timeval *, void *);
typedef int (*clock_gettime_fn) (clockid_t, struct timespec *);

/* the step file, mapped by each process on first use */
static const char *volatile step_map = NULL;

/* the step now, in seconds */
static long
step_seconds(void)
{
	const char *map = step_map;
	char		buf[STEP_FILE_SIZE + 1];

	if (map == NULL)
	{
		const char *path = getenv("ZIM_CLOCK_STEP_FILE");
		void	   *p;
		int			fd;

		if (path == NULL || (fd = open(path, O_RDONLY)) < 0)
			return 0;
		p = mmap(NULL, STEP_FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
		close(fd);
		if (p == MAP_FAILED)
			return 0;
		step_map = map = p;
	}
	memcpy(buf, map, STEP_FILE_SIZE);
	buf[STEP_FILE_SIZE] = '\0';
	return strtol(buf, NULL, 10);
}

int
gettimeofday(struct timeval *tv, void *tz)
{
	static gettimeofday_fn real = NULL;
	int			rc;

	if (real == NULL)
		real = (gettimeofday_fn) dlsym(RTLD_NEXT, "gettimeofday");
	rc = real(tv, tz);

	if (rc == 0)
		tv->tv_sec += step_seconds();
	return rc;
}

int
clock_gettime(clockid_t clock, struct timespec *ts)
{
	static clock_gettime_fn real = NULL;
	int			rc;

	if (real == NULL)
		real = (clock_gettime_fn) dlsym(RTLD_NEXT, "clock_gettime");
	rc = real(clock, ts);

	if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
		ts->tv_sec += step_seconds();
	return rc;
}

time_t
time(time_t *t)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	if (t)
		*t = tv.tv_sec;
	return tv.tv_sec;
}
