"""Plan lists for consoles (`Storage.list_plans` and friends): filters, orders with NULLs
last both ways, pages across the NULL boundary, counts; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pydynflow.states import PlanState
from pydynflow.storage import Storage
from pydynflow.storage.listing import PlanQuery

from .test_contract import ROOT, make_plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite_file", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest) -> Iterator[Storage]:
    fixture = {"sqlite_file": "sqlite_url", "postgres": "postgres_url"}[request.param]
    with Storage(str(request.getfixturevalue(fixture))) as opened:
        yield opened


def _store(storage: Storage) -> None:
    """p0..p5 started a minute apart (p5 newest), n0 and n1 never started."""
    for index in range(6):
        state = [PlanState.STOPPED, PlanState.PAUSED, PlanState.RUNNING][index % 3]
        storage.save_plan(
            make_plan(
                f"p{index}",
                label=f"deploy web-{index}" if index % 2 else f"backup_{index}%",
                state=state,
                started_at=T0 + timedelta(minutes=index),
                ended_at=T0 + timedelta(minutes=index, seconds=30)
                if state == PlanState.STOPPED
                else None,
            )
        )
    for name in ("n0", "n1"):
        storage.save_plan(
            make_plan(name, label="later", state=PlanState.PLANNED, started_at=None, ended_at=None)
        )


def _ids(storage: Storage, **query: object) -> list[str]:
    return [plan.id for plan in storage.list_plans(PlanQuery(**query)).plans]  # type: ignore[arg-type]


def test_newest_first_with_unstarted_plans_last_in_both_directions(storage: Storage) -> None:
    _store(storage)
    assert _ids(storage) == ["p5", "p4", "p3", "p2", "p1", "p0", "n1", "n0"]
    assert _ids(storage, desc=False) == ["p0", "p1", "p2", "p3", "p4", "p5", "n0", "n1"]


def test_pages_cross_from_started_to_unstarted_plans(storage: Storage) -> None:
    _store(storage)
    pages = [_ids(storage, limit=3, offset=offset) for offset in (0, 3, 6, 9)]
    assert pages == [["p5", "p4", "p3"], ["p2", "p1", "p0"], ["n1", "n0"], []]
    assert _ids(storage, limit=4, offset=5) == ["p0", "n1", "n0"]
    assert _ids(storage, limit=1, offset=7) == ["n0"]


def test_filters_and_their_total(storage: Storage) -> None:
    _store(storage)
    page = storage.list_plans(PlanQuery(states=("paused", "running"), limit=2))
    assert [plan.id for plan in page.plans] == ["p5", "p4"] and page.total == 4
    assert len(_ids(storage, results=("error",))) == 8  # make_plan's plans have a failed step
    assert _ids(storage, results=("success", "warning")) == []
    assert _ids(storage, label="later") == ["n1", "n0"]
    assert _ids(storage, states=()) == []


def test_search_is_a_substring_with_wildcards_taken_literally(storage: Storage) -> None:
    _store(storage)
    assert _ids(storage, search="WEB-") == ["p5", "p3", "p1"]
    assert _ids(storage, search="_4%") == ["p4"]
    assert _ids(storage, search="%") == ["p4", "p2", "p0"]
    assert _ids(storage, search="nothing") == []


def test_action_class_and_summaries(storage: Storage) -> None:
    _store(storage)
    assert storage.root_action_classes() == [ROOT]
    page = storage.list_plans(PlanQuery(action_class=ROOT, limit=1))
    assert page.total == 8
    summary = page.plans[0]
    assert (summary.id, summary.state, summary.action_class) == ("p5", "running", ROOT)
    assert summary.started_at == T0 + timedelta(minutes=5)
    assert _ids(storage, action_class="no.Such") == []


def test_every_order_sorts_and_breaks_ties_by_id(storage: Storage) -> None:
    _store(storage)
    assert _ids(storage, order_by="id", desc=False) == sorted(_ids(storage))
    assert _ids(storage, order_by="ended_at")[:2] == ["p3", "p0"]
    by_state = _ids(storage, order_by="state", desc=False)
    assert by_state[:2] == ["p1", "p4"]  # paused < planned < running < stopped; ties by id
    assert by_state[2:4] == ["n0", "n1"]
    with pytest.raises(ValueError, match="cannot order"):
        PlanQuery(order_by="execution_history")


def test_sub_plans_by_caller(storage: Storage) -> None:
    storage.save_plan(make_plan("parent"))
    for index in range(3):
        storage.save_plan(make_plan(f"child{index}", caller=("parent", 1 + index % 2)))
    assert set(_ids(storage, caller=("parent", None))) == {"child0", "child1", "child2"}
    assert _ids(storage, caller=("parent", 2)) == ["child1"]


def test_counts_and_fingerprints(storage: Storage) -> None:
    _store(storage)
    assert storage.count_plans_by("state") == {
        "stopped": 2,
        "paused": 2,
        "running": 2,
        "planned": 2,
    }
    assert sum(storage.count_plans_by("result").values()) == 8
    assert sum(storage.count_active_steps().values()) > 0
    before = storage.plan_fingerprint("p1")
    assert before is not None and storage.plan_fingerprint("missing") is None
    plan = storage.load_plan("p1")
    step = next(step for step in plan.steps.values() if step.state == "error")
    step.attempts += 1
    storage.save_steps([step])
    assert storage.plan_fingerprint("p1") != before
    with pytest.raises(ValueError):
        storage.count_plans_by("label")
