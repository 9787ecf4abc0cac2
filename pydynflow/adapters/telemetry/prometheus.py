"""`PrometheusTelemetry`: the engine's metrics through prometheus-client.

Works in one process (prometheus-client's default registry, served by the console's
``/metrics`` when it runs in the same process) and in multiprocess mode (each process of
``pydynflow worker --metrics-dir`` writes its own files; the console reading the same
directory adds them up). Hence only counters, histograms and gauges with a
``multiprocess_mode``, as that mode requires.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from pydynflow.adapters.telemetry.base import FINISHED_STEP_STATES, Telemetry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

__all__ = ["DURATION_BUCKETS", "PrometheusTelemetry"]

DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Step duration buckets (seconds): from a no-op step to an hour-long one."""
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SAMPLE_SECONDS = 1.0
"""How often a watched world's queues are sampled."""


class PrometheusTelemetry(Telemetry):
    """Record the engine's metrics in ``registry`` (prometheus-client's default one).

    Metrics (each name as Prometheus shows it):

    - ``pydynflow_step_execution_seconds{action_class, queue}`` (histogram): a finished run
      or finalize step's execution time, suspended time excluded.
    - ``pydynflow_step_real_seconds{action_class, queue}`` (histogram): its time from start
      to end.
    - ``pydynflow_steps_finished_total{action_class, queue, state}``: finished steps by how
      they ended (success, error, skipped, cancelled).
    - ``pydynflow_events_received_total``: events stored for running steps.
    - ``pydynflow_events_rejected_total``: events a running plan refused.
    - ``pydynflow_persistence_commit_seconds`` (histogram): from handing a batch of state
      changes to the writer to its commit.
    - ``pydynflow_persistence_batch_size`` (histogram): state changes per batch.
    - ``pydynflow_worker_restarts_total{kind}``: worker processes restarted.
    - ``pydynflow_queue_depth{queue}``, ``pydynflow_queue_busy_workers{queue}``,
      ``pydynflow_queue_workers{queue}`` (gauges, summed over live processes): steps waiting
      for a worker, workers running a step, workers, of the watched worlds.
    """

    enabled = True
    _shared: ClassVar[PrometheusTelemetry | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        labels = ("action_class", "queue")
        self.step_execution = Histogram(
            "pydynflow_step_execution_seconds",
            "Execution time of finished run and finalize steps (suspended time excluded).",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.step_real = Histogram(
            "pydynflow_step_real_seconds",
            "Time from start to end of finished run and finalize steps.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.steps_finished = Counter(
            "pydynflow_steps_finished",
            "Finished run and finalize steps, by the state they ended in.",
            (*labels, "state"),
            registry=registry,
        )
        self.events_received = Counter(
            "pydynflow_events_received", "Events stored for running steps.", registry=registry
        )
        self.events_rejected = Counter(
            "pydynflow_events_rejected",
            "Events a running plan refused (the step was not waiting for one).",
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "pydynflow_persistence_commit_seconds",
            "Seconds from handing a batch of state changes to the writer to its commit.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "pydynflow_persistence_batch_size",
            "State changes per committed batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.worker_restarts = Counter(
            "pydynflow_worker_restarts",
            "Worker processes restarted (kind: world, step).",
            ("kind",),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "pydynflow_queue_depth",
            "Steps waiting for a worker of their queue.",
            ("queue",),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue_busy = Gauge(
            "pydynflow_queue_busy_workers",
            "Workers of a queue running a step.",
            ("queue",),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue_workers = Gauge(
            "pydynflow_queue_workers",
            "Workers of a queue.",
            ("queue",),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._sampler: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> PrometheusTelemetry:
        """Return the process's one instance on the default registry (created once: a
        metric name can be registered only once per registry)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def committed(self, requests: Sequence[Any], seconds: float) -> None:
        """Record the transaction, and every step it finished."""
        self.commit_seconds.observe(seconds)
        self.batch_size.observe(len(requests))
        received = 0
        for request in requests:
            received += len(request.envelope_add)
            for step in request.steps:
                if step.state in FINISHED_STEP_STATES and step.ended_at is not None:
                    labels = (step.action_class, step.queue or "default")
                    self.step_execution.labels(*labels).observe(step.execution_time or 0.0)
                    self.step_real.labels(*labels).observe(step.real_time or 0.0)
                    self.steps_finished.labels(*labels, step.state).inc()
        if received:
            self.events_received.inc(received)

    def event_rejected(self) -> None:
        """Count a refused event."""
        self.events_rejected.inc()

    def worker_restarted(self, kind: str) -> None:
        """Count a restarted worker process."""
        self.worker_restarts.labels(kind).inc()

    def process_exited(self, pid: int) -> None:
        """Drop a dead process's gauges (multiprocess mode: its files would count on)."""
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(pid)

    def watch(self, world: Any) -> None:
        """Sample ``world``'s queues every `SAMPLE_SECONDS` while it runs (one thread for
        all the worlds watched in this process)."""
        with self._lock:
            self._watched.add(world)
            if self._sampler is None or not self._sampler.is_alive():
                self._sampler = threading.Thread(
                    target=self._sample_forever, name="pydynflow-metrics", daemon=True
                )
                self._sampler.start()

    def sample(self) -> None:
        """Set the queue gauges from the watched worlds now."""
        totals: dict[str, list[int]] = {}
        for world in list(self._watched):
            runtime = getattr(world, "_runtime", None)
            if runtime is None:
                continue
            for queue, slots in dict(runtime.slots).items():
                found = totals.setdefault(queue, [0, 0, 0])
                found[0] += slots.waiting
                found[1] += len(slots.holders())
                found[2] += slots.size
        for queue, (waiting, busy, size) in totals.items():
            self.queue_depth.labels(queue).set(waiting)
            self.queue_busy.labels(queue).set(busy)
            self.queue_workers.labels(queue).set(size)

    def _sample_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(SAMPLE_SECONDS):  # a sampling period, not a synchronisation
            self.sample()
