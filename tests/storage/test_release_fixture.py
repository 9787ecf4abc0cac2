"""Plans stored by the previous release load, migrate and run on with this code.

`tests/fixtures/schema3-plans.db` was made by `tests/fixtures/make_release_fixture.py` at
schema version 3 (commit 103676b): a plan stopped/success, one paused with a failed step,
one paused by its world's stop with a suspended step, one planned.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydynflow import Phase, PlanState, Result, StepState, World
from pydynflow.storage.migrations import LATEST_VERSION, current_version
from tests.fixtures.release_actions import FixturePlan

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema3-plans.db"
TIMEOUT = 30


def test_plans_of_the_previous_release_load_and_run_on(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    url = f"sqlite:///{path}"
    client = World(url, executor=False)  # migrates the copy
    try:
        assert current_version(client.storage.database) == LATEST_VERSION
        plans = {plan.state + "/" + plan.result: plan for plan in client.plans(limit=None)}
    finally:
        client.stop()
    assert sorted(plans) == [
        "paused/error",
        "paused/pending",
        "planned/pending",
        "stopped/success",
    ]
    assert all(plan.valid and plan.label == "fixture" for plan in plans.values())
    done = plans["stopped/success"]
    assert all(s.state == StepState.SUCCESS for s in done.steps.values())
    assert [step.retries for step in done.steps.values()] == [0] * len(done.steps)
    assert done.steps[1].action_class is FixturePlan
    failed = plans["paused/error"]
    (bad,) = [s for s in failed.steps.values() if s.state == StepState.ERROR]
    assert bad.error is not None and bad.error.message == "step 2 failed"

    with World(url) as world:
        continued = {triggered.id: triggered for triggered in world.auto_executed}
        # planned: executed; paused by a stop, no error: continued; paused on an error: left.
        assert set(continued) == {plans["planned/pending"].id, plans["paused/pending"].id}
        planned = continued[plans["planned/pending"].id].wait(TIMEOUT)
        assert (planned.state, planned.result) == (PlanState.STOPPED, Result.SUCCESS)
        waiting_id = plans["paused/pending"].id
        chunks = world.storage.output_chunks(waiting_id, 2)
        assert chunks[0]["chunk"] == {"line": "step 1"} and chunks[0]["kind"] == "stdout"
        waits = max(s.id for s in plans["paused/pending"].steps_of_phase(Phase.RUN))
        # It runs again from run(None) and suspends; an event sent before is kept for it.
        assert world.event(waiting_id, waits, {"ok": True}) is True
        resumed = continued[waiting_id].wait(TIMEOUT)
        assert (resumed.state, resumed.result) == (PlanState.STOPPED, Result.SUCCESS)
        assert resumed.steps[waits].output == {"event": {"ok": True}}

        again = world.resume(failed.id).wait(TIMEOUT)  # its input still makes it fail
        assert (again.state, again.result) == (PlanState.PAUSED, Result.ERROR)
        assert again.steps[bad.id].attempts == 1  # counted from this release on
        assert again.history[-1].details == {"reason": "error"}
