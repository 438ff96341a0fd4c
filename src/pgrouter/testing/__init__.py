"""Test helpers that run real PostgreSQL servers: see :mod:`pgrouter.testing.cluster`."""

from pgrouter.testing.cluster import LocalCluster, Node, find_pg_bin

__all__ = ["LocalCluster", "Node", "find_pg_bin"]
