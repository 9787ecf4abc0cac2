"""Clocks timers run on: `RealClock` (a thread of its own); the interface is
`pydynflow.clock.Clock`, and `pydynflow.testing.ManagedClock` is the family's virtual stub."""

from pydynflow.adapters.clocks.real import RealClock

__all__ = ["RealClock"]
