"""Output references: placeholders for another action's output, resolved before a step runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydynflow.errors import DataConsistencyError


class OutputReference:
    """Point at ``output[subkeys...]`` of the action whose run step is ``step_id``.

    Reading ``planned.output`` during planning returns one; indexing it narrows it
    (``planned.output["a"]["b"]``). An action whose input holds a reference runs after the
    referenced step, and the reference is replaced by the value just before the step runs.
    """

    __slots__ = ("action_id", "execution_plan_id", "step_id", "subkeys")

    def __init__(
        self, execution_plan_id: str, step_id: int, action_id: int, subkeys: tuple[str, ...] = ()
    ) -> None:
        self.execution_plan_id = execution_plan_id
        self.step_id = step_id
        self.action_id = action_id
        self.subkeys = tuple(subkeys)

    def __getitem__(self, key: str) -> OutputReference:
        return OutputReference(
            self.execution_plan_id, self.step_id, self.action_id, (*self.subkeys, key)
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputReference) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.execution_plan_id, self.step_id, self.action_id, self.subkeys))

    def __repr__(self) -> str:
        keys = "".join(f"[{key!r}]" for key in self.subkeys)
        return f"Ref(step {self.step_id}){keys}"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-compatible form stored inside inputs."""
        return {
            "execution_plan_id": self.execution_plan_id,
            "step_id": self.step_id,
            "action_id": self.action_id,
            "subkeys": list(self.subkeys),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputReference:
        """Rebuild a reference from `to_dict` output."""
        return cls(
            data["execution_plan_id"], data["step_id"], data["action_id"], tuple(data["subkeys"])
        )

    def dereference(self, output_of: Callable[[int], dict[str, Any]]) -> Any:
        """Return the referenced value, given a function mapping an action id to its output."""
        value: Any = output_of(self.action_id)
        for key in self.subkeys:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                raise DataConsistencyError(
                    f"output reference {self!r}: key {key!r} is missing from the output "
                    f"of action {self.action_id}"
                ) from None
        return value


def iter_references(value: Any) -> Iterator[OutputReference]:
    """Yield every `OutputReference` nested in dicts and lists of ``value``."""
    if isinstance(value, OutputReference):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_references(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_references(item)


def has_references(value: Any) -> bool:
    """Return whether ``value`` holds an `OutputReference` anywhere in its dicts and lists.

    `iter_references` without its generators: asked of every step's input before it runs.
    """
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return isinstance(value, OutputReference)
    for item in value:  # a loop, not any(genexpr): most inputs hold only plain values
        if type(item) not in _LEAF and not isinstance(item, _LEAF) and has_references(item):
            return True
    return False


_LEAF = (str, int, float, bool, type(None))  # what JSON-shaped data holds besides containers


def resolve_references(value: Any, output_of: Callable[[int], dict[str, Any]]) -> Any:
    """Return a copy of ``value`` with every reference replaced by what it points at."""
    if isinstance(value, OutputReference):
        return value.dereference(output_of)
    if isinstance(value, dict):
        return {key: resolve_references(item, output_of) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_references(item, output_of) for item in value]
    return value
