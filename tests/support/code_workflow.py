"""EX-1: Dynflow's CodeWorkflowExample, the fixture of the planning scenarios."""

from __future__ import annotations

import threading
from typing import Any

from pydynflow import Action

RUN_LOG: list[tuple[str, dict[str, Any]]] = []
FINALIZE_LOG: list[tuple[str, dict[str, Any]]] = []
FAIL = {"__fail__": True}  # the special marker that makes IncomingIssue.plan fail


class PauseHook:
    """A rendezvous: run() blocks on it until the test releases it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def pause(self) -> None:
        self.reached.set()
        self.release.wait(30)


PAUSE = PauseHook()


def _log(log: list[tuple[str, dict[str, Any]]], action: Action) -> None:
    log.append((type(action).__name__, dict(action.input)))


class IncomingIssues(Action):
    def plan(self, issues: list[dict[str, Any]]) -> None:
        for issue in issues:
            self.plan_action(IncomingIssue, issue)
        self.plan_self({"issues": issues})

    def finalize(self) -> None:
        _log(FINALIZE_LOG, self)


class IncomingIssue(Action):
    def plan(self, issue: dict[str, Any]) -> None:
        if issue == FAIL:
            raise RuntimeError("You want me to fail")
        self.plan_self(issue)
        self.plan_action(Triage, issue)


class Triage(Action):
    def plan(self, issue: dict[str, Any]) -> None:
        triage = self.plan_self(issue)
        self.plan_action(
            UpdateIssue,
            {
                "author": triage.input["author"],
                "text": triage.input["text"],
                "assignee": triage.output["classification"]["assignee"],
                "severity": triage.output["classification"]["severity"],
            },
        )

    def run(self) -> None:  # takes no event: a skipped Triage is not run with Skip
        _log(RUN_LOG, self)
        text = self.input["text"]
        if "get a break" in text:
            PAUSE.pause()
        if text == "trolling":
            raise RuntimeError("Trolling detected")
        self.output["classification"] = {"assignee": "John Doe", "severity": "medium"}

    def finalize(self) -> None:
        if self.input["text"] == "trolling in finalize":
            raise RuntimeError("Trolling detected")
        _log(FINALIZE_LOG, self)


class UpdateIssue(Action):
    def run(self, event: Any = None) -> None:
        pass


class NotifyAssignee(Action):
    subscribe = Triage

    def plan(self, *args: Any) -> None:
        self.plan_self({"triage": self.trigger.output})

    def run(self, event: Any = None) -> None:
        pass

    def finalize(self) -> None:
        _log(FINALIZE_LOG, self)


class Commit(Action):
    def plan(self, commit: dict[str, Any], reviews: dict[str, bool] | None = None) -> None:
        reviews = {"Morfeus": True, "Neo": True} if reviews is None else reviews
        with self.sequence():
            with self.concurrence():
                ci = self.plan_action(Ci, {"commit": commit})
                review_actions = [
                    self.plan_action(Review, commit, name, result)
                    for name, result in reviews.items()
                ]
            self.plan_action(
                Merge,
                {
                    "commit": commit,
                    "ci_result": ci.output["passed"],
                    "review_results": [review.output["passed"] for review in review_actions],
                },
            )


class FastCommit(Action):
    def plan(self, commit: dict[str, Any]) -> None:
        with self.sequence():
            with self.concurrence():
                ci = self.plan_action(Ci, {"commit": commit})
                review = self.plan_action(Review, commit, "Morfeus", True)
            self.plan_action(
                Merge,
                {
                    "commit": commit,
                    "ci_result": ci.output["passed"],
                    "review_results": [review.output["passed"]],
                },
            )


class Ci(Action):
    def run(self, event: Any = None) -> None:
        self.output["passed"] = True


class Review(Action):
    def plan(self, commit: dict[str, Any], reviewer: str, result: bool = True) -> None:
        self.plan_self({"commit": commit, "reviewer": reviewer, "result": result})

    def run(self, event: Any = None) -> None:
        self.output["passed"] = self.input["result"]


class Merge(Action):
    def run(self, event: Any = None) -> None:
        self.output["passed"] = self.input["ci_result"] and all(self.input["review_results"])


class Dummy(Action):
    label = "dummy_action"


class DummyWithFinalize(Action):
    def finalize(self) -> None:
        _log(FINALIZE_LOG, self)


class DummyTrigger(Action):
    pass


class DummyAnotherTrigger(Action):
    pass


class DummySubscribe(Action):
    subscribe = DummyTrigger

    def run(self, event: Any = None) -> None:
        pass


class DummyMultiSubscribe(Action):
    subscribe = [DummyTrigger, DummyAnotherTrigger]

    def run(self, event: Any = None) -> None:
        pass


ISSUES = [
    {"author": "Peter Smith", "text": "Failing test"},
    {"author": "John Doe", "text": "Internal server error"},
]
