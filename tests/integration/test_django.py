"""pgrouter.django against a real cluster: the test project (tests/django_project) through
Django's test client, its ORM, Celery in eager mode, and a failover at the end.

One cluster for the module: Django reads its settings (the DSN) once per
process. The failover test kills its primary, so it runs last.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from pgrouter.errors import ClusterError
from pgrouter.testing import LocalCluster, find_pg_bin

pytestmark = pytest.mark.cluster

try:
    find_pg_bin()
except ClusterError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no PostgreSQL server binaries: {exc}", allow_module_level=True)

django = pytest.importorskip("django")
from django.test import TestCase, override_settings  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1] / "django_project"
#: Every wait ends by then (seconds): the machine is shared, so margins are wide.
PATIENCE = 20

_cluster: LocalCluster | None = None


@pytest.fixture(scope="module", autouse=True)
def django_cluster() -> Iterator[LocalCluster]:
    global _cluster
    with LocalCluster(replicas=2) as cluster:
        saved = {key: os.environ.get(key) for key in ("PGROUTER_DSN", "DJANGO_SETTINGS_MODULE")}
        os.environ["PGROUTER_DSN"] = cluster.dsn()
        os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
        sys.path.insert(0, str(PROJECT))
        try:
            django.setup()
            _create_tables()
            cluster.wait_replicas_caught_up()
            _cluster = cluster
            yield cluster
        finally:
            from django.db import connections

            import pgrouter.django.sets

            connections.close_all()
            pgrouter.django.sets.reset_registry()
            sys.path.remove(str(PROJECT))
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _create_tables() -> None:
    from django.db import connections
    from shop.models import Customer, Note, Order

    import pgrouter.django

    with connections[pgrouter.django.primary_alias()].schema_editor() as editor:
        editor.create_model(Customer)
        editor.create_model(Order)
    with connections["direct"].schema_editor() as editor:
        editor.create_model(Note)


def the_set() -> Any:
    from pgrouter.django.sets import registry

    return registry().sets["default"]


def alias_of(node: Any) -> str:
    database_set = the_set()
    for index, host in enumerate(database_set.watch.hosts):
        if host.port == node.port:
            return str(database_set.aliases[index])
    raise AssertionError(f"{node} is in no alias")


def replica_aliases() -> set[str]:
    assert _cluster is not None
    return {alias_of(node) for node in _cluster.replicas}


def wait_all_replicas_visible() -> None:
    the_set().watch.wait_for(lambda s: len(s.replicas) == 2 and len(s.primaries) == 1, PATIENCE)


def client() -> Any:
    from django.test import Client

    return Client()


# -- settings and the project ---------------------------------------------------------


def test_manage_py_check_is_clean(django_cluster: LocalCluster) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=PROJECT,
        env=dict(os.environ, PGROUTER_DSN=django_cluster.dsn(password="s3cret")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr


def test_database_set_gives_an_alias_per_host(django_cluster: LocalCluster) -> None:
    from django.conf import settings

    database_set = the_set()
    assert database_set.aliases == ("default", "default-1", "default-2")
    ports = [int(settings.DATABASES[alias]["PORT"]) for alias in database_set.aliases]
    assert ports == [node.port for node in django_cluster.nodes]
    assert settings.DATABASES["default-1"]["TEST"]["MIRROR"] == "default"
    assert "s3cret" not in repr(database_set.watch)


# -- routing ---------------------------------------------------------------------------


def test_reads_go_to_replicas_and_a_write_pins_greedily() -> None:
    from shop.models import Customer

    import pgrouter.django
    from pgrouter.django import state

    wait_all_replicas_visible()
    primary = pgrouter.django.primary_alias()
    with state.unit_of_work(None):
        seen = {Customer.objects.all().db for _ in range(40)}
        assert seen == replica_aliases()  # both replicas, the balancer's spread
        assert not pgrouter.django.is_pinned()
        written = Customer.objects.create(name="greedy")
        assert written._state.db == primary
        assert pgrouter.django.is_pinned()
        assert Customer.objects.get(pk=written.pk)._state.db == primary
        with pgrouter.django.unpinned_replica("default-1"):
            assert Customer.objects.all().db in replica_aliases()
        pgrouter.django.unpin_all()
        assert Customer.objects.all().db in replica_aliases()
        with pgrouter.django.use_primary():
            assert Customer.objects.all().db == primary
        assert pgrouter.django.get_replica() in replica_aliases()
    # The unit of work ended: its pin with it.
    with state.unit_of_work(None):
        assert not pgrouter.django.is_pinned()


def test_reads_inside_atomic_go_to_its_alias() -> None:
    from shop.models import Customer

    import pgrouter.django
    from pgrouter.django import state

    with state.unit_of_work(None), pgrouter.django.atomic():
        created = Customer.objects.create(name="in a transaction")
        found = Customer.objects.filter(pk=created.pk).first()
        assert found is not None and found._state.db == pgrouter.django.primary_alias()


def test_strict_router_refuses_an_unpinned_write() -> None:
    from shop.models import Customer

    import pgrouter.django
    from pgrouter.django import state

    with override_settings(DATABASE_ROUTERS=["pgrouter.django.StrictRouter"]):
        with state.unit_of_work(None):
            with pytest.raises(pgrouter.django.UnpinnedWriteError, match="'default'"):
                Customer.objects.create(name="refused")
            assert Customer.objects.all().db in replica_aliases()  # reads need no pin
            pgrouter.django.pin("default")
            created = Customer.objects.create(name="pinned first")
            assert created._state.db == pgrouter.django.primary_alias()
        with state.unit_of_work(None), pgrouter.django.use_primary():
            assert Customer.objects.create(name="in use_primary")._state.db


def test_delegate_router_and_aliases_outside_sets() -> None:
    from django.db import router
    from shop.models import Customer, Note

    import pgrouter.django
    from pgrouter.django import state

    with state.unit_of_work(None):
        note = Note.objects.create(text="untouched")
        assert note._state.db == "direct"
        assert Note.objects.all().db == "direct"
        assert not pgrouter.django.is_pinned()  # a write outside the set pins nothing
        customer = Customer.objects.create(name="c")
        replica = Customer(name="read on a replica")
        replica._state.db = pgrouter.django.get_replica()
    assert router.allow_relation(customer, replica) is True
    assert router.allow_relation(customer, note) is False
    primary = pgrouter.django.primary_alias()
    assert router.allow_migrate(primary, "shop", model_name="customer") is True
    for alias in replica_aliases():
        assert router.allow_migrate(alias, "shop", model_name="customer") is False
    # No opinion on an alias outside the sets: Django says yes.
    assert router.allow_migrate("direct", "shop", model_name="note") is True


def test_replica_down_is_skipped(django_cluster: LocalCluster) -> None:
    from shop.models import Customer

    from pgrouter.django import state

    wait_all_replicas_visible()
    stopped = django_cluster.replicas[0]
    stopped_alias = alias_of(stopped)
    stopped.stop()
    try:
        the_set().watch.wait_for(lambda s: len(s.replicas) == 1, PATIENCE)
        with state.unit_of_work(None):
            seen = {Customer.objects.all().db for _ in range(20)}
        assert stopped_alias not in seen and seen <= replica_aliases()
    finally:
        stopped.start()
        wait_all_replicas_visible()


def test_lagging_replica_gets_no_reads_past_the_bound(django_cluster: LocalCluster) -> None:
    from shop.models import Customer

    from pgrouter.django import state

    wait_all_replicas_visible()
    lagging, fresh = django_cluster.replicas
    ports = [host.port for host in the_set().watch.hosts]
    lagging_index, fresh_index = ports.index(lagging.port), ports.index(fresh.port)
    with override_settings(PGROUTER_MAX_LAG_BYTES=100_000):
        lagging.pause_replay()
        try:
            django_cluster.primary.sql(
                "CREATE TABLE IF NOT EXISTS wal_filler AS SELECT g, repeat('x', 500) AS pad"
                " FROM generate_series(1, 2000) AS g"
            )
            # The check that first sees the paused replica past the bound may see the
            # fresh one behind the same write too (then no replica serves): wait for both.
            the_set().watch.wait_for(
                lambda s: (
                    (s.hosts[lagging_index].lag_bytes or 0) > 100_000
                    and s.hosts[fresh_index].lag_bytes is not None
                    and s.hosts[fresh_index].lag_bytes <= 100_000
                ),
                PATIENCE,
            )
            with state.unit_of_work(None):
                seen = {Customer.objects.all().db for _ in range(30)}
            assert seen == {alias_of(fresh)}
        finally:
            lagging.resume_replay()
    django_cluster.primary.sql("DROP TABLE wal_filler")
    django_cluster_settle()


# -- the cookie: read-your-writes across requests ----------------------------------------


def test_cookie_carries_the_token_to_the_next_request() -> None:
    import pgrouter.django
    from pgrouter.django.middleware import rejected_cookies

    wait_all_replicas_visible()
    browser = client()
    created = browser.post("/customers/", {"name": "cookie"}).json()
    assert created["alias"] == pgrouter.django.primary_alias()
    assert "pgrouter_pins" in browser.cookies
    cookie = browser.cookies["pgrouter_pins"]
    assert cookie["httponly"] and int(cookie["max-age"]) >= 15
    rejected = rejected_cookies()
    # Every read sees the write; once a replica's check shows it replayed, a replica serves.
    deadline = time.monotonic() + PATIENCE
    while True:
        read = browser.get(f"/customers/{created['id']}/").json()
        assert read["found"], read
        if read["alias"] in replica_aliases():
            break
        assert read["alias"] == pgrouter.django.primary_alias()
        assert time.monotonic() < deadline, "no replica served the token's reads"
        time.sleep(0.05)
    assert rejected_cookies() == rejected
    # Without the cookie nothing is carried: reads are plain replica reads.
    assert client().get(f"/customers/{created['id']}/").json()["alias"] in replica_aliases()


def test_paused_replica_never_serves_a_token_it_lacks(django_cluster: LocalCluster) -> None:
    import pgrouter.django

    wait_all_replicas_visible()
    paused, running = django_cluster.replicas
    paused.pause_replay()
    try:
        browser = client()
        created = browser.post("/customers/", {"name": "paused"}).json()
        served = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            read = browser.get(f"/customers/{created['id']}/").json()
            assert read["found"], read
            served.add(read["alias"])
            time.sleep(0.02)
        assert alias_of(paused) not in served
        assert alias_of(running) in served  # it replayed the token: it serves
        # Both paused: only the primary has the write.
        running.pause_replay()
        try:
            second = browser.post("/customers/", {"name": "both paused"}).json()
            for _ in range(20):
                read = browser.get(f"/customers/{second['id']}/").json()
                assert read == {"found": True, "alias": pgrouter.django.primary_alias()}
        finally:
            running.resume_replay()
    finally:
        paused.resume_replay()


def test_bad_cookies_are_ignored_and_counted() -> None:
    import json

    from django.core import signing

    from pgrouter.django.middleware import COOKIE_SALT, rejected_cookies

    wait_all_replicas_visible()
    reader = client().post("/customers/", {"name": "reader"}).json()
    django_cluster_settle()
    valid_form = {"v": 1, "s": {"default": [time.time() + 60, None]}}
    old = time.time() - 100
    with mock.patch("django.core.signing.time.time", return_value=old):
        expired = signing.dumps(valid_form, salt=COOKIE_SALT, compress=True)
    cookies = {
        "garbled": "not-a-signed-value",
        "forged": signing.dumps(valid_form, key="another-site", salt=COOKIE_SALT),
        "foreign salt": signing.dumps(valid_form, salt="someone.else"),
        "not our form": signing.dumps({"default": "primary"}, salt=COOKIE_SALT),
        "bad token": signing.dumps(
            {"v": 1, "s": {"default": [time.time() + 60, "w1.0.0.0.00000000"]}}, salt=COOKIE_SALT
        ),
        "expired": expired,
    }
    for name, value in cookies.items():
        before = rejected_cookies()
        browser = client()
        browser.cookies["pgrouter_pins"] = value
        with mock.patch("pgrouter.django.middleware.logger.debug") as debug:
            response = browser.get(f"/customers/{reader['id']}/")
        assert response.status_code == 200, name
        # Not trusted: no pin, a plain replica read.
        assert response.json()["alias"] in replica_aliases(), name
        assert rejected_cookies() == before + 1, name
        logged = json.dumps([str(call) for call in debug.call_args_list])
        assert value not in logged and "w1." not in logged, name  # not the content


def django_cluster_settle() -> None:
    assert _cluster is not None
    _cluster.wait_replicas_caught_up()


# -- async views ------------------------------------------------------------------------


async def test_async_views_pin_and_carry_the_cookie() -> None:
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    import pgrouter.django

    await sync_to_async(wait_all_replicas_visible)()
    primary = await sync_to_async(pgrouter.django.primary_alias)()
    browser = AsyncClient()
    created = (await browser.post("/async/customers/", {"name": "async"})).json()
    # The write in sync_to_async pinned the set in the view's context: the read after it
    # in the same view went to the primary.
    assert created["alias"] == primary and created["read"] == primary
    assert "pgrouter_pins" in browser.cookies
    deadline = time.monotonic() + PATIENCE
    while True:
        read = (await browser.get(f"/async/customers/{created['id']}/")).json()
        assert read["found"], read
        if read["alias"] != primary:
            break
        assert time.monotonic() < deadline
    # Concurrent requests never share pins: a fresh client reads from a replica at once.
    other = (await AsyncClient().get(f"/async/customers/{created['id']}/")).json()
    assert other["alias"] != primary


# -- Celery -----------------------------------------------------------------------------


def test_celery_task_reads_the_write_queued_before_it(django_cluster: LocalCluster) -> None:
    import pgrouter.django

    wait_all_replicas_visible()
    customer = client().post("/customers/", {"name": "buyer"}).json()
    for node in django_cluster.replicas:
        node.pause_replay()
    try:
        # Replay paused everywhere: the task must read its order on the primary.
        queued = client().post(f"/orders/{customer['id']}/").json()
        assert queued["task"] == {"found": True, "alias": pgrouter.django.primary_alias()}
    finally:
        for node in django_cluster.replicas:
            node.resume_replay()
    django_cluster_settle()
    the_set().watch.wait_for(
        lambda s: all(r.lag_bytes == 0 for r in s.replicas) and len(s.replicas) == 2, PATIENCE
    )
    queued = client().post(f"/orders/{customer['id']}/").json()
    assert queued["task"]["found"]


def test_celery_task_has_its_own_pins() -> None:
    from project.celery import app

    import pgrouter.django
    from pgrouter.django import state

    @app.task
    def pinned_inside() -> bool:
        return pgrouter.django.is_pinned()

    with state.unit_of_work(None):
        pgrouter.django.pin()
        # Carried as a pin (no write, so no token), then dropped after the task.
        assert pinned_inside.delay().get(timeout=10) is True
        assert pgrouter.django.is_pinned()
    with state.unit_of_work(None):
        assert pinned_inside.delay().get(timeout=10) is False


def test_celery_worker_gets_the_token_in_the_task_headers(django_cluster: LocalCluster) -> None:
    """A real worker thread (memory broker): the token travels in the message headers."""
    from celery.contrib.testing.worker import start_worker
    from project.celery import app

    import pgrouter.django

    wait_all_replicas_visible()
    customer = client().post("/customers/", {"name": "worker"}).json()
    app.conf.task_always_eager = False
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            for node in django_cluster.replicas:
                node.pause_replay()
            try:
                queued = client().post(f"/orders/{customer['id']}/").json()
                assert queued["task"] == {"found": True, "alias": pgrouter.django.primary_alias()}
            finally:
                for node in django_cluster.replicas:
                    node.resume_replay()
            django_cluster_settle()
            the_set().watch.wait_for(
                lambda s: all(r.lag_bytes == 0 for r in s.replicas) and len(s.replicas) == 2,
                PATIENCE,
            )
            queued = client().post(f"/orders/{customer['id']}/").json()
            assert queued["task"]["found"]
    finally:
        app.conf.task_always_eager = True


# -- PGROUTER_ENABLED = False under Django's TestCase -------------------------------------


@override_settings(PGROUTER_ENABLED=False)
class DisabledUnderTestCase(TestCase):
    databases = {"default"}

    def test_one_alias_and_no_routing(self) -> None:
        from shop.models import Customer

        created = Customer.objects.create(name="unrouted")
        self.assertEqual(created._state.db, "default")
        self.assertEqual(Customer.objects.filter(pk=created.pk).first()._state.db, "default")
        response = self.client.post("/customers/", {"name": "unrouted too"})
        self.assertEqual(response.json()["alias"], "default")
        self.assertNotIn("pgrouter_pins", response.cookies)


# -- failover: last, they replace the module's primary ---------------------------------------


def test_query_blocked_on_a_frozen_primary_fails_once_it_is_replaced(
    django_cluster: LocalCluster,
) -> None:
    """SIGSTOP the primary under a query, promote a replica: the instant the monitor sees
    the promoted host, the old primary's Django connections are cut at the socket, so the
    blocked query raises then, not at the thaw. Writes go to the promoted host."""
    from django.db import OperationalError, connections, router
    from shop.models import Customer

    import pgrouter.django
    from pgrouter.django import state

    wait_all_replicas_visible()
    old = django_cluster.primary
    started = threading.Event()
    outcome: dict[str, Any] = {}

    def blocked_query() -> None:
        try:
            with state.unit_of_work(None):
                pgrouter.django.pin()
                alias = router.db_for_write(Customer)
                with connections[alias].cursor() as cursor:
                    cursor.execute("SELECT 1")
                    started.set()
                    try:
                        cursor.execute("SELECT pg_sleep(1)")
                        outcome["error"] = None
                    except Exception as error:
                        outcome["error"] = error
                    outcome["at"] = time.monotonic()
        finally:
            connections.close_all()

    thread = threading.Thread(target=blocked_query)
    thread.start()
    try:
        assert started.wait(PATIENCE)
        time.sleep(0.05)  # the sleep is running on the server
        old.freeze()
        new = django_cluster.failover()
        promoted = time.monotonic()
        thread.join(PATIENCE)
        assert not thread.is_alive(), "the query still waits on the frozen primary"
        assert isinstance(outcome["error"], OperationalError), outcome
        # Cut when the promoted host was seen, long before any thaw (none yet).
        assert outcome["at"] - promoted < 5, outcome["at"] - promoted
        with state.unit_of_work(None):
            assert Customer.objects.create(name="after a freeze")._state.db == alias_of(new)
    finally:
        old.thaw()
        thread.join(PATIENCE)
    old.rewind_as_replica(new)
    wait_all_replicas_visible()


def test_failover_writes_resume_on_the_promoted_host(django_cluster: LocalCluster) -> None:
    from django.db import connections
    from shop.models import Customer

    import pgrouter.django
    from pgrouter.django import state

    wait_all_replicas_visible()
    old = django_cluster.primary
    old_alias = alias_of(old)
    assert pgrouter.django.primary_alias() == old_alias
    before = client()
    before.post("/customers/", {"name": "before the failover"})
    results: list[tuple[float, str | None, str | None]] = []  # (time, alias, error)
    stop = threading.Event()

    def write_loop() -> None:
        try:
            while not stop.is_set():
                with state.unit_of_work(None):
                    try:
                        created = Customer.objects.create(name="through the failover")
                        results.append((time.monotonic(), created._state.db, None))
                    except Exception as error:
                        results.append((time.monotonic(), None, type(error).__name__))
                time.sleep(0.005)
        finally:
            connections.close_all()

    writer = threading.Thread(target=write_loop)
    writer.start()
    try:
        time.sleep(0.3)
        killed = time.monotonic()
        old.kill()
        new = django_cluster.failover()
        promoted = time.monotonic()
        new_alias = alias_of(new)
        deadline = promoted + PATIENCE
        while time.monotonic() < deadline and not any(
            at > promoted and alias == new_alias for at, alias, _ in results
        ):
            time.sleep(0.02)
        time.sleep(0.5)  # writes keep succeeding after the first one
    finally:
        stop.set()
        writer.join(PATIENCE)
    after = [entry for entry in results if entry[0] > promoted]
    first_new = next((at for at, alias, _ in after if alias == new_alias), None)
    assert first_new is not None, f"no write reached {new_alias}: {after[-5:]}"
    later = [entry for entry in after if entry[0] > first_new]
    assert later and all(alias == new_alias for _, alias, _ in later), later[:5]
    assert first_new - promoted < 5.0, f"writes resumed {first_new - promoted:.2f} s late"
    failed = sum(1 for _, alias, _ in results if alias is None)
    print(
        f"\nfailover: kill -9 to first write on the promoted host {first_new - killed:.3f} s,"
        f" {1000 * (first_new - promoted):.0f} ms after the promotion; {failed} write(s) raised"
    )
    # A request after the failover writes on the new primary, no settings change.
    created = client().post("/customers/", {"name": "after"}).json()
    assert created["alias"] == new_alias
    # A token of the old timeline sends the next read to the primary.
    read = before.get(f"/customers/{created['id']}/").json()
    assert read == {"found": True, "alias": new_alias}
