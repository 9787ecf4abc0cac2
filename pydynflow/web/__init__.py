"""The web console: plans, their flows and steps, the worlds, and the operator's buttons, in a
browser; with Prometheus metrics at ``/metrics``.

`create_app` returns it as an ASGI application; ``pydynflow web`` serves it with uvicorn.
It reads the database and acts through a world, so it runs in any process: see
docs/console.md. Templates and static files ship in the package; nothing is built, nothing
is fetched from elsewhere, and no page runs an inline script.
"""

from pydynflow.web.app import create_app

__all__ = ["create_app"]
