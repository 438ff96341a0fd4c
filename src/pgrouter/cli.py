"""The ``pgrouter`` command: ``status DSN`` shows a cluster's topology, ``demo`` a live failover.

Both run through the same manager an application uses, so ``status`` shows
exactly what the library sees (with every password redacted). What ``status``
prints and exits with is :mod:`pgrouter.status_report`; this module parses
arguments and runs the checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import json
import sys
from typing import Any

from .dsn import redact
from .errors import PgRouterError
from .status_report import EXIT_CODES_HELP, StatusExit, format_topology, json_report, verdict

# argparse prints this as it is: plain text, no reST markup.
DESCRIPTION = """\
pgrouter status DSN: every host's role, health, latency and replication lag,
as the library sees them. pgrouter demo: a live failover on a throwaway local
cluster. Passwords are never shown."""

#: Manager modules by driver name, in order of preference when none is asked for.
DRIVER_MODULES = {"asyncpg": "pgrouter.asyncpg", "psycopg": "pgrouter.psycopg3"}


def load_manager_class(driver: str | None) -> Any:
    """The ``PoolManager`` of ``driver``, or of the first driver that is installed."""
    names = [driver] if driver else list(DRIVER_MODULES)
    missing = []
    for name in names:
        if name not in DRIVER_MODULES:
            raise SystemExit(
                f"pgrouter: unknown driver {name!r}; choose from {', '.join(DRIVER_MODULES)}"
            )
        try:
            return importlib.import_module(DRIVER_MODULES[name]).PoolManager
        except ImportError as error:
            missing.append(f"{name} ({error})")
    raise SystemExit(
        "pgrouter: no driver installed: "
        + "; ".join(missing)
        + " - pip install 'pgrouter[asyncpg]'"
    )


def package_version() -> str:
    """The installed distribution's version (what ``pip show pgrouter`` says)."""
    try:
        return importlib.metadata.version("pgrouter")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare source tree
        return "unknown (not installed)"


async def status(dsn: str, driver: str | None, timeout: float, *, as_json: bool = False) -> int:
    """Check every host once, print what was found, return a :class:`StatusExit` code."""
    manager_class = load_manager_class(driver)
    manager = manager_class(
        dsn, refresh_timeout=timeout, pool_factory_kwargs=_one_connection(driver)
    )
    try:
        # A host whose first check has not finished in time is reported as such.
        with contextlib.suppress(asyncio.TimeoutError):
            await manager.wait_first_checks(timeout=timeout + 10)
        snapshot = manager.topology
    finally:
        await manager.terminate()
    code, problems = verdict(snapshot)
    if as_json:
        print(json.dumps(json_report(snapshot, package_version()), indent=2))
    else:
        print(format_topology(snapshot))
    if problems:
        print("\n" + "\n".join(problems), file=sys.stderr)
    return int(code)


def _one_connection(driver: str | None) -> dict[str, int]:
    # status needs no pool beyond the check connection; keep the footprint tiny.
    return {"min_size": 1, "max_size": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pgrouter",
        description=DESCRIPTION,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgrouter {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    status_parser = commands.add_parser(
        "status",
        help="show every host's role, health, latency and lag",
        description="Check every host of DSN once and show what pgrouter sees.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status_parser.add_argument("dsn", help="multi-host DSN, e.g. postgresql://u@h1,h2,h3:5432/db")
    status_parser.add_argument("--driver", choices=sorted(DRIVER_MODULES))
    status_parser.add_argument("--timeout", type=float, default=2.0, help="seconds per host check")
    status_parser.add_argument(
        "--json", action="store_true", help="machine-readable output: the verdict and every host"
    )
    demo_parser = commands.add_parser("demo", help="live failover on a throwaway local cluster")
    demo_parser.add_argument("--driver", choices=sorted(DRIVER_MODULES))
    demo_parser.add_argument(
        "--seconds", type=float, default=3.0, help="workload before and after the kill"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return asyncio.run(status(args.dsn, args.driver, args.timeout, as_json=args.json))
        from .demo import run_demo

        return asyncio.run(run_demo(driver=args.driver, seconds=args.seconds))
    except PgRouterError as error:
        print(f"pgrouter: {redact(str(error))}", file=sys.stderr)
        return int(StatusExit.USAGE)
    except KeyboardInterrupt:
        return 130
