#!/usr/bin/env bash
# The test command of README.md: set-up, then lint, type check, the install of every
# extra from a built wheel (scripts/check_extras.sh) and the whole suite
# (unit tests and integration tests against real local PostgreSQL clusters), then the
# driver-conformance suite again for aiopg.sa and asyncpgsa in their own environment,
# and the Python matrix: 3.10 and 3.12 with Django 5.2, 3.13 with the newest Django.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
python3 -m ruff check src tests bench
python3 -m mypy
# Each driver extra, installed from a built wheel into a clean environment.
bash scripts/check_extras.sh
python3 -m pytest -q "$@"
# The driver-conformance suite for the drivers that need SQLAlchemy < 1.5, in the
# legacy environment that scripts/setup.sh made (.venv-legacy).
PGROUTER_TEST_DRIVERS=aiopg_sa,asyncpgsa .venv-legacy/bin/python -m pytest -q \
    tests/integration/test_manager_api.py tests/integration/test_topology_changes.py \
    tests/integration/test_consistency.py \
    tests/integration/test_run.py tests/integration/test_transactions.py \
    tests/integration/test_listen.py::test_odd_names_on_one_connection_and_exact_case
# The Python matrix, in the environments scripts/setup.sh made. Python 3.10 (the oldest
# pyproject admits) with Django 5.2 LTS: the unit tests, the conformance suite for
# asyncpg and psycopg (without Task.uncancel() the manager waits in its own way there:
# manager.py, _wait_in_slices) and the Django tests; the two longest tests (30 s of an
# idle primary's lag, 10 000 write/read pairs: 50 s here) are left to the run above, to
# keep the row near 2 minutes: what they check has no 3.10 branch (the monitor's lag
# reading; token decisions, which psycopg's 400 pairs check on 3.10 too). Python 3.13 with the newest Django: the Django tests and the blocking
# face's (threads, fork, gevent).
PGROUTER_TEST_DRIVERS=asyncpg,psycopg .venv-py310/bin/python -m pytest -q tests/unit \
    tests/integration/test_manager_api.py tests/integration/test_topology_changes.py \
    tests/integration/test_consistency.py \
    tests/integration/test_django*.py tests/integration/test_cluster_watch.py \
    --deselect "tests/integration/test_consistency.py::test_an_idle_primary_shows_no_lag_for_30_s[asyncpg]" \
    --deselect "tests/integration/test_consistency.py::test_write_then_read_with_a_token_never_misses_its_write[asyncpg]"
# Python 3.12 with Django 5.2 LTS: the Django tests (5.2 supports 3.10-3.13; 3.11 ran above).
PGROUTER_TEST_DRIVERS=psycopg .venv-py312/bin/python -m pytest -q \
    tests/integration/test_django*.py tests/integration/test_cluster_watch.py
PGROUTER_TEST_DRIVERS=psycopg,sync_psycopg,sync_psycopg2 .venv-py313/bin/python -m pytest -q \
    tests/integration/test_django*.py tests/integration/test_cluster_watch.py \
    tests/integration/test_sync*.py
