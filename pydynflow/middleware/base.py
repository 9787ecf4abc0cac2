"""`Middleware`, the base of every middleware, and `Transaction`, the phases' transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydynflow.errors import DynflowError
from pydynflow.states import Result

if TYPE_CHECKING:
    from pydynflow.action import Action
    from pydynflow.plan import ExecutionPlan

HOOKS = ("plan", "run", "finalize", "plan_phase", "finalize_phase", "delay", "present")


class Middleware:
    """Wrap phases of actions: code before ``call_next(...)`` runs before the inner layers,
    code after it after them, and not calling it skips them.

    Define any of the hook methods; the ones a class leaves out cost nothing. Each gets
    ``call_next``, which calls the next layer (at the bottom, the action's own method) and
    returns what it returned. One instance is made per call; ``self.action`` is the action.
    An ``async def run`` action is wrapped by awaiting: an ``async def run`` hook awaits
    ``call_next(event)``, and a plain ``def run`` hook there only sees ``call_next`` return an
    awaitable, which it must return.
    """

    __slots__ = ("_action",)

    def __init__(self, action: Action | None = None) -> None:
        """Wrap ``action`` (None for the hooks of a whole phase)."""
        self._action = action

    @property
    def action(self) -> Action:
        """Return the action whose phase this layer wraps.

        Raises:
            DynflowError: in ``plan_phase`` and ``finalize_phase``, which wrap a whole phase
                (use their ``plan`` argument).
        """
        if self._action is None:
            raise DynflowError(
                f"{type(self).__name__}: self.action is not available in a hook of a whole "
                "phase (plan_phase, finalize_phase); use its plan argument"
            )
        return self._action

    def plan(self, call_next: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Wrap ``action.plan(*args, **kwargs)``."""
        return call_next(*args, **kwargs)

    def run(self, call_next: Callable[[Any], Any], event: Any) -> Any:
        """Wrap one call of the run phase (``event`` is None on the first call)."""
        return call_next(event)

    def finalize(self, call_next: Callable[[], Any]) -> Any:
        """Wrap ``action.finalize()``."""
        return call_next()

    def plan_phase(self, call_next: Callable[[ExecutionPlan], Any], plan: ExecutionPlan) -> Any:
        """Wrap the planning of a whole plan (the hook of its root action's class)."""
        return call_next(plan)

    def finalize_phase(self, call_next: Callable[[ExecutionPlan], Any], plan: ExecutionPlan) -> Any:
        """Wrap a plan's whole finalize phase (the hook of its first finalize step's class).

        ``plan.steps`` holds the finalize steps as they run, so after ``call_next``,
        ``plan.result == "error"`` says that one failed.
        """
        return call_next(plan)

    def delay(self, call_next: Callable[..., Any], options: Any, *args: Any, **kwargs: Any) -> Any:
        """Wrap the delaying of a plan (``options`` says when it starts)."""
        return call_next(options, *args, **kwargs)

    def present(self, call_next: Callable[[], Any]) -> Any:
        """Wrap the presenting of a stored action to a reader: change ``self.action.input``
        and ``output`` here to change what readers see (what is stored stays)."""
        return call_next()


class _Rollback(Exception):  # noqa: N818 - control flow inside `Transaction`
    """Leave the transaction's block so that its context manager rolls it back."""


class Transaction(Middleware):
    """Run the plan phase and the finalize phase each in one transaction of the application,
    rolled back when the phase failed.

    Every world uses it, outermost. The stock one opens no transaction and adds no layer
    (pydynflow commits its own records either way): to make the user code of a phase share
    your database's transaction, subclass it, return that transaction from `transaction`,
    and use the subclass with ``replace=Transaction``.
    """

    __slots__ = ()
    _inert: ClassVar[bool] = True  # the stock class only: a subclass wraps its hooks

    def transaction(self, plan: ExecutionPlan) -> contextlib.AbstractContextManager[Any]:
        """Return the transaction as a context manager that rolls back when an exception
        leaves it (as ``sqlite3`` connections, SQLAlchemy's ``Session.begin()`` and Django's
        ``atomic()`` do); the stock one does nothing."""
        return contextlib.nullcontext()

    def plan_phase(self, call_next: Callable[[ExecutionPlan], Any], plan: ExecutionPlan) -> Any:
        """Plan inside `transaction`; roll it back if planning failed."""
        return self._within(call_next, plan)

    def finalize_phase(self, call_next: Callable[[ExecutionPlan], Any], plan: ExecutionPlan) -> Any:
        """Finalize inside `transaction`; roll it back if a finalize step failed."""
        return self._within(call_next, plan)

    def _within(self, call_next: Callable[[ExecutionPlan], Any], plan: ExecutionPlan) -> Any:
        result = None
        try:
            with self.transaction(plan):
                result = call_next(plan)
                if plan.result == Result.ERROR:
                    raise _Rollback
        except _Rollback:
            pass
        return result
