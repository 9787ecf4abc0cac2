"""Values of the user's own types are stored as their plain JSON form (issue 15, point 2).

State changes travel pickled to a writer process that never imports the user's modules, so
an instance of a user's ``str``, ``int``, ``float``, ``dict`` or ``list`` subclass (a ``str``
enum, an ``IntEnum``...) must become the plain builtin before it gets there. The classes below
are local to a function: pickle cannot name them, as the writer cannot load a script's own
classes, so one that reaches a snapshot fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from enum import Enum, IntEnum, IntFlag, StrEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydynflow import Action, PlanningError, PlanState, Result, SerializationError, World
from pydynflow.planning import plan_action
from pydynflow.serialization import normalize

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30
PLAIN = (dict, list, str, int, float, bool, type(None))


def _user_classes() -> tuple[type, ...]:
    """Return a user's subclasses of the JSON types; ``str()`` and the like lie on purpose."""

    class Text(str):
        def __str__(self) -> str:
            return "not the characters"

    class Number(int):
        def __int__(self) -> int:
            return -1

    class Real(float):
        def __float__(self) -> float:
            return -1.0

    class Mapping(dict):
        pass

    class Items(list):
        pass

    class Kind(str, Enum):  # noqa: UP042 (the report's enum: its str() is "Kind.A")
        A = "a"
        B = "b"

    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        LOW = 1
        HIGH = 2

    class Perm(IntFlag):
        READ = 1
        WRITE = 2

    return Text, Number, Real, Mapping, Items, Kind, Colour, Level, Perm


Text, Number, Real, Mapping, Items, Kind, Colour, Level, Perm = _user_classes()

finite = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=6)
strings = st.one_of(texts, st.builds(Text, texts), st.sampled_from(Kind), st.sampled_from(Colour))
labels = st.one_of(
    st.text(min_size=1, max_size=6),
    st.builds(Text, st.text(min_size=1, max_size=6)),
    st.sampled_from(Kind),
    st.sampled_from(Colour),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    finite,
    strings,
    st.builds(Number, st.integers()),
    st.builds(Real, finite),
    st.sampled_from(Level),
    st.sampled_from([Perm.READ, Perm.READ | Perm.WRITE]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.builds(Items, st.lists(children, max_size=3)),
        st.tuples(children, children),
        st.dictionaries(strings, children, max_size=3),
        st.builds(Mapping, st.dictionaries(strings, children, max_size=3)),
    ),
    max_leaves=8,
)


def json_form(value: Any) -> Any:
    """Return what a JSON round trip makes of ``value``."""
    return json.loads(json.dumps(value))


def assert_plain(value: Any) -> None:
    """Fail unless ``value`` is made of exact builtins only."""
    assert type(value) in PLAIN, type(value)
    if type(value) is dict:
        for key, item in value.items():
            assert type(key) is str, type(key)
            assert_plain(item)
    elif type(value) is list:
        for item in value:
            assert_plain(item)


# -- normalize: the check every input, output and event goes through --------------------


@given(values)
def test_normalize_returns_the_json_form_in_plain_builtins(value: Any) -> None:
    result = normalize({"value": value}, owner="A", field="input")
    assert result == {"value": json_form(value)}
    assert_plain(result)


@pytest.mark.parametrize("value", [Real("nan"), Real("inf"), Real("-inf")])
def test_normalize_refuses_a_float_subclass_that_is_not_finite(value: float) -> None:
    with pytest.raises(SerializationError, match="is not valid JSON"):
        normalize({"value": value}, owner="A", field="output")


# -- class attributes: label, queue, progress weights ------------------------------------


class UserValuesBadLabel(Action):
    label = 5

    def run(self) -> None:
        pass


class UserValuesBadQueue(Action):
    queue = None

    def run(self) -> None:
        pass


class UserValuesAttributes(Action):
    label = Kind.A
    queue = Colour.RED
    run_progress_weight = Level.HIGH

    def run(self) -> None:
        pass


def test_label_queue_and_weight_of_user_types_become_plain() -> None:
    plan = plan_action(UserValuesAttributes, ({},))
    step = plan.steps[2]
    assert (plan.label, step.queue, step.progress_weight) == ("a", "red", 2)
    assert (type(plan.label), type(step.queue), type(step.progress_weight)) == (str, str, int)


def test_a_label_that_is_not_a_str_is_refused_naming_the_class() -> None:
    with pytest.raises(PlanningError, match=r"UserValuesBadLabel: label must be a str, got 5"):
        plan_action(UserValuesBadLabel, ({},))


def test_a_queue_that_is_not_a_str_fails_planning_naming_the_class() -> None:
    plan = plan_action(UserValuesBadQueue, ({},))
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.ERROR)
    assert "UserValuesBadQueue: queue must be a str, got None" in plan.steps[1].error.message


def test_output_chunk_kind_must_be_a_str() -> None:
    with pytest.raises(SerializationError, match="output chunk kind: 3 is not a str"):
        UserValuesAttributes().output_chunk("line", kind=3)


# -- through a world: input, label, output, output chunks, events, errors ----------------


class UserValuesFailure(Exception):
    """Fail with the JSON of the given value as the message, a user's str subclass."""

    def __str__(self) -> str:
        return Text(json.dumps(self.args[0]))


class UserValuesRoundTrip(Action):
    """Output the test's value, stream it, wait for an event, then fail with it.

    The test sets ``label`` before planning. The value comes from ``sent``, not from the
    input, which holds the plain form once planned.
    """

    sent: dict[str, tuple[Any, Any]] = {}
    parked: dict[str, threading.Event] = {}

    def run(self, event: Any = None) -> None:
        key = self.input["key"]
        value, kind = UserValuesRoundTrip.sent[key]
        if "value" not in self.output:  # the first call (the event may be None too)
            self.output["value"] = value
            self.output_chunk(value, kind=kind)
            self.suspend(lambda ref: UserValuesRoundTrip.parked[key].set())
        self.output["event"] = event
        raise UserValuesFailure(value)


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    """A started world on a SQLite file, with the default writer: a process."""
    with World(sqlite_url, auto_rescue=False, auto_execute=False) as started:
        yield started
    UserValuesRoundTrip.label = None
    UserValuesRoundTrip.sent.clear()
    UserValuesRoundTrip.parked.clear()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(label=labels, value=values, kind=st.one_of(st.none(), strings), event=values)
def test_user_values_are_stored_as_their_json_form(
    world: World, label: str, value: Any, kind: Any, event: Any
) -> None:
    key = uuid.uuid4().hex
    UserValuesRoundTrip.label = label
    UserValuesRoundTrip.sent[key] = (value, kind)
    UserValuesRoundTrip.parked[key] = threading.Event()

    triggered = world.trigger(UserValuesRoundTrip, {"key": key, "value": value})
    assert UserValuesRoundTrip.parked[key].wait(TIMEOUT)
    world.event(triggered.id, 2, event)
    assert triggered.wait(TIMEOUT).state == PlanState.PAUSED

    plan = world.load(triggered.id)
    assert plan.label == json_form(label)
    assert plan.actions[1].input == {"key": key, "value": json_form(value)}
    assert plan.actions[1].output == {"value": json_form(value), "event": json_form(event)}
    assert plan.steps[2].error.message == json.dumps(value)
    chunks = world.storage.output_chunks(plan.id, 1)
    assert [(chunk["chunk"], chunk["kind"]) for chunk in chunks] == [
        (json_form(value), json_form(kind))
    ]


# -- the report: a script's str enum as input and label ----------------------------------

REPORT = """
import enum
import sys

from pydynflow import Action, World


class Kind(str, enum.Enum):
    A = "a"


class Report(Action):
    label = Kind.A

    def run(self):
        self.output["kind"] = Kind.A


with World(sys.argv[1]) as world:
    world.trigger(Report, {"kind": Kind.A}).wait(60)
"""


def test_a_scripts_str_enum_as_input_and_label(tmp_path: Path, sqlite_url: str) -> None:
    script = tmp_path / "report.py"
    script.write_text(REPORT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), sqlite_url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    client = World(sqlite_url, executor=False)
    try:
        (listed,) = client.plans(limit=None)
        plan = client.load(listed.id)
    finally:
        client.stop()
    assert (plan.state, plan.result) == (PlanState.STOPPED, Result.SUCCESS)
    assert (plan.label, type(plan.label)) == ("a", str)
    assert (plan.actions[1].input, plan.actions[1].output) == ({"kind": "a"}, {"kind": "a"})
