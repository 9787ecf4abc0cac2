"""Queues across executor worlds: a plan goes to an executor that serves the queue of its
root action, through the database (issue 18's "only for queues it serves").

Every executor serves ``default``; `World(queues={"slow": 1})` serves ``slow`` too. The
worlds share one database (a SQLite file, or PostgreSQL) in one process: each has its own
registry record, inboxes and dispatch thread, as it would in a process of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import Action, PlanState, World
from pydynflow.storage.requests import executor_inbox, world_inbox

TIMEOUT = 30


class OnSlow(Action):
    """An action of the ``slow`` queue."""

    queue = "slow"

    def run(self) -> None:
        self.output["ran"] = True


class OnDefault(Action):
    """An action of the ``default`` queue."""

    def run(self) -> None:
        self.output["ran"] = True


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pydynflow.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def opened() -> Iterator[list[World]]:
    worlds: list[World] = []
    yield worlds
    for world in reversed(worlds):
        world.stop(TIMEOUT)


def start(opened: list[World], url: str, **kwargs: Any) -> World:
    world = World(url, heartbeat=0.2, validity_timeout=2.0, **kwargs).start()
    opened.append(world)
    return world


def test_a_plan_goes_to_an_executor_serving_its_queue(url: str, opened: list[World]) -> None:
    plain = start(opened, url)
    slow = start(opened, url, queues={"slow": 1})
    client = start(opened, url, executor=False)
    assert client.worlds()  # registered
    for _ in range(5):
        plan = client.trigger(OnSlow).wait(TIMEOUT)
        assert (plan.state, plan.result) == ("stopped", "success")
        assert plan.executing_world_id() == slow.id
        assert plan.queue == "slow"
    ran_on = {client.trigger(OnDefault).wait(TIMEOUT).executing_world_id() for _ in range(5)}
    assert ran_on <= {plain.id, slow.id}


def test_a_plan_waits_for_an_executor_of_its_queue(url: str, opened: list[World]) -> None:
    plain = start(opened, url)  # serves default only
    client = start(opened, url, executor=False)
    triggered = client.trigger(OnSlow)
    # The default executor answers a ping after a turn that found the request stored: it
    # does not read the slow queue's inbox, so the plan is still planned, the request kept.
    assert client._client.call("ping", inbox=world_inbox(plain.id)) == plain.id
    assert client.load(triggered.id).state == PlanState.PLANNED
    stored = client.storage.inbox([executor_inbox("slow")])
    assert [data["plan_id"] for _, _, data in stored] == [triggered.id]

    slow = start(opened, url, queues={"slow": 1})
    plan = triggered.wait(TIMEOUT)
    assert (plan.state, plan.result) == ("stopped", "success")
    assert plan.executing_world_id() == slow.id
