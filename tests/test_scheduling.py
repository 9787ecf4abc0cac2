"""EXEC-26/27: which steps may start next (Dynflow's FlowManager)."""

from pydynflow import Atom, Concurrence, Sequence
from pydynflow.planning import plan_action
from pydynflow.scheduling import FlowGraph
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
