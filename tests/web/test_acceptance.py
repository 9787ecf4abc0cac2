"""What a new operator does, with everything as its own process: ``pydynflow worker`` runs
the plans, ``pydynflow web`` serves the console, and a browser logs in, watches a release
move live, sends the approval event to its suspended step, skips the deploy step that
failed, resumes, and the plan ends as those buttons said. The screenshots of the list and
plan pages in docs/console.md are taken here, so they show what this test saw: a run with
``PYDYNFLOW_UPDATE_SCREENSHOTS=1`` writes them to docs/images, any other run to the test's
temporary directory (a test run leaves the checkout as it was).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydynflow import World
from tests.web.conftest import TOKEN, browser_login, wait_until
from tests.web.console_actions import Release

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOC_IMAGES = ROOT / "docs" / "images"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A worker daemon and the console, each a process, on one SQLite database."""
    url = f"sqlite:///{tmp_path / 'release.db'}"
    metrics = tmp_path / "metrics"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYDYNFLOW_WEB_TOKEN": TOKEN}
    command = [sys.executable, "-m", "pydynflow.cli"]
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("worker", "web")}  # noqa: SIM115
    worker = subprocess.Popen(
        [
            *command,
            "worker",
            "--db",
            url,
            "--app",
            "tests.web.console_actions",
            "--metrics-dir",
            str(metrics),
            "--stop-timeout",
            "5",
        ],
        cwd=ROOT,
        env=env,
        stdout=logs["worker"],
        stderr=subprocess.STDOUT,
    )
    web: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: Path(url.removeprefix("sqlite:///")).exists(), what="the database")
        client = World(url, executor=False)
        wait_until(
            lambda: any(info.executor and info.alive for info in client.worlds()),
            what="the worker's executor world",
        )
        base = f"http://127.0.0.1:{_free_port()}"
        web = subprocess.Popen(
            [
                *command,
                "web",
                "--db",
                url,
                "--bind",
                base.removeprefix("http://"),
                "--app",
                "tests.web.console_actions",
                "--metrics-dir",
                str(metrics),
            ],
            cwd=ROOT,
            env=env,
            stdout=logs["web"],
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _healthy(base), what="pydynflow web to answer")
        client.start()
        yield {"url": base, "client": client, "db": url}
        client.stop()
    finally:
        for process in (web, worker):
            if process is not None:
                _stop(process)
        for log in logs.values():
            log.close()
    for name in ("worker", "web"):
        text = (tmp_path / f"{name}.log").read_text(errors="replace")
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"


def _screenshot_dir(tmp_path: Path) -> Path:
    """docs/images when asked to refresh the documentation's screenshots, else a temporary
    directory."""
    if os.environ.get("PYDYNFLOW_UPDATE_SCREENSHOTS") == "1":
        return DOC_IMAGES
    return tmp_path / "images"


def test_an_operator_approves_skips_and_resumes_a_release(
    browser: Any, services: dict[str, Any], tmp_path: Path
) -> None:
    images = _screenshot_dir(tmp_path)
    client: World = services["client"]
    page = browser_login(browser, services["url"])
    page.wait_for_selector("#plan-list[data-live-state=on]")
    page.evaluate("window.__stayed = true")

    # A release is triggered elsewhere: its row shows up on the open list by itself.
    plan_id = client.trigger(Release, "2.0", 0.6).id
    row = f"tr.plan-row[data-plan='{plan_id}']"
    page.wait_for_selector(f"{row}[data-state=running]")
    assert page.evaluate("window.__stayed") is True

    # Its page follows it live: the build finishes, the tests run, the approval waits.
    page.click(f"{row} a.plan-link")
    page.wait_for_selector("#run-flow")
    page.evaluate("window.__stayed = true")
    page.wait_for_selector("a.step[data-step='3'][data-state=success]")
    page.wait_for_selector("a.step[data-step='9'][data-state=suspended]")
    assert page.evaluate("window.__stayed") is True

    # The approval, sent as JSON from the step's form.
    page.click("a.step[data-step='9']")
    approval = {"approved": True, "by": "operator"}
    page.fill("#event-payload", json.dumps(approval))
    page.click("#send-event")
    assert "event delivered to step 9" in page.inner_text("#notice")

    # The deploy fails: the plan pauses, and says which step failed.
    page.click("#back-to-plan")
    page.wait_for_selector("#plan-state[data-state=paused]")
    assert "deploy to production failed on purpose" in page.inner_text("#failed-steps")
    images.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(images / "console-plan.png"), full_page=True)

    page.click("button.skip[data-step='11']")
    assert "skipped step 11" in page.inner_text("#notice")
    page.click("#resume")
    assert "resumed" in page.inner_text("#notice")
    page.wait_for_selector("#plan-state[data-state=stopped]")
    assert page.get_attribute("#plan-result", "data-result") == "warning"

    # The plan ended as the buttons said: approved, deploy skipped, the rest done.
    plan = client.load(plan_id)
    assert (plan.state, plan.result) == ("stopped", "warning")
    states = {step.id: step.state for step in plan.steps.values()}
    assert (states[9], states[11], states[13]) == ("success", "skipped", "success")
    assert plan.actions[plan.steps[9].action_id].output["approval"] == approval
    who = [entry.details for entry in plan.history if entry.name in ("skip", "resume")]
    assert who and all(details and details.get("user") == "web" for details in who)

    page.goto("/?state=any")
    page.wait_for_selector(f"{row}[data-state=stopped]")
    page.screenshot(path=str(images / "console-plans.png"), full_page=True)
    for name in ("console-plan.png", "console-plans.png"):  # a PNG file, not an empty one
        assert (images / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The worker daemon's metrics, through the console's /metrics (same host).
    scraped = page.context.request.get(f"{services['url']}/metrics")
    assert scraped.status == 200
    text = scraped.text()
    assert 'pydynflow_plans{state="stopped"} 1.0' in text
    assert 'pydynflow_steps_finished_total{action_class="tests.web.console_actions.Work"' in text
    assert "pydynflow_persistence_commit_seconds_count" in text
    assert 'pydynflow_queue_workers{queue="default"} 5.0' in text
    assert "pydynflow_events_received_total 1.0" in text
    page.context.close()
