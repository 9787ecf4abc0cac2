"""10,000 random query strings on the plan list (and its live parts) give 200 or 400, never
an error: every value is checked against its list before it reaches the database."""

from __future__ import annotations

import asyncio
import random
import string
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any
from urllib.parse import quote

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pydynflow import World
from pydynflow.states import PlanState, Result
from pydynflow.storage.listing import LIST_ORDERS
from pydynflow.web import create_app
from pydynflow.web.security import SESSION_COOKIE
from tests.web.conftest import TOKEN, log_in
from tests.web.console_actions import Quick

COUNT = 10_000
NAMES = [
    "state",
    "result",
    "label",
    "q",
    "action",
    "caller",
    "caller_action",
    "order",
    "dir",
    "page",
    "per_page",
]
GOOD = {
    "state": [s.value for s in PlanState] + ["any"],
    "result": [r.value for r in Result],
    "order": list(LIST_ORDERS),
    "dir": ["asc", "desc"],
    "per_page": ["10", "25", "50", "100"],
    "page": ["1", "2", "last", "999999"],
    "action": ["tests.web.console_actions.Quick"],
    "caller": ["01a24044-7b80-7758-aee7-35233400488f"],
    "caller_action": ["1", "2"],
    "label": ["quick", ""],
    "q": ["qu", "%", "_", "\\"],
}
ODD = [
    "",
    "0",
    "-1",
    "1e9",
    "99999999999",
    "null",
    "NaN",
    "'; DROP TABLE x; --",
    "%00",
    "%ff",
    "%",
    "%%",
    "\u202e",
    "\U0001f40d",
    "<script>",
    "a" * 300,
    "../..",
    "%0a",
    "+",
    "&",
    "=",
    "1.5",
    "ASC",
    "Desc",
    "state",
    "[]",
    "{}",
    "%ED%A0%80",
    "%C3%28",
]


def _piece(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        name = rng.choice(NAMES)
        value = rng.choice(GOOD.get(name, [""]) if rng.random() < 0.6 else ODD)
    elif roll < 0.8:
        name, value = rng.choice(NAMES + ["since", "x", "", "STATE"]), rng.choice(ODD)
    else:
        length = rng.randrange(0, 12)
        name = "".join(rng.choice(string.printable) for _ in range(length))
        value = "".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 12)))
        return quote(name, safe="=&%+") + ("=" + quote(value, safe="%+&=") if value else "")
    return f"{quote(name)}={quote(value, safe='%')}"


def query_strings(seed: int, count: int) -> Iterator[str]:
    """Yield ``count`` query strings: mostly plausible, some broken, some raw noise."""
    rng = random.Random(seed)
    for _ in range(count):
        yield "&".join(_piece(rng) for _ in range(rng.randrange(0, 6)))


async def asgi_get(app: Starlette, target: str, cookie: str) -> tuple[int, bytes]:
    """Call ``app`` with ``GET target`` straight through ASGI; return status and body."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [(b"host", b"console.test"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("console.test", 80),
    }
    status = 0
    body = bytearray()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))  # type: ignore[arg-type]

    await app(scope, receive, send)
    return status, bytes(body)


def _run_catching(coroutine: Any, failures: list[BaseException]) -> None:
    try:
        asyncio.run(coroutine())
    except BaseException as exc:  # handed to the test's thread
        failures.append(exc)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'console.db'}"
    with World(url) as world:
        for _ in range(3):
            world.trigger(Quick, "quick").wait(20)
        yield create_app(db=url, token=TOKEN)


def test_random_query_strings_give_200_or_400(console: Starlette) -> None:
    """Straight through ASGI, in one event loop: 10,000 requests in seconds."""
    cookie = f"{SESSION_COOKIE}={console.state.console.keys.new_session()}"
    statuses: dict[int, int] = {}

    async def run() -> None:
        async with console.router.lifespan_context(console):
            for index, query in enumerate(query_strings(seed=20261204, count=COUNT)):
                target = f"{'/rows' if index % 2 else '/'}?{query}"
                status, body = await asgi_get(console, target, cookie)
                statuses[status] = statuses.get(status, 0) + 1
                assert status in (200, 400), (target, status, body[:500])

    # On a thread of its own: this one may have an event loop already (a browser's).
    failures: list[BaseException] = []
    runner = threading.Thread(target=_run_catching, args=(run, failures))
    runner.start()
    runner.join()
    if failures:
        raise failures[0]
    assert statuses.get(200, 0) > COUNT // 10 and statuses.get(400, 0) > COUNT // 10, statuses


def test_a_live_stream_checks_its_query_too(console: Starlette) -> None:
    with TestClient(console) as client:
        log_in(client)
        assert client.get("/live?state=bogus").status_code == 400
        assert client.get("/live?order=uuid;drop").status_code == 400
