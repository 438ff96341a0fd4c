#!/usr/bin/env bash
# The test command of README.md: set-up, then lint, type check and the whole suite
# (unit tests and integration tests against real local PostgreSQL clusters).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
python3 -m ruff check src tests bench
python3 -m mypy
python3 -m pytest -q "$@"
