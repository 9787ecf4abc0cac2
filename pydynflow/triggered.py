"""`Triggered`: what `World.trigger`, `World.execute` and `World.resume` return."""

from __future__ import annotations

from collections.abc import Callable

from pydynflow.plan import ExecutionPlan, StepError
from pydynflow.promise import Promise


class Triggered:
    """A plan handed to the executor: its ``id``, whether it was ``planned``, its ``error``.

    `wait` blocks until the execution ends (the plan ``paused`` or ``stopped``) and returns
    the plan as it ended (through ``present``, the world's presentation of a plan to a
    reader, if given).
    """

    def __init__(
        self,
        plan_id: str,
        future: Promise[ExecutionPlan] | Callable[[], Promise[ExecutionPlan]],
        *,
        planned: bool = True,
        error: StepError | None = None,
        present: Callable[[ExecutionPlan], ExecutionPlan] | None = None,
    ) -> None:
        """``future``: the promise of the ended plan, or a function that makes it, called
        the first time someone asks (a wait that costs something only if it is used)."""
        self.id = plan_id
        self.planned = planned
        self.error = error
        self._future = future
        self._present = present
        self._presented: tuple[ExecutionPlan, ExecutionPlan] | None = None

    @property
    def future(self) -> Promise[ExecutionPlan]:
        """The promise resolved with the plan once its execution ended."""
        future = self._future
        if not isinstance(future, Promise):
            future = self._future = future()
        return future

    def wait(self, timeout: float | None = None) -> ExecutionPlan:
        """Return the plan once its execution ended; raise `TimeoutError` after ``timeout``.

        Raises:
            TimeoutError: the execution did not end in time.
            DynflowError: the plan could not be executed (already running, stopped...).
        """
        try:
            plan = self.future.result(timeout)
        except TimeoutError:
            if self.future.done():
                raise  # the execution itself failed with a TimeoutError
            raise TimeoutError(
                f"execution plan {self.id} did not finish within {timeout} s"
            ) from None
        if self._present is None:
            return plan
        presented = self._presented
        if presented is None or presented[0] is not plan:  # once: every wait returns it
            presented = self._presented = (plan, self._present(plan))
        return presented[1]

    def done(self) -> bool:
        """Return whether the execution ended."""
        return self.future.done()

    def __repr__(self) -> str:
        kind = "Triggered" if self.planned else "PlanningFailed"
        return f"<{kind} {self.id}>"
