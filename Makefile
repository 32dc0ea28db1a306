# zim_pin: PGXS build.  `make && make install`, then see README.md.

MODULE_big = zim_pin
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))

EXTENSION = zim_pin
DATA = $(wildcard sql/zim_pin--*.sql)

PG_CONFIG ?= pg_config

PG_CPPFLAGS = -Isrc $(shell pkg-config --cflags libcurl libcrypto)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK = $(shell pkg-config --libs libcurl libcrypto)

# pg_regress on a throwaway, preloaded cluster (see test/run-tests).  The
# double must be running and test/tmp/regress.conf written first.
REGRESS = setup signature settings input privileges conv_pinned family family_read api faults errors queue queue_family merge operations
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=test/tmp/regress.conf

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every file includes the one header
$(OBJS): src/zim_pin.h src/compat.h
