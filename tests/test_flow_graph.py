"""EXEC-26/27: which steps may start next (Dynflow's FlowManager)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pydynflow import Atom, Concurrence, Sequence
from pydynflow.flow_graph import FlowGraph
from pydynflow.flows import ComposedFlow, Flow
from pydynflow.planning import plan_action
from tests.support.code_workflow import ISSUES, IncomingIssues

A, S, C = Atom, Sequence, Concurrence


def issues_flow():
    return plan_action(IncomingIssues, (ISSUES,)).run_flow


def test_exec26_next_steps():
    graph = FlowGraph(issues_flow())
    assert graph.start() == [4, 13]
    assert graph.complete(4) == [7]
    assert graph.complete(7) == [9]
    assert graph.complete(9) == []
    assert not graph.is_done()
    assert graph.complete(13) == [16]
    assert graph.complete(16) == [18]
    assert graph.complete(18) == []
    assert graph.is_done() and graph.is_complete()


def test_exec27_failed_step_blocks_only_its_sequence():
    graph = FlowGraph(issues_flow())
    assert graph.start() == [4, 13]
    graph.fail(4)
    assert not graph.is_done()
    graph.fail(13)
    assert graph.is_done() and not graph.is_complete()


def test_resume_skips_completed_steps():
    graph = FlowGraph(issues_flow())
    assert graph.start(done={4, 7, 9}) == [13]


def test_join_after_wide_concurrence_uses_a_barrier():
    flow = S([C([A(i) for i in range(1, 1001)]), C([A(2001), A(2002)])])
    graph = FlowGraph(flow)
    edges = sum(len(after) for after in graph._successors.values())
    assert edges == 1002  # 1,000 into the barrier, 2 out of it
    assert len(graph.start()) == 1000
    for step_id in range(1, 1000):
        assert graph.complete(step_id) == []
    assert graph.complete(1000) == [2001, 2002]


def test_empty_flows():
    graph = FlowGraph(C([]))
    assert graph.start() == [] and graph.is_done() and graph.is_complete()
    graph = FlowGraph(S([C([]), A(1), S([]), A(2)]))
    assert graph.start() == [1]
    assert graph.complete(1) == [2]


# -- the shortcut for flows of atoms builds exactly the general graph ----------------------


class GeneralFlowGraph(FlowGraph):
    """FlowGraph built without the shortcut for flows of atoms (the reference)."""

    def _build(self, flow: Flow) -> tuple[list[int], list[int]]:
        if isinstance(flow, Atom):
            self._atoms.append(flow.step_id)
            return [flow.step_id], [flow.step_id]
        assert isinstance(flow, ComposedFlow)
        parts = [self._build(sub) for sub in flow.flows]
        parts = [(entries, exits) for entries, exits in parts if entries]
        if not parts:
            return [], []
        if isinstance(flow, Concurrence):
            return (
                [node for entries, _ in parts for node in entries],
                [node for _, exits in parts for node in exits],
            )
        for (_, exits), (entries, _) in zip(parts, parts[1:], strict=False):
            self._connect(exits, entries)
        return parts[0][0], parts[-1][1]


def numbered_flows() -> st.SearchStrategy[Flow]:
    """Random flows whose atoms are numbered uniquely (as a plan's are)."""
    shapes = st.recursive(
        st.just("atom"),
        lambda children: st.tuples(st.sampled_from("SC"), st.lists(children, max_size=5)),
        max_leaves=20,
    )

    def build(shape: object, counter: list[int]) -> Flow:
        if shape == "atom":
            counter[0] += 1
            return Atom(counter[0])
        kind, subs = shape  # type: ignore[misc]
        return (S if kind == "S" else C)([build(sub, counter) for sub in subs])

    return shapes.map(lambda shape: build(shape, [0]))


@settings(max_examples=300, deadline=None)
@given(numbered_flows())
def test_the_atoms_shortcut_builds_the_same_graph(flow: Flow) -> None:
    ours, reference = FlowGraph(flow), GeneralFlowGraph(flow)
    assert ours._atoms == reference._atoms
    assert ours._successors == reference._successors
    assert ours._waiting == reference._waiting
    assert ours.start() == reference.start()
