/*
 * hang_resolver.c: a test fixture (LD_PRELOAD) standing for a name server
 * that never answers.  getaddrinfo() of any name ending in ".hang.test"
 * sleeps 30 s and then fails; every other name goes to the C library.
 * 013_resolver.pl preloads it into a cluster to show that a cancel,
 * statement_timeout, zim_pin.connect_timeout_ms or terminate acts at once
 * while libcurl's threaded resolver is still waiting.
 *
 *	cc -shared -fPIC -o hang_resolver.so hang_resolver.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

typedef int (*getaddrinfo_fn) (const char *, const char *,
							   const struct addrinfo *, struct addrinfo **);

int
getaddrinfo(const char *node, const char *service,
			const struct addrinfo *hints, struct addrinfo **res)
{
	static const char suffix[] = ".hang.test";
	size_t		len = node ? strlen(node) : 0;
	getaddrinfo_fn real;

	if (len >= sizeof(suffix) - 1 &&
		strcmp(node + len - (sizeof(suffix) - 1), suffix) == 0)
	{
		sleep(30);
		return EAI_AGAIN;
	}
	real = (getaddrinfo_fn) dlsym(RTLD_NEXT, "getaddrinfo");
	return real(node, service, hints, res);
}
