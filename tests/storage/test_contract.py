"""The storage contract (Dynflow's persistence_test, PERS-*), run on every backend.

`StorageContract` holds the tests; `TestSqliteFile`, `TestSqliteMemory` and `TestPostgres`
run them on a SQLite file, an in-memory SQLite database and a PostgreSQL schema. Plans are
built by hand from `pydynflow.plan`, independent of the planning code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pydynflow.errors import CorruptData, PersistenceError, UnknownPlan
from pydynflow.flows import Atom, Concurrence, Sequence
from pydynflow.plan import ActionRecord, ExecutionPlan, HistoryEntry, Step, StepError
from pydynflow.references import OutputReference
from pydynflow.states import Phase, PlanState, Result, StepState
from pydynflow.storage import Storage, encode

NOW = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
ROOT = "tests.storage.actions.Root"
CHILD = "tests.storage.actions.Child"


def make_plan(
    plan_id: str,
    *,
    label: str | None = "test1",
    state: PlanState = PlanState.PAUSED,
    started_at: datetime | None = NOW - timedelta(seconds=20),
    ended_at: datetime | None = NOW - timedelta(seconds=10),
    caller: tuple[str, int] | None = None,
) -> ExecutionPlan:
    """Return a plan of three actions and six steps exercising every stored field."""
    caller_plan, caller_action = caller if caller else (None, None)
    actions = {
        1: ActionRecord(
            1,
            plan_id,
            ROOT,
            input={"key": "value", "unicode": "žluťoučký kůň 🐴", "nested": {"a": [1, 2.5]}},
            output={"something": "else", "big": "x" * 1000},
            plan_step_id=1,
            run_step_id=2,
            finalize_step_id=6,
            caller_execution_plan_id=caller_plan,
            caller_action_id=caller_action,
        ),
        2: ActionRecord(
            2,
            plan_id,
            CHILD,
            input={
                "ref": OutputReference(plan_id, 2, 1, ("something",)),
                "refs": [OutputReference(plan_id, 2, 1, ())],
                "none": None,
                "flag": True,
            },
            output={},
            plan_step_id=3,
            run_step_id=4,
        ),
        3: ActionRecord(3, plan_id, CHILD, input={"n": 3}, plan_step_id=5),
    }
    t0 = NOW - timedelta(seconds=19, microseconds=123457)
    steps = {
        1: Step(
            1,
            plan_id,
            1,
            ROOT,
            Phase.PLAN,
            StepState.SUCCESS,
            started_at=t0,
            ended_at=t0 + timedelta(microseconds=1),
            real_time=1.1,
            execution_time=0.1,
            progress_done=1.0,
            progress_weight=2.5,
            children=[3, 5],
        ),
        2: Step(
            2,
            plan_id,
            1,
            ROOT,
            Phase.RUN,
            StepState.SUCCESS,
            started_at=t0 + timedelta(seconds=1),
            ended_at=t0 + timedelta(seconds=2, microseconds=999999),
            real_time=1.999999,
            execution_time=0.25,
            progress_done=1.0,
            attempts=2,
            queue="slow",
        ),
        3: Step(3, plan_id, 2, CHILD, Phase.PLAN, StepState.SUCCESS),
        4: Step(
            4,
            plan_id,
            2,
            CHILD,
            Phase.RUN,
            StepState.ERROR,
            error=StepError("RuntimeError", "boom: ✗", ["file.py:1 in run", "  raise"]),
            started_at=t0 + timedelta(seconds=3),
            ended_at=t0 + timedelta(seconds=4),
            progress_done=0.5,
            attempts=1,
        ),
        5: Step(5, plan_id, 3, CHILD, Phase.PLAN, StepState.SUCCESS),
        6: Step(6, plan_id, 1, ROOT, Phase.FINALIZE, StepState.PENDING),
    }
    for step in steps.values():
        step.action = actions[step.action_id]
    return ExecutionPlan(
        id=plan_id,
        label=label,
        state=state,
        started_at=started_at,
        ended_at=ended_at,
        real_time=10.000001,
        execution_time=0.35,
        root_plan_step_id=1,
        steps=steps,
        actions=actions,
        run_flow=Concurrence([Sequence([Atom(2), Atom(4)])]),
        finalize_flow=Sequence([Atom(6)]),
        history=[
            HistoryEntry(NOW - timedelta(seconds=18, microseconds=1), "start execution", "w-1"),
            HistoryEntry(NOW - timedelta(seconds=11), "pause execution", None),
        ],
    )


UNPICKLED: list[str] = []


def _record_unpickling(what: str) -> str:
    UNPICKLED.append(what)
    return what


class PickleBomb:
    """Pickles to a call of `_record_unpickling`: unpickling it would leave a trace."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("unpickled!",)


ENVELOPE_PAYLOADS: list[Any] = [
    {"event": "done", "n": 1, "ratio": 2.5, "ok": True, "none": None},
    [1, "two", [3.0, {"four": 4}], False],
    "žluťoučký kůň 🐴",
    -(2**53),
    0.1,
    None,
    {},
    [],
    {"ref": OutputReference("p", 2, 1, ("something",))},
    {"big": "x" * 5000, "list": list(range(300))},  # zstd-compressed
]


def one_step_plan(
    plan_id: str, step_state: StepState = StepState.SUCCESS, **fields: Any
) -> ExecutionPlan:
    """Return a minimal plan: one action, one plan step in ``step_state``."""
    action = ActionRecord(1, plan_id, ROOT, input={"id": plan_id}, plan_step_id=1)
    step = Step(1, plan_id, 1, ROOT, Phase.PLAN, step_state, action=action)
    plan = ExecutionPlan(
        id=plan_id, root_plan_step_id=1, steps={1: step}, actions={1: action}, **fields
    )
    return plan


class StorageContract:
    """Every storage backend passes these tests (subclasses provide the ``url`` fixture)."""

    @pytest.fixture
    def url(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    def storage(self, url: str) -> Iterator[Storage]:
        storage = Storage(url)
        try:
            yield storage
        finally:
            storage.close()

    @pytest.fixture
    def four_plans(self, storage: Storage) -> list[ExecutionPlan]:
        """PERS fixture: plan1..plan4, labels test1..4, states paused, stopped, paused, paused."""
        states = [PlanState.PAUSED, PlanState.STOPPED, PlanState.PAUSED, PlanState.PAUSED]
        plans = [
            make_plan(f"plan{n}", label=f"test{n}", state=state)
            for n, state in enumerate(states, start=1)
        ]
        for plan in plans:
            storage.save_plan(plan)
        return plans

    def _sql(
        self, storage: Storage, sql: str, params: tuple[Any, ...] = ()
    ) -> list[tuple[Any, ...]]:
        """Run raw SQL (``?`` placeholders) and commit; return the rows, if any."""
        sql = sql.replace("?", storage.database.param)
        with storage.transaction():
            cursor = storage.database.execute_sql(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def _count(self, storage: Storage, table: str, plan_id: str) -> int:
        rows = self._sql(
            storage, f"SELECT COUNT(*) FROM {table} WHERE execution_plan_uuid = ?", (plan_id,)
        )
        return int(rows[0][0])

    # -- save / load ------------------------------------------------------------------------

    def test_round_trip_is_equal_in_every_field(self, storage: Storage) -> None:
        plan = make_plan("11111111-2222-4333-8444-555555555555")
        storage.save_plan(plan)
        loaded = storage.load_plan(plan.id)

        assert loaded == plan
        assert loaded.valid and loaded.exception is None
        assert loaded.stored_result == plan.result == Result.ERROR
        assert loaded.result == Result.ERROR
        assert type(loaded.state) is PlanState
        for field in ("id", "label", "state", "started_at", "ended_at", "real_time"):
            assert getattr(loaded, field) == getattr(plan, field), field
        assert loaded.execution_time == plan.execution_time
        assert loaded.root_plan_step_id == 1 and loaded.root_plan_step is loaded.steps[1]
        assert loaded.run_flow == Concurrence([Sequence([Atom(2), Atom(4)])])
        assert loaded.finalize_flow == Sequence([Atom(6)])
        assert loaded.history == plan.history
        assert all(entry.time.tzinfo is not None for entry in loaded.history)
        assert list(loaded.steps) == [1, 2, 3, 4, 5, 6]
        assert list(loaded.actions) == [1, 2, 3]
        for step_id, step in loaded.steps.items():
            original = plan.steps[step_id]
            assert step == original
            assert step.action is loaded.actions[step.action_id]
            assert type(step.state) is StepState and type(step.phase) is Phase
            for moment in (step.started_at, step.ended_at):
                assert moment is None or moment.tzinfo is UTC
        assert loaded.started_at is not None and loaded.started_at.tzinfo is UTC
        assert loaded.started_at.microsecond == plan.started_at.microsecond  # type: ignore[union-attr]
        assert loaded.steps[2].ended_at == plan.steps[2].ended_at
        assert loaded.steps[4].error == StepError(
            "RuntimeError", "boom: ✗", ["file.py:1 in run", "  raise"]
        )
        assert loaded.steps[1].children == [3, 5]
        assert loaded.steps[1].progress_weight == 2.5 and loaded.steps[2].progress_weight == 1
        assert loaded.steps[2].queue == "slow" and loaded.steps[2].attempts == 2
        ref = loaded.actions[2].input["ref"]
        assert isinstance(ref, OutputReference) and ref == OutputReference(
            plan.id, 2, 1, ("something",)
        )
        assert loaded.actions[2].input["refs"] == [OutputReference(plan.id, 2, 1, ())]
        assert loaded.actions[1].input["unicode"] == "žluťoučký kůň 🐴"
        assert loaded.actions[1].output["big"] == "x" * 1000  # PERS-16: a plain string again
        assert loaded.steps[4].input == plan.actions[2].input
        assert loaded.progress() == plan.progress()

    def test_times_in_other_zones_come_back_as_utc(self, storage: Storage) -> None:
        zone = timezone(timedelta(hours=5, minutes=30))
        started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=zone)
        storage.save_plan(make_plan("zoned", started_at=started, ended_at=None))
        loaded = storage.load_plan("zoned")
        assert loaded.started_at == started
        assert loaded.started_at is not None and loaded.started_at.tzinfo is UTC
        assert loaded.started_at.hour == 21 and loaded.started_at.microsecond == 678901
        assert loaded.ended_at is None

    def test_saving_twice_updates(self, storage: Storage) -> None:
        plan = make_plan("plan-x")
        storage.save_plan(plan)
        plan.state = PlanState.STOPPED
        plan.label = "renamed"
        plan.ended_at = NOW
        plan.history.append(HistoryEntry(NOW, "finish execution", "w-2"))
        plan.steps[4].state = StepState.SKIPPED
        plan.steps[4].error = None
        plan.steps[6].state = StepState.SUCCESS
        plan.actions[1].output = {"changed": [1, 2, 3]}
        storage.save_plan(plan)

        loaded = storage.load_plan("plan-x")
        assert loaded == plan
        assert loaded.stored_result == Result.WARNING
        assert loaded.actions[1].output == {"changed": [1, 2, 3]}
        assert storage.count_plans() == 1
        # Its 3 plan-phase steps are kept in the plan row (schema 2); the run and finalize
        # steps have a row each, upserted in place.
        assert self._count(storage, "dynflow_steps", "plan-x") == 3
        assert self._count(storage, "dynflow_actions", "plan-x") == 3

    def test_save_steps_actions_and_plan_row_on_their_own(self, storage: Storage) -> None:
        plan = make_plan("parts")
        storage.save_plan(plan)
        plan.steps[2].state = StepState.SUSPENDED
        plan.steps[6].state = StepState.RUNNING
        plan.steps[6].started_at = NOW
        storage.save_steps([plan.steps[2], plan.steps[6]])
        plan.actions[2].output = {"done": True}
        storage.save_actions([plan.actions[2]])
        plan.state = PlanState.RUNNING
        storage.save_plan_row(plan)
        storage.save_steps([])
        storage.save_actions([])
        assert storage.load_plan("parts") == plan

    def test_writes_inside_a_transaction_roll_back_together(self, storage: Storage) -> None:
        storage.save_plan(make_plan("kept"))
        with pytest.raises(RuntimeError), storage.transaction():
            storage.save_plan(make_plan("rolled-back"))
            plan = make_plan("kept", state=PlanState.STOPPED)
            storage.save_plan_row(plan)
            raise RuntimeError("abort")
        with pytest.raises(UnknownPlan):
            storage.load_plan("rolled-back")
        assert storage.load_plan("kept").state == PlanState.PAUSED

    def test_nested_transactions_commit_at_the_outermost_block(self, storage: Storage) -> None:
        with storage.transaction():
            storage.save_plan(make_plan("outer"))
            with pytest.raises(ValueError), storage.transaction():
                storage.save_plan(make_plan("inner"))
                raise ValueError("inner block only")
            storage.save_steps([make_plan("outer").steps[1]])
        assert storage.load_plan("outer").valid
        with pytest.raises(UnknownPlan):
            storage.load_plan("inner")

    def test_unknown_plan(self, storage: Storage) -> None:
        with pytest.raises(UnknownPlan, match="nope"):
            storage.load_plan("nope")
        with pytest.raises(LookupError):
            storage.load_plan("nope")

    def test_steps_of_an_unsaved_plan_are_refused(self, storage: Storage) -> None:
        with pytest.raises(PersistenceError, match="save_steps"):
            storage.save_steps([make_plan("never-saved").steps[1]])
        storage.save_plan(make_plan("after"))  # the storage is still usable
        assert storage.load_plan("after").valid

    def test_a_plan_with_no_steps_yet_is_valid(self, storage: Storage) -> None:
        storage.save_plan(ExecutionPlan(id="empty", label="pending one"))
        loaded = storage.load_plan("empty")
        assert loaded.valid and loaded.steps == {} and loaded.state == PlanState.PENDING
        assert loaded == ExecutionPlan(id="empty", label="pending one")

    # -- find / count -------------------------------------------------------------------------

    def test_paging(self, storage: Storage, four_plans: list[ExecutionPlan]) -> None:
        ids = lambda plans: [plan.id for plan in plans]  # noqa: E731
        assert ids(storage.find_plans(limit=1, offset=0)) == ["plan1"]
        assert ids(storage.find_plans(limit=1, offset=1)) == ["plan2"]
        assert ids(storage.find_plans(limit=2, offset=3)) == ["plan4"]
        assert storage.find_plans(limit=2, offset=4) == []
        assert ids(storage.find_plans(limit=None)) == ["plan1", "plan2", "plan3", "plan4"]
        assert ids(storage.find_plans(limit=None, offset=2)) == ["plan3", "plan4"]
        assert storage.find_plans(limit=0) == []

    def test_order_by_state(self, storage: Storage, four_plans: list[ExecutionPlan]) -> None:
        asc = storage.find_plans(order_by="state", desc=False)
        assert [plan.id for plan in asc] == ["plan1", "plan3", "plan4", "plan2"]
        desc = storage.find_plans(order_by="state", desc=True)
        assert [plan.id for plan in desc] == ["plan2", "plan1", "plan3", "plan4"]

    def test_filters(self, storage: Storage, four_plans: list[ExecutionPlan]) -> None:
        def ids(**filters: Any) -> list[str]:
            found = [plan.id for plan in storage.find_plans(order_by="id", desc=False, **filters)]
            assert storage.count_plans(**filters) == len(found)
            return found

        assert ids(label=["test1"]) == ["plan1"]
        assert ids(label="test3") == ["plan3"]
        assert ids(state=["paused"]) == ["plan1", "plan3", "plan4"]
        assert ids(state="stopped") == ["plan2"]
        assert ids(state=PlanState.STOPPED) == ["plan2"]
        assert ids(state=[]) == []
        assert ids(state=["stopped", PlanState.PAUSED]) == ["plan1", "plan2", "plan3", "plan4"]
        assert ids(state=("paused",), label=["test1", "test2", "test4"]) == ["plan1", "plan4"]
        assert ids(result="error") == ["plan1", "plan2", "plan3", "plan4"]
        assert ids(result=[Result.SUCCESS, Result.PENDING]) == []
        assert ids(label=[]) == []
        assert ids() == ["plan1", "plan2", "plan3", "plan4"]

    def test_found_plans_are_fully_loaded(
        self, storage: Storage, four_plans: list[ExecutionPlan]
    ) -> None:
        found = storage.find_plans(order_by="id", desc=False, limit=None)
        assert found == four_plans
        for plan in found:
            assert all(step.action is plan.actions[step.action_id] for step in plan.steps.values())
            assert plan.stored_result == Result.ERROR

    def test_filter_by_caller(self, storage: Storage) -> None:
        storage.save_plan(make_plan("parent"))
        storage.save_plan(make_plan("sub-a", caller=("parent", 2)))
        storage.save_plan(make_plan("sub-b", caller=("parent", 3)))
        storage.save_plan(make_plan("other", caller=("elsewhere", 2)))

        def ids(**filters: Any) -> list[str]:
            found = [plan.id for plan in storage.find_plans(order_by="id", desc=False, **filters)]
            assert storage.count_plans(**filters) == len(found)
            return found

        assert ids(caller_execution_plan_id="parent") == ["sub-a", "sub-b"]
        assert ids(caller_execution_plan_id="parent", caller_action_id=3) == ["sub-b"]
        assert ids(caller_execution_plan_id="parent", caller_action_id=9) == []
        assert ids(caller_execution_plan_id="parent", label="test1") == ["sub-a", "sub-b"]
        with pytest.raises(ValueError, match="caller_execution_plan_id"):
            storage.find_plans(caller_action_id=3)

    def test_order_by_every_allowed_column_with_nulls_last(self, storage: Storage) -> None:
        t = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
        rows = {
            # id: (state, label, started_at, ended_at, real_time, execution_time, step state)
            "p1": (
                PlanState.PAUSED,
                "b",
                t + timedelta(seconds=3),
                None,
                3.5,
                0.5,
                StepState.ERROR,
            ),
            "p2": (
                PlanState.STOPPED,
                "d",
                None,
                t + timedelta(seconds=5),
                1.25,
                None,
                StepState.SUCCESS,
            ),
            "p3": (
                PlanState.RUNNING,
                None,
                t + timedelta(microseconds=1),
                t + timedelta(seconds=7),
                None,
                0.25,
                StepState.PENDING,
            ),
            "p4": (
                PlanState.PENDING,
                "a",
                t + timedelta(seconds=2, microseconds=500),
                None,
                2.0,
                0.75,
                StepState.CANCELLED,
            ),
            "p5": (
                PlanState.PLANNED,
                "c",
                t,
                t + timedelta(seconds=6),
                10.0,
                0.125,
                StepState.SKIPPED,
            ),
        }
        for plan_id, (state, label, started, ended, real, execution, step_state) in rows.items():
            plan = one_step_plan(
                plan_id,
                step_state,
                state=state,
                label=label,
                started_at=started,
                ended_at=ended,
                real_time=real or 0.0,
                execution_time=execution or 0.0,
            )
            storage.save_plan(plan)
        # NULLs the API never writes, set by hand (legacy or foreign rows).
        self._sql(storage, "UPDATE dynflow_execution_plans SET real_time = NULL WHERE uuid = 'p3'")
        self._sql(
            storage, "UPDATE dynflow_execution_plans SET execution_time = NULL WHERE uuid = 'p2'"
        )
        self._sql(storage, "UPDATE dynflow_execution_plans SET result = NULL WHERE uuid = 'p3'")
        results = {"p1": "error", "p2": "success", "p3": None, "p4": "cancelled", "p5": "warning"}
        columns = {
            "id": {plan_id: plan_id for plan_id in rows},
            "state": {plan_id: str(row[0]) for plan_id, row in rows.items()},
            "label": {plan_id: row[1] for plan_id, row in rows.items()},
            "started_at": {plan_id: row[2] for plan_id, row in rows.items()},
            "ended_at": {plan_id: row[3] for plan_id, row in rows.items()},
            "real_time": {plan_id: row[4] for plan_id, row in rows.items()},
            "execution_time": {plan_id: row[5] for plan_id, row in rows.items()},
            "result": results,
        }
        for column, values in columns.items():
            for desc in (False, True):
                present = sorted(
                    (plan_id for plan_id in values if values[plan_id] is not None),
                    key=lambda plan_id, values=values: values[plan_id],
                    reverse=desc,
                )
                nulls = sorted(plan_id for plan_id in values if values[plan_id] is None)
                found = [plan.id for plan in storage.find_plans(order_by=column, desc=desc)]
                assert found == present + nulls, (column, desc)
        by_result = storage.find_plans(order_by="result", desc=False)
        assert by_result[-1].id == "p3" and by_result[-1].stored_result is None

    def test_bad_order_by(self, storage: Storage) -> None:
        with pytest.raises(ValueError, match="allowed: id, state, result, label, started_at"):
            storage.find_plans(order_by="input")
        with pytest.raises(ValueError):
            storage.find_plans(order_by="started_at; DROP TABLE dynflow_steps")
        with pytest.raises(ValueError):
            storage.find_plans(limit=-1)
        with pytest.raises(ValueError):
            storage.find_plans(offset=-5)

    # -- damaged data -------------------------------------------------------------------------

    def test_deleted_steps_give_an_invalid_plan_with_row_fields_intact(
        self, storage: Storage
    ) -> None:
        plan = make_plan("broken")
        storage.save_plan(plan)
        # Every step gone: the rows, and the plan-phase steps kept in the plan row.
        self._sql(storage, "DELETE FROM dynflow_steps WHERE execution_plan_uuid = ?", ("broken",))
        self._sql(
            storage,
            "UPDATE dynflow_execution_plans SET plan_steps = NULL WHERE uuid = ?",
            ("broken",),
        )

        loaded = storage.load_plan("broken")
        assert loaded.valid is False
        assert loaded.exception is not None
        assert loaded.exception.exception_class == "pydynflow.errors.DataConsistencyError"
        assert "missing steps" in loaded.exception.message
        assert "root_plan_step_id" in loaded.exception.message
        for field in (
            "id",
            "label",
            "state",
            "started_at",
            "ended_at",
            "real_time",
            "execution_time",
            "history",
        ):
            assert getattr(loaded, field) == getattr(plan, field), field
        assert loaded.stored_result == plan.result
        assert loaded.result == Result.ERROR
        assert loaded.steps == {} and loaded.actions == {}
        assert loaded.error == loaded.exception
        assert [found.id for found in storage.find_plans()] == ["broken"]
        assert storage.find_plans()[0].valid is False

    def test_saving_an_invalid_plan_writes_only_its_row_metadata(self, storage: Storage) -> None:
        storage.save_plan(make_plan("invalid"))
        self._sql(storage, "DELETE FROM dynflow_steps WHERE execution_plan_uuid = ?", ("invalid",))
        flows_before = self._sql(
            storage,
            "SELECT run_flow, finalize_flow FROM dynflow_execution_plans WHERE uuid = ?",
            ("invalid",),
        )
        invalid = storage.load_plan("invalid")
        invalid.transition(PlanState.STOPPED, world_id="w-9")
        storage.save_plan(invalid)

        reloaded = storage.load_plan("invalid")
        assert reloaded.valid is False
        assert reloaded.state == PlanState.STOPPED
        assert reloaded.history[-1].name == "finish execution"
        assert reloaded.stored_result == Result.ERROR
        flows_after = self._sql(
            storage,
            "SELECT run_flow, finalize_flow FROM dynflow_execution_plans WHERE uuid = ?",
            ("invalid",),
        )
        assert [tuple(bytes(blob) for blob in row) for row in flows_after] == [
            tuple(bytes(blob) for blob in row) for row in flows_before
        ]
        assert self._count(storage, "dynflow_actions", "invalid") == 3

    def test_a_step_of_a_missing_action_gives_an_invalid_plan(self, storage: Storage) -> None:
        storage.save_plan(make_plan("orphan-step"))
        self._sql(
            storage,
            "DELETE FROM dynflow_actions WHERE execution_plan_uuid = ? AND id = 3",
            ("orphan-step",),
        )
        loaded = storage.load_plan("orphan-step")
        assert loaded.valid is False
        assert loaded.exception is not None
        assert "missing actions: 3 (referenced by step 5)" in loaded.exception.message

    @pytest.mark.parametrize(
        ("table", "column", "key"),
        [
            ("dynflow_actions", "input", 2),
            ("dynflow_actions", "output", 1),
            ("dynflow_steps", "error", 4),
            ("dynflow_steps", "children", 2),
            ("dynflow_execution_plans", "run_flow", None),
            ("dynflow_execution_plans", "plan_steps", None),
            ("dynflow_execution_plans", "execution_history", None),
        ],
    )
    def test_a_corrupted_blob_gives_an_invalid_plan(
        self, storage: Storage, table: str, column: str, key: int | None
    ) -> None:
        plan = make_plan("corrupt")
        storage.save_plan(plan)
        storage.save_plan(make_plan("healthy"))
        where = "uuid = ?" if key is None else f"execution_plan_uuid = ? AND id = {key}"
        self._sql(
            storage, f"UPDATE {table} SET {column} = ? WHERE {where}", (b"garbage!", "corrupt")
        )

        loaded = storage.load_plan("corrupt")
        assert loaded.valid is False
        assert loaded.exception is not None
        assert loaded.exception.exception_class == "pydynflow.errors.CorruptData"
        assert column in loaded.exception.message and "bad magic" in loaded.exception.message
        assert (loaded.id, loaded.label, loaded.state) == ("corrupt", plan.label, plan.state)
        assert loaded.started_at == plan.started_at
        if column != "execution_history":
            assert loaded.history == plan.history
        found = {p.id: p.valid for p in storage.find_plans(limit=None)}
        assert found == {"corrupt": False, "healthy": True}

    def test_a_pickled_or_bit_flipped_blob_is_corrupt_data_too(self, storage: Storage) -> None:
        import pickle

        storage.save_plan(make_plan("pickled"))
        self._sql(
            storage,
            "UPDATE dynflow_actions SET output = ? WHERE execution_plan_uuid = ? AND id = 1",
            (pickle.dumps({"something": "else"}), "pickled"),
        )
        assert storage.load_plan("pickled").exception.exception_class.endswith("CorruptData")  # type: ignore[union-attr]

        storage.save_plan(make_plan("flipped"))
        flipped = bytearray(encode({"key": "value", "more": "y" * 500}))
        flipped[len(flipped) // 2] ^= 0x10
        self._sql(
            storage,
            "UPDATE dynflow_actions SET input = ? WHERE execution_plan_uuid = ? AND id = 1",
            (bytes(flipped), "flipped"),
        )
        loaded = storage.load_plan("flipped")
        assert loaded.valid is False
        assert "checksum mismatch" in loaded.exception.message  # type: ignore[union-attr]

    def test_an_action_class_that_no_longer_exists_still_loads(self, storage: Storage) -> None:
        action_module = pytest.importorskip("pydynflow.action")
        plan = make_plan("renamed")
        plan.actions[3].action_class_name = "tests.gone.RenamedAction"
        plan.steps[5].action_class_name = "tests.gone.RenamedAction"
        storage.save_plan(plan)

        loaded = storage.load_plan("renamed")
        assert loaded.valid
        step = loaded.steps[5]
        assert step.action_class_name == "tests.gone.RenamedAction"
        assert step.action_class.__name__ == "RenamedAction"
        assert issubclass(step.action_class, action_module.Action)
        assert loaded.actions[3].action_class.__name__ == "RenamedAction"

    # -- delete -------------------------------------------------------------------------------

    def test_delete_plans_cascades(self, storage: Storage, four_plans: list[ExecutionPlan]) -> None:
        assert storage.delete_plans(["plan1"]) == 1
        with pytest.raises(UnknownPlan):
            storage.load_plan("plan1")
        assert self._count(storage, "dynflow_steps", "plan1") == 0
        assert self._count(storage, "dynflow_actions", "plan1") == 0
        assert self._count(storage, "dynflow_steps", "plan2") == 3  # + 3 in its plan row
        assert storage.load_plan("plan2") == four_plans[1]
        assert storage.delete_plans(["plan1", "nope"]) == 0
        assert storage.delete_plans("plan2") == 1
        assert storage.delete_plans(p.id for p in storage.find_plans(state="paused")) == 2
        assert [p.id for p in storage.find_plans()] == []
        assert storage.delete_plans([]) == 0

    def test_foreign_keys_cascade_from_the_plan_row(self, storage: Storage) -> None:
        storage.save_plan(make_plan("a"))
        storage.save_plan(make_plan("b"))
        chunk, now = encode({"line": "hello"}), "2026-01-01 00:00:00.000000"
        self._sql(
            storage,
            "INSERT INTO dynflow_output_chunks (execution_plan_uuid, action_id, chunk, kind, timestamp) "
            "VALUES (?, 1, ?, 'stdout', ?)",
            ("a", chunk, now),
        )
        self._sql(
            storage,
            "INSERT INTO dynflow_delayed_plans (execution_plan_uuid, start_at, frozen) VALUES (?, ?, ?)",
            ("a", now, False),
        )
        self._sql(
            storage,
            "INSERT INTO dynflow_execution_plan_dependencies (execution_plan_uuid, blocked_by_uuid) "
            "VALUES (?, ?)",
            ("b", "a"),
        )
        self._sql(storage, "DELETE FROM dynflow_execution_plans WHERE uuid = ?", ("a",))
        for table in (
            "dynflow_steps",
            "dynflow_actions",
            "dynflow_output_chunks",
            "dynflow_delayed_plans",
        ):
            assert self._count(storage, table, "a") == 0, table
        assert self._count(storage, "dynflow_execution_plan_dependencies", "b") == 0
        assert storage.load_plan("b").valid

    # -- envelopes ----------------------------------------------------------------------------

    def test_envelope_round_trip(self, storage: Storage) -> None:
        ids = [storage.add_envelope("env", 2, payload) for payload in ENVELOPE_PAYLOADS]
        assert all(type(envelope_id) is int for envelope_id in ids)
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        found = storage.envelopes("env")
        assert found == [
            (envelope_id, 2, p) for envelope_id, p in zip(ids, ENVELOPE_PAYLOADS, strict=True)
        ]
        assert storage.envelopes("env", 2) == found
        ref = found[8][2]["ref"]
        assert isinstance(ref, OutputReference) and ref == OutputReference(
            "p", 2, 1, ("something",)
        )
        receivers = self._sql(
            storage, "SELECT DISTINCT receiver_id FROM dynflow_envelopes WHERE id = ?", (ids[0],)
        )
        assert receivers == [("env:2",)]

    def test_envelopes_per_plan_and_per_step_in_id_order(self, storage: Storage) -> None:
        # Plan ids that share prefixes, contain LIKE wildcards or the ":" separator.
        plans = ["plan1", "plan10", "plan1-x", "plan", "plan1:9", "a_b", "aXb", "c%", "cd", "e!"]
        expected: dict[str, list[tuple[int, int, Any]]] = {plan_id: [] for plan_id in plans}
        for round_ in range(3):
            for plan_id in plans:
                for step_id in (3, 1, 12):
                    payload = {"plan": plan_id, "step": step_id, "round": round_}
                    envelope_id = storage.add_envelope(plan_id, step_id, payload)
                    expected[plan_id].append((envelope_id, step_id, payload))
        # Rows of other receivers (a world's inbox) share the table and are never listed.
        for receiver in ("plan1", "plan1:abc", "plan1:", "11111111-2222-4333-8444-555555555555"):
            self._sql(
                storage,
                "INSERT INTO dynflow_envelopes (receiver_id, data) VALUES (?, ?)",
                (receiver, encode({"payload": "foreign"})),
            )
        for plan_id in plans:
            assert storage.envelopes(plan_id) == expected[plan_id], plan_id
            for step_id in (1, 3, 12):
                assert storage.envelopes(plan_id, step_id) == [
                    envelope for envelope in expected[plan_id] if envelope[1] == step_id
                ], (plan_id, step_id)
        assert storage.envelopes("plan1", 2) == []
        assert storage.envelopes("nope") == []
        assert storage.envelopes("plan1:") == []  # a receiver "plan1:" has no step id

    def test_delete_envelopes(self, storage: Storage) -> None:
        ids = [storage.add_envelope("del", step_id, {"n": step_id}) for step_id in range(1, 6)]
        kept = storage.add_envelope("other", 1, "kept")
        assert storage.delete_envelopes([ids[1], ids[3], 999_999]) == 2
        assert storage.envelopes("del") == [(ids[n], n + 1, {"n": n + 1}) for n in (0, 2, 4)]
        assert storage.delete_envelopes(iter([ids[0], ids[0]])) == 1
        assert storage.delete_envelopes([]) == 0
        assert storage.delete_envelopes([ids[1]]) == 0
        assert storage.delete_envelopes(envelope[0] for envelope in storage.envelopes("del")) == 2
        assert storage.envelopes("del") == []
        assert storage.envelopes("other") == [(kept, 1, "kept")]

    def test_deleting_a_plan_deletes_its_envelopes(self, storage: Storage) -> None:
        for plan_id in ("plan1", "plan10", "plan1:2"):
            storage.save_plan(make_plan(plan_id))
            storage.add_envelope(plan_id, 4, {"for": plan_id})
            storage.add_envelope(plan_id, 6, {"for": plan_id})
        storage.add_envelope("never-saved", 1, "orphan")
        assert storage.delete_plans(["plan1"]) == 1
        assert storage.envelopes("plan1") == []
        assert [e[1:] for e in storage.envelopes("plan10")] == [
            (4, {"for": "plan10"}),
            (6, {"for": "plan10"}),
        ]
        assert len(storage.envelopes("plan1:2")) == 2
        assert storage.delete_plans(["never-saved", "plan1:2"]) == 1  # counts plans only
        assert storage.envelopes("never-saved") == [] and storage.envelopes("plan1:2") == []
        assert len(storage.envelopes("plan10")) == 2

    def test_envelope_writes_join_the_surrounding_transaction(self, storage: Storage) -> None:
        storage.save_plan(one_step_plan("tx"))
        kept = storage.add_envelope("tx", 1, "kept")
        with pytest.raises(RuntimeError), storage.transaction():
            storage.add_envelope("tx", 1, "rolled back")
            storage.delete_envelopes([kept])
            storage.add_output_chunks([("tx", 1, "rolled back", None, NOW)])
            raise RuntimeError("abort")
        assert storage.envelopes("tx") == [(kept, 1, "kept")]
        assert storage.output_chunks("tx", 1) == []
        with storage.transaction():
            second = storage.add_envelope("tx", 2, "second")
            storage.save_plan_row(one_step_plan("tx", state=PlanState.RUNNING))
            with pytest.raises(ValueError), storage.transaction():
                storage.add_envelope("tx", 3, "inner block only")
                raise ValueError("inner")
            assert storage.envelopes("tx") == [(kept, 1, "kept"), (second, 2, "second")]
        assert storage.envelopes("tx") == [(kept, 1, "kept"), (second, 2, "second")]
        assert storage.load_plan("tx").state == PlanState.RUNNING

    def test_an_unencodable_envelope_is_refused(self, storage: Storage) -> None:
        from pydynflow.errors import SerializationError

        with pytest.raises(SerializationError):
            storage.add_envelope("bad", 1, {"obj": object()})
        assert storage.envelopes("bad") == []

    def test_a_corrupted_envelope_raises_corrupt_data(self, storage: Storage) -> None:
        import pickle

        envelope_id = storage.add_envelope("corrupt-env", 1, {"n": 1})
        self._sql(
            storage,
            "UPDATE dynflow_envelopes SET data = ? WHERE id = ?",
            (pickle.dumps(PickleBomb()), envelope_id),
        )
        UNPICKLED.clear()
        with pytest.raises(CorruptData, match="bad magic") as info:
            storage.envelopes("corrupt-env")
        assert f"envelope {envelope_id}" in str(info.value)
        with pytest.raises(CorruptData):
            storage.envelopes("corrupt-env", 1)
        assert UNPICKLED == []

    # -- output chunks --------------------------------------------------------------------------

    def test_output_chunks_round_trip_in_insertion_order(self, storage: Storage) -> None:
        storage.save_plan(make_plan("out"))
        zone = timezone(timedelta(hours=-7))
        rows = [
            ("out", 1, "line 1\n", "stdout", NOW),
            ("out", 1, {"progress": 0.5, "msg": "žluť"}, None, NOW - timedelta(seconds=5)),
            ("out", 2, "other action", "stdout", NOW),
            ("out", 1, ["big", "y" * 4000], "stderr", datetime(2026, 1, 2, 3, 4, 5, 1, zone)),
        ]
        storage.add_output_chunks(rows[:2])
        storage.add_output_chunks(iter(rows[2:]))
        storage.add_output_chunks([])
        storage.add_output_chunks([("out", 1, 42, "stdout", NOW + timedelta(microseconds=999999))])

        chunks = storage.output_chunks("out", 1)
        assert chunks == [
            {"chunk": "line 1\n", "kind": "stdout", "timestamp": NOW},
            {
                "chunk": {"progress": 0.5, "msg": "žluť"},
                "kind": None,
                "timestamp": NOW - timedelta(seconds=5),
            },
            {
                "chunk": ["big", "y" * 4000],
                "kind": "stderr",
                "timestamp": datetime(2026, 1, 2, 10, 4, 5, 1, UTC),
            },
            {"chunk": 42, "kind": "stdout", "timestamp": NOW + timedelta(microseconds=999999)},
        ]
        for chunk in chunks:
            assert chunk["timestamp"].tzinfo is UTC
        assert chunks[0]["timestamp"].microsecond == 535897
        assert chunks[2]["timestamp"].microsecond == 1
        assert storage.output_chunks("out", 2) == [
            {"chunk": "other action", "kind": "stdout", "timestamp": NOW}
        ]
        assert storage.output_chunks("out", 3) == []
        assert storage.output_chunks("nope", 1) == []

    def test_delete_output_chunks_per_action_and_per_plan(self, storage: Storage) -> None:
        for plan_id in ("chunks-a", "chunks-b"):
            storage.save_plan(make_plan(plan_id))
            storage.add_output_chunks(
                [
                    (plan_id, action_id, n, "stdout", NOW)
                    for action_id in (1, 2, 3)
                    for n in range(3)
                ]
            )
        assert storage.delete_output_chunks("chunks-a", 2) == 3
        assert storage.output_chunks("chunks-a", 2) == []
        assert [c["chunk"] for c in storage.output_chunks("chunks-a", 1)] == [0, 1, 2]
        assert storage.delete_output_chunks("chunks-a", 2) == 0
        assert storage.delete_output_chunks("chunks-a") == 6
        assert storage.output_chunks("chunks-a", 1) == storage.output_chunks("chunks-a", 3) == []
        assert len(storage.output_chunks("chunks-b", 2)) == 3
        assert storage.delete_output_chunks("nope") == 0
        assert storage.delete_plans(["chunks-b"]) == 1
        assert self._count(storage, "dynflow_output_chunks", "chunks-b") == 0

    def test_chunks_of_an_unsaved_plan_are_refused(self, storage: Storage) -> None:
        with pytest.raises(PersistenceError, match="add_output_chunks"):
            storage.add_output_chunks([("never-saved", 1, "x", None, NOW)])
        storage.save_plan(one_step_plan("after-chunks"))  # the storage is still usable
        storage.add_output_chunks([("after-chunks", 1, "x", None, NOW)])
        assert len(storage.output_chunks("after-chunks", 1)) == 1

    def test_a_corrupted_chunk_raises_corrupt_data_and_is_never_unpickled(
        self, storage: Storage
    ) -> None:
        import pickle

        storage.save_plan(make_plan("bad-chunks"))
        storage.add_output_chunks([("bad-chunks", 1, n, "stdout", NOW) for n in range(3)])
        (chunk_id,) = self._sql(
            storage,
            "SELECT MAX(id) FROM dynflow_output_chunks WHERE execution_plan_uuid = ?",
            ("bad-chunks",),
        )[0]
        self._sql(
            storage,
            "UPDATE dynflow_output_chunks SET chunk = ? WHERE id = ?",
            (pickle.dumps(PickleBomb()), chunk_id),
        )
        UNPICKLED.clear()
        with pytest.raises(CorruptData, match="bad magic") as info:
            storage.output_chunks("bad-chunks", 1)
        assert f"action 1 output chunk {chunk_id}" in str(info.value)
        assert UNPICKLED == []

        flipped = bytearray(encode({"line": "z" * 600}))
        flipped[-3] ^= 0x01
        self._sql(
            storage,
            "UPDATE dynflow_output_chunks SET chunk = ? WHERE id = ?",
            (bytes(flipped), chunk_id),
        )
        with pytest.raises(CorruptData, match="checksum mismatch"):
            storage.output_chunks("bad-chunks", 1)

    # -- concurrency --------------------------------------------------------------------------

    def test_threads_share_the_database_and_write_concurrently(self, storage: Storage) -> None:
        errors: list[BaseException] = []
        barrier = threading.Barrier(6)

        def work(n: int) -> None:
            try:
                barrier.wait()
                for i in range(8):
                    plan = make_plan(f"t{n}-{i}")
                    storage.save_plan(plan)
                    plan.steps[6].state = StepState.RUNNING
                    with storage.transaction():
                        storage.save_steps([plan.steps[6]])
                        storage.save_plan_row(plan)
                    assert storage.load_plan(plan.id) == plan
                    storage.find_plans(limit=5)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert storage.count_plans() == 48

    def test_ping(self, storage: Storage) -> None:
        assert storage.ping() is True

    def test_coordinator_records_are_created_replaced_read_and_deleted(
        self, storage: Storage
    ) -> None:
        assert storage.record("Lock", "a") is None
        storage.put_record("Lock", "a", b"one", owner_id="w1")
        storage.put_record("Lock", "a", b"two")  # replaced, not duplicated
        storage.put_record("World", "a", b"other")  # (id, class) is the key
        assert storage.record("Lock", "a") == b"two"
        assert storage.record("World", "a") == b"other"
        assert storage.delete_record("Lock", "a") == 1
        assert storage.delete_record("Lock", "a") == 0
        assert storage.record("Lock", "a") is None
        assert storage.record("World", "a") == b"other"

    def test_record_data_is_replaced_and_the_owner_kept(self, storage: Storage) -> None:
        def owner(record_id: str) -> Any:
            return storage._db.execute_sql(
                'SELECT "owner_id" FROM "dynflow_coordinator_records" WHERE "id" = '
                f"{storage._db.param}",
                (record_id,),
            ).fetchall()

        storage.put_record_data("Ledger", "w", b"one", owner_id="w9")  # created, owned
        storage.put_record_data("Ledger", "w", b"two", owner_id="other")  # data replaced
        assert storage.record("Ledger", "w") == b"two"
        assert owner("w") == [("w9",)]
        storage.put_record("Lock", "a", b"one", owner_id="w1")
        storage.put_record_data("Lock", "a", b"two")
        assert storage.record("Lock", "a") == b"two"
        assert owner("a") == [("w1",)]

    def test_a_record_is_taken_once_and_taken_over_only_when_stale(self, storage: Storage) -> None:
        void: set[str | None] = set()
        seen: list[tuple[str | None, bytes | None]] = []

        def stale(holder: str | None, data: bytes | None) -> bool:
            seen.append((holder, data))
            return holder in void

        assert storage.take_record("Lock", "a", "p1", b"one", stale=stale) == "p1"  # created
        assert storage.take_record("Lock", "a", "p1", b"again", stale=stale) == "p1"  # kept
        assert storage.record("Lock", "a") == b"one"
        assert seen == []  # the holder itself is never asked about
        assert storage.take_record("Lock", "a", "p2", b"two", stale=stale) == "p1"  # refused
        assert seen == [("p1", b"one")]
        assert storage.take_record("Lock", "a", "p2", b"two") == "p1"  # no rule: never stale
        assert storage.record_owner("Lock", "a") == "p1"
        void.add("p1")
        assert storage.take_record("Lock", "a", "p2", b"two", stale=stale) == "p2"  # taken over
        assert (storage.record_owner("Lock", "a"), storage.record("Lock", "a")) == ("p2", b"two")
        assert storage.record_owner("Lock", "b") is None
        # Let go of by its holder only.
        assert storage.delete_record("Lock", "a", owner_id="p1") == 0
        assert storage.delete_record("Lock", "a", owner_id="p2") == 1
        assert storage.record_owner("Lock", "a") is None
        # A record without an owner is taken over if the rule says so, by a conditional update.
        storage.put_record("Lock", "c", None)
        assert storage.take_record("Lock", "c", "p3") is None
        void.add(None)
        assert storage.take_record("Lock", "c", "p3", stale=stale) == "p3"

    def test_the_records_of_a_class_are_listed_with_their_owners(self, storage: Storage) -> None:
        storage.put_record("Lock", "b", b"two", owner_id="p2")
        storage.put_record("Lock", "a", None)
        storage.put_record("World", "c", b"other", owner_id="w1")
        assert storage.records_of("Lock") == [("a", None, None), ("b", "p2", b"two")]
        assert storage.records_of("Nothing") == []


class TestSqliteFile(StorageContract):
    @pytest.fixture
    def url(self, sqlite_url: str) -> str:
        return sqlite_url


class TestSqliteMemory(StorageContract):
    @pytest.fixture
    def url(self, memory_url: str) -> str:
        return memory_url


@pytest.mark.postgres
class TestPostgres(StorageContract):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url


# -- not backend-specific contract, but storage behaviour worth pinning ------------------------


def test_find_plans_uses_a_constant_number_of_queries(sqlite_url: str) -> None:
    with Storage(sqlite_url) as storage:
        for n in range(30):
            storage.save_plan(make_plan(f"plan{n:02d}"))
        statements: list[str] = []
        storage.database.connection().set_trace_callback(statements.append)
        try:
            small = storage.find_plans(limit=2)
            small_count = len(statements)
            statements.clear()
            large = storage.find_plans(limit=None)
            large_count = len(statements)
        finally:
            storage.database.connection().set_trace_callback(None)
        assert len(small) == 2 and len(large) == 30
        assert small_count == large_count <= 5  # BEGIN, plans, actions, steps, COMMIT


def test_memory_database_is_shared_by_threads_and_private_to_its_storage(memory_url: str) -> None:
    with Storage(memory_url) as first, Storage(memory_url) as second:
        thread = threading.Thread(target=first.save_plan, args=(make_plan("from-thread"),))
        thread.start()
        thread.join()
        assert first.load_plan("from-thread").valid
        with pytest.raises(UnknownPlan):
            second.load_plan("from-thread")


def test_a_file_database_is_shared_by_storages(sqlite_url: str) -> None:
    with Storage(sqlite_url) as first, Storage(sqlite_url) as second:
        first.save_plan(make_plan("shared"))
        assert second.load_plan("shared") == make_plan("shared")


def test_unreachable_postgres_is_a_persistence_error() -> None:
    with pytest.raises(PersistenceError) as raised:
        Storage("postgresql://postgres:secret@127.0.0.1:1/nothing?connect_timeout=2")
    message = str(raised.value)
    assert message.startswith("could not connect to postgresql://postgres:***@127.0.0.1:1/")
    assert "secret" not in message
    assert "migrate" not in message  # nothing was migrated: a connection error says so


def test_closed_storage_fails_with_persistence_error(sqlite_url: str) -> None:
    storage = Storage(sqlite_url)
    storage.save_plan(make_plan("x"))
    storage.close()
    storage.close()  # idempotent
    with pytest.raises(PersistenceError, match="closed"):
        storage.load_plan("x")
    with Storage(sqlite_url) as reopened:
        assert reopened.load_plan("x").valid


@pytest.mark.postgres
def test_a_dropped_postgres_connection_fails_once_then_reconnects(postgres_url: str) -> None:
    import psycopg2

    with Storage(postgres_url) as storage:
        storage.save_plan(make_plan("survivor"))
        backend = storage.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        admin = psycopg2.connect(postgres_url)
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", (backend,))
        finally:
            admin.close()
        with pytest.raises(PersistenceError, match="load_plan failed"):
            storage.load_plan("survivor")
        assert storage.load_plan("survivor") == make_plan("survivor")


def test_plan_ids_may_be_uuid_objects(sqlite_url: str) -> None:
    import uuid

    plan_id = uuid.uuid4()
    with Storage(sqlite_url) as storage:
        storage.save_plan(make_plan(str(plan_id)))
        assert storage.load_plan(plan_id).id == str(plan_id)  # type: ignore[arg-type]
        assert storage.delete_plans([plan_id]) == 1  # type: ignore[list-item]


def test_a_database_object_passed_in_stays_open_after_close(sqlite_url: str) -> None:
    from pydynflow.storage import open_database
    from pydynflow.storage.database import close_database

    database = open_database(sqlite_url)
    try:
        storage = Storage(database)
        storage.save_plan(make_plan("borrowed"))
        storage.close()
        assert database.execute_sql("SELECT COUNT(*) FROM dynflow_execution_plans").fetchone() == (
            1,
        )
        assert Storage(database).load_plan("borrowed").valid
    finally:
        close_database(database)


@pytest.mark.postgres
def test_envelopes_are_found_under_a_linguistic_collation(postgres_url: str) -> None:
    """A ``[plan:, plan;)`` range misses rows under ICU/en_US collations; the LIKE query does not."""
    with Storage(postgres_url) as storage:
        collation = storage.database.execute_sql(
            "SELECT collname FROM pg_collation WHERE collname IN ('en-x-icu', 'und-x-icu') "
            "ORDER BY collname LIMIT 1"
        ).fetchone()
        if collation is None:
            pytest.skip("this PostgreSQL has no ICU collation")
        with storage.transaction():
            storage.database.execute_sql(
                "ALTER TABLE dynflow_envelopes ALTER COLUMN receiver_id "
                f'TYPE VARCHAR(255) COLLATE "{collation[0]}"'
            )
        ids = {
            plan_id: storage.add_envelope(plan_id, 5, plan_id) for plan_id in ("plan1", "plan10")
        }
        assert storage.envelopes("plan1") == [(ids["plan1"], 5, "plan1")]
        assert storage.envelopes("plan10") == [(ids["plan10"], 5, "plan10")]
        assert storage.delete_plans(["plan1"]) == 0
        assert storage.envelopes("plan1") == []
        assert storage.envelopes("plan10") == [(ids["plan10"], 5, "plan10")]


def test_a_plans_events_are_found_through_an_index_on_postgres(postgres_url: str) -> None:
    """``receiver_id LIKE '<plan>:%'`` (how a plan's events are read) uses migration 7's
    index in the server's collation, whatever it is (the plain index serves only ``C``)."""
    with Storage(postgres_url) as storage:
        for n in range(50):
            storage.add_envelope(f"plan-{n}", 2, {"n": n})
        db = storage.database
        db.execute_sql("SET enable_seqscan = off")  # a tiny table: the index if usable
        plan = db.execute_sql(
            "EXPLAIN SELECT id FROM dynflow_envelopes WHERE receiver_id LIKE %s ESCAPE '!'",
            ("plan-7:%",),
        ).fetchall()
        db.execute_sql("RESET enable_seqscan")
        text = "\n".join(row[0] for row in plan)
        assert "dynflow_envelopes_receiver_id_prefix" in text, text
        assert [payload for _, _, payload in storage.envelopes("plan-7")] == [{"n": 7}]
