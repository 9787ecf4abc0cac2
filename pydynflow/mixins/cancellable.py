"""`Cancellable`: an action whose running or suspended step can be cancelled (Dynflow's
``Action::Cancellable``): ``world.cancel`` sends it `Cancel` or `Abort`."""

from __future__ import annotations

from typing import Any

from pydynflow.action import Action
from pydynflow.events import Abort, Cancel
from pydynflow.mixins._next import next_run


class Cancellable(Action):
    """An action whose running or suspended step can be cancelled.

    ``world.cancel(plan_id)`` sends `Cancel` (``force=True``: `Abort`); the step's ``run``
    is not called with them: `cancel` (or `abort`) is.
    """

    def run(self, event: Any = None) -> None:
        """Dispatch `Cancel` and `Abort`; other events go to the next ``run`` in the MRO."""
        if isinstance(event, Cancel):
            self.cancel()
        elif isinstance(event, Abort):
            self.abort()
        else:
            next_run(self, Cancellable, event)

    def cancel(self) -> None:
        """Cancel what the step started; by default it cannot be."""
        raise NotImplementedError(f"{self.class_name()} does not implement cancel()")

    def abort(self) -> None:
        """Stop at once; by default the same as `cancel`."""
        self.cancel()


def is_cancellable(action_class: type) -> bool:
    """Return whether steps of ``action_class`` accept `Cancel` and `Abort`."""
    return isinstance(action_class, type) and issubclass(action_class, Cancellable)
