# test/lib.sh: shared set-up for test/run-tests, test/demo and test/bench.
#
# Sourced, not run.  Installs what is missing from Debian's packages, builds
# and installs the extension, makes a throwaway work directory that the
# postgres OS user can write, certificates from a throwaway CA, and starts
# the ZIM double on a free port of 127.0.0.1.  Everything started here is
# stopped by zim_cleanup (installed as an EXIT trap).
#
# PG_MAJOR chooses the server: 15 (the default) is Debian 12's packages;
# 16, 17 and 18 are built by test/build-pg into a cache outside the
# checkout (/var/cache/zim_pin/pg/N, or $ZIM_PG_CACHE/N) on first use.

set -euo pipefail

ZIM_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
if [ "$PG_MAJOR" = 15 ]; then
	PG_BIN=/usr/lib/postgresql/15/bin
else
	PG_BIN=${ZIM_PG_CACHE:-/var/cache/zim_pin/pg}/$PG_MAJOR/bin
fi
export PATH="$PG_BIN:$PATH"

# test credentials shared by the double and the clusters (not real ones)
ZIM_APP_ID=3000000001
ZIM_SECRET=f3c1d2e4b5a69788f3c1d2e4b5a69788

ZIM_PIDS=()

zim_log() { printf '== %s\n' "$*" >&2; }

# Install the Debian packages this project needs, if any is missing, and
# build the server if PG_MAJOR is not Debian's.
zim_install_deps() {
	local pkgs=(make gcc pkg-config openssl curl python3
		libcurl4-openssl-dev libssl-dev libipc-run-perl)
	[ "$PG_MAJOR" = 15 ] && pkgs+=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron)
	local missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		if [ "$(id -u)" != 0 ]; then
			echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
			exit 1
		fi
		zim_log "installing ${missing[*]}"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	if [ "$PG_MAJOR" != 15 ]; then
		bash "$ZIM_SRC/test/build-pg" "$PG_MAJOR" >/dev/null
	fi
	# where this server's PGXS keeps pg_regress and the TAP modules
	PG_PGXS_DIR=$(dirname "$(dirname "$(dirname "$("$PG_BIN/pg_config" --pgxs)")")")
	export PG_PGXS_DIR
}

# Build with -Werror and install into this PostgreSQL.  Always from clean:
# objects left by a build for another major would link into a library that
# the server refuses.
zim_build_install() {
	zim_log "building and installing zim_pin for $("$PG_BIN/pg_config" --version)"
	make -C "$ZIM_SRC" -s clean PG_CONFIG="$PG_BIN/pg_config" >/dev/null
	make -C "$ZIM_SRC" -s PG_CONFIG="$PG_BIN/pg_config" >/dev/null
	make -C "$ZIM_SRC" -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
}

# On the PostgreSQL 18 pass, zim_pin for the 16 cache too, for 033's
# pg_upgrade from 16: builds that server first if it is missing (a lone
# --pg 18 run on a fresh machine), then builds zim_pin for it from a copy of
# the source, so that the checkout's objects stay 18's.  Sets ZIM_OLD_BIN.
zim_build_install_old() {
	local major=$1 bin tmp
	bin=$(bash "$ZIM_SRC/test/build-pg" "$major")
	zim_log "building and installing zim_pin for $("$bin/pg_config" --version) (pg_upgrade's old server)"
	tmp=$(mktemp -d /tmp/zim_pin-old-build.XXXXXX)
	cp -r "$ZIM_SRC/Makefile" "$ZIM_SRC/src" "$ZIM_SRC/sql" "$ZIM_SRC/zim_pin.control" "$tmp/"
	# the copy has the checkout's objects, built for this pass's major
	if ! { make -C "$tmp" -s clean PG_CONFIG="$bin/pg_config" &&
		make -C "$tmp" -s PG_CONFIG="$bin/pg_config" install; } >/dev/null; then
		rm -rf "$tmp"
		echo "zim_pin failed to build for PostgreSQL $major" >&2
		exit 1
	fi
	rm -rf "$tmp"
	ZIM_OLD_BIN=$bin
	export ZIM_OLD_BIN
}

zim_cleanup() {
	local pid
	for pid in "${ZIM_PIDS[@]:-}"; do
		[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	done
	if [ -n "${ZIM_PGDATA:-}" ] && [ -f "$ZIM_PGDATA/postmaster.pid" ]; then
		runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ZIM_PGDATA" -m immediate stop >/dev/null 2>&1 || true
	fi
	if [ -n "${ZIM_WORK:-}" ] && [ -z "${ZIM_KEEP_WORK:-}" ]; then
		rm -rf "$ZIM_WORK"
	fi
}

# A work directory the postgres user owns, with a copy of the test inputs
# (the checkout itself may not be readable by postgres).
zim_make_work() {
	ZIM_WORK=$(mktemp -d /tmp/zim_pin.XXXXXX)
	export ZIM_WORK
	trap zim_cleanup EXIT
	cp -r "$ZIM_SRC/Makefile" "$ZIM_SRC/sql" "$ZIM_SRC/expected" "$ZIM_SRC/test" "$ZIM_WORK/"
	rm -rf "$ZIM_WORK/test/tmp"
	mkdir -p "$ZIM_WORK/test/tmp"
	chmod 755 "$ZIM_WORK"
	bash "$ZIM_SRC/test/make_certs.sh" "$ZIM_WORK/test/tmp/certs" >/dev/null
	# the secret reaches the TAP tests as a file, never through the
	# environment (a postmaster at debug5 logs its environment)
	printf '%s' "$ZIM_SECRET" >"$ZIM_WORK/test/tmp/secret"
	chmod 600 "$ZIM_WORK/test/tmp/secret"
	chown -R postgres: "$ZIM_WORK"
	export ZIM_CERT_DIR="$ZIM_WORK/test/tmp/certs"
}

# Start the double; sets ZIM_PORT and ZIM_URL.  Extra arguments go to it.
zim_start_double() {
	local portfile="$ZIM_WORK/test/tmp/double.port"
	rm -f "$portfile"
	runuser -u postgres -- python3 "$ZIM_WORK/test/zim_double.py" \
		--port 0 --port-file "$portfile" \
		--cert "$ZIM_CERT_DIR/server.crt" --key "$ZIM_CERT_DIR/server.key" \
		--app-id "$ZIM_APP_ID" --secret "$ZIM_SECRET" \
		--log "$ZIM_WORK/test/tmp/double.log" --sig-log "$ZIM_WORK/test/tmp/signatures.log" "$@" 2>>"$ZIM_WORK/test/tmp/double.err" &
	ZIM_PIDS+=($!)
	for _ in $(seq 1 100); do
		[ -s "$portfile" ] && break
		sleep 0.1
	done
	[ -s "$portfile" ] || { echo "the ZIM double did not start" >&2; exit 1; }
	ZIM_PORT=$(cat "$portfile")
	ZIM_URL="https://127.0.0.1:$ZIM_PORT/"
	export ZIM_PORT ZIM_URL ZIM_APP_ID
	zim_log "ZIM double listening on $ZIM_URL"
}

# The zim_pin lines of a postgresql.conf for the double.
zim_conf_lines() {
	cat <<EOF
shared_preload_libraries = 'zim_pin'
zim_pin.app_id = '$ZIM_APP_ID'
zim_pin.server_secret = '$ZIM_SECRET'
zim_pin.api_url = '$ZIM_URL'
zim_pin.ca_file = '$ZIM_CERT_DIR/ca.crt'
EOF
}

# Start a throwaway cluster in the work directory; sets ZIM_PGDATA and
# ZIM_PGPORT.  Extra arguments are lines for postgresql.conf.
zim_start_cluster() {
	ZIM_PGDATA="$ZIM_WORK/pgdata"
	ZIM_PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	runuser -u postgres -- "$PG_BIN/initdb" -D "$ZIM_PGDATA" -A trust -E UTF8 --no-sync >/dev/null
	{
		zim_conf_lines
		echo "port = $ZIM_PGPORT"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$ZIM_WORK'"
		local l
		for l in "$@"; do echo "$l"; done
	} >>"$ZIM_PGDATA/postgresql.conf"
	runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$ZIM_PGDATA" -l "$ZIM_WORK/postgres.log" -w start >/dev/null
	export ZIM_PGDATA ZIM_PGPORT
}

zim_psql() {
	runuser -u postgres -- "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
		-h "$ZIM_WORK" -p "$ZIM_PGPORT" -d postgres "$@"
}
