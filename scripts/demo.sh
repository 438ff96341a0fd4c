#!/usr/bin/env bash
# The demo command of README.md: set-up, then a live failover on a throwaway local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec python3 -m pgrouter demo "$@"
