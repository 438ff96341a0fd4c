"""Balancer policies and routing rules over hand-made topology snapshots."""

from __future__ import annotations

import asyncio
import collections

import pytest

from pgrouter.balancer_policy import (
    AbstractBalancerPolicy,
    GreedyBalancerPolicy,
    RandomWeightedBalancerPolicy,
    RoundRobinBalancerPolicy,
    eligible_hosts,
)
from pgrouter.dsn import HostDsn
from pgrouter.topology import HostRole, HostState, TopologyBoard, TopologySnapshot


def host(
    index: int, role: HostRole, healthy: bool = True, latency: float | None = 0.001
) -> HostState:
    return HostState(
        index=index,
        dsn=HostDsn(host=f"h{index}", port=5432),
        role=role,
        healthy=healthy,
        latency=latency,
        check_count=1,
    )


P, R = HostRole.PRIMARY, HostRole.REPLICA
CLUSTER = TopologySnapshot(hosts=(host(0, P), host(1, R), host(2, R)))


def no_free_size(state: HostState) -> int:
    return 0


def test_writes_go_to_primary_reads_to_replicas() -> None:
    policy = GreedyBalancerPolicy()
    for _ in range(50):
        write = policy.pick(CLUSTER, read_only=False, free_size=no_free_size)
        read = policy.pick(CLUSTER, read_only=True, free_size=no_free_size)
        assert write is not None and write.index == 0
        assert read is not None and read.index in (1, 2)


def test_unhealthy_hosts_are_never_picked() -> None:
    snapshot = TopologySnapshot(
        hosts=(host(0, P, healthy=False), host(1, R), host(2, R, healthy=False))
    )
    policy = RoundRobinBalancerPolicy()
    assert policy.pick(snapshot, read_only=False, free_size=no_free_size) is None
    picks = {policy.pick(snapshot, read_only=True, free_size=no_free_size).index for _ in range(10)}  # type: ignore[union-attr]
    assert picks == {1}


def test_fallback_master_only_without_replicas() -> None:
    only_primary = TopologySnapshot(hosts=(host(0, P), host(1, R, healthy=False)))
    assert (
        eligible_hosts(
            only_primary, read_only=True, fallback_master=False, master_as_replica_weight=0
        )
        == []
    )
    assert [
        h.index
        for h in eligible_hosts(
            only_primary, read_only=True, fallback_master=True, master_as_replica_weight=0
        )
    ] == [0]
    # With replicas up, fallback changes nothing.
    assert {
        h.index
        for h in eligible_hosts(
            CLUSTER, read_only=True, fallback_master=True, master_as_replica_weight=0
        )
    } == {1, 2}


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_master_as_replica_weight_is_a_probability(weight: float) -> None:
    policy = RoundRobinBalancerPolicy()
    picks = collections.Counter(
        policy.pick(
            CLUSTER, read_only=True, master_as_replica_weight=weight, free_size=no_free_size
        ).index  # type: ignore[union-attr]
        for _ in range(4000)
    )
    share = picks[0] / 4000
    assert abs(share - weight) < 0.04


def test_greedy_prefers_most_free_and_breaks_ties_randomly() -> None:
    free = {1: 3, 2: 7}
    policy = GreedyBalancerPolicy()
    assert all(
        policy.pick(CLUSTER, read_only=True, free_size=lambda h: free[h.index]).index == 2  # type: ignore[union-attr]
        for _ in range(30)
    )
    ties = collections.Counter(
        policy.pick(CLUSTER, read_only=True, free_size=lambda h: 5).index  # type: ignore[union-attr]
        for _ in range(400)
    )
    assert set(ties) == {1, 2} and min(ties.values()) > 120


def test_round_robin_rotates_per_candidate_set() -> None:
    policy = RoundRobinBalancerPolicy()
    reads = [policy.pick(CLUSTER, read_only=True, free_size=no_free_size).index for _ in range(6)]  # type: ignore[union-attr]
    assert reads in ([1, 2, 1, 2, 1, 2], [2, 1, 2, 1, 2, 1])


def test_random_weighted_follows_inverse_latency() -> None:
    snapshot = TopologySnapshot(
        hosts=(host(0, P), host(1, R, latency=0.001), host(2, R, latency=0.003))
    )
    policy = RandomWeightedBalancerPolicy()
    picks = collections.Counter(
        policy.pick(snapshot, read_only=True, free_size=no_free_size).index
        for _ in range(8000)  # type: ignore[union-attr]
    )
    # weights 1/1 : 1/3 -> 75 % : 25 %
    assert abs(picks[1] / 8000 - 0.75) < 0.03


def test_random_weighted_without_latency_is_uniform() -> None:
    snapshot = TopologySnapshot(hosts=(host(0, P), host(1, R, latency=None), host(2, R)))
    picks = collections.Counter(
        RandomWeightedBalancerPolicy().pick(snapshot, read_only=True, free_size=no_free_size).index  # type: ignore[union-attr]
        for _ in range(4000)
    )
    assert abs(picks[1] / 4000 - 0.5) < 0.04


def test_a_user_policy_only_writes_choose() -> None:
    class LastHost(AbstractBalancerPolicy):
        def choose(self, candidates, free_size):  # type: ignore[no-untyped-def]
            return candidates[-1]

    assert LastHost().pick(CLUSTER, read_only=True, free_size=no_free_size).index == 2  # type: ignore[union-attr]


async def test_board_wakes_waiters_on_the_next_snapshot() -> None:
    board = TopologyBoard([HostDsn(host="h0", port=5432)])
    waiter = asyncio.create_task(board.wait_for(lambda s: bool(s.primaries), timeout=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    board.update(0, role=HostRole.PRIMARY, healthy=True, check_count=1)
    snapshot = await asyncio.wait_for(waiter, 1)
    assert snapshot.primaries[0].index == 0 and snapshot.version == 1
    with pytest.raises(asyncio.TimeoutError):
        await board.wait_for(lambda s: False, timeout=0.05)


def test_snapshot_lag_estimate() -> None:
    """The board measures each replica's lag when it publishes, in bytes and in seconds."""
    board = TopologyBoard([HostDsn(host="h0", port=1), HostDsn(host="h1", port=1)])
    board.update(0, role=P, healthy=True, wal_lsn=400, checked_at=10.0, check_count=1)
    board.update(0, role=P, healthy=True, wal_lsn=1000, checked_at=11.0, check_count=2)
    snapshot = board.update(1, role=R, healthy=True, wal_lsn=400, checked_at=13.0, check_count=1)
    primary, replica = snapshot.hosts
    assert snapshot.replication_lag_bytes(replica) == 600
    assert snapshot.replication_lag_bytes(primary) is None
    # The primary was first seen past 400 at 11.0; the replica was checked at 13.0.
    assert snapshot.replication_lag_seconds(replica) == pytest.approx(2.0)
    caught_up = board.update(1, role=R, healthy=True, wal_lsn=1000, checked_at=14.0, check_count=2)
    assert caught_up.replication_lag_seconds(caught_up.hosts[1]) == 0.0
    # No primary reachable: measured against its last position, and the time
    # since it was last seen counts as lag (unseen writes may have happened).
    board.update(0, role=HostRole.UNKNOWN, healthy=False, checked_at=15.0, check_count=3)
    alone = board.update(1, role=R, healthy=True, wal_lsn=1000, checked_at=16.0, check_count=3)
    assert alone.replication_lag_bytes(alone.hosts[1]) == 0
    assert alone.replication_lag_seconds(alone.hosts[1]) == pytest.approx(5.0)


def test_two_servers_started_in_the_same_microsecond_are_two_servers() -> None:
    """Replicas of one machine, started at once, share the cluster's identifier and
    may share a start time: the port they listen on still tells them apart."""
    board = TopologyBoard([HostDsn(host="h", port=1), HostDsn(host="h", port=2)])
    same = {"role": R, "healthy": True, "system_identifier": 7, "server_started_at": 1.5}
    board.update(0, **same, server_port=1, check_count=1)
    snapshot = board.update(1, **same, server_port=2, check_count=1)
    assert snapshot.aliases == {} and len(snapshot.replicas) == 2
    snapshot = board.update(1, **same, server_port=1, check_count=2)  # one server, two names
    assert snapshot.aliases == {1: 0} and len(snapshot.replicas) == 1
