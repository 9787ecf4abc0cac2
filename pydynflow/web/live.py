"""Live views: server-sent events that tell a page its content changed.

A page carries the version of what it shows (a hash); its script opens an ``EventSource`` on
the matching stream, which looks at the database every ``live_interval`` seconds and sends
``changed`` once the version differs, then the script fetches the page's live part and swaps
it in (no full reload). A stream ends after `STREAM_SECONDS` (the browser reconnects), so
that a console behind a proxy never holds a connection for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from pydynflow.errors import DynflowError
from pydynflow.web.console import Console, fingerprint
from pydynflow.web.filters import BadRequest
from pydynflow.web.pages import list_view, load_page

__all__ = ["STREAM_SECONDS", "plan_stream", "plans_stream"]

STREAM_SECONDS = 300.0
KEEPALIVE_SECONDS = 15.0


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def plans_stream(request: Request) -> Response:
    """Stream ``changed`` when the plan list's page (same query string) changes."""
    console = _console(request)
    try:
        view = list_view(request, ignore=("since",))
    except BadRequest as exc:
        return PlainTextResponse(f"{exc}\n", status_code=400)

    def version() -> str:
        return fingerprint(load_page(console, view)[1])

    return _stream(request, console, version)


def plan_stream(request: Request) -> Response:
    """Stream ``changed`` when a plan's page changes (its state, steps, progress, chunks)."""
    console = _console(request)
    plan_id = request.path_params["plan_id"]

    def version() -> str:
        return fingerprint(console.storage.plan_fingerprint(plan_id))

    return _stream(request, console, version)


def _stream(request: Request, console: Console, version: Callable[[], str]) -> Response:
    since = request.query_params.get("since", "")

    async def events() -> AsyncIterator[str]:
        last = since
        deadline = time.monotonic() + STREAM_SECONDS
        quiet_since = time.monotonic()
        yield "retry: 2000\n\n"
        while time.monotonic() < deadline:
            try:
                current = await run_in_threadpool(version)
            except DynflowError as exc:  # the database is away: say so, try again later
                yield f"event: unavailable\ndata: {str(exc).splitlines()[0][:200]}\n\n"
                current = last
            if current != last:
                last = current
                quiet_since = time.monotonic()
                yield f"event: changed\ndata: {current}\n\n"
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(console.live_interval)  # the polling period of the view

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
