"""Time every run: a world middleware that logs how long each call of a run phase took.

`TimeRuns` wraps the run phase of every action of the world (``World(middleware=[...])``):
it notes the time, calls the inner layers (at the bottom, the action's ``run``) and logs a
"run timed" line with the action and the seconds it took. The engine binds the plan, the
step and the phase to the log context around the call, so each line says which step it
times. An ``async def run`` must be awaited to be timed: the hook checks which kind it
wraps and, for an async run, returns a coroutine that awaits it.

The lines go to stderr through structlog: JSON when stderr is not a terminal, coloured
text when it is. The plan provisions a host: a VM (a sync run), its DNS record (an async
run), then a notification.

Run it: ``python examples/timed_runs.py [DB_URL]`` (default: ``pydynflow.db`` here).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from typing import Any

import structlog

from pydynflow import Action, ExecutionPlan, Middleware, World
from pydynflow.logging import configure_logging

log = structlog.get_logger("timed_runs")


class TimeRuns(Middleware):
    """Log the duration of each call of a run phase."""

    def run(self, call_next: Any, event: Any) -> Any:
        if inspect.iscoroutinefunction(type(self.action).run):
            return self._timed(call_next, event)  # awaited by the engine
        started = time.perf_counter()
        try:
            return call_next(event)
        finally:
            self._log(started)

    async def _timed(self, call_next: Any, event: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call_next(event)
        finally:
            self._log(started)

    def _log(self, started: float) -> None:
        seconds = round(time.perf_counter() - started, 4)
        log.info("run timed", action=type(self.action).__name__, seconds=seconds)


class CreateVM(Action):
    """Create the host's virtual machine (50 ms of simulated work)."""

    def run(self) -> None:
        time.sleep(0.05)  # the workload: a stand-in for the hypervisor's API call
        self.output["ip"] = "10.0.0.7"


class RegisterDNS(Action):
    """Register the host's address (an async run: 20 ms of simulated I/O)."""

    async def run(self) -> None:
        await asyncio.sleep(0.02)  # the workload: a stand-in for the DNS API call
        self.output["record"] = f"{self.input['name']}.example.com A {self.input['ip']}"


class Notify(Action):
    """Tell the owner."""

    def run(self) -> None:
        self.output["sent"] = f"{self.input['name']} is ready"


class ProvisionHost(Action):
    """A VM, then its DNS record, then a notification."""

    label = "provision host"

    def plan(self, name: str) -> None:
        with self.sequence():
            vm = self.plan_action(CreateVM, name=name)
            self.plan_action(RegisterDNS, name=name, ip=vm.output["ip"])
            self.plan_action(Notify, name=name)


def main(argv: list[str] | None = None) -> ExecutionPlan:
    """Provision one host on a world whose runs are all timed; return the plan."""
    args = sys.argv[1:] if argv is None else argv
    db = args[0] if args else "sqlite:///pydynflow.db"
    configure_logging("INFO")  # the engine's default level is WARNING
    with World(db, middleware=[TimeRuns]) as world:
        plan = world.trigger(ProvisionHost, "web1").wait(30)
    print(f"plan {plan.id}: {plan.state} / {plan.result}, stored in {db}")
    for step in plan.steps.values():
        if step.phase == "run":
            print(f"  step {step.id} {step.action_class.__name__}: {step.execution_time:.3f} s")
    return plan


if __name__ == "__main__":
    main()
