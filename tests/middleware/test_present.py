"""``present`` middleware: what readers see of an action changes, what is stored does not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import Action, PlanState, Result, World
from pydynflow.middleware import Middleware
from pydynflow.testing import InThreadWorld

TIMEOUT = 30
FAIL_ONCE: list[bool] = []


class MaskPassword(Middleware):
    """Dynflow's ``FilterSensitiveData``: a reader sees ``***`` for every password."""

    def present(self, call_next: Any) -> Any:
        for data in (self.action.input, self.action.output):
            if "password" in data:
                data["password"] = "***"
        nested = self.action.input.get("account")
        if isinstance(nested, dict) and "password" in nested:
            nested["password"] = "***"
        return call_next()


class Login(Action):
    def run(self) -> None:
        if FAIL_ONCE:
            FAIL_ONCE.pop()
            raise RuntimeError("directory down")
        self.output["password"] = self.input["password"]
        self.output["length"] = len(self.input["password"])


class HideSpell(Middleware):
    def present(self, call_next: Any) -> Any:
        self.action.output = {**self.action.output, "spell": "***"}  # replacing works too
        return call_next()


class SecretAction(Action):
    """Dynflow's ``SecretAction``: its own middleware hides its output."""

    middleware = [HideSpell]

    def run(self) -> None:
        self.output["spell"] = "Wingardium Leviosa"


@pytest.fixture(params=["World", "InThreadWorld"])
def world(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Any]:
    FAIL_ONCE.clear()
    if request.param == "World":
        started: Any = World(sqlite_url, middleware=[MaskPassword], auto_execute=False).start()
    else:
        started = InThreadWorld(sqlite_url, middleware=[MaskPassword])
    yield started
    started.stop()


def test_readers_see_the_secret_masked(world: Any) -> None:
    triggered = world.trigger(Login, password="hunter2", account={"password": "x", "id": 7})
    ended = triggered.wait(TIMEOUT)
    loaded = world.load(triggered.id)
    (listed,) = world.plans()
    for plan in (ended, loaded, listed):
        assert plan.actions[1].input == {"password": "***", "account": {"password": "***", "id": 7}}
        assert plan.steps[2].input["password"] == "***"  # a step shows its action's data
        assert plan.steps[2].output == {"password": "***", "length": 7}  # run saw the real one
    assert triggered.wait(TIMEOUT) is ended  # presented once


def test_what_is_stored_does_not_change(world: Any, sqlite_url: str) -> None:
    triggered = world.trigger(Login, password="hunter2")
    triggered.wait(TIMEOUT)
    world.load(triggered.id)
    world.stop()
    bare = World(sqlite_url, executor=False)
    try:
        plan = bare.load(triggered.id)
    finally:
        bare.stop()
    assert plan.actions[1].input == {"password": "hunter2"}
    assert plan.actions[1].output == {"password": "hunter2", "length": 7}


def test_running_again_uses_the_stored_data(world: Any) -> None:
    FAIL_ONCE.append(True)
    paused = world.trigger(Login, password="hunter2").wait(TIMEOUT)
    assert (paused.state, paused.result) == (PlanState.PAUSED, Result.ERROR)
    assert paused.actions[1].input["password"] == "***"
    plan = world.resume(paused.id).wait(TIMEOUT)
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert plan.steps[2].output["length"] == 7


def test_an_actions_own_present_middleware(world: Any) -> None:
    plan = world.trigger(SecretAction).wait(TIMEOUT)
    assert plan.actions[1].output == {"spell": "***"}
    assert world.load(plan.id).actions[1].output == {"spell": "***"}
    assert world.storage.load_plan(plan.id).actions[1].output == {"spell": "Wingardium Leviosa"}
