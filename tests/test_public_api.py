"""The public names of API.md are importable where it says, and the package is typed."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import pydynflow

PACKAGE = Path(pydynflow.__file__).parent

# API.md: "Everything below is importable from the package top".
TOP_LEVEL = [
    "Action",
    "World",
    "Triggered",
    "ExecutionPlan",
    "Step",
    "StepError",
    "ActionRecord",
    "HistoryEntry",
    "Sequence",
    "Concurrence",
    "Atom",
    "Pause",
    "Skip",
    "Fail",
    "Retry",
    "RescuePolicy",
    "PlanState",
    "StepState",
    "Result",
    "Polling",
    "Cancellable",
    "Singleton",
    "WithSubPlans",
    "DynflowError",
    "SerializationError",
    "UnknownPlan",
    "UnknownStep",
    "UnknownAction",
    "EventRejected",
    "InvalidTransition",
    "PlanningError",
    "PersistenceError",
    "CorruptData",
    "on_plan",
    "WorldInfo",
    "Middleware",
]
EVENTS = ["Skip", "Cancel", "Abort", "Timeout", "Poll", "Ping"]
TESTING = [
    "create_and_plan_action",
    "run_action",
    "finalize_action",
    "ManagedClock",
    "InThreadWorld",
]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_api_names_are_importable_from_the_package_top(name: str) -> None:
    assert hasattr(pydynflow, name), f"from pydynflow import {name} fails"
    assert name in pydynflow.__all__


@pytest.mark.parametrize(("module", "name"), [("pydynflow.events", n) for n in EVENTS])
def test_engine_events_live_in_pydynflow_events(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", TESTING)
def test_testing_helpers_live_in_pydynflow_testing(name: str) -> None:
    assert hasattr(importlib.import_module("pydynflow.testing"), name)


def _pydynflow_imports(path: Path) -> set[str]:
    """Return every ``pydynflow.*`` module ``path`` imports, at any depth (lazy ones too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.startswith("pydynflow.")}


DOMAIN = sorted(
    path
    for path in PACKAGE.glob("*.py")
    if path.name not in ("__init__.py", "world.py", "phases.py", "logging.py")
)


@pytest.mark.parametrize("path", DOMAIN, ids=lambda path: path.name)
def test_the_domain_model_does_not_import_the_runtime(path: Path) -> None:
    # The runtime (actors/, the phase runner) and storage may import the domain, never the
    # reverse: not even lazily inside a function (STYLE.md). world.py is the API that wires
    # them together; phases.py runs user code for the runtime.
    runtime = ("pydynflow.actors", "pydynflow.storage", "pydynflow.adapters", "pydynflow.phases")
    upward = sorted(name for name in _pydynflow_imports(path) if name.startswith(runtime))
    assert not upward, f"{path.name} imports {upward}"


def test_the_package_ships_py_typed() -> None:
    assert (resources.files("pydynflow") / "py.typed").is_file()


def test_mypy_checks_user_code_against_the_annotations(tmp_path: Path) -> None:
    user = tmp_path / "user_code.py"
    user.write_text(
        "from pydynflow import World\n"
        "world = World(pool_size='five')\n"  # an int, says the annotation
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", str(user)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'Argument "pool_size" to "World" has incompatible type "str"' in done.stdout
