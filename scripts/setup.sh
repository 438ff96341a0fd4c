#!/usr/bin/env bash
# Installs everything pgrouter's demo and tests need on a fresh machine; safe to re-run.
# PostgreSQL server binaries come from apt only when no initdb is found.
set -euo pipefail
cd "$(dirname "$0")/.."

have_initdb() {
    [ -n "${PGROUTER_PG_BIN:-}" ] && [ -x "$PGROUTER_PG_BIN/initdb" ] && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
    command -v initdb >/dev/null
}

if ! have_initdb; then
    echo "setup: no initdb found; installing PostgreSQL server binaries with apt" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql
    # The Debian package starts a cluster of its own; the tests do not need it.
    $SUDO service postgresql stop >/dev/null 2>&1 || true
fi

python3 -m pip install -q --disable-pip-version-check -e ".[${1:-test}]"

# aiopg.sa and asyncpgsa need SQLAlchemy < 1.5, the [sqlalchemy] driver needs 2.x: the
# legacy drivers' tests run in a virtual environment of their own (scripts/test.sh).
if [ "${1:-test}" = dev ] || [ "${PGROUTER_LEGACY_VENV:-0}" = 1 ]; then
    [ -x .venv-legacy/bin/python ] || python3 -m venv .venv-legacy
    .venv-legacy/bin/python -m pip install -q --disable-pip-version-check -e ".[test-legacy]"
fi
