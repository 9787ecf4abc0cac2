"""`Console`: what every route of the web console shares: the world it reads and acts
through, the keys of its sessions, its templates and how it renders a page."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pydynflow.storage import Storage
from pydynflow.web import presenting
from pydynflow.web.security import CSRF_COOKIE, SESSION_COOKIE, Keys
from pydynflow.world import World

__all__ = ["NOTICE_COOKIE", "Console", "fingerprint", "href"]

NOTICE_COOKIE = "pydynflow_notice"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def href(request: Request, path: str) -> str:
    """Return ``path`` (of the console) as a link that works where the console is mounted."""
    return f"{request.scope.get('root_path', '')}{path}"


class Console:
    """The console's shared state.

    Args:
        keys: the login token and the keys derived from it.
        db: a database URL: the console opens (and starts) a client world on it.
        world: a world of the application instead (its storage is read, its methods act);
            the application starts and stops it.
        secure_cookies: mark cookies ``Secure`` (None: when the request came over https).
        live_interval: seconds between two looks at the database for a live view.
        title: shown in the page header.
    """

    def __init__(
        self,
        keys: Keys,
        *,
        db: str | None = None,
        world: World | None = None,
        secure_cookies: bool | None = None,
        live_interval: float = 1.0,
        title: str = "pydynflow",
    ) -> None:
        if (db is None) == (world is None):
            raise ValueError("give the console a database URL or a world, not both")
        self.keys = keys
        self.db = db
        self._world = world
        self.owns_world = world is None
        self._lock = threading.Lock()
        self.secure_cookies = secure_cookies
        self.live_interval = live_interval
        self.title = title
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            pretty=presenting.pretty,
            short_class=presenting.short_class,
            duration=presenting.duration,
            when=_when,
        )

    # -- the world -------------------------------------------------------------------------

    def open(self) -> World:
        """Open and start the console's own client world (when it was given a URL), once;
        return the world the console uses."""
        with self._lock:
            if self._world is None:
                assert self.db is not None
                world = World(
                    self.db,
                    executor=False,
                    name=f"pydynflow-web-{socket.gethostname()}-{os.getpid()}",
                )
                try:
                    world.start()
                except BaseException:
                    world.stop()
                    raise
                self._world = world
            return self._world

    def close(self) -> None:
        """Stop the console's own client world."""
        with self._lock:
            if self.owns_world and self._world is not None:
                world, self._world = self._world, None
                world.stop()

    @property
    def world(self) -> World:
        """Return the world the console reads and acts through (the console's own is
        started on first use: a console mounted in another application gets no lifespan)."""
        return self._world if self._world is not None else self.open()

    @property
    def storage(self) -> Storage:
        """Return the storage the console reads."""
        return self.world.storage

    # -- responses -------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        *,
        fragment: bool = False,
        **context: Any,
    ) -> HTMLResponse:
        """Render ``template`` with what every page needs: links, the CSRF token, the
        notice left by the last action.

        ``fragment``: a part of a page that a live refresh swaps in. It shows no notice and
        leaves it for the next page: the page an action redirects to must get it, even when
        the old page's refresh (the action changed the plan) reaches the console first.
        """
        nonce = request.state.csrf_nonce or secrets.token_urlsafe(18)
        notice = None if fragment else self._notice(request.cookies.get(NOTICE_COOKIE))
        body = self.templates.get_template(template).render(
            request=request,
            base=request.scope.get("root_path", ""),
            csrf=self.keys.csrf_token(nonce),
            title=self.title,
            notice=notice,
            authenticated=bool(getattr(request.state, "authenticated", False)),
            **context,
        )
        response = HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})
        if nonce != request.state.csrf_nonce:
            self.set_cookie(request, response, CSRF_COOKIE, nonce)
        if notice is not None:
            response.delete_cookie(NOTICE_COOKIE, path=self.cookie_path(request))
        return response

    def redirect(
        self, request: Request, path: str, notice: str | None = None, level: str = "info"
    ) -> RedirectResponse:
        """Return a redirect (303) to a console ``path``, with a notice for the next page."""
        response = RedirectResponse(href(request, path), status_code=303)
        if notice is not None:
            payload = json.dumps({"level": level, "text": notice[:2000]}).encode()
            data = base64.urlsafe_b64encode(payload).decode().rstrip("=")
            self.set_cookie(request, response, NOTICE_COOKIE, f"{data}.{self._sign(data)}")
        return response

    def log_in(self, request: Request, response: Response) -> None:
        """Give the browser a new session."""
        self.set_cookie(
            request,
            response,
            SESSION_COOKIE,
            self.keys.new_session(),
            max_age=int(self.keys.session_max_age),
        )

    def log_out(self, request: Request, response: Response) -> None:
        """End the browser's session."""
        response.delete_cookie(SESSION_COOKIE, path=self.cookie_path(request))

    def set_cookie(
        self,
        request: Request,
        response: Response,
        name: str,
        value: str,
        max_age: int | None = None,
    ) -> None:
        """Set an HttpOnly, SameSite=Strict cookie for the console's path."""
        secure = self.secure_cookies
        if secure is None:
            secure = request.url.scheme == "https"
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.cookie_path(request),
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def cookie_path(request: Request) -> str:
        """Return the path the console's cookies are for (where it is mounted)."""
        return request.scope.get("root_path", "") or "/"

    def _sign(self, data: str) -> str:
        return self.keys.csrf_token(f"notice|{data}")

    def _notice(self, cookie: str | None) -> dict[str, str] | None:
        if not cookie or "." not in cookie:
            return None
        data, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._sign(data)):
            return None
        try:
            found = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        except ValueError:
            return None
        if not isinstance(found, dict) or found.get("level") not in ("info", "error"):
            return None
        return {"level": str(found["level"]), "text": str(found.get("text", ""))}


def _when(value: datetime | None) -> str:
    """Format a time as UTC ISO 8601 to the second (``2026-12-04 08:55:59Z``)."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fingerprint(value: Any) -> str:
    """Return a short hash of ``value``'s text, for a live view to compare."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]
