"""Django benchmark: what pgrouter's router costs per ORM query, against Django's default routing.

On a throwaway :class:`~pgrouter.testing.LocalCluster` (a primary and two
streaming replicas on loopback), with the test project of
``tests/django_project`` (its settings: ``database_set()`` over the cluster,
``CONN_MAX_AGE=60``, psycopg 3), ``Customer.objects.get(pk=...)`` is run in a
loop by these contenders, side by side in every round:

- ``django/primary``: no router (``DATABASE_ROUTERS = []``): Django sends
  every query to ``default``, the primary alone. The floor;
- ``pgrouter/replica``: :class:`pgrouter.django.GreedyRouter`, a plain read:
  a healthy replica chosen by the balancer;
- ``pgrouter/primary``: the same router inside ``use_primary()``: the primary,
  as the floor, so only the router's own work differs;
- ``pgrouter/token``: the router with a write token carried in (one the
  replicas' last checks cover): a replica past the token.

and through Django's test client (``GET /customers/<pk>/``, a view doing the
same ``get()``): ``django/primary`` with no router and no middleware, against
``pgrouter/replica`` with the router and ``PinningMiddleware``.

Method as the other benchmarks: a warm-up run of every contender, then
``--rounds`` rounds in which every contender runs once for ``--seconds``, in
an order rotated each round; the ratio to the floor is taken per round;
medians (and quartiles) over rounds. Besides throughput, the calling
thread's CPU time per operation (``time.thread_time()``: Django's and the
router's work, not the server's nor the monitor thread's), steadier than
throughput on a shared machine. Also the router's own time per call
(``router.db_for_read()`` alone, no query).

    python bench/django_router.py [--rounds N] [--seconds S] [--quick] [--json PATH]

bench/README.md explains the columns and holds the figures of a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from package_versions import package_versions

from pgrouter.testing import LocalCluster

PROJECT = Path(__file__).resolve().parents[1] / "tests" / "django_project"

#: Operations between two clock reads (reading the clock costs too).
BATCH = 16


def setup_django(dsn: str) -> None:
    os.environ["PGROUTER_DSN"] = dsn
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()
    from django.db import connections
    from shop.models import Customer, Order

    import pgrouter.django

    with connections[pgrouter.django.primary_alias()].schema_editor() as editor:
        editor.create_model(Customer)
        editor.create_model(Order)


class Contender:
    """One way of running the operation: which routers, and which context around it."""

    def __init__(
        self,
        name: str,
        routers: list[Any],
        context: Callable[[], AbstractContextManager[Any]],
        op: Callable[[], None],
    ) -> None:
        self.name = name
        self.routers = routers
        self.context = context
        self.op = op

    def run(self, seconds: float) -> tuple[float, float]:
        """Operations per second over ``seconds``, and this thread's CPU µs per operation."""
        from django.db import router

        router.routers = self.routers
        op = self.op
        count = 0
        with self.context():
            cpu_started = time.thread_time()
            started = time.perf_counter()
            deadline = started + seconds
            while True:
                for _ in range(BATCH):
                    op()
                count += BATCH
                now = time.perf_counter()
                if now >= deadline:
                    break
            cpu = time.thread_time() - cpu_started
        return count / (now - started), cpu / count * 1e6


Runs = dict[str, list[tuple[float, float]]]


def run_group(
    contenders: list[Contender], rounds: int, seconds: float, progress: Callable[[str], None]
) -> Runs:
    for contender in contenders:  # warm-up: connections open, caches filled
        contender.run(min(seconds, 0.2))
    results: Runs = {contender.name: [] for contender in contenders}
    for number in range(rounds):
        shift = number % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            results[contender.name].append(contender.run(seconds))
        progress(f"round {number + 1}/{rounds}")
    return results


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def table(title: str, results: Runs, floor: str) -> str:
    lines = [
        f"\n{title}",
        f"{'contender':<18} {'ops/s':>7} {'µs/op':>7} {'vs floor':>9} {'middle half':>12}"
        f" {'CPU µs/op':>10} {'CPU vs floor':>13} {'+CPU µs':>8}",
    ]
    base_runs = results[floor]
    base_cpu = statistics.median(cpu for _, cpu in base_runs)
    for name, runs in results.items():
        ops = statistics.median(op for op, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        ratios = [run[0] / base[0] for run, base in zip(runs, base_runs)]
        cpu_ratios = [run[1] / base[1] for run, base in zip(runs, base_runs)]
        low, high = quartiles(ratios)
        is_floor = name == floor
        lines.append(
            f"{name:<18} {ops:>7.0f} {1e6 / ops:>7.1f} "
            f"{'(floor)' if is_floor else f'{statistics.median(ratios):.2f}x':>9} "
            f"{'' if is_floor else f'{low:.2f}-{high:.2f}x':>12} {cpu:>10.1f} "
            f"{'(floor)' if is_floor else f'{statistics.median(cpu_ratios):.2f}x':>13} "
            f"{'' if is_floor else f'{cpu - base_cpu:+.1f}':>8}"
        )
    return "\n".join(lines)


def router_call_cost(routers: list[Any], calls: int = 20000) -> float:
    """µs per ``router.db_for_read(Customer)``: the router's own work, no query."""
    from django.db import router
    from shop.models import Customer

    router.routers = routers
    started = time.perf_counter()
    for _ in range(calls):
        router.db_for_read(Customer)
    return (time.perf_counter() - started) / calls * 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s: a smoke run")
    parser.add_argument("--json", help="also write the runs as JSON to this path")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 3, 0.2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    print("starting a local cluster (primary + 2 replicas)...", file=sys.stderr, flush=True)
    with LocalCluster(replicas=2) as cluster:
        setup_django(cluster.dsn())
        from django.test import Client, override_settings
        from shop.models import Customer

        import pgrouter.django
        from pgrouter.django import state
        from pgrouter.django.sets import registry

        customer = Customer.objects.using(pgrouter.django.primary_alias()).create(name="bench")
        cluster.wait_replicas_caught_up()
        watch = registry().sets["default"].watch
        watch.wait_for(lambda s: len(s.replicas) == 2, 20)
        # A token every replica's last check covers: taken now, then checks awaited.
        with state.unit_of_work(None):
            state.note_write("default", pgrouter.django.primary_alias())
            carried = state.outgoing(60, frozenset({"default"}))
        lsn = watch.topology.primaries[0].wal_lsn or 0
        watch.wait_for(
            lambda s: all((r.wal_lsn or 0) >= lsn for r in s.replicas) and len(s.replicas) == 2,
            20,
        )
        greedy = [pgrouter.django.GreedyRouter()]
        pk = customer.pk

        def get() -> None:
            Customer.objects.get(pk=pk)

        orm = [
            Contender("django/primary", [], nullcontext, get),
            Contender("pgrouter/replica", greedy, lambda: state.unit_of_work(None), get),
            Contender("pgrouter/primary", greedy, pgrouter.django.use_primary, get),
            Contender("pgrouter/token", greedy, lambda: state.unit_of_work(carried), get),
        ]
        progress("ORM: Customer.objects.get(pk=...)")
        orm_results = run_group(orm, args.rounds, args.seconds, progress)

        bare_client = Client()
        with override_settings(MIDDLEWARE=[], DATABASE_ROUTERS=[]):
            bare_client.get(f"/customers/{pk}/")  # builds its handler without middleware
        routed_client = Client()
        routed_client.get(f"/customers/{pk}/")
        url = f"/customers/{pk}/"
        clients = [
            Contender("django/primary", [], nullcontext, lambda: bare_client.get(url) and None),
            Contender(
                "pgrouter/replica", greedy, nullcontext, lambda: routed_client.get(url) and None
            ),
        ]
        progress("test client: GET /customers/<pk>/")
        client_results = run_group(clients, args.rounds, args.seconds, progress)
        router_us = router_call_cost(greedy)
        registry().close()

    versions = package_versions("pgrouter", "django", "psycopg")
    print(
        f"\nDjango router benchmark: {args.rounds} rounds of {args.seconds} s, "
        f"Python {platform.python_version()}, "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
    )
    print(table("Customer.objects.get(pk=...) in a loop", orm_results, "django/primary"))
    print(table("test client GET (view does the same get())", client_results, "django/primary"))
    print(f"\nrouter.db_for_read(Customer) alone, GreedyRouter: {router_us:.1f} µs per call")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"orm": orm_results, "client": client_results, "router_us": router_us}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
