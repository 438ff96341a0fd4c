"""Cutting a connection at its socket, from outside the driver that owns it.

A connection to a superseded primary must stop now, also while a query of
another task waits on it: closing the file descriptor under that task would
leave it waiting on a descriptor the loop no longer watches (and the number
could be reused). ``shutdown()`` instead ends the TCP stream for both
directions while the descriptor stays open: the waiting driver reads end of
file at once and fails with its own connection error, and whatever the server
sends later (an acknowledgement of a commit) is never read.
"""

from __future__ import annotations

import contextlib
import socket


def cut_socket(fd: int) -> None:
    """Shut the socket behind ``fd`` down both ways; the descriptor stays open."""
    # fromfd() works on a duplicate: closing it leaves ``fd`` to its driver,
    # while the shutdown acts on the socket both descriptors share. OSError: not
    # connected (any more), or not a socket.
    with (
        contextlib.suppress(OSError),
        socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as duplicate,
    ):
        duplicate.shutdown(socket.SHUT_RDWR)


__all__ = ["cut_socket"]
