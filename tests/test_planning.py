"""PLAN-* scenarios of Dynflow's execution_plan_test, on the EX-1 fixtures."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest

from pydynflow import (
    Action,
    Atom,
    Concurrence,
    InvalidTransition,
    OutputReference,
    PlanState,
    Result,
    Sequence,
    StepState,
    UnknownAction,
)
from pydynflow.action import resolve_action_class
from pydynflow.errors import IdentifierTaken, UnknownError, UnknownIdentifier
from pydynflow.flows import FLOW_REGISTRY, FlowRegistry, decode_flow, encode_flow
from pydynflow.plan import StepError, new_plan_id
from pydynflow.planning import plan_action
from pydynflow.registry import subscribed_actions
from pydynflow.states import Phase
from tests.support.code_workflow import (
    FAIL,
    ISSUES,
    Ci,
    DummyMultiSubscribe,
    DummySubscribe,
    DummyTrigger,
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


def ref(step_id: int, action_id: int, plan_id: str, *keys: str) -> OutputReference:
    return OutputReference(plan_id, step_id, action_id, keys)


@pytest.fixture
def issues_plan():
    return plan_action(IncomingIssues, (ISSUES,))


def test_plan01_single_dependencies(issues_plan):
    plan = issues_plan
    assert plan.state == PlanState.PLANNED
    assert all(s.state == "success" for s in plan.steps_of_phase(Phase.PLAN))
    assert plan.run_flow == C([S([A(4), A(7), A(9)]), S([A(13), A(16), A(18)])])
    steps = plan.steps
    assert steps[4].action_class is Triage
    assert steps[4].input == {"author": "Peter Smith", "text": "Failing test"}
    triage = steps[4].action_id
    assert steps[7].action_class is UpdateIssue
    assert steps[7].input == {
        "author": "Peter Smith",
        "text": "Failing test",
        "assignee": ref(4, triage, plan.id, "classification", "assignee"),
        "severity": ref(4, triage, plan.id, "classification", "severity"),
    }
    assert steps[9].action_class is NotifyAssignee
    assert steps[9].input == {"triage": ref(4, triage, plan.id)}
    assert steps[13].input["author"] == "John Doe"
    assert steps[16].input["assignee"] == ref(
        13, steps[13].action_id, plan.id, "classification", "assignee"
    )
    assert steps[18].input == {"triage": ref(13, steps[13].action_id, plan.id)}
    assert all(s.state == "pending" for s in plan.steps_of_phase(Phase.RUN))


def test_plan02_plan_step_tree(issues_plan):
    plan = issues_plan

    def tree(step_id: int) -> Any:
        step = plan.steps[step_id]
        return (step.action_class.__name__, [tree(child) for child in step.children])

    triage = ("Triage", [("UpdateIssue", []), ("NotifyAssignee", [])])
    assert tree(plan.root_plan_step_id) == (
        "IncomingIssues",
        [("IncomingIssue", [triage]), ("IncomingIssue", [triage])],
    )


def test_plan03_numbering_and_action_step_ids(issues_plan):
    plan = issues_plan
    assert sorted(plan.steps) == list(range(1, 21))
    action = plan.actions[plan.steps[4].action_id]
    assert (action.plan_step_id, action.run_step_id, action.finalize_step_id) == (3, 4, 5)
    assert action.action_class is Triage
    presented = Triage.from_record(action)
    assert presented.phase == "present"


def test_plan04_finalize_flow_order(issues_plan):
    plan = issues_plan
    assert plan.finalize_flow == S([A(5), A(10), A(14), A(19), A(20)])
    classes = [plan.steps[atom.step_id].action_class for atom in plan.finalize_flow.flows]
    assert classes == [Triage, NotifyAssignee, Triage, NotifyAssignee, IncomingIssues]
    assert plan.steps[20].input == {"issues": ISSUES}


def test_plan06_explicit_sequence_and_concurrence():
    plan = plan_action(FastCommit, ({"sha": "abc123"},))
    assert plan.run_flow == S([C([A(3), A(5)]), A(7)])
    assert [plan.steps[i].action_class for i in (3, 5, 7)] == [Ci, Review, Merge]
    assert plan.steps[5].input["reviewer"] == "Morfeus"
    merge_input = plan.steps[7].input
    assert merge_input["ci_result"] == ref(3, plan.steps[3].action_id, plan.id, "passed")
    assert merge_input["review_results"] == [ref(5, plan.steps[5].action_id, plan.id, "passed")]


def test_plan07_subscriptions():
    plan = plan_action(DummyTrigger, ({},))
    assert plan.run_flow == C([A(3), A(5)])
    assert plan.steps[3].action_class is DummySubscribe and plan.steps[3].input == {}
    assert plan.steps[5].action_class is DummyMultiSubscribe and plan.steps[5].input == {}
    assert plan.actions[1].run_step_id is None
    assert subscribed_actions(Triage) == [NotifyAssignee]
    assert NotifyAssignee.subscribe is Triage


def test_plan08_planning_stops_at_first_error():
    plan = plan_action(IncomingIssues, ([FAIL, *ISSUES],))
    assert len(plan.steps) == 2
    assert [s.action_class for s in plan.steps.values()] == [IncomingIssues, IncomingIssue]
    assert all(s.state == StepState.ERROR for s in plan.steps.values())
    assert plan.steps[2].error.message == "You want me to fail"
    assert plan.steps[2].error.exception_class == "RuntimeError"
    assert any("code_workflow.py" in line for line in plan.steps[2].error.backtrace)
    assert plan.state == PlanState.STOPPED and plan.result == Result.ERROR
    assert plan.ended_at is not None and plan.history[-1].name == "finish execution"


class FailingPlan(Action):
    def plan(self) -> None:
        raise RuntimeError("I failed")


def test_plan09_failure_of_the_root():
    plan = plan_action(FailingPlan)
    assert plan.state == "stopped" and plan.result == "error"
    assert plan.error.message == "I failed"


def test_plan11_custom_plan_id():
    plan_id = "60366107-9910-4815-a6c6-bc45ee2ea2b8"
    plan = plan_action(IncomingIssues, (ISSUES,), plan_id=plan_id)
    assert plan.id == plan_id
    assert all(step.execution_plan_id == plan_id for step in plan.steps.values())


@pytest.mark.parametrize(
    ("force", "expected"),
    [
        ("plan-error", Result.ERROR),
        ("run-error", Result.ERROR),
        ("run-pending", Result.PENDING),
        ("others-success-third-skipped", Result.WARNING),
    ],
)
def test_plan12_result(force, expected):
    plan = plan_action(FastCommit, ({"sha": "abc123"},))
    run_steps = [plan.steps[i] for i in plan.run_flow.all_step_ids()]
    third = run_steps[2]
    if force == "plan-error":
        plan.steps[2].state = StepState.ERROR
    elif force == "run-error":
        third.state = StepState.ERROR
    elif force == "run-pending":
        third.state = StepState.PENDING
    else:
        for step in run_steps:
            step.state = StepState.SUCCESS
        third.state = StepState.SKIPPED
    assert plan.result == expected


def test_result_all_success():
    plan = plan_action(FastCommit, ({"sha": "abc123"},))
    for step in plan.steps.values():
        step.state = StepState.SUCCESS
    assert plan.result == Result.SUCCESS


def test_plan16_missing_exception_class():
    error = StepError.from_dict(
        {
            "exception_class": "RenamedError",
            "message": "This errror is not longer here",
            "backtrace": [],
        }
    )
    assert error.exception_class == "RenamedError"
    exc = error.exception()
    assert isinstance(exc, UnknownError)
    assert exc.class_name.endswith("UnknownError[RenamedError]")
    assert str(exc).endswith("UnknownError[RenamedError]: This errror is not longer here")
    # builtins come back as themselves; nothing else is ever imported by name
    assert type(StepError("KeyError", "k").exception()) is KeyError


def test_plan17_missing_action_class():
    klass = resolve_action_class("tests.somewhere.RenamedAction")
    assert klass.__name__ == "RenamedAction"
    assert issubclass(klass, Action)
    action = klass(id=1, execution_plan_id="x", phase="run")
    with pytest.raises(UnknownAction, match="action class tests.somewhere.RenamedAction not found"):
        action.run()
    with pytest.raises(UnknownAction, match="finalize phase failed"):
        action.finalize()
    assert resolve_action_class("tests.somewhere.RenamedAction") is klass


class NotSerialisableInput(Action):
    def plan(self) -> None:
        self.plan_self({"key": {"nested": [1, object()]}})

    def run(self, event: Any = None) -> None:
        pass


def test_plan18_input_must_be_serialisable():
    plan = plan_action(NotSerialisableInput)
    assert plan.state == "stopped" and plan.result == "error"
    message = plan.error.message
    assert "NotSerialisableInput" in message and "['key']['nested'][1]" in message
    assert plan.error.exception_class == "pydynflow.errors.SerializationError"


class NonStrKey(Action):
    def run(self, event: Any = None) -> None:
        pass


def test_input_keys_must_be_str():
    plan = plan_action(NonStrKey, ({"ok": {1: "a"}},))
    assert "the key 1 is not a str" in plan.error.message


def test_plan21_flow_encoding_registry():
    registry = FlowRegistry()
    registry.register("S", Sequence)
    with pytest.raises(IdentifierTaken):
        registry.register("S", Concurrence)
    with pytest.raises(UnknownIdentifier):
        registry.encode(C([A(1)]))
    with pytest.raises(UnknownIdentifier):
        registry.decode(["X", 1])
    assert FLOW_REGISTRY.encode(S([A(1), C([A(2), A(3)])])) == ["S", 1, ["C", 2, 3]]
    flow = C([S([A(4), A(7)]), A(9)])
    assert decode_flow(encode_flow(flow)) == flow


def test_flows_compare_structurally():
    assert S([A(1), A(2)]) == S([A(1), A(2)])
    assert S([A(1), A(2)]) != C([A(1), A(2)])
    assert S([A(1), A(2)]) != S([A(2), A(1)])


def test_step_transitions_are_enforced(issues_plan):
    run_step = issues_plan.steps[4]
    with pytest.raises(InvalidTransition):
        run_step.transition(StepState.SUCCESS)  # pending -> success skips running
    run_step.transition(StepState.RUNNING)
    run_step.transition(StepState.SUSPENDED)
    finalize_step = issues_plan.steps[5]
    with pytest.raises(InvalidTransition):
        finalize_step.transition(StepState.SUSPENDED)
    with pytest.raises(InvalidTransition):
        issues_plan.transition(PlanState.PAUSED)  # planned -> paused


def test_output_reference_needs_plan_self():
    class EarlyReference(Action):
        def plan(self) -> None:
            child = self.plan_action(UpdateIssueLike, {})
            self.plan_self({"x": child.output})

    class UpdateIssueLike(Action):
        def plan(self, data: dict) -> None:
            _ = self.output  # before plan_self

        def run(self, event: Any = None) -> None:
            pass

    plan = plan_action(EarlyReference)
    assert "plan_self has to be invoked" in plan.error.message


def test_planning_methods_outside_plan():
    action = Ci(id=1, execution_plan_id="x", phase="run")
    with pytest.raises(Exception, match=r"plan_self\(\) can only be called inside plan\(\)"):
        action.plan_self({})
    with pytest.raises(TypeError, match="read-only"):
        action.input["x"] = 1


def test_default_plan_rejects_positional_non_dict():
    plan = plan_action(Ci, ("not a dict",))
    assert "the default plan() takes one dict" in plan.error.message


def test_plan_label():
    assert (
        plan_action(IncomingIssues, (ISSUES,)).label == "tests.support.code_workflow.IncomingIssues"
    )
    from tests.support.code_workflow import Dummy

    assert plan_action(Dummy).label == "dummy_action"


def test_progress_weights(issues_plan):
    assert issues_plan.progress() == 0.0
    for step in issues_plan.steps.values():
        if step.phase != Phase.PLAN:
            step.state = StepState.SUCCESS
    assert issues_plan.progress() == 1.0


def test_plan_ids_are_time_ordered_version_7_uuids() -> None:
    ids = [new_plan_id() for _ in range(1_000)]
    assert len(set(ids)) == len(ids)
    for plan_id in ids:
        parsed = uuid.UUID(plan_id)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == plan_id
    # The first 48 bits are the creation time in milliseconds: ids sort by it.
    stamps = [uuid.UUID(plan_id).int >> 80 for plan_id in ids]
    assert stamps == sorted(stamps)
    now_ms = time.time_ns() // 1_000_000
    assert now_ms - 60_000 < stamps[0] <= stamps[-1] <= now_ms
    planned = plan_action(Ci, ({"commit": "abc"},))
    assert uuid.UUID(planned.id).version == 7


def test_plan_ids_differ_between_a_forked_child_and_its_parent() -> None:
    """Plan ids draw on a pool of random bits: a forked child must not reuse the parent's."""
    new_plan_id()  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send 300 ids (more than one pool) and leave at once
        try:
            os.write(write, "\n".join(new_plan_id() for _ in range(300)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_plan_id() for _ in range(300)}
    assert len(child) == 300 and len(parent) == 300
    assert not child & parent
    # Random parts too (the time part may coincide): compare the last 62 bits.
    assert not {uuid.UUID(i).int & (1 << 62) - 1 for i in child} & {
        uuid.UUID(i).int & (1 << 62) - 1 for i in parent
    }
