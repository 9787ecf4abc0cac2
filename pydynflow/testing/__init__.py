"""Test helpers shipped with the package, after Dynflow's ``Dynflow::Testing``.

One action in isolation (`pydynflow.testing.isolation`): `create_and_plan_action` plans it
alone (the actions it plans are recorded in ``action.planned_actions``, not planned);
`run_action` and `finalize_action` call its phases in the calling thread, with no world,
thread or database; a run that suspends waits on virtual time: `progress_action_time` and
`process_action_events` deliver what it planned. Assertions about what was planned are in
`pydynflow.testing.assertions`.

Whole plans (`pydynflow.testing.in_thread`): `InThreadWorld` executes them step by step in
the calling thread, on a `ManagedClock`.
"""

from __future__ import annotations

from pydynflow.testing.assertions import (
    assert_action_planned,
    assert_action_planned_matching,
    assert_action_planned_with,
    assert_finalize_phase,
    assert_run_phase,
    refute_action_planned,
    refute_finalize_phase,
    refute_run_phase,
)
from pydynflow.testing.clock import ManagedClock
from pydynflow.testing.in_thread import InThreadTriggered, InThreadWorld
from pydynflow.testing.isolation import (
    DummyWorld,
    create_and_plan_action,
    finalize_action,
    process_action_events,
    progress_action_time,
    run_action,
)

__all__ = [
    "DummyWorld",
    "InThreadTriggered",
    "InThreadWorld",
    "ManagedClock",
    "assert_action_planned",
    "assert_action_planned_matching",
    "assert_action_planned_with",
    "assert_finalize_phase",
    "assert_run_phase",
    "create_and_plan_action",
    "finalize_action",
    "process_action_events",
    "progress_action_time",
    "refute_action_planned",
    "refute_finalize_phase",
    "refute_run_phase",
    "run_action",
]
