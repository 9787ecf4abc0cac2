"""Assertions about an action planned by `create_and_plan_action` (Dynflow's test helpers).

Each raises `AssertionError` with a message naming what was expected and what was found,
so they read well under pytest as under ``unittest``. They raise `TypeError` when given an
action that was not planned by `create_and_plan_action`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydynflow.action import PLAN, Action

__all__ = [
    "assert_action_planned",
    "assert_action_planned_matching",
    "assert_action_planned_with",
    "assert_finalize_phase",
    "assert_run_phase",
    "refute_action_planned",
    "refute_finalize_phase",
    "refute_run_phase",
]

Planned = tuple[type[Action], tuple[Any, ...], dict[str, Any]]


def assert_action_planned(action: Action, action_class: type[Action]) -> list[Planned]:
    """Assert that ``action`` planned an ``action_class`` (or a subclass of it).

    Returns the matching ``(class, args, kwargs)`` entries of ``action.planned_actions``.
    """
    found = _planned_of(action, action_class)
    if not found:
        raise AssertionError(
            f"{_name(action_class)} was not planned by {action.class_name()}; "
            f"planned: {_listing(action)}"
        )
    return found


def refute_action_planned(action: Action, action_class: type[Action]) -> None:
    """Assert that ``action`` planned no ``action_class`` (nor a subclass of it)."""
    found = _planned_of(action, action_class)
    if found:
        calls = ", ".join(_call(entry) for entry in found)
        raise AssertionError(
            f"{_name(action_class)} was planned by {action.class_name()}, "
            f"{len(found)} time(s): {calls}"
        )


def assert_action_planned_with(
    action: Action, action_class: type[Action], *args: Any, **kwargs: Any
) -> list[Planned]:
    """Assert that ``action`` called ``plan_action(action_class, *args, **kwargs)``.

    Arguments compare with ``==``, positional and keyword ones separately (as they were
    passed). Returns the matching entries of ``action.planned_actions``.
    """
    found = _planned_of(action, action_class)
    matching = [entry for entry in found if entry[1] == args and entry[2] == kwargs]
    if not matching:
        expected = _call((action_class, args, kwargs))
        seen = ", ".join(_call(entry) for entry in found) or "none"
        raise AssertionError(
            f"{action.class_name()} did not plan {expected}; "
            f"{_name(action_class)} was planned with: {seen}"
        )
    return matching


def assert_action_planned_matching(
    action: Action, action_class: type[Action], predicate: Callable[..., Any]
) -> list[Planned]:
    """Assert that ``action`` planned an ``action_class`` whose arguments ``predicate`` accepts.

    ``predicate(*args, **kwargs)`` is called with the arguments of each such
    ``plan_action`` call (the block form of Dynflow's ``assert_action_planned_with``).
    Returns the entries it accepted.
    """
    found = _planned_of(action, action_class)
    matching = [entry for entry in found if predicate(*entry[1], **entry[2])]
    if not matching:
        seen = ", ".join(_call(entry) for entry in found) or "none"
        raise AssertionError(
            f"no {_name(action_class)} planned by {action.class_name()} matches "
            f"{getattr(predicate, '__name__', predicate)!s}; planned with: {seen}"
        )
    return matching


def assert_run_phase(action: Action, input: dict[str, Any] | None = None) -> None:
    """Assert that ``action`` was planned with a run step; with ``input``, that its input
    equals it."""
    _require_planned(action)
    if action.run_step_id is None:
        raise AssertionError(f"{action.class_name()} has no run phase (was plan_self called?)")
    if input is not None and dict(action.input) != input:
        raise AssertionError(
            f"{action.class_name()} input {dict(action.input)!r} != expected {input!r}"
        )


def refute_run_phase(action: Action) -> None:
    """Assert that ``action`` was planned without a run step."""
    _require_planned(action)
    if action.run_step_id is not None:
        raise AssertionError(f"{action.class_name()} has a run phase (step {action.run_step_id})")


def assert_finalize_phase(action: Action) -> None:
    """Assert that ``action`` was planned with a finalize step."""
    _require_planned(action)
    if action.finalize_step_id is None:
        raise AssertionError(f"{action.class_name()} has no finalize phase (was plan_self called?)")


def refute_finalize_phase(action: Action) -> None:
    """Assert that ``action`` was planned without a finalize step."""
    _require_planned(action)
    if action.finalize_step_id is not None:
        raise AssertionError(
            f"{action.class_name()} has a finalize phase (step {action.finalize_step_id})"
        )


# -- internals ----------------------------------------------------------------------------


def _require_planned(action: Action) -> list[Planned]:
    planned = getattr(action, "planned_actions", None)
    if planned is None or not isinstance(action, Action) or action.phase != PLAN:
        raise TypeError(
            f"expected an action in the plan phase returned by create_and_plan_action, "
            f"got {action!r}"
        )
    return planned  # type: ignore[no-any-return]


def _planned_of(action: Action, action_class: type[Action]) -> list[Planned]:
    return [
        entry
        for entry in _require_planned(action)
        if isinstance(entry[0], type) and issubclass(entry[0], action_class)
    ]


def _name(action_class: type) -> str:
    return getattr(action_class, "__qualname__", repr(action_class))


def _call(entry: Planned) -> str:
    action_class, args, kwargs = entry
    arguments = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{_name(action_class)}({', '.join(arguments)})"


def _listing(action: Action) -> str:
    return ", ".join(_name(entry[0]) for entry in _require_planned(action)) or "nothing"
