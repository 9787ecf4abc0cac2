"""Sub-plans across executor processes: a parent whose sub-plans go to any of two executor
worlds in processes of their own, on a SQLite file and on PostgreSQL.

A client world here triggers the parent; each executor process runs
`tests.support.executor_service`. The parent's counts come from the database, so they are
right although the sub-plans ran on both processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pydynflow import World
from tests.integration.test_client_worlds import TIMEOUT, ExecutorProcess, eventually
from tests.support.sub_plan_actions import BulkParent

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh shared database: a SQLite file, then a PostgreSQL schema."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def executors(url: str) -> Iterator[list[ExecutorProcess]]:
    started: list[ExecutorProcess] = []
    try:
        started = [ExecutorProcess(url), ExecutorProcess(url)]
        yield started
    finally:
        for executor in started:
            executor.close()


def test_sub_plans_run_on_the_executors_and_are_counted_once(
    url: str, executors: list[ExecutorProcess]
) -> None:
    with World(url, executor=False) as client:
        ids = {executor.world_id for executor in executors}
        eventually(
            lambda: ids <= {i.id for i in client.worlds() if i.executor and i.alive},
            "both executors",
        )
        plan = client.trigger(BulkParent, 60, 10, 5).wait(TIMEOUT * 2)
        assert (plan.state, plan.result) == ("stopped", "success"), plan.error
        output = plan.actions[1].output
        assert (output["total_count"], output["planned_count"], output["success_count"]) == (
            60,
            60,
            60,
        )
        assert output["failed_count"] == output["pending_count"] == 0
        children = client.load(plan.id).sub_plans()
        assert len(children) == 60
        assert {(child.state, child.result) for child in children} == {("stopped", "success")}
        # Each went to whichever executor took its request first: both, usually; which
        # one is a race the test does not assert (under load one may take them all).
        ran_on = {child.executing_world_id() for child in children}
        assert ran_on and ran_on <= ids, ran_on
