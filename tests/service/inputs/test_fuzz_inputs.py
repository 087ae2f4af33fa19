"""Property-based fuzzing of everything that parses client data: only ServiceErrors (4xx) may escape."""

from __future__ import annotations

import io
import json

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.errors import ServiceError
from service.http.bodies import Limits, json_to_pixels, parse_v2_infer
from service.inputs.images import DecodeBudget, decode_image, image_to_pixels
from service.inputs.pixel_arrays import array_to_pixels

LIMITS = Limits(max_images=8, max_pixels=4_000_000)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_or_refused(call, *args) -> None:
    try:
        pixels = call(*args)
    except ServiceError as error:
        assert 400 <= error.status < 500, error
        return
    assert pixels.dtype == np.uint8 and pixels.shape[-2:] == (28, 28)


def _image(mode: str, size: tuple[int, int], image_format: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    base.save(buffer, format=image_format)
    return buffer.getvalue()


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _valid_or_refused(image_to_pixels, data)


FORMAT_MODES = (
    [("PNG", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")]
    + [("TIFF", m) for m in ("1", "L", "RGB", "CMYK", "F", "I", "YCbCr")]
    + [("JPEG", m) for m in ("L", "RGB", "CMYK")]
    + [("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGBA")]
)


@FUZZ
@given(
    st.sampled_from(FORMAT_MODES),
    st.integers(1, 120),
    st.integers(1, 120),
    st.integers(0, 2**16),
    st.floats(0, 1),
)
def test_odd_modes_sizes_and_truncations(
    format_mode, width: int, height: int, seed: int, keep: float
) -> None:
    image_format, mode = format_mode
    data = _image(mode, (width, height), image_format, seed)
    _valid_or_refused(image_to_pixels, data)
    _valid_or_refused(image_to_pixels, data[: int(len(data) * keep)])


@FUZZ
@given(
    st.recursive(
        st.one_of(
            st.none(), st.booleans(), st.integers(-300, 300), st.floats(allow_nan=True), st.text(max_size=5)
        ),
        lambda children: st.lists(children, max_size=30),
        max_leaves=900,
    )
)
def test_arbitrary_pixel_payloads(values: object) -> None:
    _valid_or_refused(array_to_pixels, values, 8)


@FUZZ
@given(
    st.lists(st.integers(0, 30), min_size=0, max_size=5),
    st.sampled_from([np.uint8, np.float32, np.float64, np.int64]),
    st.sampled_from([0.0, np.nan, np.inf, -1.0, 255.5, 256.0]),
)
def test_wrong_shapes_dtypes_and_special_values(shape: list[int], dtype: type, special: float) -> None:
    array = np.zeros(shape, dtype=np.float64)
    if array.size:
        array.flat[0] = special
    candidate = (
        array.astype(dtype) if dtype is not np.uint8 else np.nan_to_num(array).clip(0, 255).astype(dtype)
    )
    _valid_or_refused(array_to_pixels, candidate, 8)


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=False), st.text(max_size=8)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=60,
)


@FUZZ
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({"pixels": json_values}),
        st.fixed_dictionaries({"images": st.lists(st.text(max_size=40), max_size=3)}),
        st.fixed_dictionaries({"image": st.text(max_size=60)}),
    )
)
def test_predict_json_bodies(payload: object) -> None:
    _valid_or_refused(json_to_pixels, json.dumps(payload).encode(), LIMITS)


tensor_specs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["pixels", "image", ""]),
        "datatype": st.one_of(st.sampled_from(["UINT8", "FP32", "INT64", "BYTES"]), json_values),
        # Small dimensions, and ones numpy cannot reshape to (2**40, 2**63, ...).
        "shape": st.one_of(
            st.lists(st.one_of(st.integers(-2, 800), st.integers(0, 2**70)), max_size=6), json_values
        ),
    },
    optional={
        "data": st.one_of(
            st.lists(st.floats(-10, 300), max_size=800),
            st.lists(st.one_of(st.integers(0, 255), st.booleans()), max_size=800),
            json_values,
        ),
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": st.integers(-5, 5000)}), json_values
        ),
    },
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {"inputs": st.lists(tensor_specs, max_size=2)},
        optional={"outputs": json_values, "parameters": json_values, "id": json_values},
    ),
    st.binary(max_size=3200),
    st.booleans(),
    st.one_of(st.none(), st.text(max_size=4)),  # None: the header's real length
)
# Inputs that once reached a 500, whatever the search finds on a given run.
@example(
    {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [2**63, 0], "data": []}]}, b"", False, None
)
@example(
    {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [0, 2**40, 2**40], "data": []}]},
    b"",
    False,
    None,
)
@example(
    {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [0] * 40, "data": []}]}, b"", False, None
)
@example(
    {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": [True] * 784}]},
    b"",
    False,
    None,
)
@example({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 784]}]}, bytes(784), True, "\u00b2")
def test_v2_infer_bodies(payload: dict, binary: bytes, with_binary: bool, header_length: str | None) -> None:
    header = json.dumps(payload).encode()
    body = header + binary if with_binary else header
    declared = str(len(header)) if header_length is None else header_length
    headers = {"inference-header-content-length": declared} if with_binary else {}
    try:
        request = parse_v2_infer(body, headers, "pixels", "probabilities", LIMITS)
    except ServiceError as error:
        assert 400 <= error.status < 500
        return
    assert request.pixels.dtype == np.uint8 and request.pixels.shape[1:] == (1, 28, 28)


def test_decode_image_rejects_what_pillow_would_decompress_forever() -> None:
    bomb = _image("L", (3000, 3000), "PNG", 0)
    try:
        decode_image(bomb, DecodeBudget(max_pixels=1_000_000))
    except ServiceError as error:
        assert error.status == 413
    else:
        raise AssertionError("a 9-megapixel image passed a 1-megapixel limit")
