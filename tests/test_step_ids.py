"""`StepIds` behaves as a set of non-negative ints for every operation the engine uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydynflow.step_ids import StepIds

ids = st.integers(min_value=0, max_value=2_000)
operations = st.lists(st.tuples(st.sampled_from(["add", "discard", "update"]), st.lists(ids)))


@given(operations, st.lists(ids))
def test_behaves_as_a_set_of_ints(steps: list[tuple[str, list[int]]], other: list[int]) -> None:
    mine, model = StepIds(), set()
    for operation, values in steps:
        if operation == "update":
            mine.update(values)
            model.update(values)
        else:
            for value in values:
                getattr(mine, operation)(value)
                getattr(model, operation)(value)
        assert list(mine) == sorted(model)
        assert len(mine) == len(model) and bool(mine) == bool(model)
        assert mine == model and mine == StepIds(model)
    for value in [*other, -1, 2_001]:
        assert (value in mine) == (value in model)
    assert list(mine - other) == sorted(model - set(other))
    assert list(mine - StepIds(other)) == sorted(model - set(other))
    assert list(mine) == sorted(model)  # `-` left it alone


def test_refuses_a_negative_id_and_is_not_hashable() -> None:
    with pytest.raises(ValueError, match="non-negative, got -3"):
        StepIds().add(-3)
    with pytest.raises(TypeError):
        hash(StepIds())
    assert "x" not in StepIds([1]) and repr(StepIds([3, 1])) == "StepIds([1, 3])"
