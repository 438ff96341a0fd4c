#!/usr/bin/env bash
# Installs each extra from a built wheel, as README.md spells it, into a clean virtual
# environment, and imports there what the extra exists for (a driver's manager module).
#
# Why a built wheel and clean environments: an editable install in the test
# environment never reads the wheel's metadata, and already has every dependency, so
# a misnamed extra (pip up to 23.2 ignores `[aiopg_sa]` when the metadata says
# `aiopg-sa`) or a missing dependency would pass unnoticed. The oldest pip README
# promises (22) installs the one extra whose name was ever at risk, too.
# Exits non-zero, naming each failure, if any install or import fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# extra (as README.md spells it) -> what must then import from the clean environment:
# `module[:attribute]`, comma separated
declare -A MODULES=(
    [asyncpg]=pgrouter.asyncpg:PoolManager
    [psycopg]=pgrouter.psycopg3:PoolManager,pgrouter.sync.psycopg:PoolManager
    [aiopg]=pgrouter.aiopg:PoolManager
    [aiopg-sa]=pgrouter.aiopg_sa:PoolManager
    [asyncpgsa]=pgrouter.asyncpgsa:PoolManager
    [sqlalchemy]=pgrouter.sqlalchemy:PoolManager
    [psycopg2]=pgrouter.sync.psycopg2:PoolManager
    # gevent and psycogreen; psycogreen.gevent needs psycopg2 too (COMBINED below)
    [gevent]=gevent.monkey:patch_all,psycogreen,pgrouter.sync.green:real_thread
    # Django's routers; their monitor probes with psycopg 3's async driver
    [django]=pgrouter.django:GreedyRouter,pgrouter.drivers.psycopg:PsycopgDriver
)
# Extras README.md shows installed together: label -> the extras, and what must import
declare -A COMBINED_EXTRAS=([psycopg2+gevent]=psycopg2,gevent)
declare -A COMBINED=(
    [psycopg2+gevent]=psycogreen.gevent:patch_psycopg,pgrouter.sync.psycopg2:PoolManager,pgrouter.gdbpool:DBInteractionPool
)
OLDEST_PIP=22.0.4

work=$(mktemp -d "${TMPDIR:-/tmp}/pgrouter-extras.XXXXXX")
trap 'rm -rf "$work"' EXIT

# README must name exactly these extras: a new one gets a line above, a renamed one fails.
# (`pgrouter[x]`, or a bare `[x]` in backticks, as in "or `[psycopg]`")
readme_extras=$(grep -oE '(pgrouter|`)\[[A-Za-z0-9_.,-]*\]' README.md | sed -E 's/^.*\[(.*)\]$/\1/' \
    | tr ',' '\n' | sort -u)
listed=$(printf '%s\n' "${!MODULES[@]}" | sort)
if [ "$readme_extras" != "$listed" ]; then
    echo "check_extras: README.md names extras [$(echo $readme_extras)]," \
        "this script checks [$(echo $listed)]" >&2
    exit 1
fi

python3 -m pip wheel -q --no-deps -w "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; echo "check_extras: building the wheel failed" >&2; exit 1; }
wheel=$(echo "$work"/dist/pgrouter-*.whl)

# Every extra the wheel provides, and every pgrouter[...] it requires of itself,
# must already be in normalized form (PEP 685), or some pip will not match it.
python3 - "$wheel" <<'EOF' || exit 1
import re
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = wheel.read(name).decode()
provided = re.findall(r"^Provides-Extra: (.+)$", metadata, re.M)
asked = [
    extra.strip()
    for group in re.findall(r"^Requires-Dist: pgrouter\[([^]]*)\]", metadata, re.M)
    for extra in group.split(",")
]
bad = [e for e in provided + asked if e != re.sub(r"[-_.]+", "-", e).lower()]
unknown = [e for e in asked if e not in provided]
if bad or unknown:
    print(f"check_extras: not normalized: {bad}; required but not provided: {unknown}",
          file=sys.stderr)
    sys.exit(1)
EOF

# One clean environment per extra, in parallel: pip's cache makes each a few seconds.
install() {  # install LABEL EXTRAS CHECKS [PIP_VERSION]
    local label=$1 extra=$2 checks=$3 pip_version=${4:-} venv="$work/venv-$1"
    python3 -m venv "$venv"
    if [ -n "$pip_version" ]; then
        "$venv/bin/python" -m pip install -q "pip==$pip_version"
    fi
    # An extra pip does not know is only a warning: make it an error.
    local warnings="$work/$label.pip-stderr"
    if ! "$venv/bin/python" -m pip install -q "$wheel[$extra]" 2>"$warnings"; then
        cat "$warnings"
        return 1
    fi
    if grep -i "does not provide the extra" "$warnings"; then
        return 1
    fi
    # From outside the source tree, so only the installed wheel can be imported.
    (cd "$work" && "$venv/bin/python" - "$checks" <<'EOF'
import importlib
import sys

for check in sys.argv[1].split(","):
    name, _, attribute = check.partition(":")
    module = importlib.import_module(name)
    assert module.__file__.startswith(sys.prefix), module.__file__
    if attribute:
        getattr(module, attribute)
EOF
    )
}

declare -A jobs=()
for extra in "${!MODULES[@]}"; do
    install "$extra" "$extra" "${MODULES[$extra]}" >"$work/$extra.log" 2>&1 &
    jobs[$extra]=$!
done
for label in "${!COMBINED[@]}"; do
    install "$label" "${COMBINED_EXTRAS[$label]}" "${COMBINED[$label]}" >"$work/$label.log" 2>&1 &
    jobs[$label]=$!
done
install "aiopg-sa-pip$OLDEST_PIP" aiopg-sa "${MODULES[aiopg-sa]}" "$OLDEST_PIP" \
    >"$work/aiopg-sa-pip$OLDEST_PIP.log" 2>&1 &
jobs["aiopg-sa-pip$OLDEST_PIP"]=$!

failed=()
for label in "${!jobs[@]}"; do
    if ! wait "${jobs[$label]}"; then
        failed+=("$label")
        echo "check_extras: [$label] failed:" >&2
        cat "$work/$label.log" >&2
    fi
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "check_extras: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "check_extras: ${#jobs[@]} installs from the wheel imported what their extras are for"
