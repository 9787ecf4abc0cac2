"""`Singleton`: at most one active plan of the action's class per database (Dynflow's
``Action::Singleton``).

The engine holds the lock, whatever ``plan`` the class defines: planning takes it, a run
step checks it before it runs, and the plan lets go of it when it stops or pauses for a
person. The lock itself is a coordinator record (`pydynflow.storage.singleton_lock`); this
module says which plans take which locks and when they let go, and stays free of storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydynflow.action import Action, resolve_action_class
from pydynflow.registry import class_name
from pydynflow.states import PlanState, Result

if TYPE_CHECKING:
    from pydynflow.plan import ExecutionPlan

_NONE: frozenset[str] = frozenset()
_names: set[str] = set()  # the Singleton classes defined in this process, by stored name


class Singleton(Action):
    """An action of which at most one plan is active per database.

    Planning it takes its class's lock for the plan; while another plan that is still
    active holds it, planning fails (the plan ends ``stopped`` with result ``error``) with a
    `PlanningError` saying the class "is already active" and naming the plan holding it.
    The plan keeps the lock while it is planned, running, suspended or paused by a stop or a
    crash (a restarted world goes on with it), and lets go of it in the transaction that
    stops it or pauses it for a person (an error). Before its run step runs, the plan must
    hold the lock, or take it again if no active plan does (a plan resumed after an error);
    else the step fails. A plan stopped, or never stored, holds no lock: the next one takes
    it over.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _names.add(class_name(cls))


def is_singleton(action_class: type) -> bool:
    """Return whether ``action_class`` is a `Singleton` action class (not the mixin)."""
    return (
        isinstance(action_class, type)
        and issubclass(action_class, Singleton)
        and action_class is not Singleton
    )


def singleton_classes(plan: ExecutionPlan) -> frozenset[str]:
    """Return the names of the plan's `Singleton` action classes: the locks it takes."""
    if not _names:  # no Singleton class in this process: no plan to look through
        return _NONE
    names = {record.action_class_name for record in plan.actions.values()} & _names
    return frozenset(name for name in names if is_singleton(resolve_action_class(name)))


def releases_singleton_locks(plan: ExecutionPlan) -> bool:
    """Return whether ``plan``'s state lets go of its singleton locks: ``stopped``, or
    ``paused`` for a person (an error, or too many recoveries), not by a stop or a crash."""
    if plan.state == PlanState.STOPPED:
        return True
    if plan.state != PlanState.PAUSED:
        return False
    reason = plan.pause_reason()
    if reason is None:  # paused before reasons were recorded
        return plan.result == Result.ERROR
    return reason not in ("stop", "crash")


def already_active(action_class_name: str, holder: str | None) -> str:
    """Return the message of a singleton lock held by another plan."""
    return (
        f"Action {action_class_name} is already active: execution plan {holder} holds its "
        "singleton lock"
    )
