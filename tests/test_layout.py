"""The package's shape, as ``wc -l`` sees it: short module docstrings, modules a reader can
hold, and the long ones saying why in their first line.

That the domain modules at the package top import neither ``actors/`` nor ``storage/`` is
checked in `tests/test_public_api.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pydynflow

PACKAGE = Path(pydynflow.__file__).parent
MAX_DOCSTRING_LINES = 20  # what and why; the design prose goes to docs/internals/
MAX_MODULE_LINES = 600

# The modules allowed past MAX_MODULE_LINES, and why: the first line of each one's docstring
# says it with these words.
LONG_MODULES = {
    "actors/pooled.py": "(one module: one turn protocol)",  # mailbox, dispatcher, actor
    "actors/plan_supervisor.py": "(one module: one actor)",  # one actor's handlers and state
    "execution.py": "(one module: one state machine)",  # every decision reads the same plan
    "world.py": "(one module: one public class)",  # every user call is a `World` method
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _docstring(path: Path) -> tuple[str, int] | None:
    """Return the module docstring and the lines it takes in the file, if there is one."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    first = tree.body[0] if tree.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first.value.value, (first.end_lineno or first.lineno) - first.lineno + 1
    return None


def _docstring_lines(path: Path) -> int:
    found = _docstring(path)
    return 0 if found is None else found[1]


def _module_lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_every_module_says_what_it_is_for_in_a_few_lines(path: Path) -> None:
    found = _docstring(path)
    assert found is not None and found[0].strip(), f"{_name(path)} has no module docstring"
    lines = _docstring_lines(path)
    assert lines <= MAX_DOCSTRING_LINES, (
        f"{_name(path)}: a {lines}-line module docstring; keep what and why in at most "
        f"{MAX_DOCSTRING_LINES} lines and move the design to a page under docs/internals/"
    )


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_a_long_module_says_why_in_its_first_line(path: Path) -> None:
    name = _name(path)
    lines = _module_lines(path)
    if lines <= MAX_MODULE_LINES:
        return
    assert name in LONG_MODULES, (
        f"{name} has {lines} lines: split it by the nouns it holds, or list it in "
        "LONG_MODULES with the reason its docstring's first line gives"
    )
    found = _docstring(path)
    first_line = found[0].strip().splitlines()[0] if found else ""
    assert LONG_MODULES[name] in first_line, (
        f"{name}: the first line of its docstring does not say why"
    )


@pytest.mark.parametrize("name", sorted(LONG_MODULES))
def test_long_modules_listed_are_still_long(name: str) -> None:
    path = PACKAGE / name
    assert path.is_file(), f"{name} is gone: drop it from LONG_MODULES"
    assert _module_lines(path) > MAX_MODULE_LINES, f"{name} is short now: drop it from LONG_MODULES"
