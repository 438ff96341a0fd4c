"""The ``pgrouter`` command: ``status DSN`` shows a cluster's topology, ``demo`` a live failover.

Both run through the same manager an application uses, so ``status`` shows
exactly what the library sees (with every password redacted).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import Any

from .dsn import redact
from .errors import PgRouterError
from .topology import TopologySnapshot

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


def format_topology(snapshot: TopologySnapshot) -> str:
    rows = [("host", "role", "healthy", "latency", "lag", "last error")]
    for host in snapshot:
        lag = snapshot.replication_lag_bytes(host)
        rows.append(
            (
                host.address,
                "down" if host.last_error and not host.healthy else host.role.value,
                "yes" if host.healthy else "no",
                "-" if host.latency is None else f"{host.latency * 1000:.2f} ms",
                "-" if lag is None else f"{lag} B",
                "FENCED: split brain" if host in snapshot.fenced else (host.last_error or ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


async def status(dsn: str, driver: str | None, timeout: float) -> int:
    manager_class = load_manager_class(driver)
    manager = manager_class(
        dsn, refresh_timeout=timeout, pool_factory_kwargs=_one_connection(driver)
    )
    try:
        await manager.wait_first_checks(timeout=timeout + 10)
        snapshot = manager.topology
    finally:
        await manager.terminate()
    print(format_topology(snapshot))
    claimed = snapshot.claimed_primaries
    if len(claimed) != 1:
        detail = "; ".join(snapshot.describe_host(host) for host in claimed) or "none"
        print(f"\n{len(claimed)} hosts claim primary: {detail}", file=sys.stderr)
        return 1
    return 0


def _one_connection(driver: str | None) -> dict[str, int]:
    # status needs no pool beyond the check connection; keep the footprint tiny.
    return {"min_size": 1, "max_size": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgrouter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    status_parser = commands.add_parser(
        "status", help="show every host's role, health, latency and lag"
    )
    status_parser.add_argument("dsn", help="multi-host DSN, e.g. postgresql://u@h1,h2,h3:5432/db")
    status_parser.add_argument("--driver", choices=sorted(DRIVER_MODULES))
    status_parser.add_argument("--timeout", type=float, default=2.0, help="seconds per host check")
    demo_parser = commands.add_parser("demo", help="live failover on a throwaway local cluster")
    demo_parser.add_argument("--driver", choices=sorted(DRIVER_MODULES))
    demo_parser.add_argument(
        "--seconds", type=float, default=3.0, help="workload before and after the kill"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return asyncio.run(status(args.dsn, args.driver, args.timeout))
        from .demo import run_demo

        return asyncio.run(run_demo(driver=args.driver, seconds=args.seconds))
    except PgRouterError as error:
        print(f"pgrouter: {redact(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
