"""The /predict answer body, with and without the preprocessed pixels; v2 JSON and binary tensors."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.http import bodies
from service.http.bodies import (
    BINARY_HEADER,
    MAX_BINARY_PLANS,
    MAX_PLANNED_HEADER_BYTES,
    Limits,
    V2Request,
    parse_v2_infer,
    predictions_body,
    v2_infer_body,
)
from service.http.bounded_cache import BoundedCache

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


# --- v2 binary tensors: the JSON header is validated once per distinct header ----------------------


def _binary_request(
    tensor: bytes, datatype: str = "UINT8", shape: list[int] | None = None, **header: object
) -> tuple[bytes, dict[str, str]]:
    spec = {
        "name": "pixels",
        "datatype": datatype,
        "shape": shape or [1, 784],
        "parameters": {"binary_data_size": len(tensor)},
    }
    json_part = orjson.dumps({"inputs": [spec], **header})
    return json_part + tensor, {"inference-header-content-length": str(len(json_part))}


def _parse_binary(body: bytes, headers: dict[str, str], limits: Limits = LIMITS) -> V2Request:
    return parse_v2_infer(body, headers, "pixels", "probabilities", limits)


def test_a_repeated_binary_header_still_reads_each_requests_own_pixels() -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (2, 784), dtype=np.uint8) for _ in range(3)]
    for image in images:  # the same header each time: the first parses it, the others reuse it
        request = _parse_binary(*_binary_request(image.tobytes(), shape=[2, 784], id="same"))
        assert request.pixels.shape == (2, 1, 28, 28) and request.pixels.dtype == np.uint8
        assert np.array_equal(request.pixels.reshape(2, 784), image)
        assert request.id == "same" and request.binary_output is False


def test_a_repeated_binary_header_is_still_checked_against_each_body() -> None:
    image = np.arange(784, dtype=np.int64).astype(np.uint8).tobytes()
    body, headers = _binary_request(image)
    _parse_binary(body, headers)
    with pytest.raises(BadRequest, match="binary_data_size does not match"):
        _parse_binary(body[:-1], headers)  # the same header with one byte missing
    assert np.array_equal(_parse_binary(body, headers).pixels.reshape(-1), np.frombuffer(image, np.uint8))


def test_a_repeated_fp32_binary_header_still_checks_every_value() -> None:
    good = np.full(784, 7.0, np.float32)
    assert (_parse_binary(*_binary_request(good.tobytes(), "FP32")).pixels == 7).all()
    for bad, message in ((np.nan, "NaN or infinity"), (300.0, "within 0..255")):
        values = good.copy()
        values[5] = bad
        with pytest.raises(Unprocessable, match=message):
            _parse_binary(*_binary_request(values.tobytes(), "FP32"))
    rounded = good + np.float32(0.4)  # FP32 is rounded, as on the first parse
    assert (_parse_binary(*_binary_request(rounded.tobytes(), "FP32")).pixels == 7).all()


def test_a_header_accepted_under_one_image_limit_is_refused_under_a_lower_one() -> None:
    body, headers = _binary_request(bytes(4 * 784), shape=[4, 784])
    assert len(_parse_binary(body, headers).pixels) == 4
    with pytest.raises(PayloadTooLarge):
        _parse_binary(body, headers, Limits(max_images=2, max_pixels=4_000_000))


def test_headers_that_differ_per_request_are_all_answered_and_not_all_kept() -> None:
    for number in range(3 * MAX_BINARY_PLANS):  # an id per request: every header is new
        image = bytes([number % 256]) * 784
        request = _parse_binary(*_binary_request(image, id=f"request-{number}"))
        assert request.id == f"request-{number}" and (request.pixels == number % 256).all()
    assert len(bodies._binary_plans) <= MAX_BINARY_PLANS


def test_a_padded_header_over_the_byte_bound_is_answered_and_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plans = BoundedCache(MAX_BINARY_PLANS, MAX_PLANNED_HEADER_BYTES)
    monkeypatch.setattr(bodies, "_binary_plans", plans)
    body, headers = _binary_request(bytes(784))
    start = int(headers[BINARY_HEADER])
    padding = b" " * MAX_PLANNED_HEADER_BYTES  # JSON allows the whitespace: the same request, larger
    padded = body[: start - 1] + padding + body[start - 1 :]
    padded_headers = {BINARY_HEADER: str(start + len(padding))}
    assert _parse_binary(padded, padded_headers).pixels.shape == (1, 1, 28, 28)
    assert len(plans) == 0
    assert _parse_binary(body, headers).pixels.shape == (1, 1, 28, 28)
    assert len(plans) == 1


# --- v2 JSON answers: a prefix written once per shape and version, the numbers per answer ------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5),
    st.sampled_from(["1", "12", 'v"2\\']),
    st.one_of(st.none(), st.text(max_size=12)),
)
def test_v2_json_answers_are_the_bytes_of_the_whole_answer_encoded_at_once(
    images: int, version: str, request_id: str | None
) -> None:
    probabilities = np.random.default_rng(images).random((images, 10), dtype=np.float32)
    request = V2Request(np.zeros((images, 1, 28, 28), np.uint8), request_id, binary_output=False)
    expected: dict[str, object] = {
        "model_name": "mnist",
        "model_version": version,
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [images, 10],
                "data": probabilities.reshape(-1).tolist(),
            }
        ],
    }
    if request_id is not None:
        expected["id"] = request_id
    for _ in range(2):  # the first answer of a shape writes the prefix, the second reuses it
        body, headers = v2_infer_body(probabilities, request, "mnist", version, "probabilities")
        assert body == orjson.dumps(expected)
        assert dict(headers) == {"content-type": "application/json"}
