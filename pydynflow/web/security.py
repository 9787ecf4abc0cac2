"""What makes the console safe to expose: the login token, signed session cookies, CSRF tokens
on every POST, and security headers on every response.

Sessions and CSRF tokens are stateless: an HMAC with a key derived from the login token, so
that every console process started with the same token accepts them (behind a load
balancer, after a restart), and changing the token logs everyone out. `guard` is one ASGI
middleware in front of every route: a route added later is protected without a word.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "MAX_FORM_BYTES",
    "OPEN_PATHS",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "Guard",
    "Keys",
    "LoginThrottle",
    "route_path",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "pydynflow_session"
CSRF_COOKIE = "pydynflow_csrf"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 256 * 1024
"""The largest POST body the console reads (an event payload is the largest form)."""
OPEN_PATHS = ("/healthz", "/login")
"""The paths that need no session: the health check, and the login form itself."""
OPEN_PREFIXES = ("/static/",)
"""Path prefixes that need no session: stylesheet and script, the same for everyone."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
"""Sent with every response: no inline scripts or styles, no framing, no sniffing."""


def route_path(scope: Scope) -> str:
    """Return the request's path inside the console (without the prefix it is mounted at)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


@dataclass(frozen=True)
class Keys:
    """The login token and the keys derived from it.

    Attributes:
        token: what an operator types to log in (and a scraper sends as a bearer token).
        session_max_age: seconds a session lasts after login.
    """

    token: str
    session_max_age: float = 12 * 3600.0
    _key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the console's token must not be empty")
        key = hmac.new(self.token.encode(), b"pydynflow-web-v1", hashlib.sha256).digest()
        object.__setattr__(self, "_key", key)

    def check_token(self, candidate: str) -> bool:
        """Return whether ``candidate`` is the token (in constant time)."""
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def new_session(self, now: float | None = None) -> str:
        """Return a fresh session cookie value."""
        issued = str(int(time.time() if now is None else now))
        nonce = secrets.token_urlsafe(16)
        return f"{issued}.{nonce}.{self._mac('session', issued, nonce)}"

    def session_valid(self, value: str | None, now: float | None = None) -> bool:
        """Return whether a session cookie is one of ours and has not expired."""
        if not value:
            return False
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        issued, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac("session", issued, nonce)):
            return False
        age = (time.time() if now is None else now) - int(issued)
        return -60 <= age <= self.session_max_age

    def csrf_token(self, nonce: str) -> str:
        """Return the CSRF token that goes with a browser's CSRF cookie ``nonce``."""
        return self._mac("csrf", nonce)

    def csrf_valid(self, nonce: str | None, token: str | None) -> bool:
        """Return whether ``token`` is the CSRF token of cookie ``nonce``."""
        if not nonce or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(nonce))

    def _mac(self, *parts: str) -> str:
        message = "|".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


class LoginThrottle:
    """Refuse logins from a client after too many failed ones in a window."""

    def __init__(self, failures: int = 10, window: float = 60.0) -> None:
        self.failures = failures
        self.window = window
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        """Return whether ``client`` failed too often lately."""
        with self._lock:
            return len(self._recent(client)) >= self.failures

    def failed(self, client: str) -> None:
        """Record a failed login of ``client``."""
        with self._lock:
            self._recent(client).append(time.monotonic())
            if len(self._seen) > 10_000:  # forget the quiet ones, not to grow for ever
                for quiet in [key for key, times in self._seen.items() if not times]:
                    del self._seen[quiet]

    def _recent(self, client: str) -> list[float]:
        horizon = time.monotonic() - self.window
        times = [at for at in self._seen.get(client, ()) if at > horizon]
        self._seen[client] = times
        return times


class Guard:
    """ASGI middleware: security headers on every response; a session (or, for reads, the
    token as a bearer) on every path but `OPEN_PATHS`; a CSRF token on every POST.

    A browser without a session that asks for a page is sent to the login form; anything
    else gets 401. A POST must be a form (``application/x-www-form-urlencoded``, at most
    `MAX_FORM_BYTES`) whose ``csrf`` field matches the browser's CSRF cookie, and must not
    come from another site (``Sec-Fetch-Site``); its fields are left in
    ``scope["state"]["form"]`` for the route.

    Args:
        app: the console's routes.
        keys: the token and the keys derived from it.
        secure_cookies: mark cookies ``Secure`` (None: when the request came over https).
    """

    def __init__(self, app: ASGIApp, keys: Keys, secure_cookies: bool | None = None) -> None:
        self.app = app
        self.keys = keys
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on with the headers added to the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        path = route_path(scope)
        method = scope["method"]
        headers = _headers(scope)
        cookies = _cookies(headers.get("cookie", ""))
        state = scope.setdefault("state", {})
        state["csrf_nonce"] = cookies.get(CSRF_COOKIE) or None
        state["authenticated"] = self.keys.session_valid(cookies.get(SESSION_COOKIE))
        if method == "POST":
            form = await self._form(scope, receive, send, headers, cookies)
            if form is None:
                return
            state["form"] = form
            receive = _replay(receive)
        if not self._open(path) and not state["authenticated"]:
            bearer = headers.get("authorization", "")
            if (
                method in ("GET", "HEAD")
                and bearer.startswith("Bearer ")
                and self.keys.check_token(bearer[len("Bearer ") :].strip())
            ):
                state["authenticated"] = True
            if not state["authenticated"]:
                await self._refuse(scope, send, method, headers)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)

    async def _form(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        cookies: dict[str, str],
    ) -> dict[str, str] | None:
        """Read and check a POST's form; answer and return None if it is refused."""
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            await _plain(send, 403, "cross-site requests are refused")
            return None
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in ("application/x-www-form-urlencoded", ""):
            await _plain(send, 415, "a POST must be an HTML form (urlencoded)")
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES:
                await _plain(send, 413, "the form is too large")
                return None
            if not message.get("more_body", False):
                break
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            await _plain(send, 400, "the form is not valid UTF-8")
            return None
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:
                await _plain(send, 400, f"the form has the field {name!r} twice")
                return None
            form[name] = value
        if not self.keys.csrf_valid(cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            await _plain(send, 403, "missing or wrong CSRF token: reload the page and try again")
            return None
        return form

    async def _refuse(self, scope: Scope, send: Send, method: str, headers: dict[str, str]) -> None:
        wants_page = method == "GET" and "text/html" in headers.get("accept", "")
        if wants_page:
            target = route_path(scope)
            query = scope.get("query_string", b"").decode("latin-1")
            if query:
                target += "?" + query
            location = f"{scope.get('root_path', '')}/login?next={quote(target, safe='')}"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", location.encode("latin-1")), *_NO_STORE],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await _plain(send, 401, "log in first", extra=((b"www-authenticate", b"Bearer"),))


_NO_STORE = ((b"cache-control", b"no-store"),)


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        found[key] = f"{found[key]}; {text}" if key == "cookie" and key in found else text
    return found


def _cookies(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, equals, value = part.strip().partition("=")
        if equals and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers.extend(item for item in SECURITY_HEADERS if item[0] not in present)
            message["headers"] = headers
        await send(message)

    return sending


def _replay(original: Receive) -> Receive:
    """Return a ``receive`` for a request whose body was read: an empty body (the form is in
    the scope's state), then what the client does next (its disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await original()

    return receive


async def _plain(
    send: Send, status: int, text: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *_NO_STORE,
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
