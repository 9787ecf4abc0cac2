"""Every page and button of the console, driven in headless Chromium: log in and out, the
plan list's filters, search, sorting, paging and live rows, a plan's graph, timeline and
steps, a step's details, cancel (plan and step), halt, the worlds page's check and
invalidate, and markup that stays text. One browser and one console for the module; the
executor world runs in this process (the acceptance test runs everything as processes).
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pydynflow import World
from pydynflow.storage import Storage
from pydynflow.web import create_app
from tests.web.conftest import TOKEN, Served, browser_login, wait_until
from tests.web.console_actions import XSS, Big, Marked, Quick, Release

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'console.db'}"
    with World(url, pool_size=8) as world:
        app = create_app(db=url, token=TOKEN, live_interval=0.1)
        with Served(app) as served:
            yield {"world": world, "url": served.url, "db": url}


@pytest.fixture
def page(browser: Any, console: dict[str, Any]) -> Iterator[Any]:
    opened = browser_login(browser, console["url"])
    yield opened
    opened.context.close()


def _state(world: World, plan_id: str) -> str:
    return str(world.load(plan_id).state)


def _waiting_release(world: World, version: str) -> str:
    """Trigger a release and return its id once its approval step waits."""
    plan_id = world.trigger(Release, version, 0.01).id
    wait_until(lambda: world.load(plan_id).steps[9].state == "suspended", what=f"{version} to wait")
    return plan_id


def test_login_refuses_a_wrong_token_and_logout_ends_the_session(
    browser: Any, console: dict[str, Any]
) -> None:
    context = browser.new_context(base_url=console["url"])
    page = context.new_page()
    page.goto("/worlds")
    assert "/login" in page.url
    page.fill("#token", "not the token")
    page.click("#login")
    assert "wrong token" in page.inner_text("#login-error")
    page.fill("#token", TOKEN)
    page.click("#login")
    page.wait_for_selector("#worlds-table")  # back where it was going
    page.click("text=Log out")
    page.wait_for_selector("#token")
    page.goto("/")
    assert "/login" in page.url
    context.close()


def test_the_list_filters_searches_sorts_pages_and_refreshes_live(
    page: Any, console: dict[str, Any]
) -> None:
    world: World = console["world"]
    for index in range(11):
        world.trigger(Quick, f"q{index}").wait(20)
    world.trigger(Big, 3, 2).wait(20)
    page.goto("/?state=any&per_page=10")
    assert page.locator("tr.plan-row").count() == 10
    page.click("#page-next")
    page.wait_for_selector("#page-prev")
    assert "page 2 of" in page.inner_text("#page-number")
    page.goto("/")
    page.check("#state-any")
    page.fill("#search", "bi")
    page.click("#apply")
    page.wait_for_selector("tr.plan-row[data-plan]")
    labels = page.locator("tr.plan-row td.label").all_inner_texts()
    assert labels and set(labels) == {"big"}
    page.goto("/?state=stopped")
    page.select_option("#action", "tests.web.console_actions.Quick")
    page.click("#apply")
    page.wait_for_url("**action=tests.web.console_actions.Quick**")
    assert set(page.locator("tr.plan-row").evaluate_all("r => r.map(x => x.dataset.state)")) == {
        "stopped"
    }
    assert page.locator("tr.plan-row").count() == 11
    page.goto("/?state=any")
    page.click("a.sort[data-order=label]")
    page.wait_for_url("**order=label**")
    shown = page.locator("tr.plan-row td.label").all_inner_texts()
    assert shown == sorted(shown)
    # Live: a plan triggered after the page loaded shows up without a reload.
    page.goto("/?state=any")
    page.wait_for_selector("#plan-list[data-live-state=on]")
    page.evaluate("window.__stayed = true")
    new = world.trigger(Quick, "live").wait(20)
    page.wait_for_selector(f"tr.plan-row[data-plan='{new.id}']")
    assert page.evaluate("window.__stayed") is True
    page.goto("/?state=bogus")
    assert "not one of" in page.inner_text("#error-message")


def test_a_plan_page_draws_its_flow_timeline_and_steps(page: Any, console: dict[str, Any]) -> None:
    world: World = console["world"]
    plan_id = _waiting_release(world, "graph")
    page.goto(f"/plans/{plan_id}")
    flow = page.locator("#run-flow > ol.flow.sequence")
    assert flow.count() == 1
    concurrent = flow.locator(":scope > li > ul.flow.concurrence > li > a.step")
    assert concurrent.count() == 2  # the two test runs, side by side
    assert flow.locator(":scope > li > a.step").count() == 4  # build, approve, deploy, notify
    assert page.locator("#timeline rect.bar").count() == 4  # build, 2 tests, approve so far
    assert page.get_attribute("a.step[data-step='9']", "data-state") == "suspended"
    page.click("a.step[data-step='3']")
    page.wait_for_selector("#step-output")
    assert json.loads(page.inner_text("#step-input"))["name"] == "build"
    assert json.loads(page.inner_text("#step-output")) == {"done": "build"}
    assert "build: 3/3" in page.inner_text("#step-chunks")
    page.click("#back-to-plan")
    page.wait_for_selector("#run-flow")
    world.halt(plan_id)


def test_cancel_a_step_then_a_plan_then_halt(page: Any, console: dict[str, Any]) -> None:
    world: World = console["world"]
    one = _waiting_release(world, "cancel-step")
    page.goto(f"/plans/{one}/steps/9")
    page.click("#cancel-step")
    assert "cancel sent to step 9" in page.inner_text("#notice")
    wait_until(lambda: world.load(one).steps[9].state == "success", what="the step cancelled")
    assert world.load(one).actions[world.load(one).steps[9].action_id].output["cancelled"]
    two = _waiting_release(world, "cancel-plan")
    page.goto(f"/plans/{two}")
    page.click("#cancel")
    assert "cancel sent to 1 step(s)" in page.inner_text("#notice")
    wait_until(lambda: world.load(two).steps[9].state == "success", what="the plan cancelled")
    three = _waiting_release(world, "halt")
    page.goto(f"/plans/{three}")
    page.click("#halt")
    assert "halted" in page.inner_text("#notice")
    page.wait_for_selector("#plan-state[data-state=stopped]")  # the live part follows
    assert _state(world, three) == "stopped"
    for plan_id in (one, two):  # their deploy failed: paused, halted here
        wait_until(lambda p=plan_id: _state(world, p) == "paused", what="deploy to fail")
        world.halt(plan_id)


def test_markup_stays_text_in_the_browser(page: Any, console: dict[str, Any]) -> None:
    world: World = console["world"]
    failed = world.trigger(Marked).id
    wait_until(lambda: _state(world, failed) == "paused", what="Marked to fail")
    waiting = world.trigger(Marked, False).id
    wait_until(lambda: world.load(waiting).steps[2].state == "suspended", what="Marked to wait")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.goto(f"/plans/{waiting}/steps/2")
    page.fill("#event-payload", json.dumps({"x": XSS}))
    page.click("#send-event")
    assert "event delivered" in page.inner_text("#notice")
    wait_until(lambda: _state(world, waiting) == "stopped", what="the event")
    for path in (
        "/?state=any",
        f"/plans/{failed}",
        f"/plans/{failed}/steps/2",
        f"/plans/{waiting}/steps/2",
    ):
        page.goto(path)
        assert "pwned" not in page.title(), path
        assert page.evaluate("document.querySelectorAll('script:not([src]), img').length") == 0
    output = json.loads(page.inner_text("#step-output"))  # shown, as text
    assert output == {"output": XSS, "event": {"x": XSS}}
    page.goto(f"/plans/{failed}/steps/2")
    assert XSS in page.inner_text("#step-error")
    assert dialogs == []
    world.halt(failed)


def test_worlds_page_checks_and_invalidates_dead_worlds(browser: Any, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'worlds.db'}"
    Storage(url).close()  # created; no executor world here would invalidate the dead ones
    with Storage(url) as storage:
        dead = [str(uuid.uuid4()) for _ in range(3)]
        for index, world_id in enumerate(dead):
            storage.register_world(
                world_id,
                name=f"gone-{index}",
                executor=True,
                queues={"default": 5},
                pid=2**22 + index,
                hostname=socket.gethostname(),
                validity_timeout=0.001,
            )
    with Served(create_app(db=url, token=TOKEN)) as served:
        page = browser_login(browser, served.url)
        page.goto("/worlds")
        rows = page.locator("tr.world-row[data-alive=no]")
        assert rows.count() == 3
        assert page.locator("tr.world-row[data-alive=yes]").count() == 1  # the console's own
        page.click("#check-worlds")
        assert "3 dead" in page.inner_text("#notice")
        page.click(f"tr.world-row[data-world='{dead[0]}'] button.invalidate")
        assert "invalidated gone-0" in page.inner_text("#notice")
        assert page.locator("tr.world-row[data-alive=no]").count() == 2
        page.click("#check-invalidate")
        assert "invalidated 2 dead world(s)" in page.inner_text("#notice")
        assert page.locator("tr.world-row").count() == 1
        page.click("#check-worlds")
        assert "every world is alive" in page.inner_text("#notice")
        page.context.close()
