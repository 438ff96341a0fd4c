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

# The Python matrix (scripts/test.sh): the oldest Python pyproject admits, 3.10, with
# Django 5.2 LTS, 3.12 with Django 5.2, and 3.13 with the newest Django. Interpreters come from pyenv, as the
# default python3 does on this project's machines (PGROUTER_PYTHON_3_10=/path/to/python
# names another); one that is missing fails the set-up by name: a matrix row that is
# quietly left out would pass for tested.
python_of() {  # python_of X.Y: the path of a Python X.Y interpreter, or fail saying so
    local version=$1 override="PGROUTER_PYTHON_${1/./_}" candidate pyenv_root
    pyenv_root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "${HOME:-}/.pyenv")}
    candidate=${!override:-}
    if [ -z "$candidate" ]; then
        candidate=$(compgen -G "$pyenv_root/versions/$version.*/bin/python" \
            | sort -V | tail -n 1 || true)
    fi
    if [ -z "$candidate" ]; then
        candidate=$(command -v "python$version" || true)
    fi
    if [ -n "$candidate" ] && [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
        2>/dev/null)" = "$version" ]; then
        echo "$candidate"
        return 0
    fi
    echo "setup: FAILED: no Python $version interpreter (looked for \$$override," \
        "$pyenv_root/versions/$version.*, python$version on PATH):" \
        "its matrix row in scripts/test.sh cannot run" >&2
    return 1
}
matrix_venv() {  # matrix_venv VENV X.Y EXTRAS DJANGO_SPEC
    local venv=$1 version=$2 python
    python=$(python_of "$version")
    if [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
        2>/dev/null)" != "$version" ]; then
        "$python" -m venv --clear "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$3]" "django$4"
    # Django's tests would only be skipped without it (importorskip): say what was installed.
    "$venv/bin/python" -c 'import sys, django, pgrouter.django
print(f"setup: {sys.argv[1]}: Python {sys.version.split()[0]}, Django {django.__version__}")' "$venv"
}
if [ "${1:-test}" = dev ] || [ "${PGROUTER_PY_MATRIX:-0}" = 1 ]; then
    matrix_venv .venv-py310 3.10 asyncpg,psycopg,psycopg2,test-django ">=5.2,<5.3"
    matrix_venv .venv-py312 3.12 psycopg,test-django ">=5.2,<5.3"
    matrix_venv .venv-py313 3.13 psycopg2,gevent,test-django ">=6"
fi
