"""hasql's ``base`` import path: ``from pgrouter.base import BasePoolManager``."""

from .acquire import AcquireContext
from .balancer_policy import AbstractBalancerPolicy
from .manager import BasePoolManager

__all__ = ["AbstractBalancerPolicy", "AcquireContext", "BasePoolManager"]
