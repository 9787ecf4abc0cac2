"""Telemetry: the engine reports committed batches, finished steps, stored and refused
events and restarted workers to the current telemetry; Prometheus turns them into metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from pydynflow import World
from pydynflow.adapters import telemetry
from pydynflow.adapters.telemetry import StubTelemetry, Telemetry
from pydynflow.adapters.telemetry.prometheus import PrometheusTelemetry
from pydynflow.errors import EventRejected
from tests.support.remote_actions import AwaitApproval, Quick
from tests.web.conftest import wait_until
from tests.web.console_actions import Release


@pytest.fixture
def stub() -> Iterator[StubTelemetry]:
    recorder = StubTelemetry()
    previous = telemetry.use(recorder)
    try:
        yield recorder
    finally:
        telemetry.use(previous)


def test_the_base_telemetry_is_off() -> None:
    assert Telemetry().enabled is False and StubTelemetry().enabled is True


def test_a_world_reports_commits_and_refused_events(stub: StubTelemetry, memory_url: str) -> None:
    with World(memory_url) as world:
        world.trigger(Quick).wait(20)
        release = world.trigger(Release, "1", 0.01)
        wait_until(lambda: world.load(release.id).steps[9].state == "suspended", what="approval")
        with pytest.raises(EventRejected):
            world.event(release.id, 3, {"too": "late"})  # a finished step of a running plan
        world.halt(release.id)
        release.wait(20)
    committed = [details for hook, details in stub.calls if hook == "committed"]
    assert committed and all(count >= 1 and seconds >= 0 for count, seconds in committed)
    assert [hook for hook, _ in stub.calls].count("event_rejected") == 1


def test_an_event_refused_for_a_plan_that_runs_nowhere_is_counted(
    stub: StubTelemetry, sqlite_url: str
) -> None:
    with World(sqlite_url) as world:
        ended = world.trigger(Quick).wait(20)
        step = next(s.id for s in ended.steps.values() if s.phase == "run")
        with pytest.raises(EventRejected):
            world.event(ended.id, step, {"too": "late"})  # its plan stopped
        assert world.event(ended.id, step, {"too": "late"}, optional=True) is False
    assert [hook for hook, _ in stub.calls].count("event_rejected") == 2


def test_prometheus_records_finished_steps_events_and_batches(memory_url: str) -> None:
    registry = CollectorRegistry()
    recorder = PrometheusTelemetry(registry)
    previous = telemetry.use(recorder)
    try:
        with World(memory_url) as world:
            recorder.watch(world)
            world.trigger(Quick).wait(20)
            waiting = world.trigger(AwaitApproval)
            step = next(s.id for s in world.load(waiting.id).steps.values() if s.phase == "run")
            world.event(waiting.id, step, {"ok": True})
            waiting.wait(20)
            recorder.sample()
            assert registry.get_sample_value("pydynflow_queue_workers", {"queue": "default"}) == 5
    finally:
        telemetry.use(previous)
    quick = {"action_class": Quick.class_name(), "queue": "default"}
    assert registry.get_sample_value("pydynflow_step_execution_seconds_count", quick) == 1
    assert (
        registry.get_sample_value("pydynflow_steps_finished_total", {**quick, "state": "success"})
        == 1
    )
    assert registry.get_sample_value("pydynflow_events_received_total") == 1
    assert registry.get_sample_value("pydynflow_persistence_batch_size_count") >= 2
    recorder.worker_restarted("step")
    assert registry.get_sample_value("pydynflow_worker_restarts_total", {"kind": "step"}) == 1
