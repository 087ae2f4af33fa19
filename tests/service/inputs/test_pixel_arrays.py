"""The fast path for JSON pixel lists must accept exactly what the general path accepts, identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import Unprocessable
from service.inputs.pixel_arrays import array_to_pixels, byte_lists

SHAPES = [(28, 28), (784,), (2, 28, 28), (2, 784), (1, 1, 28, 28), (3, 5), (2, 3, 4, 5, 6)]
CHECKS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
leaves = st.one_of(
    st.integers(0, 255),
    st.integers(-2, 258),
    st.booleans(),
    st.floats(0, 255),
    st.text(max_size=3),
    st.none(),
)


def _shaped(shape: tuple[int, ...], leaf: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    strategy = leaf
    for length in reversed(shape):
        strategy = st.lists(strategy, min_size=length, max_size=length)
    return strategy


@CHECKS
@given(
    st.sampled_from(
        [(28, 28), (784,), (2, 28, 28), (2, 784), (1, 1, 28, 28), (3, 5), (2, 3, 4, 5, 6)]
    ).flatmap(lambda shape: _shaped(shape, st.one_of(st.integers(0, 255), leaves)))
)
def test_fast_path_agrees_with_numpy(values: object) -> None:
    fast = byte_lists(values)
    if fast is None:
        return
    expected = np.array(values)
    assert expected.dtype.kind in "iub" and fast.shape == expected.shape
    assert expected.min() >= 0 and expected.max() <= 255
    np.testing.assert_array_equal(fast, expected)


@CHECKS
@given(st.recursive(leaves, lambda children: st.lists(children, max_size=6), max_leaves=60))
def test_fast_path_refuses_what_is_not_rectangular_bytes(values: object) -> None:
    fast = byte_lists(values)
    if fast is not None:
        np.testing.assert_array_equal(fast, np.array(values))


@pytest.mark.parametrize("shape", [(28, 28), (784,), (3, 28, 28), (3, 784), (3, 1, 28, 28)])
def test_valid_integer_lists_take_the_fast_path(shape: tuple[int, ...]) -> None:
    values = (np.arange(int(np.prod(shape))) % 256).reshape(shape)
    fast = byte_lists(values.tolist())
    assert fast is not None and fast.shape == shape
    np.testing.assert_array_equal(array_to_pixels(values.tolist(), 8).reshape(shape), values)


@pytest.mark.parametrize(
    "values",
    [
        [[1, 2], [3]],  # ragged
        [[1] * 28, 28],  # an int where a row belongs: bytes(28) would be 28 zero bytes
        [[1] * 3, "abc"],  # a string of the right length
        [[1, 256]],  # out of range
        [[1, -1]],
        [[1, 2.0]],  # a float: the general path decides (whole floats are allowed there)
        [[[[[1]]]]],  # too deep
        [],
    ],
)
def test_the_general_path_decides_everything_else(values: object) -> None:
    assert byte_lists(values) is None


def test_true_and_false_among_whole_numbers_are_refused() -> None:
    rows = [[0] * 28 for _ in range(28)]
    rows[3][4] = True
    text = json.dumps(rows).encode()
    assert b"true" in text
    assert byte_lists(rows, text) is None and byte_lists(rows) is None
    with pytest.raises(Unprocessable, match="true or false"):
        array_to_pixels(rows, 8, text)
    rows[3][4] = 1
    assert byte_lists(rows, json.dumps(rows).encode()) is not None  # no such word: no value-by-value look
