"""Flow flattening: the planner's shortcut gives exactly Dynflow's full flatten."""

from __future__ import annotations

import copy
from typing import Any, ClassVar
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from pydynflow import Action, planning
from pydynflow.flows import Atom, ComposedFlow, Concurrence, Flow, Sequence
from pydynflow.planning import plan_action


def dynflow_flatten(flow: ComposedFlow) -> None:
    """Dynflow's AbstractComposed#flatten!, as pydynflow had it before the shortcut."""
    for index, sub in reversed(list(enumerate(flow.flows))):
        if type(sub) is type(flow):
            assert isinstance(sub, ComposedFlow)
            flow.flows[index : index + 1] = sub.flows
        elif isinstance(sub, ComposedFlow) and sub.size() == 1:
            flow.flows[index] = sub.flows[0]
    for sub in flow.flows:
        if isinstance(sub, ComposedFlow):
            dynflow_flatten(sub)


atoms = st.integers(min_value=1, max_value=50).map(Atom)


def composed(children: Any) -> Any:
    return st.builds(Sequence, st.lists(children, max_size=4)) | st.builds(
        Concurrence, st.lists(children, max_size=4)
    )


flows = st.recursive(atoms, composed, max_leaves=12)
# Shapes the shortcut is about: atoms, then an atom or a flow of one atom (or anything else).
last_added = st.one_of(
    atoms, atoms.map(lambda a: Sequence([a])), atoms.map(lambda a: Concurrence([a])), flows
)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from([Sequence, Concurrence]),
    before=st.lists(st.one_of(atoms, atoms, flows), max_size=6),
    added=last_added,
)
def test_flatten_equals_dynflows_full_flatten(
    kind: type[ComposedFlow], before: list[Flow], added: Flow
) -> None:
    ours = kind([*copy.deepcopy(before), copy.deepcopy(added)])
    reference = copy.deepcopy(ours)
    ours.flatten()
    dynflow_flatten(reference)
    assert ours == reference
    assert ours.encode() == reference.encode()


def test_flatten_shortcut_unwraps_a_single_atom_flow() -> None:
    flow = Sequence([Atom(1), Atom(2), Concurrence([Atom(3)])])
    flow.flatten()
    assert flow.flows == [Atom(1), Atom(2), Atom(3)]
    flow = Concurrence([Atom(1), Concurrence([Atom(2)])])
    flow.flatten()
    assert flow.flows == [Atom(1), Atom(2)]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([Sequence, Concurrence]), added=st.lists(last_added, max_size=8))
def test_add_equals_dynflows_add_then_full_flatten(
    kind: type[ComposedFlow], added: list[Flow]
) -> None:
    ours, reference = kind(), kind()
    for flow in added:
        ours.add(copy.deepcopy(flow))
        new = copy.deepcopy(flow)
        if not new.is_empty():  # Dynflow's add: append (nothing to resolve), then flatten!
            reference.flows.append(new)
            dynflow_flatten(reference)
        assert ours == reference


# -- whole plans: the planner's flows against Dynflow's algorithm as it is written -----------


class Node(Action):
    """Plans the program it is given: children (using earlier actions' outputs), blocks."""

    planned: ClassVar[list[Action]] = []  # the actions planned so far in the current plan

    def plan(self, program: list[Any], uses: list[float] | None = None) -> None:
        earlier = Node.planned
        refs = [earlier[int(at * len(earlier))].output["x"] for at in uses or () if earlier]
        self.plan_self({"uses": refs})
        earlier.append(self)
        for item in program:
            plan_item(self, item)

    def run(self, event: Any = None) -> None:
        self.output["x"] = 1


class Leaf(Node):
    """A node with a subscriber: planning it also plans `LeafEcho` beside it."""


class Plain(Action):
    """Action's own plan() (only plan_self): the planner's shortcut for such leaves."""

    def run(self, event: Any = None) -> None:
        self.output["x"] = 1


class LeafEcho(Action):
    """Subscribes to `Leaf` (Dynflow's plugin mechanism)."""

    subscribe = Leaf

    def run(self, event: Any = None) -> None:
        pass


def plan_item(action: Action, item: Any) -> None:
    kind, body = item[0], item[1]
    if kind == "plain":
        earlier = Node.planned
        refs = [earlier[int(at * len(earlier))].output["x"] for at in item[2] if earlier]
        Node.planned.append(action.plan_action(Plain, {"uses": refs}))
    elif kind in ("child", "leaf"):
        action.plan_action(Node if kind == "child" else Leaf, body, item[2])
    else:
        with action.sequence() if kind == "seq" else action.concurrence():
            for sub in body:
                plan_item(action, sub)


uses = st.lists(st.floats(min_value=0, max_value=0.999), max_size=2)
programs = st.recursive(
    st.just([]),
    lambda inner: st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["child", "leaf", "plain"]), inner, uses),
            st.tuples(
                st.sampled_from(["seq", "conc"]),
                st.lists(st.tuples(st.just("child"), inner, uses), max_size=3),
            ),
        ),
        max_size=3,
    ),
    max_leaves=10,
)


def dynflow_add(self: ComposedFlow, new_flow: Flow) -> None:
    if not new_flow.is_empty():
        self._add_to_sequence([], new_flow)
        dynflow_flatten(self)


def dynflow_add_and_resolve(self: ComposedFlow, graph: Any, new_flow: Flow) -> None:
    if new_flow.is_empty():
        return
    satisfying: list[Flow] = []
    for step_id in new_flow.all_step_ids():
        for required in list(graph.required_step_ids(step_id)):
            found = next((f for f in self.flows if f.includes_step(required)), None)
            if found is not None:
                if not any(f is found for f in satisfying):
                    satisfying.append(found)
                graph.mark_satisfied(step_id, required)
    self._add_to_sequence(satisfying, new_flow)
    dynflow_flatten(self)


def plan_program(program: list[Any]) -> Any:
    Node.planned = []
    plan = plan_action(Node, (program,))
    return plan.state, plan.run_flow, plan.finalize_flow


@settings(max_examples=300, deadline=None)
@given(programs)
def test_planned_flows_equal_dynflows_algorithm(program: list[Any]) -> None:
    ours = plan_program(program)
    with (
        # Every action's plan() inside a concurrence of its own, as Dynflow does it.
        patch.object(planning, "_DEFAULT_PLAN", object()),
        patch.object(ComposedFlow, "add", dynflow_add),
        patch.object(ComposedFlow, "add_and_resolve", dynflow_add_and_resolve),
        patch.object(ComposedFlow, "flatten", dynflow_flatten),
    ):
        reference = plan_program(program)
    assert ours == reference
