"""The documentation builds strictly, its reference comes from docstrings, its samples run.

Every ```python block of every page (docs/ and README.md) runs: a page's blocks in order, as
one script, in an empty directory. A block that truly cannot run (a daemon that waits for a
signal) is marked by an HTML comment on the line before its fence:
``<!-- not runnable: why -->``. A ``print(...)`` whose line ends with a comment, or is
followed by a comment line, must print what the comment says (``...`` stands for anything).
Error texts the pages quote are checked against the code (`test_quoted_texts_are_the_codes`).
"""

from __future__ import annotations

import ast
import html
import importlib.util
import inspect
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import pydynflow
from pydynflow.action import Action
from pydynflow.errors import DynflowError, SerializationError
from pydynflow.serialization import normalize
from pydynflow.world import World

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GETTING_STARTED = DOCS / "getting-started.md"
PAGES = sorted(DOCS.rglob("*.md")) + [README]
TIMEOUT = 300
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_ANY_FENCE = re.compile(r"^```.*?^```\s*$", re.MULTILINE | re.DOTALL)
_NOT_RUNNABLE = re.compile(r"<!--\s*not runnable:\s*(\S.*?)\s*-->")


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


# The tests that read the built site, and those that read one page's run, each share one
# pytest worker (`--dist loadgroup`): the build or the run happens once, not once per worker.
SITE = pytest.mark.xdist_group("docs-site")


def page_group(page: Path) -> pytest.MarkDecorator:
    """The `xdist_group` of the tests that read ``page``'s run (`run_page`)."""
    return pytest.mark.xdist_group(f"docs-page-{page_id(page)}")


@SITE
def test_mkdocs_build_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "getting-started" / "index.html").is_file()
    assert (site / "concepts" / "index.html").is_file()


@SITE
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


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    page: Path
    line: int  # the line of its opening fence
    code: str
    runnable: bool


def page_blocks(page: Path) -> list[Block]:
    """Return the page's python blocks; those after a ``not runnable`` comment are marked."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        marked = bool(before) and _NOT_RUNNABLE.fullmatch(before[-1].strip()) is not None
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(page, line, match.group(1), not marked))
    return blocks


def python_blocks(path: Path) -> list[str]:
    return [block.code for block in page_blocks(path) if block.runnable]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE_PAGES = [page for page in PAGES if python_blocks(page)]

_PRINT_HOOK = """
import builtins, json, sys

_SCRIPT, _LOG, _print = {script!r}, {log!r}, builtins.print


def print(*args, sep=" ", end="\\n", file=None, flush=False):
    frame = sys._getframe(1)
    if frame.f_code.co_filename == _SCRIPT and file in (None, sys.stdout):
        with open(_LOG, "a", encoding="utf-8") as log:
            text = (" " if sep is None else sep).join(map(str, args))
            log.write(json.dumps([frame.f_lineno, text]) + "\\n")
    _print(*args, sep=sep, end=end, file=file, flush=flush)


builtins.print = print
"""


def expected_prints(script: str) -> dict[int, str]:
    """Return ``{line: comment}`` for the ``print(...)`` calls whose output a comment shows:
    on the same line, or alone on the next line."""
    comments = {
        token.start[0]: token.string[1:].strip()
        for token in tokenize.generate_tokens(io.StringIO(script).readline)
        if token.type == tokenize.COMMENT
    }
    lines = script.splitlines()
    expected = {}
    for node in ast.walk(ast.parse(script)):
        if not (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "print"
            and node.lineno == node.end_lineno
        ):
            continue
        comment = comments.get(node.lineno)
        following = node.lineno + 1
        if comment is None and lines[following - 1].lstrip().startswith("#"):
            comment = comments.get(following)
        if comment:
            expected[node.lineno] = comment
    return expected


def pattern_of(text: str) -> re.Pattern[str]:
    """Return a regex for a documented text: ``...`` and ``<name>`` stand for anything."""
    parts = re.split(r"\.\.\.|<\w+>", text)
    return re.compile(".*?".join(re.escape(part) for part in parts), re.DOTALL)


@dataclass
class PageRun:
    done: subprocess.CompletedProcess[str]
    workdir: Path
    script: str
    printed: list[tuple[int, str]]


@pytest.fixture(scope="session")
def run_page(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run a page's runnable blocks (once per test run) and return its `PageRun`."""

    @cache
    def run(page: Path) -> PageRun:
        blocks = python_blocks(page)
        tmp = tmp_path_factory.mktemp(page.stem)
        script_path = tmp / "samples.py"
        log = tmp / "printed.jsonl"
        (tmp / "_docs_print.py").write_text(
            _PRINT_HOOK.format(script=str(script_path), log=str(log)), encoding="utf-8"
        )
        script = "import _docs_print  # noqa\n\n" + "\n\n".join(blocks)
        script_path.write_text(script, encoding="utf-8")
        workdir = tmp / "cwd"
        workdir.mkdir()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)])}
        env.pop("PYDYNFLOW_LOG_LEVEL", None)
        done = subprocess.run(
            [sys.executable, str(script_path)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        printed = []
        if log.exists():
            printed = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
        return PageRun(done, workdir, script, printed)  # type: ignore[arg-type]

    return run


@pytest.mark.parametrize(
    "page",
    [pytest.param(page, id=page_id(page), marks=page_group(page)) for page in RUNNABLE_PAGES],
)
def test_page_samples_run(page: Path, run_page: Any) -> None:
    """Every runnable block of the page runs, and prints what its comments say."""
    run = run_page(page)
    done = run.done
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Task was destroyed" not in done.stderr  # nothing left pending on the loop
    printed: dict[int, list[str]] = {}
    for line, text in run.printed:
        printed.setdefault(line, []).append(text)
    script_lines = run.script.splitlines()
    for line, comment in expected_prints(run.script).items():
        where = f"{page_id(page)}: {script_lines[line - 1].strip()!r}"
        assert line in printed, f"{where} printed nothing"
        for text in printed[line]:
            assert pattern_of(comment).fullmatch(text), f"{where} printed {text!r}, not {comment!r}"


def test_every_block_runs_or_says_why_not() -> None:
    marked = [block for page in PAGES for block in page_blocks(page) if not block.runnable]
    for block in marked:  # a marked block still parses
        ast.parse(block.code, filename=f"{page_id(block.page)}:{block.line}")
    assert len(marked) <= 3, [f"{page_id(b.page)}:{b.line}" for b in marked]
    assert GETTING_STARTED in RUNNABLE_PAGES and README in RUNNABLE_PAGES
    assert DOCS / "concepts.md" in RUNNABLE_PAGES
    assert DOCS / "guides" / "testing.md" in RUNNABLE_PAGES


@page_group(GETTING_STARTED)
def test_getting_started_samples_run(run_page: Any, tmp_path: Path) -> None:
    """The getting-started page's samples run and do what the page says."""
    run = run_page(GETTING_STARTED)
    assert run.done.returncode == 0, run.done.stderr
    assert len(python_blocks(GETTING_STARTED)) >= 5, "getting-started.md lost its samples"
    assert "welcomed Ada, Grace" in run.done.stdout
    assert (run.workdir / "pydynflow.db").is_file()  # the documented default database


def test_getting_started_samples_use_existing_apis() -> None:
    """Every ``world.<name>(`` used on the page is a method of `World`."""
    code = "\n".join(block.code for block in page_blocks(GETTING_STARTED))
    used = set(re.findall(r"\b(?:world|reader|client|World\([^)]*\))\.(\w+)\(", code))
    assert used, "no World calls found"
    missing = sorted(name for name in used if not callable(getattr(World, name, None)))
    assert not missing, f"getting-started.md calls World methods that do not exist: {missing}"
    assert "run_forever" in used


@page_group(README)
def test_readme_sample_runs(run_page: Any) -> None:
    """The README's python example runs as shown and prints what its comments say."""
    done = run_page(README).done
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["stopped success", "Concurrence([Atom(3), Atom(5)])"]


@page_group(DOCS / "guides" / "rescue-and-supervision.md")
def test_rescue_guide_samples_run(run_page: Any) -> None:
    """The rescue-and-supervision guide's samples print what the guide shows."""
    done = run_page(DOCS / "guides" / "rescue-and-supervision.md").done
    assert done.returncode == 0, done.stderr
    assert "ConnectionError: database unreachable" in done.stdout
    assert "CreateVM skipped, RegisterDNS skipped, Announce success" in done.stdout
    assert re.search(r"^warning 2 worker process \d+ died with exit code 3$", done.stdout, re.M)
    assert "bootstrapping phase" not in done.stderr  # the __main__ guards hold


# -- `run` takes an event only to use it ---------------------------------------------------


def run_definitions(code: str, filename: str) -> list[tuple[int, bool]]:
    """Return ``(line, uses its event)`` for each ``run(self, event...)`` defined in ``code``."""
    found = []
    for node in ast.walk(ast.parse(code, filename=filename)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name != "run":
            continue
        parameters = node.args.posonlyargs + node.args.args
        if len(parameters) < 2 or parameters[1].arg != "event":
            continue
        used = any(
            isinstance(name, ast.Name) and name.id == "event"
            for statement in node.body
            for name in ast.walk(statement)
        )
        found.append((node.lineno, used))
    return found


def test_a_run_takes_an_event_only_to_use_it() -> None:
    """A ``run`` without an event parameter never gets `Skip` (API.md, Rules): the docs and
    examples write ``def run(self)`` unless the run reads its event."""
    sources = [(page_id(b.page), b.line, b.code) for p in PAGES for b in page_blocks(p)]
    for path in sorted((ROOT / "examples").glob("*.py")):
        sources.append((str(path.relative_to(ROOT)), 0, path.read_text(encoding="utf-8")))
    unused = []
    checked = 0
    for name, first_line, code in sources:
        for line, used in run_definitions(code, name):
            checked += 1
            if not used:
                unused.append(f"{name}:{first_line + line}")
    assert checked, "no run(self, event) found at all: the scan is broken"
    assert not unused, f"run(self, event) that never reads its event (write run(self)): {unused}"


# -- quoted texts are the code's ------------------------------------------------------------


def _source_templates() -> list[str]:
    """Every string literal of the package, f-string holes as ``\\x00``."""
    templates = []
    for path in Path(pydynflow.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                templates.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                templates.append(
                    "".join(
                        part.value if isinstance(part, ast.Constant) else "\x00"
                        for part in node.values
                    )
                )
    return templates


def in_source(text: str, templates: list[str]) -> bool:
    """Whether ``text`` (``...``/``<name>``: anything) is in one string literal of the code."""
    parts = [part for part in re.split(r"\.\.\.|<\w+>", text) if part]
    for template in templates:
        position = 0
        for part in parts:
            position = template.find(part, position)
            if position < 0:
                break
            position += len(part)
        else:
            return True
    return False


def _prose_quotes(page: Path) -> list[str]:
    """Return the double-quoted texts of a page's prose (not its code), whitespace collapsed."""
    text = _ANY_FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`]*`", "`code`", text)
    return [" ".join(quote.split()) for quote in re.findall(r'"([^"]{4,200}?)"', text)]


NOT_ENGINE_TEXTS = {
    "bootstrapping phase",  # multiprocessing's error, not pydynflow's
    "database is locked",  # SQLite's
    "The rule: a coroutine's locals do not survive a crash",  # an admonition's title
    # performance.md: its wording, its cross-references, a commit message, DESIGN.md's words
    "threads",
    "stored",
    "all at once",
    "x pydynflow",
    "10,000 suspended steps <= 60 MB in all",
    ">= 10x on W1",
    "What is measured",
    "W1 against the floor",
    "Two dispatcher threads (measured best of 1-3 on W1/W2); make bench runs the workloads",
    "within 3x of the raw SQLite floor for the same number of durable state changes",
}

# Texts quoted in code spans (which the prose scan skips): (page, as quoted, the message
# text to find in the code or in a message the code produces).
QUOTED_IN_CODE = [
    (
        "concepts.md",
        "`app.users.CreateUser: input['when']: a value of type datetime is not JSON-serialisable`",
        "app.users.CreateUser: input['when']: a value of type datetime is not JSON-serialisable",
    ),
    ("guides/suspend-and-events.md", '`TimeoutError("Timeout exceeded.")`', "Timeout exceeded."),
    ("guides/suspend-and-events.md", '`"event not delivered"`', "event not delivered"),
    ("guides/rescue-and-supervision.md", "`step failed, retrying`", "step failed, retrying"),
    ("guides/rescue-and-supervision.md", "`died with exit code 1`", "died with exit code"),
    (
        "guides/running-as-a-service.md",
        "`steps still running at stop: stored running, to be recovered`",
        "steps still running at stop: stored running, to be recovered",
    ),
]


def _produced_messages() -> list[str]:
    """Messages made by running the code, for texts quoted with concrete values."""
    messages = []
    try:
        normalize({"when": datetime(2026, 1, 1)}, owner="app.users.CreateUser", field="input")
    except SerializationError as exc:
        messages.append(str(exc))
    client = World("sqlite:///:memory:", executor=False)
    executor = World("sqlite:///:memory:")
    try:
        for world in (client, executor):  # neither is started
            try:
                world.event("plan", 2, "payload")
            except DynflowError as exc:
                messages.append(str(exc))
    finally:
        client.stop()
        executor.stop()
    return messages


def test_quoted_texts_are_the_codes() -> None:
    """Every error or log text the docs quote is one the code writes."""
    templates = _source_templates()
    headings = {
        " ".join(line.lstrip("#").split())
        for page in PAGES
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    unknown = []
    for page in PAGES:
        for quote in _prose_quotes(page):
            if quote in headings or quote in NOT_ENGINE_TEXTS:
                continue
            if not in_source(quote, templates):
                unknown.append(f"{page_id(page)}: {quote!r}")
    produced = _produced_messages()
    for name, quoted, text in QUOTED_IN_CODE:
        page_text_raw = " ".join((DOCS / name).read_text(encoding="utf-8").split())
        assert quoted in page_text_raw, f"{name} no longer quotes {quoted!r}: update the list"
        if not in_source(text, templates) and not any(
            pattern_of(text).search(message) for message in produced
        ):
            unknown.append(f"docs/{name}: {text!r}")
    assert not unknown, "quoted texts the code does not write:\n" + "\n".join(unknown)


def test_client_world_messages_say_what_the_docs_say() -> None:
    """getting-started.md: a world that is not started "needs a started world"."""
    client, executor = _produced_messages()[1:]
    assert "event needs a started world" in client
    assert "event needs a started world" in executor
    page = " ".join(GETTING_STARTED.read_text(encoding="utf-8").split())
    assert '"needs a started world"' in page and '"no executor world is alive"' in page


# -- what the pages and docstrings say about the World --------------------------------------


def _table_rows(page: Path, heading: str) -> list[list[str]]:
    """Return the code names in each row of the first table under ``heading``."""
    text = page.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.findall(r"`(\w+)`", row.split("|")[1]) for row in rows]


def test_getting_started_says_which_calls_need_a_started_world(sqlite_url: str) -> None:
    anywhere, started_only = _table_rows(GETTING_STARTED, "What needs a started world")
    assert {"trigger", "execute", "resume", "event", "cancel", "halt"} <= set(started_only)
    World(sqlite_url).stop()  # create the database
    client = World(sqlite_url, executor=False)
    try:
        plan = client.plan(DocsNoOp)
        for started in (False, True):
            if started:
                client.start()
            for name in started_only:
                arguments: tuple[Any, ...] = {
                    "trigger": (DocsNoOp,),
                    "event": (plan.id, 2, "payload"),
                }.get(name, (plan.id,))
                if started and name == "trigger":  # stored: it waits for an executor
                    triggered = client.trigger(*arguments)
                    assert client.load(triggered.id).state == "planned"
                    continue
                expected = "no executor world is alive" if started else "needs a started world"
                with pytest.raises(DynflowError, match=f"^{name}(: | ){expected}"):
                    getattr(client, name)(*arguments)
        for name in anywhere:  # these work on a world that is not started
            assert name in ("plan", "plan_with_options", "load", "plans", "skip"), name
        assert client.load(plan.id) == plan and len(client.plans()) == 2  # and the triggered
    finally:
        client.stop()


class DocsNoOp(Action):
    def run(self) -> None:
        pass


def test_docstrings_and_readme_say_what_the_code_does() -> None:
    skip = inspect.getdoc(World.skip) or ""
    assert "`resume` the plan to go on" in skip and "then `resume` it" not in skip
    world_doc = inspect.getdoc(World) or ""
    assert "console" not in world_doc  # there is none yet
    delayed = world_doc.split("delayed_executor:", 1)[1].split("\n        name:", 1)[0]
    assert "plans and runs delayed and chained plans" in " ".join(delayed.split())
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "names are fixed in the API" not in readme
    assert "Not built yet" not in readme  # the console was the last piece
    assert "pydynflow web" in readme and "docs/console.md" in readme
