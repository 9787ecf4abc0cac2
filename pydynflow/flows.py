"""Run and finalize flows: `Atom`, `Sequence` and `Concurrence`, with Dynflow's resolution.

A flow is a tree whose leaves are step ids. Flows compare structurally, so
``Concurrence([Sequence([Atom(4), Atom(7)])]) == Concurrence([Sequence([Atom(4), Atom(7)])])``.
The encoding is Dynflow's: an atom is its step id, a composed flow is a list whose first item
is the identifier of its class (``"S"`` or ``"C"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Protocol

from pydynflow.errors import IdentifierTaken, UnknownIdentifier


class DependencyGraph(Protocol):
    """What flow resolution needs to know about step dependencies."""

    def required_step_ids(self, step_id: int) -> list[int]:
        """Return the step ids ``step_id`` still waits for."""

    def mark_satisfied(self, step_id: int, required_step_id: int) -> None:
        """Record that ``step_id`` is now sequenced after ``required_step_id``."""


class Flow:
    """Base of all flows."""

    def all_step_ids(self) -> list[int]:
        """Return every step id in this flow, in order."""
        raise NotImplementedError

    def includes_step(self, step_id: int) -> bool:
        """Return whether ``step_id`` is somewhere in this flow."""
        raise NotImplementedError

    def size(self) -> int:
        """Return the number of direct sub-flows (1 for an atom)."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        """Return whether the flow holds no step."""
        return self.size() == 0

    def flatten(self) -> None:
        """Merge nested flows of the same kind and unwrap single-child flows, in place."""

    def encode(self) -> Any:
        """Return the JSON-compatible encoding of this flow."""
        return FLOW_REGISTRY.encode(self)


class Atom(Flow):
    """A leaf: one step. Immutable, and interned: ``Atom(3) is Atom(3)``.

    Every plan's flows hold one atom per step; sharing them keeps finished plans from
    holding thousands of identical objects for the garbage collector to scan (a step id
    appears once in a plan's flows, so sharing never puts one object twice in a flow). The
    cache keeps one atom per step id ever used: as many as the largest plan has steps.
    """

    __slots__ = ("step_id",)
    step_id: int
    _interned: ClassVar[dict[int, Atom]] = {}

    def __new__(cls, step_id: int) -> Atom:
        atom = cls._interned.get(step_id)
        if atom is None or cls is not Atom:
            atom = super().__new__(cls)
            atom.step_id = step_id
            if cls is Atom:
                atom = cls._interned.setdefault(step_id, atom)
        return atom

    def __init__(self, step_id: int) -> None:
        pass  # set by __new__ (an interned atom is never changed)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Atom, (self.step_id,))

    def all_step_ids(self) -> list[int]:
        return [self.step_id]

    def includes_step(self, step_id: int) -> bool:
        return self.step_id == step_id

    def size(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return type(other) is Atom and other.step_id == self.step_id

    def __hash__(self) -> int:
        return hash(("Atom", self.step_id))

    def __repr__(self) -> str:
        return f"Atom({self.step_id})"


class ComposedFlow(Flow):
    """A flow made of sub-flows; subclasses say how they are ordered."""

    identifier: ClassVar[str]
    # How many leading sub-flows `flatten` has found settled: atoms, or composed flows that
    # `flatten` would not change (deeply) and that this flow's own pass leaves alone (not of
    # its kind, not of size one). Planning only appends to a flow, or pops from its end
    # (`pop`), or (`Concurrence`) regroups from some index on, which keeps the prefix before
    # it valid; so `flatten` looks at what came since, not at the whole flow again on every
    # add (which made planning quadratic in a flow's size).
    _flat_prefix = 0

    def __init__(self, flows: list[Flow] | None = None) -> None:
        self.flows: list[Flow] = list(flows) if flows else []

    def append(self, flow: Flow) -> None:
        """Add ``flow`` at the end."""
        self.flows.append(flow)

    def pop(self) -> Flow:
        """Remove and return the last sub-flow."""
        flow = self.flows.pop()
        self._flat_prefix = min(self._flat_prefix, len(self.flows))  # what follows is new
        return flow

    def all_step_ids(self) -> list[int]:
        return [step_id for flow in self.flows for step_id in flow.all_step_ids()]

    def includes_step(self, step_id: int) -> bool:
        return any(flow.includes_step(step_id) for flow in self.flows)

    def size(self) -> int:
        return len(self.flows)

    def is_empty(self) -> bool:
        return not self.flows

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.flows)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.flows == self.flows  # type: ignore[attr-defined]

    def __hash__(self) -> int:  # flows are mutable while planning; hash by identity
        return id(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.flows!r})"

    def add(self, new_flow: Flow) -> None:
        """Add ``new_flow``, which needs no other step: `add_and_resolve` with nothing to find."""
        if self._flat_prefix == len(self.flows) and type(self) in _PLAIN_COMPOSED:
            # All atoms so far (the common case while planning): an atom, or a flow of just
            # one, ends up appended as that atom whatever the kind of flow; nothing to flatten.
            if type(new_flow) is Atom:
                atom: Flow | None = new_flow
            else:
                inner = getattr(new_flow, "flows", None)
                atom = inner[0] if inner and len(inner) == 1 and type(inner[0]) is Atom else None
            if atom is not None:
                self.flows.append(atom)
                self._flat_prefix += 1
                return
        if new_flow.is_empty():
            return
        self._add_to_sequence([], new_flow)
        self.flatten()

    def add_and_resolve(self, graph: DependencyGraph, new_flow: Flow) -> None:
        """Add ``new_flow`` so that it runs after every sub-flow holding a step it needs."""
        if new_flow.is_empty():
            return
        satisfying = self._find_satisfying_sub_flows(graph, new_flow)
        self._add_to_sequence(satisfying, new_flow)
        self.flatten()

    def flatten(self) -> None:
        """Lift sub-flows of this flow's kind into it and unwrap sub-flows of one, then flatten
        every sub-flow: exactly Dynflow's ``AbstractComposed#flatten!`` (one pass; what a
        sub-flow's own flattening leaves of size one is unwrapped by the next call), minus
        the work on the settled prefix (see `_flat_prefix`), which it would not change."""
        flows = self.flows
        start = min(self._flat_prefix, len(flows))
        # Backwards, so that expanding at index i keeps earlier indices valid; each index is
        # looked at once, as in Dynflow's walk over a snapshot.
        for index in range(len(flows) - 1, start - 1, -1):
            flow = flows[index]
            if type(flow) is type(self):
                assert isinstance(flow, ComposedFlow)
                flows[index : index + 1] = flow.flows
            elif isinstance(flow, ComposedFlow) and flow.size() == 1:
                flows[index] = flow.flows[0]
        settled = start
        for index in range(start, len(flows)):
            flow = flows[index]
            flow.flatten()
            if settled == index and (
                type(flow) is Atom
                or (
                    isinstance(flow, ComposedFlow)
                    and type(flow) is not type(self)
                    and flow.size() != 1
                    and flow._flat_prefix == len(flow.flows)
                )
            ):
                settled += 1
        self._flat_prefix = settled

    def _find_satisfying_sub_flows(self, graph: DependencyGraph, new_flow: Flow) -> list[Flow]:
        satisfying: list[Flow] = []
        for step_id in new_flow.all_step_ids():
            for required in list(graph.required_step_ids(step_id)):
                # A step is in exactly one sub-flow; what a new step needs is mostly what
                # was planned just before it, at the end.
                found = next((f for f in reversed(self.flows) if f.includes_step(required)), None)
                if found is not None:
                    if not any(f is found for f in satisfying):
                        satisfying.append(found)
                    graph.mark_satisfied(step_id, required)
        return satisfying

    def _add_to_sequence(self, satisfying: list[Flow], new_flow: Flow) -> None:
        raise NotImplementedError


class Sequence(ComposedFlow):
    """Sub-flows that run one after another."""

    identifier = "S"

    def _add_to_sequence(self, satisfying: list[Flow], new_flow: Flow) -> None:
        self.flows.append(new_flow)  # already in sequence with everything before it


class Concurrence(ComposedFlow):
    """Sub-flows that may run at the same time."""

    identifier = "C"

    def _add_to_sequence(self, satisfying: list[Flow], new_flow: Flow) -> None:
        if not satisfying:
            self.flows.append(new_flow)
            return
        # Take the satisfying flows out. They are mostly at the end (what was just planned):
        # look for them from there, and rebuild only the part of the list after the first.
        taken = {id(flow) for flow in satisfying}
        flows, first, found = self.flows, len(self.flows), 0
        while found < len(taken):
            first -= 1
            if id(flows[first]) in taken:
                found += 1
        flows[first:] = [flow for flow in flows[first:] if id(flow) not in taken]
        self._flat_prefix = min(self._flat_prefix, first)  # what came before is as it was
        flows.append(Sequence([Concurrence(satisfying), new_flow]))


_PLAIN_COMPOSED = (Sequence, Concurrence)  # whose `add` the shortcut above stands for


class FlowRegistry:
    """Map composed-flow classes to the identifiers used in their encoding."""

    def __init__(self) -> None:
        self._by_identifier: dict[str, type[ComposedFlow]] = {}
        self._by_class: dict[type[ComposedFlow], str] = {}

    def register(self, identifier: str, flow_class: type[ComposedFlow]) -> None:
        """Register ``flow_class`` under ``identifier``; raise `IdentifierTaken` if used."""
        if identifier in self._by_identifier:
            raise IdentifierTaken(f"flow identifier {identifier!r} is already taken")
        self._by_identifier[identifier] = flow_class
        self._by_class[flow_class] = identifier

    def encode(self, flow: Flow) -> Any:
        """Return the compact encoding of ``flow``: an int or a nested list."""
        if type(flow) is Atom:
            return flow.step_id
        identifier = self._by_class.get(type(flow))  # type: ignore[arg-type]
        if identifier is None:
            raise UnknownIdentifier(f"no flow identifier for class {type(flow).__name__}")
        assert isinstance(flow, ComposedFlow)
        return [identifier, *(self.encode(sub) for sub in flow.flows)]

    def decode(self, data: Any) -> Flow:
        """Rebuild a flow from its encoding; raise `UnknownIdentifier` for unknown ones."""
        if isinstance(data, int) and not isinstance(data, bool):
            return Atom(data)
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise UnknownIdentifier(f"not a flow encoding: {data!r}")
        flow_class = self._by_identifier.get(data[0])
        if flow_class is None:
            raise UnknownIdentifier(f"unknown flow identifier {data[0]!r}")
        return flow_class([self.decode(sub) for sub in data[1:]])


FLOW_REGISTRY = FlowRegistry()
FLOW_REGISTRY.register(Sequence.identifier, Sequence)
FLOW_REGISTRY.register(Concurrence.identifier, Concurrence)


def encode_flow(flow: Flow) -> Any:
    """Return the encoding of ``flow`` (see `FlowRegistry.encode`)."""
    return FLOW_REGISTRY.encode(flow)


def decode_flow(data: Any) -> Flow:
    """Rebuild a flow from its encoding (see `FlowRegistry.decode`)."""
    return FLOW_REGISTRY.decode(data)
