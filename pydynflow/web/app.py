"""`create_app`: the console as a Starlette application, its routes, and its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pydynflow.errors import PersistenceError
from pydynflow.web import actions, live, pages
from pydynflow.web.console import Console
from pydynflow.web.metrics import metrics
from pydynflow.web.security import Guard, Keys, LoginThrottle
from pydynflow.world import World

__all__ = ["STATIC", "create_app", "routes"]

STATIC = Path(__file__).resolve().parent / "static"

_PLAN = "/plans/{plan_id:str}"
_STEP = _PLAN + "/steps/{step_id:int}"


def routes() -> list[BaseRoute]:
    """Return the console's routes: pages are GET, every change is a POST."""
    get, post = ["GET"], ["POST"]
    return [
        Route("/healthz", pages.healthz, methods=get, name="healthz"),
        Route("/login", pages.login_page, methods=get, name="login_page"),
        Route("/login", actions.log_in, methods=post, name="log_in"),
        Route("/logout", actions.log_out, methods=post, name="log_out"),
        Route("/", pages.plans_page, methods=get, name="plans"),
        Route("/rows", pages.plans_rows, methods=get, name="plans_rows"),
        Route("/live", live.plans_stream, methods=get, name="plans_live"),
        Route(_PLAN, pages.plan_page, methods=get, name="plan"),
        Route(_PLAN + "/part", pages.plan_part, methods=get, name="plan_part"),
        Route(_PLAN + "/live", live.plan_stream, methods=get, name="plan_live"),
        Route(_PLAN + "/resume", actions.resume_plan, methods=post, name="resume"),
        Route(_PLAN + "/cancel", actions.cancel_plan, methods=post, name="cancel"),
        Route(_PLAN + "/halt", actions.halt_plan, methods=post, name="halt"),
        Route(_STEP, pages.step_page, methods=get, name="step"),
        Route(_STEP + "/skip", actions.skip_step, methods=post, name="skip"),
        Route(_STEP + "/cancel", actions.cancel_step, methods=post, name="cancel_step"),
        Route(_STEP + "/event", actions.send_event, methods=post, name="event"),
        Route("/worlds", pages.worlds_page, methods=get, name="worlds"),
        Route("/worlds/check", actions.check_worlds, methods=post, name="check_worlds"),
        Route(
            "/worlds/{world_id:str}/invalidate",
            actions.invalidate_world,
            methods=post,
            name="invalidate_world",
        ),
        Route("/metrics", metrics, methods=get, name="metrics"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def create_app(
    db: str | None = None,
    *,
    world: World | None = None,
    token: str,
    secure_cookies: bool | None = None,
    session_max_age: float = 12 * 3600.0,
    metrics_dir: str | Path | None = None,
    live_interval: float = 1.0,
    title: str = "pydynflow",
) -> Starlette:
    """Return the web console as an ASGI application (Starlette).

    Run it with ``pydynflow web``, or mount it in your own Starlette or FastAPI application
    (``app.mount("/dynflow", create_app(world=my_world, token=...))``); it works from any
    process: it reads the database and acts through a world, which reaches the executor
    that owns each plan.

    Args:
        db: a database URL: the console opens a client world on it when the application
            starts, and stops it when it stops.
        world: a world of your application instead (started and stopped by you; its
            middleware presents what the console shows).
        token: what an operator types to log in, and a scraper of ``/metrics`` sends as
            ``Authorization: Bearer``; sessions are signed with a key derived from it.
        secure_cookies: mark the cookies ``Secure``; None: when the request came over https
            (behind a proxy, run uvicorn with ``--proxy-headers``).
        session_max_age: seconds a login lasts.
        metrics_dir: the multiprocess directory of ``pydynflow worker --metrics-dir`` on
            this host: ``/metrics`` adds up its processes' metrics.
        live_interval: seconds between two looks at the database for a live view.
        title: the name in the page header.

    Raises:
        ValueError: neither or both of ``db`` and ``world``, or an empty ``token``.
    """
    console = Console(
        Keys(token, session_max_age=session_max_age),
        db=db,
        world=world,
        secure_cookies=secure_cookies,
        live_interval=live_interval,
        title=title,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(console.open)
        try:
            yield
        finally:
            await run_in_threadpool(console.close)

    def unavailable(request: Request, exc: Exception) -> Response:
        return console.render(
            request, "error.html", status=503, message=f"the database did not answer: {exc}"
        )

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(Guard, keys=console.keys, secure_cookies=secure_cookies)],
        exception_handlers={PersistenceError: unavailable},
        lifespan=lifespan,
    )
    app.state.console = console
    app.state.throttle = LoginThrottle()
    app.state.metrics_dir = Path(metrics_dir) if metrics_dir is not None else None
    return app
