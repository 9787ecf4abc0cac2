"""What the engine reports as it runs (`Telemetry`), and where it goes: nowhere (the
default), Prometheus (`PrometheusTelemetry`), or a recorder for tests (`StubTelemetry`).

One telemetry is current per process (`current`, `use`). A process started with the
``PROMETHEUS_MULTIPROC_DIR`` environment variable set (as ``pydynflow worker
--metrics-dir`` sets it for its children) uses `PrometheusTelemetry` from the start, in
prometheus-client's multiprocess mode: each process writes its own files there, and the
console's ``/metrics`` adds them up.
"""

from __future__ import annotations

import os

from pydynflow.adapters.telemetry.base import FINISHED_STEP_STATES, Telemetry
from pydynflow.adapters.telemetry.stub import StubTelemetry

__all__ = [
    "FINISHED_STEP_STATES",
    "MULTIPROC_ENV",
    "StubTelemetry",
    "Telemetry",
    "current",
    "use",
    "use_prometheus",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable of prometheus-client's multiprocess mode."""

_current: Telemetry = Telemetry()


def current() -> Telemetry:
    """Return this process's telemetry."""
    return _current


def use(telemetry: Telemetry) -> Telemetry:
    """Make ``telemetry`` this process's; return the one it replaces."""
    global _current
    previous, _current = _current, telemetry
    return previous


def use_prometheus() -> Telemetry:
    """Report to Prometheus from now on (`PrometheusTelemetry`, created once); return it.

    Its metrics go to prometheus-client's default registry, or to the multiprocess
    directory when ``PROMETHEUS_MULTIPROC_DIR`` is set.
    """
    from pydynflow.adapters.telemetry.prometheus import PrometheusTelemetry

    if not isinstance(_current, PrometheusTelemetry):
        use(PrometheusTelemetry.shared())
    return _current


if os.environ.get(MULTIPROC_ENV):
    use_prometheus()
