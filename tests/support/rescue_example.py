"""EX-3: Dynflow's RescueExample."""

from __future__ import annotations

from typing import Any

from pydynflow import Action, Fail, Pause, RescuePolicy, Skip
from pydynflow.events import Skip as SkipEvent


class AbstractAction(Action):
    def plan(self, identifier: int, desired_state: str) -> None:
        self.plan_self({"identifier": identifier, "desired_state": desired_state})

    def run(self, event: Any = None) -> None:
        state = self.input["desired_state"]
        if state in ("success", "error_on_finalize"):
            self.output["message"] = "Been here"
        elif state in ("error_on_run", "error_on_skip"):
            raise RuntimeError("some error as you wish")
        elif state == "pending":
            raise RuntimeError("we were not supposed to get here")

    def finalize(self) -> None:
        if self.input["desired_state"] in ("error_on_finalize", "error_on_skip"):
            raise RuntimeError("some error as you wish")


class ActionWithSkip(AbstractAction):
    rescue = Skip

    def run(self, event: Any = None) -> None:
        if isinstance(event, SkipEvent):
            self.output["message"] = f"skipped because {self.error.message}"
            if self.input["desired_state"] == "error_on_skip":
                raise RuntimeError("we failed on skip as well")
            return
        super().run(event)


class ActionWithFail(AbstractAction):
    rescue = Fail


class ComplexActionWithSkip(Action):
    rescue = Skip

    def plan(self, error_state: str) -> None:
        with self.sequence():
            with self.concurrence():
                self.plan_action(ActionWithSkip, 3, "success")
                self.plan_action(ActionWithSkip, 4, error_state)
                self.plan_action(ActionWithSkip, 5, error_state)
            self.plan_action(ActionWithSkip, 6, "success")


class ComplexActionWithoutSkip(ComplexActionWithSkip):
    def rescue_for_planned(self, action: Action) -> RescuePolicy | None:
        return Pause


class ComplexActionWithFail(ActionWithFail):
    def plan(self, error_state: str) -> None:  # type: ignore[override]
        with self.sequence():
            with self.concurrence():
                self.plan_action(ActionWithFail, 3, "success")
                self.plan_action(ActionWithFail, 4, error_state)
            self.plan_action(ActionWithFail, 5, "success")
            self.plan_action(ActionWithSkip, 6, "success")
