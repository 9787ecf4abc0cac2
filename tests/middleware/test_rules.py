"""Ordering rules: what a register resolves to, and where a cycle or a bad entry is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pydynflow import Action, DynflowError, PlanState, Result, World
from pydynflow.middleware import DoNotUse, Middleware, Transaction, Use
from pydynflow.middleware.rules import Register, resolve
from pydynflow.testing import InThreadWorld
from tests.support import middleware_example as ex
from tests.test_public_api import _pydynflow_imports


class A(Middleware):
    def run(self, call_next: Any, event: Any) -> Any:
        ex.log("A")
        return call_next(event)


class B(A):
    pass


class C(A):
    pass


def order(*specs: Any) -> tuple[type[Middleware], ...]:
    return resolve(Register(specs))


def test_without_rules_what_was_used_first_is_outermost() -> None:
    assert order(A, B, C) == (A, B, C)
    assert order(C, A, C) == (C, A)  # used twice: its first place


def test_before_and_after_move_one_around_another() -> None:
    assert order(A, B, Use(C, before=A)) == (C, A, B)
    assert order(Use(A, after=[B, C]), B, C) == (B, C, A)
    assert order(A, Use(B, before=C)) == (A, B)  # C is not in the stack: nothing to order


def test_replace_puts_one_in_the_place_of_another_and_keeps_its_rules() -> None:
    assert order(A, Use(B, after=A), Use(C, replace=B)) == (A, C)
    assert order(Use(C, replace=B), Use(B, replace=A), A) == (C,)  # chains of replacements
    assert order(Use(B, after=A), Use(C, replace=A), A) == (C, B)  # a rule about A: about C


def test_do_not_use_takes_one_out() -> None:
    assert order(A, B, DoNotUse(A)) == (B,)
    assert order(Use(B, after=A), A, DoNotUse(A)) == (B,)


@pytest.mark.parametrize(
    "specs",
    [
        [Use(A, before=B), Use(B, before=A)],
        [Use(A, after=B), Use(B, after=C), Use(C, after=A)],
        [Use(A, before=A)],
    ],
    ids=["two", "three", "itself"],
)
def test_a_cycle_is_an_error_naming_it(specs: list[Any]) -> None:
    with pytest.raises(DynflowError, match=r"form a cycle .*: .*A -> .*A"):
        order(*specs)


def test_a_cycle_of_replacements_is_an_error() -> None:
    with pytest.raises(DynflowError, match="replace rules form a cycle"):
        order(A, B, Use(A, replace=B), Use(B, replace=A))


def test_a_cycle_is_refused_by_use_and_changes_nothing() -> None:
    world = World("sqlite:///:memory:", executor=False, middleware=[Use(A, before=B), B])
    try:
        before = world.middleware.resolve(ex.LoggedRun)
        with pytest.raises(DynflowError, match="cycle"):
            world.middleware.use(B, before=A)
        assert world.middleware.resolve(ex.LoggedRun) == before
        world.middleware.do_not_use(A)
        assert A not in world.middleware.resolve(ex.LoggedRun)
    finally:
        world.stop()


def test_a_cycle_is_refused_by_world_creation() -> None:
    with pytest.raises(DynflowError, match="cycle"):
        World("sqlite:///:memory:", executor=False, middleware=[Use(A, after=B), Use(B, after=A)])


def test_a_cycle_is_refused_when_the_action_class_is_defined() -> None:
    with pytest.raises(DynflowError, match=r"Cyclic\.middleware: .*cycle"):

        class Cyclic(Action):
            middleware = [Use(A, before=B), Use(B, before=A)]


@pytest.mark.parametrize("entry", [object, "A", A()], ids=["not middleware", "a str", "instance"])
def test_an_entry_that_is_not_middleware_is_refused(entry: Any) -> None:
    with pytest.raises(TypeError, match="Middleware subclasses"):

        class Bad(Action):
            middleware = [entry]

    with pytest.raises(TypeError, match="Middleware subclasses"):
        World("sqlite:///:memory:", executor=False, middleware=[entry])
    with pytest.raises(TypeError, match="Middleware subclasses"):
        Use(A, before=entry)


class BOutsideA(Action):
    middleware = [Use(B, before=A), A]

    def run(self) -> None:
        ex.log("run")


def test_a_cycle_only_world_and_class_make_together_fails_planning() -> None:
    with InThreadWorld(middleware=[Use(A, before=B), B]) as world:
        triggered = world.trigger(BOutsideA)
    assert not triggered.planned
    assert "form a cycle" in triggered.error.message


def test_and_fails_the_step_of_a_plan_planned_elsewhere(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cycle.db'}"
    planner = World(url, executor=False, create=True)
    try:
        planned = planner.plan(BOutsideA)
    finally:
        planner.stop()
    ex.calls.clear()
    with InThreadWorld(url, middleware=[Use(A, before=B), B]) as world:
        plan = world.execute(planned.id).wait()
    assert (plan.state, plan.result) == (PlanState.PAUSED, Result.ERROR)
    assert "form a cycle" in plan.steps[2].error.message
    assert ex.calls == []
    assert plan.actions[1].input == plan.actions[1].output == {}  # withheld from readers


def test_a_world_starts_with_the_inert_transaction() -> None:
    world = World("sqlite:///:memory:", executor=False)
    try:
        stack = world.middleware.stack(ex.LoggedRun)
    finally:
        world.stop()
    assert stack.classes == (Transaction, ex.LogRunMiddleware)
    assert stack.plan_phase == stack.finalize_phase == ()  # no layer: it opens nothing
    assert stack.run == (ex.LogRunMiddleware,) and stack.plan == stack.finalize == ()


def test_the_middleware_package_does_not_import_the_runtime() -> None:
    package = Path(__file__).resolve().parents[2] / "pydynflow" / "middleware"
    runtime = ("pydynflow.actors", "pydynflow.storage", "pydynflow.adapters", "pydynflow.phases")
    for path in sorted(package.glob("*.py")):
        upward = sorted(n for n in _pydynflow_imports(path) if n.startswith(runtime))
        assert not upward, f"{path.name} imports {upward}"
