"""Delayed and chained plans: the `World` methods (`SchedulingMixin`), the delayed
executor that plans and runs them when due (`DelayedExecutor`), and their lifecycle."""

from pydynflow.scheduling.executor import POLL_INTERVAL, DelayedExecutor
from pydynflow.scheduling.mixin import SchedulingMixin

__all__ = ["POLL_INTERVAL", "DelayedExecutor", "SchedulingMixin"]
