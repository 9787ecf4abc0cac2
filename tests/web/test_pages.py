"""The console's pages in process: a plan of 1,000+ steps renders in under a second, the
console mounts inside another application, ``/metrics`` shows the database and the engine,
``present`` middleware masks what is shown, and ``pydynflow web`` refuses to serve other
hosts without a token."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from pydynflow import Action, Middleware, World
from pydynflow.adapters import telemetry
from pydynflow.adapters.telemetry.prometheus import PrometheusTelemetry
from pydynflow.cli import cli
from pydynflow.cli.web import is_loopback, parse_bind
from pydynflow.web import create_app
from tests.storage.test_contract import make_plan
from tests.web.conftest import TOKEN, csrf_of, log_in
from tests.web.console_actions import Big, Quick, Release


class MaskToken(Middleware):
    """Hide the ``token`` of an input from readers."""

    def present(self, call_next: Any) -> None:
        call_next()
        if "token" in self.action.input:
            self.action.input["token"] = "***"


class WithSecret(Action):
    """An action whose input holds a secret its middleware masks."""

    middleware = (MaskToken,)

    def plan(self, token: str) -> None:
        self.plan_self({"token": token})

    def run(self) -> None:
        self.output["ok"] = True


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = f"sqlite:///{tmp_path_factory.mktemp('pages') / 'console.db'}"
    with World(url, pool_size=8) as opened:
        yield opened


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world=world, token=TOKEN)) as opened:
        log_in(opened)
        yield opened


def test_a_plan_of_a_thousand_steps_renders_in_under_a_second(
    world: World, client: TestClient
) -> None:
    plan = world.trigger(Big, 260, 4).wait(60)
    assert len([s for s in plan.steps.values() if s.phase == "run"]) == 1040
    times = []
    for path in (f"/plans/{plan.id}", f"/plans/{plan.id}/part"):
        for _ in range(3):
            start = time.perf_counter()
            page = client.get(path)
            times.append(time.perf_counter() - start)
            assert page.status_code == 200
    assert page.text.count('class="step st-success"') == 1040
    assert page.text.count("<rect") == 1040
    assert min(times) < 1.0, times


def test_the_console_mounts_inside_another_application(world: World) -> None:
    done = world.trigger(Release, "mounted", 0.01)
    host = Starlette(routes=[Mount("/ops/dynflow", app=create_app(world=world, token=TOKEN))])
    with TestClient(host) as opened:
        login = opened.get("/ops/dynflow/login")
        assert 'action="/ops/dynflow/login"' in login.text
        sent = opened.post(
            "/ops/dynflow/login",
            data={"token": TOKEN, "csrf": csrf_of(login.text), "next": "/worlds"},
            follow_redirects=False,
        )
        assert sent.headers["location"] == "/ops/dynflow/worlds"
        assert "path=/ops/dynflow" in sent.headers["set-cookie"].lower()
        listed = opened.get("/ops/dynflow/?state=any")
        assert f'href="/ops/dynflow/plans/{done.id}"' in listed.text
        assert opened.get(f"/ops/dynflow/plans/{done.id}").status_code == 200
        assert opened.get("/ops/dynflow/static/console.css").status_code == 200
    world.halt(done.id)


def test_present_middleware_masks_inputs_shown(world: World, client: TestClient) -> None:
    plan = world.trigger(WithSecret, "s3cret-value").wait(20)
    step = next(s for s in plan.steps.values() if s.phase == "run")
    page = client.get(f"/plans/{plan.id}/steps/{step.id}").text
    assert "s3cret-value" not in page and "***" in page


def test_metrics_show_the_database_and_this_process(world: World, client: TestClient) -> None:
    previous = telemetry.use(PrometheusTelemetry.shared())
    try:
        world.trigger(Quick, "measured").wait(20)
        text = client.get("/metrics").text
    finally:
        telemetry.use(previous)
    assert 'pydynflow_plans{state="stopped"}' in text
    assert 'pydynflow_worlds{alive="true",kind="executor"} 1.0' in text
    assert 'pydynflow_steps_finished_total{action_class="tests.web.console_actions.Quick"' in text
    assert "pydynflow_persistence_batch_size_bucket" in text


def test_unknown_plans_and_steps_are_404(client: TestClient) -> None:
    assert client.get("/plans/nope").status_code == 404
    assert client.get("/plans/nope/steps/1").status_code == 404


def test_web_refuses_other_hosts_without_a_token(tmp_path: Any) -> None:
    runner = CliRunner()
    env = {"PYDYNFLOW_WEB_TOKEN": ""}
    refused = runner.invoke(
        cli, ["web", "--db", "sqlite:///x.db", "--bind", "0.0.0.0:8765"], env=env
    )
    assert refused.exit_code == 2 and "PYDYNFLOW_WEB_TOKEN" in refused.output
    empty = tmp_path / "token"
    empty.write_text("\n")
    bad = runner.invoke(cli, ["web", "--token-file", str(empty)], env=env)
    assert bad.exit_code == 2 and "empty" in bad.output
    wrong = runner.invoke(cli, ["web", "--bind", "nowhere"], env=env)
    assert wrong.exit_code == 2
    assert parse_bind("[::1]:80") == ("::1", 80) and parse_bind("127.0.0.1:8765")[1] == 8765
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_what_a_class_not_importable_here_holds_is_hidden(world: World, client: TestClient) -> None:
    """Its present hooks could not run: its input, output and chunks stay hidden."""
    plan = make_plan(str(uuid.uuid4()), label="from elsewhere")
    plan.actions[1].action_class_name = "elsewhere.actions.Secretive"
    for step in plan.steps.values():
        if step.action_id == 1:
            step.action_class_name = "elsewhere.actions.Secretive"
    world.storage.save_plan(plan)
    shown = client.get(f"/plans/{plan.id}").text
    notice = shown.split('id="hidden-classes"', 1)[1].split("</p>", 1)[0]
    assert "elsewhere.actions.Secretive" in notice and "are hidden" in notice
    step = client.get(f"/plans/{plan.id}/steps/2").text
    assert 'id="hidden-io"' in step and "žluťoučký" not in step
