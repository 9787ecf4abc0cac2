"""Flow flattening: the planner's shortcut gives exactly Dynflow's full flatten."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pydynflow.flows import Atom, ComposedFlow, Concurrence, Flow, Sequence


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
