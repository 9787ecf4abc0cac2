"""The `World` API on a real database: SQLite file and PostgreSQL.

Planning and storage scenarios of Dynflow's execution_plan_test (PLAN-08/09/11/13/14/17) as
seen through a world, the acceptance round trip of EX-1 (``IncomingIssues``) through a second
world on the same database, `World.plans` listing, corruption handling and argument checks.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pydynflow import (
    Action,
    Atom,
    Concurrence,
    DynflowError,
    ExecutionPlan,
    PersistenceError,
    PlanningError,
    PlanState,
    Result,
    Sequence,
    StepState,
    UnknownAction,
    UnknownPlan,
    World,
)
from pydynflow.states import Phase
from pydynflow.storage.codec import decode, encode
from tests.support.code_workflow import (
    FAIL,
    ISSUES,
    Ci,
    Dummy,
    FastCommit,
    IncomingIssue,
    IncomingIssues,
    Merge,
    NotifyAssignee,
    Review,
    Triage,
    UpdateIssue,
)

S, C, A = Sequence, Concurrence, Atom
TIMEOUT = 30
CUSTOM_ID = "60366107-9910-4815-a6c6-bc45ee2ea2b8"
COMMIT = {"sha": "abc123"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    """Return a fresh database URL: a SQLite file, then a PostgreSQL schema."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def client(url: str) -> Iterator[World]:
    """A client world (no executor) on ``url``; it plans and reads without being started.

    The database is fresh: a client world creates it only when told to (``create=True``).
    """
    world = World(url, executor=False, create=True)
    yield world
    world.stop()


@pytest.fixture
def executor(url: str) -> Iterator[World]:
    """A started executor world on ``url`` that does not execute anything on its own."""
    with World(url, auto_execute=False, auto_rescue=False) as world:
        yield world


def reopen(url: str) -> World:
    """Return a new client world on ``url`` (its storage is fresh: nothing is cached)."""
    return World(url, executor=False)


def execute_sql(world: World, sql: str, *params: Any) -> Any:
    """Run ``sql`` (with ``?`` placeholders) through the world's own database connection."""
    database = world.storage.database
    return database.execute_sql(sql.replace("?", database.param), params)


def fetch_blob(world: World, sql: str, *params: Any) -> bytes:
    row = execute_sql(world, sql, *params).fetchone()
    assert row is not None and row[0] is not None
    return bytes(row[0])


def flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x5A])


def assert_aware(value: Any) -> None:
    if value is not None:
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0), value


# -- the acceptance test: EX-1 planned, stored, loaded by another world ------------------


@pytest.mark.parametrize("started", [False, True], ids=["client-world", "started-world"])
def test_incoming_issues_round_trip_through_a_new_world(url: str, started: bool) -> None:
    first = (
        World(url, executor=False, create=True) if not started else World(url, auto_execute=False)
    )
    if started:
        first.start()
    try:
        plan = first.plan(IncomingIssues, ISSUES)
    finally:
        first.stop()

    assert plan.state == PlanState.PLANNED
    assert plan.run_flow == C([S([A(4), A(7), A(9)]), S([A(13), A(16), A(18)])])
    assert len(plan.steps) == 20

    second = reopen(url)
    try:
        loaded = second.load(plan.id)
    finally:
        second.stop()

    assert loaded == plan
    assert loaded.valid is True and loaded.exception is None
    assert loaded.id == plan.id
    assert loaded.label == plan.label == "tests.support.code_workflow.IncomingIssues"
    assert loaded.state == PlanState.PLANNED == "planned"
    assert loaded.result == plan.result == Result.PENDING
    assert loaded.root_plan_step_id == plan.root_plan_step_id == 1
    # steps: same ids in the same order, every field equal, plan steps done, the rest pending
    assert list(loaded.steps) == list(plan.steps) == list(range(1, 21))
    for step_id, step in plan.steps.items():
        got = loaded.steps[step_id]
        assert got == step
        assert got.action_class is step.action_class
        assert got.input == step.input and got.output == step.output
        assert got.children == step.children
        expected_state = StepState.SUCCESS if step.phase == Phase.PLAN else StepState.PENDING
        assert got.state == expected_state
        assert_aware(got.started_at)
        assert_aware(got.ended_at)
    assert [loaded.steps[i].action_class for i in (4, 7, 9, 13, 16, 18)] == [
        Triage,
        UpdateIssue,
        NotifyAssignee,
    ] * 2
    assert loaded.steps[1].children == [2, 11]
    assert loaded.steps[4].input == {"author": "Peter Smith", "text": "Failing test"}
    assert loaded.steps[7].input["assignee"] == plan.steps[7].input["assignee"]
    # actions
    assert loaded.actions == plan.actions
    assert list(loaded.actions) == list(plan.actions)
    triage = loaded.actions[loaded.steps[4].action_id]
    assert (triage.plan_step_id, triage.run_step_id, triage.finalize_step_id) == (3, 4, 5)
    assert triage.action_class is Triage
    assert loaded.actions[1].action_class is IncomingIssues
    assert loaded.actions[1].input == {"issues": ISSUES}
    # flows
    assert loaded.run_flow == plan.run_flow
    assert loaded.finalize_flow == plan.finalize_flow == S([A(5), A(10), A(14), A(19), A(20)])
    # history and times
    assert loaded.history == plan.history
    for entry in loaded.history:
        assert_aware(entry.time)
    assert loaded.started_at == plan.started_at
    assert_aware(loaded.started_at)
    assert loaded.ended_at is None and plan.ended_at is None
    assert loaded.real_time == plan.real_time
    assert loaded.execution_time == plan.execution_time


# -- PLAN-13: serialisation round trip ---------------------------------------------------


def test_plan13_fast_commit_round_trip(url: str, client: World) -> None:
    plan = client.plan(FastCommit, COMMIT)
    client.stop()
    loaded = reopen(url).load(plan.id)
    assert loaded.valid is True
    assert loaded.id == plan.id
    assert loaded.label == plan.label
    assert list(loaded.steps) == list(plan.steps)
    for step_id, step in plan.steps.items():
        got = loaded.steps[step_id]
        assert type(got) is type(step)
        assert got.state == step.state
        assert got.action_class is step.action_class
        assert got.action_id == step.action_id
        assert got.children == step.children
    assert loaded.run_flow == plan.run_flow == S([C([A(3), A(5)]), A(7)])
    assert [loaded.steps[i].action_class for i in (3, 5, 7)] == [Ci, Review, Merge]
    assert loaded == plan


def test_a_new_plans_unstarted_steps_travel_in_its_row_until_they_run(
    url: str, executor: World
) -> None:
    """A plan stored by a started world keeps its pending steps in its row (no step rows);
    each step gets its row when it first changes, and the row then wins."""
    plan = executor.plan(FastCommit, COMMIT)
    count = "SELECT COUNT(*) FROM dynflow_steps WHERE execution_plan_uuid = ?"
    assert execute_sql(executor, count, plan.id).fetchone()[0] == 0
    assert executor.storage.step_state(plan.id, 3) == "pending"  # read from the plan row
    other = reopen(url)
    try:
        assert other.load(plan.id) == plan
    finally:
        other.stop()

    done = executor.execute(plan.id).wait(TIMEOUT)
    assert done.result == "success"
    run_and_finalize = [s for s in done.steps.values() if s.phase != "plan"]
    assert execute_sql(executor, count, plan.id).fetchone()[0] == len(run_and_finalize)
    other = reopen(url)
    try:
        loaded = other.load(plan.id)
    finally:
        other.stop()
    assert loaded == done
    assert all(loaded.steps[s.id].state == "success" for s in run_and_finalize)


# -- PLAN-14: a plan whose step rows are gone ----------------------------------------------


def test_plan14_missing_steps_give_an_invalid_plan(url: str, executor: World) -> None:
    original = executor.trigger(FastCommit, COMMIT).wait(TIMEOUT)
    assert original.state == PlanState.STOPPED and original.result == Result.SUCCESS
    execute_sql(executor, "DELETE FROM dynflow_steps WHERE execution_plan_uuid = ?", original.id)

    world = reopen(url)
    try:
        loaded = world.load(original.id)
    finally:
        world.stop()

    assert loaded.valid is False
    assert loaded.exception is not None
    assert loaded.exception.exception_class.endswith("DataConsistencyError")
    assert "missing steps" in loaded.exception.message
    assert loaded.label == original.label
    assert loaded.state == original.state
    assert loaded.started_at == original.started_at
    assert loaded.ended_at == original.ended_at
    assert loaded.execution_time == original.execution_time
    assert loaded.real_time == original.real_time
    assert loaded.history == original.history
    assert [entry.name for entry in loaded.history] == ["start execution", "finish execution"]
    assert loaded.result == Result.SUCCESS  # the stored result: the steps cannot say
    assert loaded.steps == {} and loaded.actions == {}


def plan_step_records(client: World, plan_id: str) -> list[Any]:
    """Return the step records a plan's row keeps (its plan_steps column, decoded)."""
    select = "SELECT plan_steps FROM dynflow_execution_plans WHERE uuid = ?"
    return decode(fetch_blob(client, select, plan_id))  # type: ignore[no-any-return]


def store_records_and_reload(
    url: str, client: World, plan_id: str, records: list[Any]
) -> ExecutionPlan:
    """Store ``records`` as the plan row's plan_steps, stop ``client``, load it afresh."""
    execute_sql(
        client,
        "UPDATE dynflow_execution_plans SET plan_steps = ? WHERE uuid = ?",
        encode(records),
        plan_id,
    )
    client.stop()
    world = reopen(url)
    try:
        return world.load(plan_id)
    finally:
        world.stop()


# -- PLAN-17: an action class that was renamed ------------------------------------------


def test_plan17_renamed_action_class_loads_as_a_placeholder(url: str, client: World) -> None:
    plan = client.plan(IncomingIssues, ISSUES)
    action_id = plan.steps[4].action_id  # the first Triage
    renamed = "tests.gone.RenamedAction"
    execute_sql(
        client,
        'UPDATE dynflow_actions SET "class" = ? WHERE execution_plan_uuid = ? AND id = ?',
        renamed,
        plan.id,
        action_id,
    )
    execute_sql(
        client,
        "UPDATE dynflow_steps SET action_class = ? WHERE execution_plan_uuid = ? AND action_id = ?",
        renamed,
        plan.id,
        action_id,
    )
    # Its plan-phase step is kept in the plan row's plan_steps (step-row values, encoded).
    records = plan_step_records(client, plan.id)
    for record in records:
        if record[1] == action_id:
            record[12] = renamed
    loaded = store_records_and_reload(url, client, plan.id, records)

    assert loaded.valid is True
    record = loaded.actions[action_id]
    assert record.action_class_name == renamed
    klass = record.action_class
    assert klass.__name__ == "RenamedAction"
    assert issubclass(klass, Action)
    for step_id in (3, 4, 5):
        step = loaded.steps[step_id]
        assert step.action_class_name == renamed
        assert step.action_class is klass
    assert loaded.steps[7].action_class is UpdateIssue  # the other actions are untouched
    action = klass.from_record(record, phase="run")
    with pytest.raises(UnknownAction, match="action class tests.gone.RenamedAction not found"):
        action.run()


def test_plan_steps_with_iso_text_times_still_load(url: str, client: World) -> None:
    # Plan rows keep their steps' times as integer microseconds; rows written before kept
    # ISO text there (datetime.isoformat of an aware UTC time). Both load alike.
    plan = client.plan(IncomingIssues, ISSUES)
    # The row keeps the plan-phase steps (started) and, for a new plan, its pending ones.
    records = plan_step_records(client, plan.id)
    started = [record for record in records if record[4] is not None]
    assert started and all(isinstance(r[4], int) for r in started)  # started_at: microseconds
    for record in records:
        step = plan.steps[record[0]]
        for index, moment in ((4, step.started_at), (5, step.ended_at)):
            assert record[index] is None or isinstance(record[index], int)
            record[index] = None if moment is None else moment.isoformat()
    loaded = store_records_and_reload(url, client, plan.id, records)

    for record in started:
        step, original = loaded.steps[record[0]], plan.steps[record[0]]
        assert (step.started_at, step.ended_at) == (original.started_at, original.ended_at)
        assert step.started_at is not None and step.started_at.tzinfo is not None


# -- World.plans: filters, order, pages ----------------------------------------------------


@pytest.fixture
def four_plans(executor: World) -> dict[str, ExecutionPlan]:
    """planned/pending, stopped/error, stopped/success and planned/success, in that order."""
    return {
        "planned": executor.plan(IncomingIssues, ISSUES),
        "failed": executor.plan(IncomingIssues, [FAIL, *ISSUES]),
        "executed": executor.trigger(FastCommit, COMMIT).wait(TIMEOUT),
        "dummy": executor.plan(Dummy),
    }


def ids(plans: list[ExecutionPlan]) -> list[str]:
    return [plan.id for plan in plans]


def test_plans_filters(executor: World, four_plans: dict[str, ExecutionPlan]) -> None:
    p = {name: plan.id for name, plan in four_plans.items()}
    assert four_plans["planned"].result == Result.PENDING
    assert four_plans["failed"].result == Result.ERROR
    assert four_plans["executed"].state == PlanState.STOPPED
    assert four_plans["executed"].result == Result.SUCCESS
    assert four_plans["dummy"].state == PlanState.PLANNED
    assert four_plans["dummy"].result == Result.SUCCESS

    def found(**filters: Any) -> set[str]:
        return set(ids(executor.plans(**filters)))

    assert found() == set(p.values())
    assert found(state="planned") == {p["planned"], p["dummy"]}
    assert found(state=PlanState.STOPPED) == {p["failed"], p["executed"]}
    assert found(state=["stopped"]) == {p["failed"], p["executed"]}
    assert found(state=["stopped", "planned"]) == set(p.values())
    assert found(state=[]) == set()
    assert found(state="paused") == set()
    assert found(result="error") == {p["failed"]}
    assert found(result=["success"]) == {p["executed"], p["dummy"]}
    assert found(result=["pending", "error"]) == {p["planned"], p["failed"]}
    assert found(label="dummy_action") == {p["dummy"]}
    assert found(label=["tests.support.code_workflow.IncomingIssues"]) == {
        p["planned"],
        p["failed"],
    }
    assert found(state="stopped", result="success") == {p["executed"]}
    assert found(state="planned", label="tests.support.code_workflow.IncomingIssues") == {
        p["planned"]
    }
    # what comes back is fully loaded
    listed = {plan.id: plan for plan in executor.plans()}
    for name, plan in four_plans.items():
        assert listed[p[name]] == plan, name


def test_plans_order_and_pages(executor: World, four_plans: dict[str, ExecutionPlan]) -> None:
    oldest_first = [four_plans[n].id for n in ("planned", "failed", "executed", "dummy")]
    assert ids(executor.plans()) == oldest_first[::-1]  # default: started_at, descending
    assert ids(executor.plans(order_by="started_at", desc=True)) == oldest_first[::-1]
    assert ids(executor.plans(order_by="started_at", desc=False)) == oldest_first

    incoming = sorted([four_plans["planned"].id, four_plans["failed"].id])  # ties: by id
    by_label = [four_plans["dummy"].id, four_plans["executed"].id, *incoming]
    # "dummy_action" < "tests.support.code_workflow.FastCommit" < "...IncomingIssues"
    assert ids(executor.plans(order_by="label", desc=False)) == by_label
    assert ids(executor.plans(order_by="label", desc=True)) == [
        *incoming,
        four_plans["executed"].id,
        four_plans["dummy"].id,
    ]

    def page(limit: int | None, offset: int) -> list[str]:
        return ids(executor.plans(order_by="started_at", desc=False, limit=limit, offset=offset))

    assert page(2, 0) == oldest_first[:2]
    assert page(2, 2) == oldest_first[2:]
    assert page(2, 4) == []
    assert page(1, 1) == oldest_first[1:2]
    assert page(3, 3) == oldest_first[3:]
    assert page(None, 1) == oldest_first[1:]
    assert page(0, 0) == []
    assert ids(executor.plans(state="planned", order_by="started_at", desc=False, limit=1)) == [
        four_plans["planned"].id
    ]


def test_plans_rejects_an_unknown_order_by(client: World) -> None:
    with pytest.raises(ValueError, match="bogus") as raised:
        client.plans(order_by="bogus")
    message = str(raised.value)
    for allowed in ("started_at", "ended_at", "state", "result", "label"):
        assert allowed in message


def test_load_of_an_unknown_id_raises_unknown_plan(client: World) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(UnknownPlan, match=missing):
        client.load(missing)
    assert client.plans() == []


# -- PLAN-11: a custom plan id ------------------------------------------------------------


def test_plan11_custom_plan_id(url: str, client: World) -> None:
    plan = client.plan_with_options(IncomingIssues, args=[ISSUES], id=CUSTOM_ID)
    assert plan.id == CUSTOM_ID
    assert plan.state == PlanState.PLANNED
    assert all(step.execution_plan_id == CUSTOM_ID for step in plan.steps.values())
    assert all(action.execution_plan_id == CUSTOM_ID for action in plan.actions.values())
    client.stop()
    world = reopen(url)
    try:
        loaded = world.load(CUSTOM_ID)
        assert loaded == plan
        assert ids(world.plans()) == [CUSTOM_ID]
    finally:
        world.stop()


def test_plan_with_options_passes_kwargs(client: World) -> None:
    plan = client.plan_with_options(Ci, kwargs={"commit": COMMIT})
    assert plan.state == PlanState.PLANNED
    assert plan.steps[2].input == {"commit": COMMIT}
    assert client.load(plan.id) == plan


# -- PLAN-08/09: failed planning is stored -----------------------------------------------


class FailingPlan(Action):
    def plan(self) -> None:
        raise RuntimeError("I failed")


def test_plan08_failed_planning_is_stored_with_its_errors(url: str, client: World) -> None:
    plan = client.plan(IncomingIssues, [FAIL, *ISSUES])
    assert plan.state == PlanState.STOPPED and plan.result == Result.ERROR
    client.stop()
    world = reopen(url)
    try:
        loaded = world.load(plan.id)
        assert ids(world.plans(state="stopped", result="error")) == [plan.id]
    finally:
        world.stop()

    assert loaded == plan
    assert loaded.valid is True
    assert loaded.state == PlanState.STOPPED and loaded.result == Result.ERROR
    assert list(loaded.steps) == [1, 2]
    assert [s.action_class for s in loaded.steps.values()] == [IncomingIssues, IncomingIssue]
    assert all(s.state == StepState.ERROR for s in loaded.steps.values())
    error = loaded.steps[2].error
    assert error is not None
    assert error.exception_class == "RuntimeError"
    assert error.message == "You want me to fail"
    assert isinstance(error.backtrace, list) and error.backtrace
    assert all(isinstance(line, str) for line in error.backtrace)
    assert any("code_workflow.py" in line for line in error.backtrace)
    assert loaded.steps[1].error is not None  # the caller's plan step failed with it
    assert loaded.steps[1].error.message == "You want me to fail"
    assert loaded.error == loaded.steps[1].error == plan.error
    assert loaded.ended_at is not None
    assert_aware(loaded.ended_at)
    assert loaded.history[-1].name == "finish execution"


def test_plan09_failure_of_the_root_is_stored(url: str, executor: World) -> None:
    plan = executor.plan(FailingPlan)
    assert plan.state == "stopped" and plan.result == "error"
    triggered = executor.trigger(FailingPlan)
    assert triggered.planned is False
    assert triggered.error is not None and triggered.error.message == "I failed"
    assert triggered.wait(TIMEOUT).state == PlanState.STOPPED
    world = reopen(url)
    try:
        for plan_id in (plan.id, triggered.id):
            loaded = world.load(plan_id)
            assert loaded.state == PlanState.STOPPED and loaded.result == Result.ERROR
            assert loaded.error is not None
            assert loaded.error.exception_class == "RuntimeError"
            assert loaded.error.message == "I failed"
            assert any("test_world.py" in line for line in loaded.error.backtrace)
    finally:
        world.stop()


def test_plan18_non_serialisable_input_is_a_stored_planning_error(url: str, client: World) -> None:
    """API: a non-serialisable input fails planning (stopped/error), naming class and key."""
    plan = client.plan(Ci, {"when": object()})
    assert plan.state == PlanState.STOPPED and plan.result == Result.ERROR
    assert plan.error is not None
    assert plan.error.exception_class == "pydynflow.errors.SerializationError"
    assert "Ci" in plan.error.message and "['when']" in plan.error.message
    loaded = client.load(plan.id)
    assert loaded.state == PlanState.STOPPED and loaded.result == Result.ERROR
    assert loaded.error is not None and "['when']" in loaded.error.message


class BadOutput(Action):
    def run(self, event: Any = None) -> None:
        self.output["result"] = {"nested": object()}


def test_plan19_non_serialisable_output_fails_the_step(url: str, executor: World) -> None:
    plan = executor.trigger(BadOutput).wait(TIMEOUT)
    assert plan.state == PlanState.PAUSED and plan.result == Result.ERROR
    world = reopen(url)
    try:
        error = world.load(plan.id).steps[2].error
    finally:
        world.stop()
    assert error is not None
    assert error.exception_class == "pydynflow.errors.SerializationError"
    assert "BadOutput" in error.message and "output['result']['nested']" in error.message


# -- corrupted rows: an invalid plan, never a crash, never unpickling ------------------------

UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    UNPICKLED.append("unpickled")
    return "unpickled"


class Trap:
    """Unpickling this calls `_record_unpickling`: the codec must never do it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickling, ())


def assert_corrupt(world: World, plan_id: str, where: str) -> ExecutionPlan:
    loaded = world.load(plan_id)
    assert loaded.valid is False
    assert loaded.exception is not None
    assert "CorruptData" in loaded.exception.exception_class
    assert where in loaded.exception.message
    assert loaded.steps == {} and loaded.actions == {}
    listed = {plan.id: plan for plan in world.plans()}  # listing does not crash either
    assert listed[plan_id].valid is False
    return loaded


def test_corrupt_plan_steps_blob(url: str, client: World) -> None:
    # Step 2, a plan step that failed, keeps its error in the plan row's plan_steps.
    plan = client.plan(IncomingIssues, [FAIL, *ISSUES])
    assert plan.steps[2].phase == Phase.PLAN and plan.steps[2].error is not None
    select = "SELECT plan_steps FROM dynflow_execution_plans WHERE uuid = ?"
    blob = fetch_blob(client, select, plan.id)
    execute_sql(
        client,
        "UPDATE dynflow_execution_plans SET plan_steps = ? WHERE uuid = ?",
        flip_last_byte(blob),
        plan.id,
    )
    client.stop()
    world = reopen(url)
    try:
        loaded = assert_corrupt(world, plan.id, "plan_steps")
        assert loaded.label == plan.label
        assert loaded.state == PlanState.STOPPED
        assert loaded.started_at == plan.started_at
    finally:
        world.stop()


@pytest.mark.parametrize("payload", ["flipped", "pickle"])
def test_corrupt_action_input_blob(
    url: str, client: World, payload: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    UNPICKLED.clear()

    def no_unpickling(*args: Any, **kwargs: Any) -> Any:
        UNPICKLED.append("pickle.loads called")
        raise AssertionError("the store must never unpickle")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    plan = client.plan(IncomingIssues, ISSUES)
    select = "SELECT input FROM dynflow_actions WHERE execution_plan_uuid = ? AND id = 1"
    blob = fetch_blob(client, select, plan.id)
    bad = flip_last_byte(blob) if payload == "flipped" else pickle.dumps({"x": Trap()})
    execute_sql(
        client,
        "UPDATE dynflow_actions SET input = ? WHERE execution_plan_uuid = ? AND id = 1",
        bad,
        plan.id,
    )
    client.stop()
    world = reopen(url)
    try:
        loaded = assert_corrupt(world, plan.id, "action 1 input")
        assert loaded.label == plan.label
        assert loaded.state == PlanState.PLANNED
    finally:
        world.stop()
    assert UNPICKLED == []


# -- the default database ------------------------------------------------------------------


def test_default_db_is_pydynflow_db_in_the_cwd(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    world = World()  # an executor world (not started) creates its database
    try:
        assert world.db == "sqlite:///pydynflow.db"
        plan = world.plan(Dummy)
    finally:
        world.stop()
    assert (tmp_path / "pydynflow.db").is_file()
    other = World(f"sqlite:///{tmp_path / 'pydynflow.db'}", executor=False)
    try:
        assert other.load(plan.id) == plan
    finally:
        other.stop()


# -- bad input is refused with a clear error ------------------------------------------------


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError) as raised:
        World("mysql://x", executor=False)
    message = str(raised.value)
    assert "mysql://x" in message
    for scheme in ("sqlite:///", "postgresql://"):
        assert scheme in message


def test_a_refused_url_does_not_show_its_password() -> None:
    with pytest.raises(ValueError) as raised:
        World("mysql://app:s3cret@db.example/prod", executor=False)
    assert "s3cret" not in str(raised.value)
    assert "mysql://app:***@db.example/prod" in str(raised.value)


def test_sqlite_url_with_two_slashes_is_refused() -> None:
    with pytest.raises(ValueError, match="three slashes"):
        World("sqlite://relative.db", executor=False)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"executor": "bogus"}, "executor"),
        ({"executor": 2}, "executor"),
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": -3}, "pool_size"),
        ({"pool_size": "5"}, "pool_size"),
    ],
)
def test_bad_world_arguments_are_refused(
    sqlite_url: str, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument) as raised:
        World(sqlite_url, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(raised.value)


@pytest.mark.parametrize("given", [object, 42, "IncomingIssues", None, Triage()])
def test_planning_something_that_is_not_an_action_class(client: World, given: Any) -> None:
    with pytest.raises(PlanningError, match="Action subclass") as raised:
        client.plan(given)
    assert repr(given) in str(raised.value)
    assert client.plans() == []


def test_executing_needs_a_started_world_and_a_live_executor(client: World, url: str) -> None:
    plan = client.plan(Dummy)
    with pytest.raises(DynflowError, match="execute needs a started world; .* is not started"):
        client.execute(plan.id)
    client.start()
    with pytest.raises(DynflowError, match="^execute: no executor world is alive on ") as raised:
        client.execute(plan.id)
    assert "pydynflow worker" in str(raised.value)
    executor = World(url, auto_execute=False)
    try:
        with pytest.raises(DynflowError, match="needs a started world; .* is not started"):
            executor.execute(plan.id)
    finally:
        executor.stop()


def test_an_event_from_a_client_world_without_executor_says_none_is_alive(url: str) -> None:
    World(url).stop()  # the database exists
    client = World(url, executor=False).start()
    try:
        plan = client.plan(Dummy)
        with pytest.raises(DynflowError) as raised:
            client.event(plan.id, 2, {"approved": True})
    finally:
        client.stop()
    assert str(raised.value).startswith("event: no executor world is alive on ")


def test_a_client_world_opens_only_an_existing_sqlite_database(tmp_path: Path) -> None:
    mistyped = tmp_path / "pydynflw.db"
    with pytest.raises(PersistenceError) as raised:
        World(f"sqlite:///{mistyped}", executor=False)
    assert str(mistyped) in str(raised.value)
    assert "executor=False" in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # nothing created, not even a lock or a WAL file

    World(f"sqlite:///{mistyped}").stop()  # an executor world creates it
    World(f"sqlite:///{mistyped}", executor=False).stop()  # then a client opens it
    created = tmp_path / "created.db"
    World(f"sqlite:///{created}", executor=False, create=True).stop()
    assert created.is_file()


@pytest.mark.parametrize("value", [True, False])
def test_delayed_executor_says_whether_this_world_may_run_delayed_plans(
    tmp_path: Path, value: bool
) -> None:
    with World(f"sqlite:///{tmp_path / 'delayed.db'}", delayed_executor=value) as world:
        assert world.delayed_executor is value
        assert (world._delayed is not None) is value
    with World(f"sqlite:///{tmp_path / 'delayed.db'}", executor=False) as client:
        assert client._delayed is None  # a client world never runs one


def test_leaving_delayed_executor_out_keeps_the_documented_default() -> None:
    default = inspect.signature(World).parameters["delayed_executor"].default
    assert repr(default) == "True"  # what API.md and help(World) show
    world = World("sqlite:///:memory:")
    try:
        assert world.delayed_executor is True
    finally:
        world.stop()
