"""`RequestServer`: an executor world applying the requests other worlds stored for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydynflow.errors import DynflowError
from pydynflow.events import decode_event

if TYPE_CHECKING:
    from pydynflow.triggered import Triggered
    from pydynflow.world import World

KINDS = ("execute", "resume", "event", "skip", "cancel", "halt", "ping", "delayed")
"""What a request may ask an executor world to do."""


class RequestServer:
    """Apply one request through the world's own methods and return its reply.

    A reply is ``{"ok": value}`` or ``{"error": {"class": name, "message": text}}``; an
    ``execute`` or ``resume`` request is answered once the executor took the plan, and its
    sender is told again when the plan's execution ends (``on_plan_done``).
    """

    def __init__(self, world: World, on_plan_done: Callable[[str, dict[str, Any]], None]) -> None:
        self.world = world
        self.on_plan_done = on_plan_done

    def apply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply ``request`` and return its reply (errors become replies, never raise);
        the reply carries the request's token, by which its sender knows it."""
        token = request.get("token")
        try:
            return {"ok": self._apply(request), "token": token}
        except DynflowError as exc:
            return {"error": error_reply(exc), "token": token}
        except (KeyError, TypeError, ValueError) as exc:
            message = f"bad request: {exc!r}"
            return {"error": {"class": "DynflowError", "message": message}, "token": token}

    def _apply(self, request: dict[str, Any]) -> Any:
        kind, world = request["kind"], self.world
        if kind == "ping":
            return world.id
        if kind == "delayed":  # a plan was delayed elsewhere: its delayed executor looks now
            world._poke_delayed()
            return None
        plan_id = str(request["plan_id"])
        if kind in ("execute", "resume"):
            # "continue": a plan a stopping executor handed over (`World._hand_over_paused`),
            # taken as its start would: only with auto_execute
            mode = "continue" if request.get("mode") == "continue" else "resume"
            if mode == "continue" and not world.auto_execute:
                return None
            triggered = world._execute(plan_id, None, mode, request.get("note"), call=kind)
            self._watch(triggered, request.get("sender"), bool(request.get("quiet")))
            return None
        if kind == "event":  # not passed on again: the sender chose this world
            return world._event(
                plan_id,
                int(request["step_id"]),
                decode_event(request["payload"]),  # an engine event travels marked
                bool(request.get("optional")),
                request.get("event_id"),
                forward=False,
                note=request.get("note"),
            )
        if kind == "skip":
            world._skip(plan_id, int(request["step_id"]), request.get("note"))
            return None
        if kind == "cancel":
            force = bool(request.get("force"))
            return world._cancel(plan_id, force, request.get("note"), forward=False)
        if kind == "halt":
            world._halt(plan_id, request.get("note"), forward=False)
            return None
        raise DynflowError(f"unknown request kind {kind!r} (expected one of {', '.join(KINDS)})")

    def _watch(self, triggered: Triggered, sender: str | None, quiet: bool) -> None:
        """Tell ``sender`` when the execution ends, and why it could not run unless
        ``quiet`` (then the sender looks at the plan itself)."""
        if sender is None:
            return
        plan_id = triggered.id

        def done(future: Any) -> None:
            notice: dict[str, Any] = {"plan_done": plan_id}
            error = future.exception(0)
            if error is not None and not quiet:  # it could not run: the sender's wait raises it
                notice["error"] = error_reply(error)
            self.on_plan_done(sender, notice)

        triggered.future.add_done_callback(done)


def error_reply(error: BaseException) -> dict[str, str]:
    """Return what a reply says of ``error`` (its class name and message)."""
    name = type(error).__name__ if isinstance(error, DynflowError) else "DynflowError"
    return {"class": name, "message": str(error)}
