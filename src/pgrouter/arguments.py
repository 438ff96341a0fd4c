"""Checks of the arguments a caller passes, so bad input fails at the call, by name.

Every number that is a duration must be a real, finite number: ``nan``
compares false with everything, so ``nan <= 0`` lets it through a naive
check and it then turns every deadline into "never" or "now". Messages name
the argument and show its value (never a DSN: those go through
:mod:`pgrouter.dsn`).
"""

from __future__ import annotations

import math
from typing import Any

from .balancer_policy import AbstractBalancerPolicy
from .routing.reads import ReadRule


def seconds(name: str, value: Any, *, zero: bool = False) -> float:
    """A duration: a finite number > 0 (>= 0 with ``zero``); raises naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return float(value)


def optional_seconds(name: str, value: Any, *, zero: bool = False) -> float | None:
    """``None``, or a duration as :func:`seconds` checks it."""
    return None if value is None else seconds(name, value, zero=zero)


def weight(name: str, value: Any) -> float:
    """A probability: a number within [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number within [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
    return float(value)


def positive_int(name: str, value: Any) -> int:
    """A count: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """A bool (``None`` is not one: the caller decides what None means first)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def read_rule(max_lag_bytes: Any, max_lag_seconds: Any) -> ReadRule | None:
    """The rule for these bounds (checked by name), ``None`` for no bound at all."""
    if max_lag_bytes is None and max_lag_seconds is None:
        return None
    if max_lag_bytes is not None and (
        isinstance(max_lag_bytes, bool) or not isinstance(max_lag_bytes, int) or max_lag_bytes < 0
    ):
        raise ValueError(f"max_lag_bytes must be an int >= 0, got {max_lag_bytes!r}")
    seconds = optional_seconds("max_lag_seconds", max_lag_seconds, zero=True)
    return ReadRule(max_lag_bytes=max_lag_bytes, max_lag_seconds=seconds)


def balancer(
    policy: type[AbstractBalancerPolicy] | AbstractBalancerPolicy,
) -> AbstractBalancerPolicy:
    """The policy instance to use; a ``TypeError`` naming the argument for anything else."""
    if isinstance(policy, type) and issubclass(policy, AbstractBalancerPolicy):
        return policy()
    if isinstance(policy, AbstractBalancerPolicy):
        return policy
    raise TypeError(
        "balancer_policy must be a subclass or an instance of "
        f"pgrouter.balancer_policy.AbstractBalancerPolicy, got {policy!r}"
    )


__all__ = ["balancer", "flag", "optional_seconds", "positive_int", "read_rule", "seconds", "weight"]
