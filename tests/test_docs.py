"""The documentation builds strictly, its reference comes from docstrings, its samples run."""

from __future__ import annotations

import html
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pydynflow.action import Action
from pydynflow.world import World

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GETTING_STARTED = DOCS / "getting-started.md"
TIMEOUT = 300
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def _require_mkdocs() -> None:
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
        if _find_spec(name) is None
    ]
    if missing:
        pytest.skip(
            f"mkdocs is not installed ({', '.join(missing)} missing); install the dev extras: "
            "pip install 'mkdocs-material>=9.5' 'mkdocstrings[python]>=0.25'"
        )


def _find_spec(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the site with ``mkdocs build --strict`` into a temporary directory."""
    _require_mkdocs()
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(target)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    warnings = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "WARNING" in line or "ERROR" in line
    ]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(
        warnings or (done.stdout + done.stderr).splitlines()[-30:]
    )
    return target


def page_text(path: Path) -> str:
    """Return the visible text of an HTML page, whitespace collapsed."""
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.DOTALL)
    raw = re.sub(r"</?(p|div|li|td|th|tr|h\d|pre|br)\b[^>]*>", " ", raw)  # blocks: a space
    text = html.unescape(re.sub(r"<[^>]+>", "", raw))  # inline tags (code, a...): nothing
    return " ".join(text.split())


def docstring_sentences(obj: Any) -> list[str]:
    """Return the plain prose paragraphs of ``obj``'s docstring (no sections, no markup)."""
    doc = inspect.getdoc(obj) or ""
    paragraphs = []
    for paragraph in doc.split("\n\n"):
        if re.match(r"^\w[\w ]*:\s*$", paragraph.splitlines()[0]):  # "Args:", "Raises:"...
            break
        text = " ".join(paragraph.split())
        text = text.replace("``", "").replace("`", "")
        paragraphs.append(text)
    return paragraphs


def assert_page_has_docstring(page: Path, obj: Any) -> None:
    text = page_text(page)
    paragraphs = docstring_sentences(obj)
    assert paragraphs, f"{obj!r} has no docstring"
    for paragraph in paragraphs:
        assert paragraph in text, f"{page.name}: docstring text of {obj!r} missing: {paragraph!r}"


def test_mkdocs_build_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "getting-started" / "index.html").is_file()
    assert (site / "concepts" / "index.html").is_file()


def test_reference_is_generated_from_docstrings(site: Path) -> None:
    world_page = site / "reference" / "world" / "index.html"
    actions_page = site / "reference" / "actions" / "index.html"
    assert_page_has_docstring(world_page, World)
    assert_page_has_docstring(world_page, World.plans)
    assert_page_has_docstring(world_page, World.trigger)
    assert_page_has_docstring(actions_page, Action)
    assert_page_has_docstring(actions_page, Action.plan_self)
    assert_page_has_docstring(actions_page, Action.plan_action)
    # the Args section of World's docstring is rendered as a parameter table
    assert "pool_size" in page_text(world_page)
    assert "worker threads of the default queue" in page_text(world_page)


def test_getting_started_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "getting-started.md" in config


def python_blocks(path: Path) -> list[str]:
    return [block for block in _FENCE.findall(path.read_text(encoding="utf-8"))]


def run_samples(page: Path, tmp_path: Path, at_least: int) -> subprocess.CompletedProcess[str]:
    """Run a page's ```python blocks, in order, as one script, in an empty directory."""
    blocks = python_blocks(page)
    assert len(blocks) >= at_least, f"{page.name} lost its samples"
    script = tmp_path / "samples.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYDYNFLOW_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Task was destroyed" not in done.stderr  # nothing left pending on the loop
    return done


def test_getting_started_samples_run(tmp_path: Path) -> None:
    """The getting-started page's samples run and do what the page says."""
    done = run_samples(GETTING_STARTED, tmp_path, 5)
    assert "welcomed Ada, Grace" in done.stdout
    assert (tmp_path / "cwd" / "pydynflow.db").is_file()  # the documented default database


def test_getting_started_samples_use_existing_apis() -> None:
    """Every ``world.<name>(`` used on the page is a method of `World`."""
    code = "\n".join(python_blocks(GETTING_STARTED))
    used = set(re.findall(r"\b(?:world|reader|client)\.(\w+)\(", code))
    assert used, "no World calls found"
    missing = sorted(name for name in used if not callable(getattr(World, name, None)))
    assert not missing, f"getting-started.md calls World methods that do not exist: {missing}"


def test_readme_sample_runs(tmp_path: Path) -> None:
    """The README's python example runs as shown and prints what its comments say."""
    done = run_samples(ROOT / "README.md", tmp_path, 1)
    assert done.stdout.splitlines()[:2] == ["stopped success", "Concurrence([Atom(3), Atom(5)])"]


def test_suspend_guide_samples_run(tmp_path: Path) -> None:
    """The suspend-and-events guide's samples run."""
    run_samples(DOCS / "guides" / "suspend-and-events.md", tmp_path, 5)


def test_rescue_guide_samples_run(tmp_path: Path) -> None:
    """The rescue-and-supervision guide's samples run and print what the guide shows."""
    done = run_samples(DOCS / "guides" / "rescue-and-supervision.md", tmp_path, 7)
    assert "ConnectionError: database unreachable" in done.stdout
    assert "CreateVM skipped, RegisterDNS skipped, Announce success" in done.stdout
    assert re.search(r"^warning 2 worker process \d+ died with exit code 3$", done.stdout, re.M)
    assert "bootstrapping phase" not in done.stderr  # the __main__ guards hold
