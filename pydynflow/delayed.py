"""Delayed plans as data: their options, the record a reader sees, and how their arguments
are stored (`ArgsSerializer`, JSON only) until the plan is planned.

`World.delay` stores a plan ``scheduled`` with its root action's plan step only; the
delayed executor (`pydynflow.scheduling`) plans it with the stored arguments once it is due.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydynflow.errors import DynflowError
from pydynflow.registry import class_name
from pydynflow.serialization import normalize

__all__ = [
    "ArgsSerializer",
    "DelayOptions",
    "DelayedPlan",
    "failed_dependencies_message",
    "timeout_message",
]


@dataclasses.dataclass(frozen=True, slots=True)
class DelayOptions:
    """When a delayed plan may start: Dynflow's ``{"start_at", "start_before", "frozen"}``.

    ``start_at`` None: as soon as possible (and, for a chained plan, as soon as its
    prerequisites stopped); ``start_before`` None: no deadline; ``frozen``: it waits,
    whatever the time, until it is thawed (`World.set_delayed_frozen`).
    """

    start_at: datetime | None = None
    start_before: datetime | None = None
    frozen: bool = False

    @classmethod
    def of(cls, options: Mapping[str, Any] | DelayOptions | None) -> DelayOptions:
        """Return ``options`` (a dict with those keys, all optional) checked.

        Raises:
            ValueError: an unknown key, a time that is not an aware datetime, or a
                ``frozen`` that is not a bool.
        """
        if isinstance(options, DelayOptions):
            return options
        given = dict(options or {})
        unknown = sorted(set(given) - {"start_at", "start_before", "frozen"})
        if unknown:
            raise ValueError(
                f"unknown delay option {unknown[0]!r}: use start_at, start_before, frozen"
            )
        for key in ("start_at", "start_before"):
            value = given.get(key)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValueError(
                    f"delay option {key} must be None or an aware datetime "
                    f"(e.g. datetime.now(UTC) + timedelta(minutes=5)), got {value!r}"
                )
        frozen = given.get("frozen", False)
        if not isinstance(frozen, bool):
            raise ValueError(f"delay option frozen must be a bool, got {frozen!r}")
        return cls(given.get("start_at"), given.get("start_before"), frozen)

    def to_dict(self) -> dict[str, Any]:
        """Return the options as `World.delay` takes them (what the middleware sees)."""
        return {"start_at": self.start_at, "start_before": self.start_before, "frozen": self.frozen}


@dataclasses.dataclass(frozen=True, slots=True)
class DelayedPlan:
    """What is stored about a plan waiting to be planned (`ExecutionPlan.delayed_plan`).

    ``blocked_by``: the ids of the plans it is chained after (`World.chain`): it starts
    once they have all stopped. ``args``: its arguments as stored (`ArgsSerializer.dump`).
    """

    plan_id: str
    start_at: datetime | None
    start_before: datetime | None
    frozen: bool
    blocked_by: tuple[str, ...] = ()
    args: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)


class ArgsSerializer:
    """Store the arguments of a delayed plan as JSON, and rebuild them when it is planned.

    `Action.delay` returns one; the default stores the arguments as they are (they must be
    JSON-compatible). Subclass it and override `serialize` and `deserialize` for arguments
    JSON cannot hold (store a record's id, load the record again). When the plan is planned,
    the subclass is found by its ``"module.QualName"`` among those defined in the planning
    process (nothing is imported or unpickled by name) and made with no arguments.
    """

    def __init__(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> None:
        """Hold the arguments ``action_class.plan(*args, **kwargs)`` is to be called with."""
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})

    def serialize(self, arg: Any) -> Any:
        """Return one argument as JSON-compatible data (default: as it is)."""
        return arg

    def deserialize(self, data: Any) -> Any:
        """Return one argument rebuilt from what `serialize` returned (default: as it is)."""
        return data

    def dump(self) -> dict[str, Any]:
        """Return what is stored: this class's name and each argument serialized.

        Raises:
            SerializationError: a serialized argument is not JSON-compatible.
        """
        name = class_name(type(self))
        data = {
            "serializer": name,
            "args": [self.serialize(arg) for arg in self.args],
            "kwargs": {key: self.serialize(value) for key, value in self.kwargs.items()},
        }
        normalized: dict[str, Any] = normalize(data, owner=name, field="delayed arguments")
        return normalized

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return ``(args, kwargs)`` rebuilt from what `dump` stored, by the class that did.

        Raises:
            DynflowError: that class is not defined in this process.
        """
        name = data.get("serializer") or class_name(ArgsSerializer)
        found = next((klass for klass in _serializers() if class_name(klass) == name), None)
        if found is None:
            raise DynflowError(
                f"the arguments serializer {name} of this delayed plan is not defined in this "
                "process: import the module that defines it in the executor"
            )
        serializer = found()
        args = tuple(serializer.deserialize(arg) for arg in data.get("args") or ())
        kwargs = {key: serializer.deserialize(v) for key, v in (data.get("kwargs") or {}).items()}
        return args, kwargs


def _serializers() -> Iterator[type[ArgsSerializer]]:
    """Yield `ArgsSerializer` and every subclass of it defined so far."""
    pending: list[type[ArgsSerializer]] = [ArgsSerializer]
    while pending:
        klass = pending.pop()
        yield klass
        pending.extend(klass.__subclasses__())


def timeout_message(start_before: datetime | None) -> str:
    """Return Dynflow's error for a delayed plan not started by its ``start_before``."""
    when = start_before.isoformat() if start_before is not None else "?"
    return f"Execution plan could not be started before set time ({when})"


def failed_dependencies_message(plan_ids: Sequence[str]) -> str:
    """Return Dynflow's error for a chained plan one of whose prerequisites failed."""
    bullets = "\n".join(f"- {plan_id}" for plan_id in plan_ids)
    return (
        "Execution plan could not be started because some of its prerequisite execution "
        f"plans failed:\n{bullets}"
    )
