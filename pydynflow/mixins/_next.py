"""Hand an event on to the next ``run`` in a mixin's MRO."""

from __future__ import annotations

from typing import Any

from pydynflow.action import Action
from pydynflow.errors import DynflowError


def next_run(action: Action, mixin: type, event: Any) -> None:
    """Hand ``event`` to the next ``run`` after ``mixin`` in the MRO, or refuse it."""
    run = getattr(super(mixin, action), "run", None)
    if run is None:
        raise DynflowError(f"{action.class_name()}: unrecognized event {event!r}")
    run(event)
