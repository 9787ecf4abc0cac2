"""``/metrics``: Prometheus text with what the database says (plans, active steps, worlds) and
what the engine recorded (`pydynflow.adapters.telemetry.prometheus`): the worker daemon's
processes through a multiprocess directory on this host, or this process's own registry.

The database's figures are counted at each scrape from the indexes of schema 6, so they are
the same whichever console process answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

from pydynflow.web.console import Console

__all__ = ["CONTENT_TYPE", "DatabaseCollector", "metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DatabaseCollector:
    """Collect the figures the database holds: plans by state and by result, the steps of
    unfinished plans by state, the worlds by kind and liveness."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def collect(self) -> Iterator[Metric]:
        """Count now (a handful of index scans)."""
        storage = self.console.storage
        plans = GaugeMetricFamily("pydynflow_plans", "Plans stored, by state.", labels=["state"])
        for state, count in sorted(storage.count_plans_by("state").items()):
            plans.add_metric([str(state)], count)
        yield plans
        results = GaugeMetricFamily(
            "pydynflow_plans_by_result", "Plans stored, by result.", labels=["result"]
        )
        for result, count in sorted(storage.count_plans_by("result").items(), key=str):
            results.add_metric([str(result)], count)
        yield results
        steps = GaugeMetricFamily(
            "pydynflow_active_steps", "Steps of the plans not stopped, by state.", labels=["state"]
        )
        for state, count in sorted(storage.count_active_steps().items()):
            steps.add_metric([state], count)
        yield steps
        worlds = GaugeMetricFamily(
            "pydynflow_worlds",
            "Worlds registered in the database, by kind and liveness.",
            labels=["kind", "alive"],
        )
        counts: dict[tuple[str, str], int] = {}
        for info in self.console.world.worlds():
            key = ("executor" if info.executor else "client", "true" if info.alive else "false")
            counts[key] = counts.get(key, 0) + 1
        for kind in ("executor", "client"):
            for alive in ("true", "false"):
                worlds.add_metric([kind, alive], counts.get((kind, alive), 0))
        yield worlds


def metrics(request: Request) -> Response:
    """Answer a Prometheus scrape."""
    console: Console = request.app.state.console
    metrics_dir: Path | None = request.app.state.metrics_dir
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(console))  # type: ignore[arg-type]
    if metrics_dir is not None:
        MultiProcessCollector(registry, path=str(metrics_dir))
        body = generate_latest(registry)
    else:
        body = generate_latest(registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE, headers={"cache-control": "no-store"})
