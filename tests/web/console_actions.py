"""Actions the console tests run: a release that moves, waits for an approval, fails once
and goes on; plans whose every field carries markup; a plan of 1,000+ steps.

``python -m pydynflow worker --app tests.web.console_actions`` runs them in a real daemon.
"""

from __future__ import annotations

import time
from typing import Any

from pydynflow import Action, Cancellable

XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
"""Markup that would run if a page rendered it instead of showing it."""


class Work(Action):
    """A step that works ``seconds`` in ``ticks`` slices, streaming a line per slice."""

    def plan(self, name: str, seconds: float = 0.2, ticks: int = 2) -> None:
        self.plan_self({"name": name, "seconds": seconds, "ticks": ticks})

    def run(self) -> None:
        ticks = int(self.input["ticks"])
        for tick in range(ticks):
            time.sleep(self.input["seconds"] / ticks)  # stands in for real work (noqa: sleep-ok)
            self.output_chunk({"line": f"{self.input['name']}: {tick + 1}/{ticks}"}, "stdout")
        self.output["done"] = self.input["name"]


class _WaitsForApproval(Action):
    def run(self, event: Any = None) -> None:
        if event is None:
            self.suspend()
        self.output["approval"] = event


class Approve(Cancellable, _WaitsForApproval):
    """A step that waits for an approval event; cancelling it records that (`Cancellable`
    takes `Cancel` before the run of the class after it)."""

    def plan(self, change: str) -> None:
        self.plan_self({"change": change})

    def cancel(self) -> None:
        self.output["cancelled"] = True


class Deploy(Action):
    """A step that fails unless its input says otherwise (an operator skips it)."""

    def plan(self, target: str, fail: bool = True) -> None:
        self.plan_self({"target": target, "fail": fail})

    def run(self) -> None:
        if self.input["fail"]:
            raise RuntimeError(f"deploy to {self.input['target']} failed on purpose")
        self.output["deployed"] = self.input["target"]


class Notify(Action):
    """A last step that needs nothing from the ones before."""

    def plan(self, channel: str) -> None:
        self.plan_self({"channel": channel})

    def run(self) -> None:
        self.output["notified"] = self.input["channel"]


class Release(Action):
    """Build, then test twice at once, then wait for approval, deploy and notify."""

    label = "release"

    def plan(self, version: str, work: float = 0.2, fail: bool = True) -> None:
        with self.sequence():
            self.plan_action(Work, "build", work, 3)
            with self.concurrence():
                self.plan_action(Work, "unit tests", work)
                self.plan_action(Work, "integration tests", work)
            self.plan_action(Approve, f"release {version}")
            self.plan_action(Deploy, "production", fail)
            self.plan_action(Notify, "#releases")
        self.plan_self({"version": version})


class Quick(Action):
    """One step that succeeds at once."""

    def plan(self, note: str = "") -> None:
        self.plan_self({"note": note})

    def run(self) -> None:
        self.output["done"] = True


class Marked(Action):
    """A plan whose label, input, output and error all carry markup."""

    label = f"label {XSS}"

    def plan(self, fail: bool = True) -> None:
        self.plan_self({"input": XSS, XSS: [XSS], "fail": fail})

    def run(self, event: Any = None) -> None:
        self.output["output"] = XSS
        self.output_chunk({"chunk": XSS}, kind="stdout")
        if event is None and not self.input["fail"]:
            self.suspend()
        if event is not None:
            self.output["event"] = event
            return
        raise RuntimeError(f"error {XSS}")


class Big(Action):
    """A plan of ``width`` x ``depth`` steps: sequences of concurrences."""

    label = "big"

    def plan(self, width: int = 250, depth: int = 4) -> None:
        with self.sequence():
            for level in range(depth):
                with self.concurrence():
                    for index in range(width):
                        self.plan_action(Quick, f"{level}.{index}")
