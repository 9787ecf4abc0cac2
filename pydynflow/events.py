"""Events the engine itself delivers to ``run(event)``."""

from __future__ import annotations

from typing import Any


class EngineEvent:
    """Base of the engine's events; compare by type: ``isinstance(event, Skip)``."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-compatible form used when the event is stored."""
        return {"__engine_event__": type(self).__name__}


class Skip(EngineEvent):
    """Sent to a failed step being skipped, if its ``run`` accepts an event.

    Not the rescue policy: ``from pydynflow.events import Skip`` is this event,
    ``from pydynflow import Skip`` the policy (`pydynflow.rescue.Skip`).
    """


class Cancel(EngineEvent):
    """Ask a `Cancellable` step to cancel what it started."""


class Abort(EngineEvent):
    """Ask a `Cancellable` step to stop at once (``cancel(force=True)``)."""


class Timeout(EngineEvent):
    """Delivered when a timeout armed with ``schedule_timeout`` expires."""


class Poll(EngineEvent):
    """Wake a `Polling` step to poll its external task again."""


class Ping(EngineEvent):
    """Wake a `WithSubPlans` parent to count its sub-plans again (sent when one of them
    stops or pauses, and by the parent to itself to create the next batch)."""


_ENGINE_EVENTS = {cls.__name__: cls for cls in (Skip, Cancel, Abort, Timeout, Poll, Ping)}
_MARKER = "__engine_event__"


def encode_event(payload: Any) -> Any:
    """Return ``payload`` in a storable form (engine events become a marked dict)."""
    if isinstance(payload, EngineEvent):
        return payload.to_dict()
    return payload


def decode_event(data: Any) -> Any:
    """Invert `encode_event`."""
    if isinstance(data, dict) and len(data) == 1 and _MARKER in data:
        event_class = _ENGINE_EVENTS.get(data[_MARKER])
        if event_class is not None:
            return event_class()
    return data
