"""What the console's tests share: the token, a logged-in in-process client, a console
served by uvicorn on a free port, and one headless Chromium for the whole session.

The browser is Debian's ``chromium`` driven by Playwright (``executable_path``; Playwright's
own browser download is not reachable here). Without Playwright or chromium the browser
tests skip, saying why, after trying ``apt-get install chromium`` when running as root;
with ``PYDYNFLOW_REQUIRE_BROWSER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

TOKEN = "console-test-token-5f2c"
DEADLINE = 20.0


def csrf_of(html: str) -> str:
    """Return the CSRF token a rendered page carries."""
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def log_in(client: TestClient, token: str = TOKEN) -> None:
    """Log ``client`` in through the login form."""
    page = client.get("/login")
    done = client.post(
        "/login", data={"token": token, "csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert done.status_code == 303, done.text


def wait_until(condition: Any, timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``condition()`` until it returns something true; return that, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling a condition with a deadline (noqa: sleep-ok)


class Served:
    """An ASGI app served by uvicorn on a thread, on a free loopback port."""

    def __init__(self, app: Starlette) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


def _install_chromium() -> str | None:
    """Install Debian's chromium (root only); return its path, or None."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    for commands in ([install], [["apt-get", "update", "-q"], install]):
        for command in commands:
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
        if shutil.which("chromium"):
            break
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Return a headless Chromium, one per module (Playwright's sync API keeps an event loop
    running on this thread while it is open: other modules must not find it there)."""

    def unavailable(reason: str) -> None:
        if os.environ.get("PYDYNFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (PYDYNFLOW_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(reason)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[dev]'")
    path = shutil.which("chromium") or _install_chromium()
    if path is None:
        unavailable("no chromium: apt-get install chromium (Debian's package)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def browser_login(browser: Any, base_url: str, token: str = TOKEN) -> Any:
    """Return a new page of a new browser context, logged in to the console at base_url."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(DEADLINE * 1000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/")
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_selector("#plans-table")
    return page
