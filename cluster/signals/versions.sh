# shellcheck shell=bash disable=SC2034
# Debian packages of the real signal servers the integration tests run
# (Redis, PostgreSQL 15, Prometheus, Alertmanager), and where install.sh
# unpacks them. Sourced by the other scripts in this folder; no side effects.
#
# Versions are Debian bookworm package versions (`apt-cache policy PKG`).
# Security updates replace a version in the mirror; install.sh then takes the
# candidate version and says so (HGO_SIGNALS_STRICT=1 makes that an error).
signals_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../versions.sh
source "$signals_here/../versions.sh"

# redis-server (a symlink) and redis-tools (the binaries): same version.
REDIS_DEB_VERSION=5:7.0.15-1~deb12u10
# postgresql-15 (server) and postgresql-client-15 (psql, pg_isready). If the
# machine has postgresql-15 installed (/usr/lib/postgresql/15/bin), that one
# is used as it is, whatever its patch version (HGO_SIGNALS_PG_SOURCE=deb
# forces the unpacked package instead).
POSTGRES_MAJOR=15
POSTGRES_DEB_VERSION=15.18-0+deb12u1
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1
ALERTMANAGER_DEB_VERSION=0.25.0-1+b4
# Only for linting these scripts: install.sh shellcheck
SHELLCHECK_DEB_VERSION=0.9.0-1
# Shared libraries that are unpacked next to a binary when the machine lacks
# them, at these versions; others not listed here come at their candidate.
SIGNALS_LIB_PINS="libjemalloc2=5.3.0-1 liblzf1=3.6-3"
# Library packages never unpacked: postgres loads libllvm only for JIT, which
# start.sh turns off.
SIGNALS_LIB_SKIP="libllvm14 libllvm15"

SIGNALS_CACHE=$HGO_CACHE/signals
# A folder per package and version (without the epoch: ':' would break PATH).
# Each holds root/ (the unpacked .debs), bin/ (what to run: symlinks, or
# wrappers that set LD_LIBRARY_PATH for libraries unpacked into root/) and
# .complete once it is usable.
REDIS_HOME=$SIGNALS_CACHE/redis-server-${REDIS_DEB_VERSION#*:}
POSTGRES_HOME=$SIGNALS_CACHE/postgresql-$POSTGRES_MAJOR-${POSTGRES_DEB_VERSION#*:}
PROMETHEUS_HOME=$SIGNALS_CACHE/prometheus-${PROMETHEUS_DEB_VERSION#*:}
ALERTMANAGER_HOME=$SIGNALS_CACHE/prometheus-alertmanager-${ALERTMANAGER_DEB_VERSION#*:}
SHELLCHECK_HOME=$SIGNALS_CACHE/shellcheck-${SHELLCHECK_DEB_VERSION#*:}

REDIS_SERVER=$REDIS_HOME/bin/redis-server
REDIS_CLI=$REDIS_HOME/bin/redis-cli
# postgres, initdb, pg_ctl, psql, pg_isready, ...
POSTGRES_BIN=$POSTGRES_HOME/bin
PROMETHEUS=$PROMETHEUS_HOME/bin/prometheus
PROMTOOL=$PROMETHEUS_HOME/bin/promtool
ALERTMANAGER=$ALERTMANAGER_HOME/bin/alertmanager
AMTOOL=$ALERTMANAGER_HOME/bin/amtool
SHELLCHECK=$SHELLCHECK_HOME/bin/shellcheck

slog() { printf '[signals] %s\n' "$*" >&2; }
