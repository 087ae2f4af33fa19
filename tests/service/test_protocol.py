"""The /predict answer body, with and without the preprocessed pixels; v2 JSON tensor data."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import Unprocessable
from service.protocol import Limits, parse_v2_infer, predictions_body

MODEL = {"name": "mnist", "version": "1", "backend": "onnx", "device": "cpu"}


def test_predictions_carry_digit_confidence_and_probabilities_only_by_default() -> None:
    probabilities = np.eye(10, dtype=np.float32)[[3, 7]]
    body = orjson.loads(predictions_body(probabilities, MODEL))
    assert [p["digit"] for p in body["predictions"]] == [3, 7]
    assert [p["confidence"] for p in body["predictions"]] == [1.0, 1.0]
    assert all(set(p) == {"digit", "confidence", "probabilities"} for p in body["predictions"])
    assert body["model"] == MODEL


def test_pixels_become_28_rows_of_28_values_per_prediction() -> None:
    probabilities = np.eye(10, dtype=np.float32)[[3, 7]]
    pixels = np.arange(2 * 784, dtype=np.int64).reshape(2, 1, 28, 28).astype(np.uint8)
    body = orjson.loads(predictions_body(probabilities, MODEL, pixels))
    for prediction, image in zip(body["predictions"], pixels[:, 0], strict=True):
        assert np.array_equal(np.array(prediction["pixels"], dtype=np.uint8), image)
        assert len(prediction["pixels"]) == 28 and all(len(row) == 28 for row in prediction["pixels"])


def test_digit_and_confidence_agree_with_argmax_and_max_including_ties() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.random((64, 10), dtype=np.float32)
    probabilities[0] = [0.1, 0.3, 0.3, 0.0, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0]  # a tie: the first index wins
    predictions = orjson.loads(predictions_body(probabilities, MODEL))["predictions"]
    assert [p["digit"] for p in predictions] == probabilities.argmax(1).tolist()
    assert [p["confidence"] for p in predictions] == probabilities.max(1).tolist()
    assert [p["probabilities"] for p in predictions] == probabilities.tolist()
    assert predictions[0]["digit"] == 1


# --- v2 JSON tensors -----------------------------------------------------------------------------------

LIMITS = Limits(max_images=8, max_pixels=4_000_000)


def _v2_pixels(data: object, datatype: str = "UINT8", shape: list[int] | None = None) -> np.ndarray:
    tensor = {"name": "pixels", "datatype": datatype, "shape": shape or [1, 784], "data": data}
    body = orjson.dumps({"inputs": [tensor]})
    return parse_v2_infer(body, {}, "pixels", "probabilities", LIMITS).pixels


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 255), min_size=784, max_size=784),
    st.sampled_from(["UINT8", "FP32"]),
    st.booleans(),
)
def test_v2_json_whole_number_data_gives_the_same_pixels_however_it_is_written(
    values: list[int], datatype: str, nested: bool
) -> None:
    data = [values[row : row + 28] for row in range(0, 784, 28)] if nested else values
    expected = np.array(values, dtype=np.uint8).reshape(1, 1, 28, 28)
    assert np.array_equal(_v2_pixels(data, datatype), expected)
    as_floats = [float(value) for value in values]  # the general (numpy) path must agree
    assert np.array_equal(_v2_pixels(as_floats, datatype), expected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([256] + [0] * 783, "within 0..255"),
        ([-1] + [0] * 783, "within 0..255"),
        ([0] * 783 + [0.5], "whole numbers"),
        ([0] * 783, "holds 783 values but shape"),
        (["7"] + [0] * 783, "must be numbers"),
    ],
)
def test_v2_json_data_refusals_keep_their_wording(data: list[object], message: str) -> None:
    with pytest.raises(Unprocessable, match=message):
        _v2_pixels(data)
