"""Dynflow's middleware examples (``test/support/middleware_example.rb``), in Python.

Every layer appends to `calls`, so a test reads the order the layers ran in. `FileLog` and
`Logged` write to the file named by the plan's input instead: they run in worker processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydynflow import Action, Middleware
from pydynflow.middleware import DoNotUse, Use

calls: list[str] = []


def log(message: str) -> None:
    calls.append(message)


class LogMiddleware(Middleware):
    """Log before and after every hook, named after its class."""

    def _log(self, message: str) -> None:
        log(f"{type(self).__name__}::{message}")

    def delay(self, call_next: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        self._log("before_delay")
        result = call_next(options, *args, **kwargs)
        self._log("after_delay")
        return result

    def plan(self, call_next: Any, *args: Any, **kwargs: Any) -> Any:
        self._log("before_plan")
        result = call_next(*args, **kwargs)
        self._log("after_plan")
        return result

    def run(self, call_next: Any, event: Any) -> Any:
        self._log("before_run")
        try:
            return call_next(event)
        finally:
            self._log("after_run")

    def finalize(self, call_next: Any) -> Any:
        self._log("before_finalize")
        result = call_next()
        self._log("after_finalize")
        return result

    def plan_phase(self, call_next: Any, plan: Any) -> Any:
        self._log("before_plan_phase")
        result = call_next(plan)
        self._log("after_plan_phase")
        return result

    def finalize_phase(self, call_next: Any, plan: Any) -> Any:
        self._log("before_finalize_phase")
        result = call_next(plan)
        self._log("after_finalize_phase")
        return result


class LogRunMiddleware(Middleware):
    """Log around the run phase only."""

    def run(self, call_next: Any, event: Any) -> Any:
        log(f"{type(self).__name__}::before_run")
        try:
            return call_next(event)
        finally:
            log(f"{type(self).__name__}::after_run")


class AnotherLogRunMiddleware(LogRunMiddleware):
    """The same, under another name."""


class ObservingMiddleware(Middleware):
    """Log the running action's input before its run and its output after."""

    def run(self, call_next: Any, event: Any) -> Any:
        log(f"input#message:{self.action.input.get('message')}")
        try:
            return call_next(event)
        finally:
            log(f"output#message:{self.action.output.get('message')}")


class AnotherObservingMiddleware(ObservingMiddleware):
    """Also set the input's message to the world id when the plan is delayed."""

    def delay(self, call_next: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        result = call_next(options, *args, **kwargs)
        log(f"delay#set-input:{self.action.world.id}")
        self.action.input["message"] = self.action.world.id
        return result

    def plan(self, call_next: Any, *args: Any, **kwargs: Any) -> Any:
        log(f"plan#input:{self.action.input.get('message')}")  # what the delay hook set
        return call_next(*args, **kwargs)


class LoggingAction(Action):
    """Every phase logged, inside `LogMiddleware`."""

    middleware = [LogMiddleware]

    def delay(self, options: Any, *args: Any) -> tuple[Any, ...]:
        log("delay")
        return args

    def plan(self, input: dict[str, Any]) -> None:
        log("plan")
        self.plan_self(input)

    def run(self) -> None:
        log("run")

    def finalize(self) -> None:
        log("finalize")


class LoggedRun(Action):
    """Dynflow's ``MiddlewareExample::Action``."""

    middleware = [LogRunMiddleware]

    def run(self) -> None:
        log("run")
        self.output["message"] = "finished"


class SubAction(LoggedRun):
    middleware = [AnotherLogRunMiddleware]


class SubActionBeforeRule(LoggedRun):
    middleware = [Use(AnotherLogRunMiddleware, before=LogRunMiddleware)]


class SubActionReplaceRule(LoggedRun):
    middleware = [Use(AnotherLogRunMiddleware, replace=LogRunMiddleware)]


class SubActionDoNotUseRule(LoggedRun):
    middleware = [
        AnotherLogRunMiddleware,
        DoNotUse(AnotherLogRunMiddleware),
        DoNotUse(LogRunMiddleware),
    ]


# -- in worker processes ---------------------------------------------------------------------


def file_log(path: str, message: str) -> None:
    with Path(path).open("a") as out:
        out.write(f"{message} {os.getpid()}\n")


class FileLog(Middleware):
    """Log each hook with the pid of the process it runs in, to the input's ``log`` file."""

    def plan_phase(self, call_next: Any, plan: Any) -> Any:
        result = call_next(plan)
        file_log(plan.actions[plan.root_action_id].input["log"], "plan_phase")
        return result

    def run(self, call_next: Any, event: Any) -> Any:
        file_log(self.action.input["log"], "before_run")
        result = call_next(event)
        file_log(self.action.input["log"], "after_run")
        return result

    def finalize(self, call_next: Any) -> Any:
        file_log(self.action.input["log"], "before_finalize")
        return call_next()

    def finalize_phase(self, call_next: Any, plan: Any) -> Any:
        file_log(plan.actions[plan.root_action_id].input["log"], "before_finalize_phase")
        result = call_next(plan)
        file_log(plan.actions[plan.root_action_id].input["log"], "after_finalize_phase")
        return result


class Logged(Action):
    """Runs and finalizes, logging where (no middleware of its own)."""

    def run(self) -> None:
        file_log(self.input["log"], "run")

    def finalize(self) -> None:
        file_log(self.input["log"], "finalize")
