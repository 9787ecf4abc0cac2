"""The console's pages (GET): the login form, the plan list, a plan, a step, the worlds.

Nothing here changes state: every change is a POST (`pydynflow.web.actions`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from pydynflow.errors import DynflowError, UnknownPlan
from pydynflow.states import PlanState, Result
from pydynflow.storage.listing import LIST_ORDERS, PlanPage, PlanQuery
from pydynflow.web.console import Console, fingerprint
from pydynflow.web.filters import PAGE_SIZES, BadRequest, ListView, parse_list
from pydynflow.web.presenting import describe_plan, describe_step

__all__ = [
    "healthz",
    "list_view",
    "login_page",
    "plan_page",
    "plan_part",
    "plans_page",
    "plans_rows",
    "step_page",
    "worlds_page",
]


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def healthz(request: Request) -> Response:
    """Answer 200 while the database answers, 503 otherwise (open: no login)."""
    try:
        _console(request).storage.ping()
    except (DynflowError, RuntimeError) as exc:
        return PlainTextResponse(f"database unreachable: {exc}\n", status_code=503)
    return PlainTextResponse("ok\n", headers={"cache-control": "no-store"})


def login_page(request: Request) -> Response:
    """Show the login form (where to go next is kept, if it is a console path)."""
    return _console(request).render(
        request, "login.html", next=safe_next(request.query_params.get("next"))
    )


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path of the console, else the plan list's ``/``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(char) < 32 for char in target):
        return "/"
    return target


def list_view(request: Request, ignore: tuple[str, ...] = ()) -> ListView:
    """Return the checked plan list of the request's query string (`BadRequest` if not)."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in ignore]
    storage = _console(request).storage
    return parse_list(items, storage.root_action_classes)


def load_page(console: Console, view: ListView) -> tuple[ListView, PlanPage]:
    """Return the page of plans ``view`` asks for (the last one resolved)."""
    storage = console.storage
    page = storage.list_plans(view.query)
    if view.page is None:  # page=last: known only now
        last = max(1, -(-page.total // view.per_page))
        view = _at_page(view, last)
        page = storage.list_plans(view.query)
    return view, page


def _at_page(view: ListView, number: int) -> ListView:
    query = replace(view.query, offset=(number - 1) * view.per_page)
    return replace(view, page=number, query=query)


def _bad(request: Request, exc: BadRequest) -> HTMLResponse:
    return _console(request).render(request, "error.html", status=400, message=str(exc))


def plans_page(request: Request) -> Response:
    """Show the plan list: filters, search, sorting, paging; its rows refresh live."""
    console = _console(request)
    try:
        view = list_view(request)
    except BadRequest as exc:
        return _bad(request, exc)
    view, page = load_page(console, view)
    return console.render(request, "plans.html", **_list_context(console, view, page))


def plans_rows(request: Request) -> Response:
    """Return the plan list's rows and pager alone (what a live refresh swaps in)."""
    console = _console(request)
    try:
        view = list_view(request)
    except BadRequest as exc:
        return _bad(request, exc)
    view, page = load_page(console, view)
    return console.render(
        request, "_plan_rows.html", fragment=True, **_list_context(console, view, page)
    )


def _list_context(console: Console, view: ListView, page: PlanPage) -> dict[str, Any]:
    pages = max(1, -(-page.total // view.per_page))
    return {
        "view": view,
        "page": page,
        "pages": pages,
        "number": view.page or 1,
        "version": fingerprint(page),
        "all_states": [state.value for state in PlanState],
        "all_results": [result.value for result in Result],
        "orders": list(LIST_ORDERS),
        "page_sizes": PAGE_SIZES,
        "action_classes": console.storage.root_action_classes(),
    }


def _plan_context(console: Console, plan_id: str) -> dict[str, Any] | None:
    try:
        plan = console.world.load(plan_id)
    except UnknownPlan:
        return None
    view = describe_plan(plan, datetime.now(UTC))
    sub_plans = console.storage.list_plans(PlanQuery(caller=(plan.id, None), limit=20))
    return {
        "view": view,
        "plan": plan,
        "sub_plans": sub_plans,
        "version": fingerprint(console.storage.plan_fingerprint(plan.id)),
    }


def plan_page(request: Request) -> Response:
    """Show a plan: its flows as a graph, a timeline, its steps, history and buttons."""
    console = _console(request)
    context = _plan_context(console, request.path_params["plan_id"])
    if context is None:
        return _not_found(request, "no execution plan with this id")
    return console.render(request, "plan.html", **context)


def plan_part(request: Request) -> Response:
    """Return the live part of a plan's page (what a live refresh swaps in)."""
    console = _console(request)
    context = _plan_context(console, request.path_params["plan_id"])
    if context is None:
        return _not_found(request, "no execution plan with this id")
    return console.render(request, "_plan_live.html", fragment=True, **context)


def step_page(request: Request) -> Response:
    """Show one step: state, attempts, times, input, output, chunks, error, sub-plans, and
    the forms that act on it (skip, cancel, send an event)."""
    console = _console(request)
    plan_id = request.path_params["plan_id"]
    try:
        plan = console.world.load(plan_id)
    except UnknownPlan:
        return _not_found(request, "no execution plan with this id")
    step = describe_step(plan, request.path_params["step_id"])
    if step is None:
        return _not_found(request, "the plan has no step with this id")
    chunks: list[dict[str, Any]] = []
    if step.step.action is not None and not step.hidden:
        chunks = console.storage.output_chunks(plan.id, step.step.action_id)
    sub_plans = console.storage.list_plans(
        PlanQuery(caller=(plan.id, step.step.action_id), limit=20)
    )
    return console.render(
        request,
        "step.html",
        plan=plan,
        step=step,
        chunks=chunks,
        sub_plans=sub_plans,
        version=fingerprint(console.storage.plan_fingerprint(plan.id)),
    )


def worlds_page(request: Request) -> Response:
    """Show the worlds sharing the database: alive, last seen, queues; check, invalidate."""
    console = _console(request)
    worlds = console.world.worlds()
    return console.render(
        request,
        "worlds.html",
        worlds=worlds,
        own_id=console.world.id,
        dead=[info for info in worlds if not info.alive],
    )


def _not_found(request: Request, message: str) -> HTMLResponse:
    return _console(request).render(request, "error.html", status=404, message=message)
