"""Input checks and reference detection against their plain definitions, on generated data."""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydynflow.errors import SerializationError
from pydynflow.references import OutputReference, has_references, iter_references
from pydynflow.serialization import normalize


class Level(IntEnum):
    """An int subclass: kept as it is, like any scalar."""

    LOW = 1


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.just(Level.LOW),
)
references = st.builds(
    OutputReference,
    execution_plan_id=st.just("p"),
    step_id=st.integers(1, 9),
    action_id=st.integers(1, 9),
    subkeys=st.lists(st.text(max_size=3), max_size=2),
)
values = st.recursive(
    st.one_of(scalars, references),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), children, max_size=4),
    ),
    max_leaves=12,
)


def plain_normalize(value: Any) -> Any:
    """What `normalize` (references allowed) means, written the obvious way."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SerializationError("not finite")
    if isinstance(value, (str, int, float, bool, type(None), OutputReference)):
        return value
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise SerializationError("key")
        return {key: plain_normalize(item) for key, item in value.items()}
    return [plain_normalize(item) for item in value]


@given(values)
def test_normalize_matches_its_plain_definition(value: Any) -> None:
    try:
        expected = plain_normalize(value)
    except SerializationError:
        with pytest.raises(SerializationError):
            normalize(value, owner="A", field="input", allow_references=True)
        return
    result = normalize(value, owner="A", field="input", allow_references=True)
    assert result == expected
    if isinstance(value, dict):
        assert result is not value  # a copy: later changes to the caller's dict do not leak


@given(values)
def test_has_references_matches_iter_references(value: Any) -> None:
    assert has_references(value) == any(True for _ in iter_references(value))


def test_copy_plain_shares_no_list_or_dict() -> None:
    from pydynflow.serialization import copy_plain

    value = {"a": [1, {"b": [2]}], "c": "x", "d": {"e": []}}
    copied = copy_plain(value)
    assert copied == value
    copied["a"][1]["b"].append(3)
    copied["d"]["e"].append(1)
    assert value == {"a": [1, {"b": [2]}], "c": "x", "d": {"e": []}}
