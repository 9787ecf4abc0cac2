"""Which run steps may start now: a run flow turned into a dependency graph.

A `Sequence` makes every step that ends its previous sub-flow a predecessor of every step
that starts the next one; a `Concurrence` adds no edge. Between two sub-flows that both have
many ends and starts, a barrier node keeps the graph linear in size: ``n`` ends followed by
``m`` starts cost ``n + m`` edges, not ``n * m``. A step is ready when all its predecessors
are done; a failed step never completes, which stops the rest of its sequence while sibling
branches go on (Dynflow's FlowManager).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydynflow.flows import Atom, ComposedFlow, Concurrence, Flow, Sequence
from pydynflow.step_ids import StepIds

_NO_STEPS: frozenset[int] = frozenset()
_NO_SUCCESSORS: tuple[int, ...] = ()


class FlowGraph:
    """Readiness bookkeeping for one run flow.

    Only nodes with edges have entries in ``_successors`` / ``_waiting`` (a missing entry
    means none): one FlowGraph lives per running plan, and most plans are small.
    """

    __slots__ = (
        "_atoms",
        "_completed",
        "_failed",
        "_next_barrier",
        "_started",
        "_successors",
        "_waiting",
    )

    def __init__(self, flow: Flow) -> None:
        self._successors: dict[int, list[int]] = {}
        self._waiting: dict[int, int] = {}  # node -> predecessors not yet complete
        self._atoms: list[int] = []
        self._next_barrier = -1
        self._completed = StepIds()  # steps only: a barrier passes and is never asked about
        self._started = StepIds()
        self._failed: frozenset[int] = _NO_STEPS  # rare: replaced, not grown in place
        self._build(flow)

    # -- building ------------------------------------------------------------------------

    def _edge(self, before: int, after: int) -> None:
        self._successors.setdefault(before, []).append(after)
        self._waiting[after] = self._waiting.get(after, 0) + 1

    def _build(self, flow: Flow) -> tuple[list[int], list[int]]:
        """Add ``flow``; return its entry and exit nodes."""
        if isinstance(flow, Atom):
            self._atoms.append(flow.step_id)
            return [flow.step_id], [flow.step_id]
        assert isinstance(flow, ComposedFlow)
        flows = flow.flows
        if flows and all(type(sub) is Atom for sub in flows):
            return self._build_atoms(flow, [sub.step_id for sub in flows])  # type: ignore[attr-defined]
        parts = [self._build(sub) for sub in flows]
        parts = [(entries, exits) for entries, exits in parts if entries]
        if not parts:
            return [], []
        if isinstance(flow, Concurrence):
            return (
                [node for entries, _ in parts for node in entries],
                [node for _, exits in parts for node in exits],
            )
        assert isinstance(flow, Sequence)
        for (_, exits), (entries, _) in zip(parts, parts[1:], strict=False):
            self._connect(exits, entries)
        return parts[0][0], parts[-1][1]

    def _build_atoms(self, flow: ComposedFlow, ids: list[int]) -> tuple[list[int], list[int]]:
        """`_build` for a flow of atoms only (most flows): the same nodes and edges, without
        a recursion and two lists per atom."""
        self._atoms.extend(ids)
        if isinstance(flow, Concurrence):
            return ids, list(ids)
        assert isinstance(flow, Sequence)
        successors, waiting = self._successors, self._waiting
        for before, after in zip(ids, ids[1:], strict=False):
            successors.setdefault(before, []).append(after)
            waiting[after] = waiting.get(after, 0) + 1
        return [ids[0]], [ids[-1]]

    def _connect(self, exits: list[int], entries: list[int]) -> None:
        if len(exits) == 1 or len(entries) == 1:
            for before in exits:
                for after in entries:
                    self._edge(before, after)
            return
        barrier = self._next_barrier
        self._next_barrier -= 1
        for before in exits:
            self._edge(before, barrier)
        for after in entries:
            self._edge(barrier, after)

    # -- running -------------------------------------------------------------------------

    def start(self, done: Iterable[int] = ()) -> list[int]:
        """Mark the steps in ``done`` complete and return the steps ready to start."""
        done = set(done)
        for step_id in self._atoms:
            if step_id in done:
                self._complete(step_id)
        return self._take_ready(self._atoms)

    def complete(self, step_id: int) -> list[int]:
        """Record that ``step_id`` finished (success or skipped); return newly ready steps."""
        self._started.discard(step_id)
        return self._take_ready(self._complete(step_id))

    def fail(self, step_id: int) -> None:
        """Record that ``step_id`` failed: whatever comes after it in sequence will wait."""
        self._started.discard(step_id)
        self._failed |= {step_id}

    def is_done(self) -> bool:
        """Return whether nothing is running and nothing can start.

        Every step that becomes ready is handed out (and counted as started) at once, so
        "nothing started and unfinished" means nothing more can happen.
        """
        return not self._started

    def is_complete(self) -> bool:
        """Return whether every step of the flow completed."""
        return all(step_id in self._completed for step_id in self._atoms)

    def _complete(self, node: int) -> list[int]:
        """Complete ``node``; return the atoms whose last predecessor it was."""
        if node in self._completed:
            return []
        self._completed.add(node)
        unblocked: list[int] = []
        stack = [node]
        while stack:
            for after in self._successors.get(stack.pop(), _NO_SUCCESSORS):
                self._waiting[after] -= 1
                if self._waiting[after] == 0:
                    if after < 0:  # a barrier passes through at once
                        stack.append(after)
                    else:
                        unblocked.append(after)
        return unblocked

    def _take_ready(self, candidates: Iterable[int]) -> list[int]:
        ready = [
            step_id
            for step_id in candidates
            if self._waiting.get(step_id, 0) == 0
            and step_id not in self._completed
            and step_id not in self._started
            and step_id not in self._failed
        ]
        self._started.update(ready)
        return ready
