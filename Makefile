# fieldcrypt: PGXS build for PostgreSQL 15.
#   make / make install   build and install into the system PostgreSQL 15 (as root)
#   make test             build, install, run every test suite (test/run-tests.sh)
#   make demo / bench     build, install, run test/demo.sh / test/bench/run.sh
#   make mutation         break each safety check in a scratch copy, check its tests catch it
#                         (test/mutation/run.sh; slow, not part of make test)
# Without PostgreSQL's dev files, each of these first installs them (test/deps.sh).

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
EXTVERSION := $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" fieldcrypt.control)

MODULE_big = fieldcrypt
# src/ by subsystem (src/README.md): keys/ < columns/ < tde/ < rotation/ < src/.
SRCDIRS = src src/keys src/columns src/tde src/rotation
OBJS = $(patsubst %.c,%.o,$(foreach d,$(SRCDIRS),$(wildcard $(d)/*.c)))
# PGXS tracks no header dependencies: any header change rebuilds every object.
$(OBJS): $(foreach d,$(SRCDIRS),$(wildcard $(d)/*.h))
EXTENSION = fieldcrypt
DATA = $(wildcard sql/fieldcrypt--*.sql)
SHLIB_LINK += -lcrypto
# GNU Nettle's AES-256-GCM for short messages (Debian nettle-dev; src/keys/gcm_nettle.c)
SHLIB_LINK += -lnettle
# libpq: a Citus coordinator prepares key changes on its workers (src/keys/cluster_2pc.c),
# as postgres_fdw connects to other servers (Debian libpq-dev, with postgresql-server-dev-15)
SHLIB_LINK += -lpq
PG_CPPFLAGS += -I$(shell $(PG_CONFIG) --includedir)
# PKCS#11 types for the HSM tenant key (Debian package libp11-kit-dev)
PG_CPPFLAGS += -I/usr/include/p11-kit-1
# headers are named from src/: #include "keys/keystore.h"
PG_CPPFLAGS += -I$(CURDIR)/src
# PG15 headers only need -Wno-unused-parameter (static inline helpers) under -Wextra.
PG_CFLAGS += -Wall -Wextra -Werror -Wno-unused-parameter

# pg_regress tests: sql/NAME.sql + expected/NAME.out, run in this order.
REGRESS = key_api key_rules key_restore key_admin coltypes writeonly core_shapes copy_paths restrict restrict_after utility_shapes edges_hints \
          key_guards reencrypt tam_basic tam_write_paths tam_features tam_ddl tam_keys tam_cache tam_stats keyed_hash tde_guard
REGRESS_OPTS = --inputdir=. --outputdir=results/pg_regress
# Tests need a preloaded server: `make test` is the entry point, not PGXS installcheck.
NO_INSTALLCHECK = 1

.PHONY: all install test demo bench deps installcheck mutation
.DEFAULT_GOAL := all

# Print a make variable, e.g. `make -s print-REGRESS` (used by test/run-tests.sh).
print-%:
	@echo '$($*)'

HAVE_PG := $(and $(wildcard $(PG_CONFIG)),$(wildcard $(shell $(PG_CONFIG) --includedir-server 2>/dev/null)/postgres.h))

ifeq ($(HAVE_PG),)
# Bootstrap: install the dependencies, then redo the goal with PGXS available.
all install test demo bench mutation:
ifdef FC_BOOTSTRAPPED
	@echo "$(PG_CONFIG) or the PostgreSQL 15 server headers are still missing after test/deps.sh" >&2; exit 1
else
	test/deps.sh
	$(MAKE) FC_BOOTSTRAPPED=1 $@
endif
else
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

deps:
	@PG_CONFIG=$(PG_CONFIG) test/deps.sh

test: deps
	$(MAKE) install
	FC_PGBIN=$(bindir) test/run-tests.sh

demo: deps
	@$(MAKE) -s --no-print-directory install >/dev/null
	@FC_PGBIN=$(bindir) test/demo.sh

bench: deps
	$(MAKE) install
	FC_PGBIN=$(bindir) test/bench/run.sh

# Mutation testing: a scratch copy of this tree and of the PostgreSQL installation of
# PG_CONFIG; nothing is installed here.
mutation: deps
	PG_CONFIG=$(PG_CONFIG) test/mutation/run.sh $(MUTANTS)

installcheck: test
endif
