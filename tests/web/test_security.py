"""The console is safe by default: every route but the open ones needs a session, every
POST a CSRF token, nothing changes on GET, markup in any stored field is shown as text,
and every response carries the security headers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from pydynflow import World
from pydynflow.web import create_app
from pydynflow.web.security import OPEN_PATHS, Keys
from tests.web.conftest import TOKEN, csrf_of, log_in, wait_until
from tests.web.console_actions import XSS, Marked, Quick

OPEN = {"/healthz", "/login", "/static/console.css"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('security') / 'console.db'}"
    with World(url, heartbeat=0.2, validity_timeout=2.0) as world:
        quick = world.trigger(Quick).wait(20)
        failed = world.trigger(Marked)  # fails: paused, with markup everywhere
        waiting = world.trigger(Marked, False)  # suspends, waiting for an event
        wait_until(lambda: world.load(failed.id).state == "paused", what="Marked to pause")
        wait_until(
            lambda: world.load(waiting.id).steps[2].state == "suspended", what="Marked to wait"
        )
        app = create_app(db=url, token=TOKEN)
        with TestClient(app) as client:
            yield {
                "app": app,
                "client": client,
                "world": world,
                "quick": quick.id,
                "failed": failed.id,
                "waiting": waiting.id,
            }


def _anonymous(setup: dict[str, Any]) -> TestClient:
    return TestClient(setup["app"])


def _routes(setup: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, concrete path) the app routes, enumerated from the app itself."""
    values = {"plan_id": setup["quick"], "step_id": "2", "world_id": setup["world"].id}
    found = []
    for route in setup["app"].routes:
        if isinstance(route, Mount):
            found.append(("GET", f"{route.path}/console.css"))
            continue
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m.group(1)], route.path)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                found.append((method, path))
    return found


def test_every_route_but_the_open_ones_needs_a_session(setup: dict[str, Any]) -> None:
    routes = _routes(setup)
    assert len(routes) >= 20 and set(OPEN_PATHS) <= {path for _, path in routes}
    anonymous = _anonymous(setup)
    anonymous.get("/login")  # a CSRF cookie, so that POSTs reach the session check
    csrf = csrf_of(anonymous.get("/login").text)
    for method, path in routes:
        if method == "GET":
            page = anonymous.get(path, headers={"accept": "text/html"}, follow_redirects=False)
            other = anonymous.get(path, follow_redirects=False)
            if path in OPEN:
                assert page.status_code == 200, path
                continue
            assert page.status_code == 303, path
            assert page.headers["location"].startswith("/login?next="), path
            assert other.status_code == 401, path
        else:
            done = anonymous.post(path, data={"csrf": csrf}, follow_redirects=False)
            if path == "/login":
                assert done.status_code == 401  # a wrong (empty) token
                continue
            assert done.status_code == 401, path


def test_every_post_needs_the_csrf_token_of_the_browser(setup: dict[str, Any]) -> None:
    client: TestClient = setup["client"]
    log_in(client)
    posts = [path for method, path in _routes(setup) if method == "POST"]
    assert len(posts) >= 10
    other = _anonymous(setup)
    foreign = csrf_of(other.get("/login").text)  # another browser's token
    for path in posts:
        for form in ({}, {"csrf": ""}, {"csrf": "x" * 64}, {"csrf": foreign}):
            done = client.post(path, data=form, follow_redirects=False)
            assert done.status_code == 403, (path, form)
            assert "CSRF" in done.text
    plan = setup["quick"]
    assert client.get(f"/plans/{plan}").status_code == 200  # still logged in


def test_state_changing_routes_refuse_get(setup: dict[str, Any]) -> None:
    client: TestClient = setup["client"]
    log_in(client)
    for method, path in _routes(setup):
        if method == "POST" and path not in ("/login",):
            assert client.get(path, follow_redirects=False).status_code == 405, path


def test_cross_site_and_odd_posts_are_refused(setup: dict[str, Any]) -> None:
    client: TestClient = setup["client"]
    log_in(client)
    csrf = csrf_of(client.get("/").text)
    path = f"/plans/{setup['quick']}/halt"
    cross = client.post(
        path, data={"csrf": csrf}, headers={"sec-fetch-site": "cross-site"}, follow_redirects=False
    )
    assert cross.status_code == 403
    as_json = client.post(path, json={"csrf": csrf}, follow_redirects=False)
    assert as_json.status_code == 415
    huge = client.post(path, data={"csrf": csrf, "pad": "x" * 300_000}, follow_redirects=False)
    assert huge.status_code == 413
    twice = client.post(
        path,
        content=f"csrf={csrf}&csrf={csrf}",
        follow_redirects=False,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert twice.status_code == 400


def test_security_headers_and_cookie_flags(setup: dict[str, Any]) -> None:
    anonymous = _anonymous(setup)
    for path in ("/login", "/healthz", "/static/console.js", "/", "/nowhere"):
        headers = anonymous.get(path, follow_redirects=False).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    fresh = _anonymous(setup)
    login = fresh.get("/login")
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    done = fresh.post(
        "/login", data={"token": TOKEN, "csrf": csrf_of(login.text)}, follow_redirects=False
    )
    session = [c for c in done.headers.get_list("set-cookie") if "pydynflow_session" in c][0]
    assert "httponly" in session.lower() and "samesite=strict" in session.lower()
    assert "<script>" not in login.text.replace(
        '<script src="/static/console.js" defer></script>', ""
    )


def test_login_takes_only_the_token_and_throttles_guessing(setup: dict[str, Any]) -> None:
    anonymous = TestClient(setup["app"], client=("10.9.8.7", 1234))
    csrf = csrf_of(anonymous.get("/login").text)
    for _ in range(10):
        wrong = anonymous.post("/login", data={"token": "guess", "csrf": csrf})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
    blocked = anonymous.post("/login", data={"token": TOKEN, "csrf": csrf})
    assert blocked.status_code == 429
    other = _anonymous(setup)
    log_in(other)
    assert other.get("/").status_code == 200
    bounced = other.post(
        "/login",
        data={"token": TOKEN, "csrf": csrf_of(other.get("/login").text), "next": "//evil.test/"},
        follow_redirects=False,
    )
    assert bounced.headers["location"] == "/"


def test_sessions_are_signed_expire_and_follow_the_token() -> None:
    keys = Keys("one", session_max_age=60)
    session = keys.new_session(now=1000.0)
    assert keys.session_valid(session, now=1030.0)
    assert not keys.session_valid(session, now=1100.0)  # expired
    assert not Keys("two").session_valid(session, now=1030.0)  # another token
    issued, nonce, mac = session.split(".")
    assert not keys.session_valid(f"{int(issued) + 1}.{nonce}.{mac}", now=1030.0)
    assert not keys.session_valid("garbage", now=1030.0)
    with pytest.raises(ValueError):
        Keys("")


def test_metrics_take_the_token_as_a_bearer(setup: dict[str, Any]) -> None:
    anonymous = _anonymous(setup)
    assert anonymous.get("/metrics").status_code == 401
    wrong = anonymous.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    scraped = anonymous.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200 and "pydynflow_plans{" in scraped.text
    posted = anonymous.post(
        f"/plans/{setup['quick']}/halt", headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert posted.status_code in (403, 415)  # a bearer never replaces the form's CSRF token


def test_markup_in_every_field_is_shown_as_text(setup: dict[str, Any]) -> None:
    client: TestClient = setup["client"]
    log_in(client)
    failed, waiting = setup["failed"], setup["waiting"]
    csrf = csrf_of(client.get(f"/plans/{waiting}/steps/2").text)
    sent = client.post(
        f"/plans/{waiting}/steps/2/event",
        data={"csrf": csrf, "payload": json.dumps({"approval": XSS})},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    world: World = setup["world"]
    wait_until(lambda: world.load(waiting).state == "stopped", what="the event to apply")
    pages = {
        "list": client.get("/?state=any").text,
        "plan": client.get(f"/plans/{failed}").text,
        "failed step": client.get(f"/plans/{failed}/steps/2").text,
        "event step": client.get(f"/plans/{waiting}/steps/2").text,
        "search": client.get("/", params={"q": "<script>", "state": "any"}).text,
    }
    bad = client.post(  # the id comes back in the notice
        "/worlds/<img src=x onerror=alert(1)>/invalidate", data={"csrf": csrf}
    ).text
    pages["notice"] = bad
    for name, html in pages.items():
        assert "<script>document" not in html and "<img src=x" not in html, name
        assert "&lt;script&gt;" in html or "&#34;" in html or "&lt;img" in html, name
    assert "error &lt;script&gt;" in pages["failed step"]  # the error message, as text
    assert "&lt;script&gt;" in pages["event step"]  # the event, in the output
    assert "&lt;img src=x" in pages["notice"]


def test_a_live_refresh_leaves_the_notice_for_the_page_the_action_leads_to(
    setup: dict[str, Any],
) -> None:
    # The browser's order when an action changes the plan on screen: the POST answers with
    # the notice's cookie, the old page's live refresh (the change it announced) reaches the
    # console, then the browser follows the redirect. The notice must reach that page.
    client: TestClient = setup["client"]
    log_in(client)
    quick = setup["quick"]
    csrf = csrf_of(client.get(f"/plans/{quick}").text)
    posted = client.post(f"/plans/{quick}/halt", data={"csrf": csrf}, follow_redirects=False)
    assert posted.status_code == 303 and "pydynflow_notice" in posted.headers["set-cookie"]
    for part in (f"/plans/{quick}/part", "/rows?state=any"):
        refreshed = client.get(part)
        assert refreshed.status_code == 200 and 'id="notice"' not in refreshed.text, part
    page = client.get(posted.headers["location"]).text
    assert 'id="notice"' in page
    assert 'id="notice"' not in client.get(f"/plans/{quick}").text  # shown once


def test_healthz_is_open_and_answers_for_the_database(setup: dict[str, Any]) -> None:
    response = _anonymous(setup).get("/healthz")
    assert response.status_code == 200 and response.text == "ok\n"
