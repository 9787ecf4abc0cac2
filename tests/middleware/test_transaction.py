"""The phases' transaction is a middleware: replaced, it makes the user code of the plan and
finalize phases share the application's transaction, rolled back when the phase failed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pydynflow import Action, PlanState, Result, World
from pydynflow.middleware import Middleware, Transaction, Use
from pydynflow.testing import InThreadWorld

TIMEOUT = 30
APP: dict[str, sqlite3.Connection] = {}  # the application's database


def note(text: str) -> None:
    APP["db"].execute("INSERT INTO notes VALUES (?)", (text,))


def notes() -> list[str]:
    return [row[0] for row in APP["db"].execute("SELECT text FROM notes ORDER BY rowid")]


class AppTransaction(Transaction):
    """The application's transaction around each phase."""

    @contextmanager
    def transaction(self, plan: Any) -> Iterator[None]:
        db = APP["db"]
        db.execute("BEGIN")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


class Note(Action):
    def plan(self, text: str, fail: str = "") -> None:
        note(f"planned {text}")
        if fail == "plan":
            raise RuntimeError("planning failed")
        self.plan_self(text=text, fail=fail)

    def finalize(self) -> None:
        note(f"finalized {self.input['text']}")
        if self.input["fail"] == "finalize":
            raise RuntimeError("finalize failed")


class TwoNotes(Action):
    def plan(self, fail: str = "") -> None:
        self.plan_action(Note, "first")
        self.plan_action(Note, "second", fail)


@pytest.fixture(params=["World", "InThreadWorld"])
def open_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    APP["db"] = sqlite3.connect(tmp_path / "app.db", isolation_level=None, check_same_thread=False)
    APP["db"].execute("CREATE TABLE notes (text TEXT)")
    opened: list[Any] = []

    def open_(**kwargs: Any) -> Any:
        if request.param == "World":
            url = f"sqlite:///{tmp_path / 'pydynflow.db'}"
            world: Any = World(url, auto_execute=False, **kwargs).start()
        else:
            world = InThreadWorld(**kwargs)
        opened.append(world)
        return world

    yield open_
    for world in opened:
        world.stop()
    APP.pop("db").close()


REPLACED = [Use(AppTransaction, replace=Transaction)]


def test_a_failed_finalize_phase_is_rolled_back(open_world: Any) -> None:
    plan = open_world(middleware=REPLACED).trigger(TwoNotes, "finalize").wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert notes() == ["planned first", "planned second"]  # no finalize note kept


def test_a_finalize_phase_that_succeeds_is_committed(open_world: Any) -> None:
    plan = open_world(middleware=REPLACED).trigger(TwoNotes).wait(TIMEOUT)
    assert plan.result == Result.SUCCESS
    assert notes()[2:] == ["finalized first", "finalized second"]


def test_a_failed_plan_phase_is_rolled_back(open_world: Any) -> None:
    triggered = open_world(middleware=REPLACED).trigger(TwoNotes, "plan")
    assert not triggered.planned
    assert notes() == []


def test_the_stock_transaction_keeps_what_each_step_did(open_world: Any) -> None:
    plan = open_world().trigger(TwoNotes, "finalize").wait(TIMEOUT)
    assert plan.result == Result.ERROR
    assert notes() == ["planned first", "planned second", "finalized first", "finalized second"]


class BrokenCommit(Middleware):
    def finalize_phase(self, call_next: Any, plan: Any) -> Any:
        call_next(plan)
        raise RuntimeError("commit failed")


def test_a_finalize_phase_hook_that_raises_fails_the_phase_and_resume_runs_it_again(
    open_world: Any,
) -> None:
    world = open_world(middleware=[BrokenCommit])
    plan = world.trigger(TwoNotes).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    first = plan.steps[plan.finalize_flow.all_step_ids()[0]]
    assert first.error.message == "commit failed"
    world.middleware.do_not_use(BrokenCommit)
    resumed = world.resume(plan.id).wait(TIMEOUT)
    assert (resumed.state, resumed.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert notes().count("finalized first") == 2  # the phase ran again from its start
