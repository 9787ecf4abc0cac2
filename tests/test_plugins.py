"""Plugins: action classes of installed distributions, found through ``pydynflow.actions``.

The end-to-end tests install a real distribution (tests/plugins/pydynflow_demo_plugin) with
pip into a directory of their own, put it on a fresh interpreter's path and let a world find
it there. Not into the test virtualenv: its broken entry point would be logged by every
world the suite (and ``make demo``) creates, and its modules import ``tests.support``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pydynflow import plugins
from pydynflow.plugins import Plugin, load_plugins
from pydynflow.world import World

ROOT = Path(__file__).resolve().parents[1]
DEMO_PLUGIN = ROOT / "tests" / "plugins" / "pydynflow_demo_plugin"
TIMEOUT = 120

RECORD = "pydynflow_demo_plugin.actions.RecordInventory"
AUDIT = "pydynflow_demo_plugin.audit.AuditProvisioning"
CORE = "tests.support.plugin_core.ProvisionHost"
BROKEN_ERROR = "RuntimeError: the demo plugin's broken module fails on purpose"


# -- a real distribution, in a fresh interpreter ---------------------------------------------


@pytest.fixture(scope="session")
def demo_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the demo plugin with pip into a directory of its own; return the directory."""
    target = tmp_path_factory.mktemp("plugins")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-build-isolation")  # the build backend is here: no download
    done = subprocess.run(
        [*command, str(DEMO_PLUGIN)], capture_output=True, text=True, timeout=TIMEOUT
    )
    if done.returncode != 0:
        pytest.skip(
            "pip could not install tests/plugins/pydynflow_demo_plugin (its build backend, "
            "hatchling, is fetched from PyPI unless installed): "
            + (done.stderr.strip().splitlines() or ["no output"])[-1]
        )
    assert list(target.glob("pydynflow_demo_plugin-*.dist-info")), "pip installed no metadata"
    return target


# A fresh interpreter: a client world (the first world of the process) plans the core
# action, then an executor world runs the plan.
SCRIPT = """
import json, sys
from pydynflow import World
from pydynflow.plugins import load_plugins
from pydynflow.registry import class_name
from tests.support.plugin_core import ProvisionHost

db, plugins = sys.argv[1], sys.argv[2] == "on"
imported_first = sorted(name for name in sys.modules if name.startswith("pydynflow_demo"))
client = World(db, executor=False, create=True, plugins=plugins)
subscribers = [class_name(cls) for cls in client.subscribed_actions(ProvisionHost)]
plan = client.plan(ProvisionHost, host="db1")
client.stop()
with World(db, auto_execute=False, plugins=plugins) as world:
    done = world.execute(plan.id).wait(60)
print(json.dumps({
    "imported_first": imported_first,
    "subscribers": subscribers,
    "planned": plan.state,
    "run_steps": {step.action_class_name: step.id for step in plan.steps.values()
                  if step.phase == "run"},
    "state": done.state,
    "result": done.result,
    "outputs": {class_name(record.action_class): record.output
                for record in done.actions.values()},
    "imported_after": sorted(name for name in sys.modules if name.startswith("pydynflow_demo")),
    "loaded": [[plugin.name, plugin.error] for plugin in load_plugins()] if plugins else None,
}))
"""


@dataclass
class Run:
    summary: dict[str, Any]
    log: list[dict[str, Any]]


def run_world(plugin_path: Path, tmp: Path, plugins_on: bool) -> Run:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(ROOT)])}
    env.pop("PYDYNFLOW_LOG_LEVEL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            f"sqlite:///{tmp / 'plugins.db'}",
            "on" if plugins_on else "off",
        ],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,  # stderr is a pipe: JSON log lines
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    log = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return Run(json.loads(done.stdout.strip().splitlines()[-1]), log)


@pytest.fixture(scope="module")
def with_plugins(demo_plugin_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_world(demo_plugin_path, tmp_path_factory.mktemp("on"), plugins_on=True)


@pytest.fixture(scope="module")
def without_plugins(demo_plugin_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_world(demo_plugin_path, tmp_path_factory.mktemp("off"), plugins_on=False)


def test_a_plugin_action_subscribed_to_a_core_action_is_planned_and_runs(
    with_plugins: Run,
) -> None:
    summary = with_plugins.summary
    assert summary["imported_first"] == []  # only the world imported the plugin
    assert summary["imported_after"] == [
        "pydynflow_demo_plugin",
        "pydynflow_demo_plugin.actions",
        "pydynflow_demo_plugin.audit",
    ]
    # entry points load by distribution, then name: audit before demo
    assert summary["subscribers"] == [AUDIT, RECORD]
    assert summary["planned"] == "planned"
    assert summary["run_steps"] == {CORE: 2, AUDIT: 4, RECORD: 6}
    assert (summary["state"], summary["result"]) == ("stopped", "success")
    assert summary["outputs"] == {
        CORE: {"provisioned": "db1"},
        AUDIT: {"audited": "db1"},
        RECORD: {"recorded": "db1"},
    }


def test_a_plugin_that_fails_to_import_is_logged_and_skipped(with_plugins: Run) -> None:
    assert with_plugins.summary["loaded"] == [
        ["audit", None],
        ["broken", BROKEN_ERROR],
        ["demo", None],
    ]
    failures = [line for line in with_plugins.log if line["event"].startswith("plugin failed")]
    assert len(failures) == 1, with_plugins.log  # once per process, not once per world
    failure = failures[0]
    assert failure["event"] == "plugin failed to load, skipped"
    assert failure["level"] == "error"
    assert failure["entry_point"] == "broken"
    assert failure["value"] == "pydynflow_demo_plugin.broken"
    assert failure["distribution"] == "pydynflow-demo-plugin"
    assert failure["error"] == BROKEN_ERROR
    assert "broken.py" in failure["exception"]  # the traceback, for the plugin's author


def test_plugins_false_leaves_the_entry_points_alone(without_plugins: Run) -> None:
    summary = without_plugins.summary
    assert summary["subscribers"] == []
    assert summary["run_steps"] == {CORE: 2}
    assert (summary["state"], summary["result"]) == ("stopped", "success")
    assert summary["imported_after"] == []
    assert without_plugins.log == []  # the broken plugin was never imported


# -- the loader, in this process, with entry points made up ------------------------------------


@dataclass
class FakeDistribution:
    name: str


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    dist: FakeDistribution | None
    on_load: Callable[[], Any] = lambda: None
    loads: int = 0

    def load(self) -> Any:
        self.loads += 1
        return self.on_load()


class EntryPoints(list[FakeEntryPoint]):
    """The made-up ``pydynflow.actions`` group, and the groups asked for (``calls``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __call__(self, *, group: str) -> list[FakeEntryPoint]:
        self.calls.append(group)
        return list(self)


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> EntryPoints:
    """Make ``pydynflow.actions`` hold the returned list, in a process that loaded nothing."""
    points = EntryPoints()
    monkeypatch.setattr(plugins, "entry_points", points)
    monkeypatch.setattr(plugins, "_loaded", None)
    monkeypatch.setattr(plugins, "_loading", False)
    return points


def _fail() -> None:
    raise ImportError("no module named 'gone'")


def test_entry_points_load_once_in_a_stable_order(entry_points: EntryPoints) -> None:
    acme, zeta = FakeDistribution("acme"), FakeDistribution("zeta")
    entry_points += [
        FakeEntryPoint("b", "zeta.b", zeta),
        FakeEntryPoint("z", "acme.z:Action", acme),
        FakeEntryPoint("a", "acme.a", acme),
        FakeEntryPoint("a", "acme.a", acme),  # the same distribution twice on sys.path
    ]
    found = load_plugins()
    assert found == (
        Plugin("a", "acme.a", "acme"),
        Plugin("z", "acme.z:Action", "acme"),
        Plugin("b", "zeta.b", "zeta"),
    )
    assert load_plugins() is found
    assert entry_points.calls == ["pydynflow.actions"]
    assert [point.loads for point in entry_points] == [1, 1, 1, 0]


def test_a_failing_entry_point_is_logged_and_the_others_load(entry_points: EntryPoints) -> None:
    entry_points += [
        FakeEntryPoint("gone", "gone.actions", None, _fail),
        FakeEntryPoint("kept", "kept.actions", FakeDistribution("kept")),
    ]
    with capture_logs() as logs:
        found = load_plugins()
    assert found == (
        Plugin("gone", "gone.actions", None, "ImportError: no module named 'gone'"),
        Plugin("kept", "kept.actions", "kept"),
    )
    failures = [line for line in logs if line["log_level"] == "error"]
    assert failures == [
        {
            "event": "plugin failed to load, skipped",
            "log_level": "error",
            "entry_point": "gone",
            "value": "gone.actions",
            "distribution": None,
            "error": "ImportError: no module named 'gone'",
            "exc_info": failures[0]["exc_info"],
        }
    ]
    assert isinstance(failures[0]["exc_info"], ImportError)


def test_unreadable_entry_points_are_logged_and_nothing_loads(
    monkeypatch: pytest.MonkeyPatch, entry_points: EntryPoints
) -> None:
    def unreadable(*, group: str) -> list[Any]:
        raise ValueError("bad entry_points.txt")

    monkeypatch.setattr(plugins, "entry_points", unreadable)
    with capture_logs() as logs:
        assert load_plugins() == ()
    assert [line["event"] for line in logs] == ["plugins not loaded: entry points unreadable"]
    assert logs[0]["error"] == "ValueError: bad entry_points.txt"


def test_a_plugin_that_creates_a_world_while_imported_does_not_recurse(
    entry_points: EntryPoints,
) -> None:
    inner: list[tuple[Plugin, ...]] = []
    entry_points.append(
        FakeEntryPoint("eager", "eager", None, lambda: inner.append(load_plugins()))
    )
    assert load_plugins() == (Plugin("eager", "eager", None),)
    assert inner == [()]
    assert entry_points[0].loads == 1


def test_a_world_loads_plugins_when_created_unless_told_not_to(
    entry_points: EntryPoints,
) -> None:
    entry_points.append(FakeEntryPoint("one", "one", None))
    World("sqlite:///:memory:", executor=False, plugins=False).stop()
    assert entry_points[0].loads == 0 and plugins._loaded is None
    world = World("sqlite:///:memory:", executor=False)
    world.stop()
    assert world.plugins is True
    assert entry_points[0].loads == 1
