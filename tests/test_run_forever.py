"""`World.run_forever` and `stop_timeout`: a daemon stops gracefully on SIGTERM.

The signal tests run `tests/support/service.py` as a real process and synchronise on the
markers it prints, never on sleeps.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Action, World
from pydynflow.states import PlanState, Result, StepState

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0


class Service:
    """The service script running in a subprocess; a thread per pipe queues its lines."""

    def __init__(self, db: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYDYNFLOW_LOG_LEVEL": "INFO"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.service", db],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.read: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.queues: dict[str, queue.Queue[str]] = {}
        self.readers = []
        for name in self.read:
            self.queues[name] = queue.Queue()
            reader = threading.Thread(target=self._read, args=(name,), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _read(self, name: str) -> None:
        for line in getattr(self.process, name):
            self.queues[name].put(line.rstrip("\n"))
        self.queues[name].put("")  # EOF

    def wait_for(self, text: str, stream: str = "stdout") -> str:
        """Return the next line of ``stream`` holding ``text`` (fail after `TIMEOUT`)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.queues[stream].get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                line = ""
            if not line:
                self.process.kill()
                raise AssertionError(f"no {text!r} line in {stream}; read {self.read}")
            self.read[stream].append(line)
            if text in line:
                return line

    def finish(self) -> tuple[int, str]:
        """Wait for the process to exit; return its exit code and its whole stderr."""
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the service did not stop; read {self.read}") from None
        for reader in self.readers:
            reader.join(TIMEOUT)
        for name, lines in self.read.items():
            while (line := self.queues[name].get_nowait()) != "":
                lines.append(line)
        return self.process.returncode, "\n".join(self.read["stderr"])


@pytest.fixture
def service(sqlite_url: str) -> Iterator[Service]:
    started = Service(sqlite_url)
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait()


def load(url: str, plan_id: str) -> Any:
    reader = World(url, executor=False)
    try:
        return reader.load(plan_id)
    finally:
        reader.stop()


def test_sigterm_stops_gracefully_and_exits_0(service: Service, sqlite_url: str) -> None:
    plan_id = service.wait_for("plan ").split()[1]
    service.wait_for("step started")
    service.process.send_signal(signal.SIGTERM)
    code, stderr = service.finish()

    assert code == 0, stderr
    plan = load(sqlite_url, plan_id)
    (step,) = plan.steps_of_phase("run")
    assert step.state == StepState.SUCCESS, (step.state, step.error)
    assert plan.actions[1].output == {"worked": 1.0}
    for each in plan.steps.values():
        assert each.state != StepState.RUNNING, each
        assert each.error is None or "Abnormal termination" not in each.error.message, each
    if plan.state == PlanState.PAUSED:  # the stop came before the plan could finish
        assert plan.pause_reason() == "stop" and plan.result != Result.ERROR, plan.history
    else:
        assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)


def test_a_second_sigterm_stops_at_once(service: Service, sqlite_url: str) -> None:
    plan_id = service.wait_for("plan ").split()[1]
    service.wait_for("step started")
    service.process.send_signal(signal.SIGTERM)
    service.wait_for("signal received: stopping", "stderr")  # two pending signals are one
    service.process.send_signal(signal.SIGTERM)
    code, stderr = service.finish()

    assert code == 0, stderr
    assert "second signal: stopping now" in stderr
    (step,) = load(sqlite_url, plan_id).steps_of_phase("run")
    assert step.state == StepState.RUNNING, stderr  # recovered by the next executor world


# -- in this process ----------------------------------------------------------------------


class Gate(Action):
    """A step that runs until the test opens `GATE`."""

    def run(self) -> None:
        ENTERED.set()  # its move to running is committed before its code starts
        GATE.wait(TIMEOUT)


GATE = threading.Event()
ENTERED = threading.Event()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    GATE.clear()
    ENTERED.clear()
    yield GATE
    GATE.set()


def test_run_forever_returns_1_when_the_world_stops_on_its_own(sqlite_url: str) -> None:
    world = World(sqlite_url)
    world.start()
    lost = threading.Timer(0.05, world._persistence_lost, (RuntimeError("disk gone"),))
    lost.start()
    assert world.run_forever(install_signal_handlers=False) == 1
    assert not world.started and isinstance(world.fatal_error, RuntimeError)


def test_run_forever_returns_0_when_stopped_elsewhere(sqlite_url: str) -> None:
    world = World(sqlite_url)
    world.start()
    threading.Timer(0.05, world.stop).start()
    assert world.run_forever(install_signal_handlers=False) == 0
    assert not world.started


def test_run_forever_restores_the_signal_handlers(sqlite_url: str) -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    world = World(sqlite_url)
    world.start()
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    assert world.run_forever() == 0  # SIGINT stopped it: no KeyboardInterrupt
    assert not world.started
    after = {signum: signal.getsignal(signum) for signum in before}
    assert after == before


def test_stop_without_a_timeout_uses_the_worlds_stop_timeout(
    sqlite_url: str, gate: threading.Event
) -> None:
    world = World(sqlite_url, stop_timeout=0.1)
    world.start()
    plan_id = world.trigger(Gate).id
    assert ENTERED.wait(TIMEOUT)
    assert world.load(plan_id).steps[2].state == StepState.RUNNING
    left = world.stop()  # would wait for the gate without the world's stop_timeout
    assert left == [(plan_id, 2)]


@pytest.mark.parametrize("value", [-1, "10", float("nan")])
def test_stop_timeout_is_checked(value: Any) -> None:
    with pytest.raises(ValueError, match="stop_timeout"):
        World("sqlite:///:memory:", stop_timeout=value)
