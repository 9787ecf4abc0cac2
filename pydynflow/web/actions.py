"""The console's buttons (POST only; `pydynflow.web.security.Guard` has checked the session
and the CSRF token): log in and out, resume, skip, cancel, halt, send an event, check and
invalidate worlds.

Each acts through the console's world, as the CLI does: a client world reaches the executor
that owns the plan through the database. The outcome, or why the engine refused, is shown
as a notice on the page the browser is sent back to. Who asked is recorded in the plan's
history as ``web``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from pydynflow.errors import DynflowError
from pydynflow.events import Cancel
from pydynflow.web.console import Console
from pydynflow.web.pages import safe_next
from pydynflow.web.security import LoginThrottle

__all__ = [
    "OPERATOR",
    "cancel_plan",
    "cancel_step",
    "check_worlds",
    "halt_plan",
    "invalidate_world",
    "log_in",
    "log_out",
    "resume_plan",
    "send_event",
    "skip_step",
]

OPERATOR = "web"
"""Who the plan's history says asked, for a button of the console."""
_FAILURES = (DynflowError, TimeoutError, ValueError)


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _form(request: Request) -> dict[str, str]:
    form: dict[str, str] = request.scope["state"].get("form", {})
    return form


def log_in(request: Request) -> Response:
    """Start a session if the form's token is right (too many failures: wait a minute)."""
    console = _console(request)
    throttle: LoginThrottle = request.app.state.throttle
    client = request.client.host if request.client else "?"
    target = safe_next(_form(request).get("next"))
    if throttle.blocked(client):
        return console.render(
            request,
            "login.html",
            status=429,
            next=target,
            error="too many failed logins: try again in a minute",
        )
    if not console.keys.check_token(_form(request).get("token", "")):
        throttle.failed(client)
        return console.render(request, "login.html", status=401, next=target, error="wrong token")
    response = console.redirect(request, target)
    console.log_in(request, response)
    return response


def log_out(request: Request) -> Response:
    """End the session."""
    console = _console(request)
    response = console.redirect(request, "/login")
    console.log_out(request, response)
    return response


def _who(method: Any) -> dict[str, Any]:
    """Return ``by=OPERATOR`` if ``method`` records who asked (the World API gains it)."""
    return {"by": OPERATOR} if "by" in inspect.signature(method).parameters else {}


def _act(request: Request, back: str, done: str, call: Any, *args: Any, **kwargs: Any) -> Response:
    console = _console(request)
    try:
        result = call(*args, **kwargs)
    except _FAILURES as exc:
        return console.redirect(request, back, str(exc) or type(exc).__name__, "error")
    return console.redirect(request, back, done.format(result=result))


def resume_plan(request: Request) -> Response:
    """Resume a paused plan."""
    plan_id = request.path_params["plan_id"]
    world = _console(request).world
    return _act(request, f"/plans/{plan_id}", "resumed", world.resume, plan_id, by=OPERATOR)


def cancel_plan(request: Request) -> Response:
    """Ask every cancellable running or suspended step of a plan to cancel."""
    plan_id = request.path_params["plan_id"]
    world = _console(request).world
    force = _form(request).get("force") == "1"
    return _act(
        request,
        f"/plans/{plan_id}",
        "cancel sent to {result} step(s)",
        world.cancel,
        plan_id,
        force,
        by=OPERATOR,
    )


def halt_plan(request: Request) -> Response:
    """Halt a plan: nothing new starts, and it ends stopped."""
    plan_id = request.path_params["plan_id"]
    world = _console(request).world
    return _act(request, f"/plans/{plan_id}", "halted", world.halt, plan_id, by=OPERATOR)


def skip_step(request: Request) -> Response:
    """Skip a failed run step of a paused plan (resume it afterwards)."""
    plan_id, step_id = request.path_params["plan_id"], request.path_params["step_id"]
    world = _console(request).world
    return _act(
        request,
        f"/plans/{plan_id}",
        f"skipped step {step_id}: resume the plan to go on",
        world.skip,
        plan_id,
        step_id,
        by=OPERATOR,
    )


def cancel_step(request: Request) -> Response:
    """Send `Cancel` to one running or suspended step."""
    plan_id, step_id = request.path_params["plan_id"], request.path_params["step_id"]
    world = _console(request).world
    return _act(
        request,
        f"/plans/{plan_id}/steps/{step_id}",
        f"cancel sent to step {step_id}",
        world.event,
        plan_id,
        step_id,
        Cancel(),
        **_who(world.event),
    )


def send_event(request: Request) -> Response:
    """Send the form's JSON payload to a step (with the form's event id, if any)."""
    console = _console(request)
    plan_id, step_id = request.path_params["plan_id"], request.path_params["step_id"]
    back = f"/plans/{plan_id}/steps/{step_id}"
    form = _form(request)
    try:
        payload = json.loads(form.get("payload", ""))
    except ValueError as exc:
        return console.redirect(request, back, f"the event is not JSON: {exc}", "error")
    event_id = form.get("event_id", "").strip() or None
    options: dict[str, Any] = {"event_id": event_id} if event_id else {}
    options.update(_who(console.world.event))
    return _act(
        request,
        back,
        f"event delivered to step {step_id}",
        console.world.event,
        plan_id,
        step_id,
        payload,
        **options,
    )


def check_worlds(request: Request) -> Response:
    """List the dead worlds; with ``invalidate=1``, invalidate them."""
    console = _console(request)
    world = console.world
    dead = [info for info in world.worlds() if not info.alive]
    if not dead:
        return console.redirect(request, "/worlds", "every world is alive")
    if _form(request).get("invalidate") != "1":
        names = ", ".join(f"{info.name} ({info.id})" for info in dead)
        return console.redirect(request, "/worlds", f"{len(dead)} dead: {names}", "error")
    for info in dead:
        world.invalidate(info.id)
    return console.redirect(request, "/worlds", f"invalidated {len(dead)} dead world(s)")


def invalidate_world(request: Request) -> Response:
    """Invalidate one dead world (a live one is refused)."""
    console = _console(request)
    world_id = request.path_params["world_id"]
    found = {info.id: info for info in console.world.worlds()}
    info = found.get(world_id)
    if info is None:
        return console.redirect(request, "/worlds", f"no world {world_id} is registered", "error")
    if info.alive:
        return console.redirect(
            request, "/worlds", f"{info.name} is alive: only a dead world is invalidated", "error"
        )
    return _act(request, "/worlds", f"invalidated {info.name}", console.world.invalidate, world_id)
