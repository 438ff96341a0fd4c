"""The public import path for pins: ``from pgrouter import pinning``.

A thin re-export; the code, and the semantics in its docstring, live in
:mod:`pgrouter.routing.pinning`, the routing layer every face asks.
"""

from .routing.pinning import (
    is_pinned,
    pin,
    pin_until,
    pinned_names,
    pinning_context,
    reads_go_to_primary,
    unpin_all,
    unpinned_replica,
    use_primary,
)

__all__ = [
    "is_pinned",
    "pin",
    "pin_until",
    "pinned_names",
    "pinning_context",
    "reads_go_to_primary",
    "unpin_all",
    "unpinned_replica",
    "use_primary",
]
