"""Wire formats: parse request bodies into validated pixels, and encode answers.

Two protocols share the same pixels and the same backend:
- ``POST /predict``: multipart image uploads, a raw image body, JSON with base64 images, or JSON pixel
  arrays; answers ``{"predictions": [...], "model": {...}}``.
- Open Inference Protocol v2 (KServe / Triton): JSON tensors, plus Triton's binary tensor extension
  (``Inference-Header-Content-Length``) for requests and responses.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import orjson

from service.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.http.bounded_cache import BoundedCache
from service.inputs.images import DecodeBudget, image_to_pixels
from service.inputs.pixel_arrays import (
    array_to_pixels,
    batch_shape,
    byte_lists,
    contains_booleans,
    tensor_to_pixels,
)

IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/bmp",
    "image/x-ms-bmp",
    "image/gif",
    "image/webp",
    "image/tiff",
)
V2_DATATYPES: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
BINARY_HEADER = "inference-header-content-length"
# The headers of every JSON answer, one shared object: the HTTP layer writes it from bytes encoded once.
JSON_HEADERS: Mapping[str, str] = MappingProxyType({"content-type": "application/json"})


@dataclass(frozen=True)
class Limits:
    max_images: int
    max_pixels: int


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"malformed JSON: {error}") from error


def _decode_base64(text: object, index: int) -> bytes:
    if not isinstance(text, str):
        raise Unprocessable(f"images[{index}] must be a base64 string")
    if text.startswith("data:"):  # data URLs, as browsers produce them
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(f"images[{index}] is not valid base64") from error


def _stack(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images)[:, None, :, :]


def images_to_pixels(blobs: list[bytes], limits: Limits, budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode image files within ``budget`` (by default: ``limits.max_pixels`` each, no time limit)."""
    if not blobs:
        raise BadRequest("no images in the request")
    if len(blobs) > limits.max_images:
        raise PayloadTooLarge(f"{len(blobs)} images in one request; the limit is {limits.max_images}")
    budget = budget or DecodeBudget(limits.max_pixels)
    return _stack([image_to_pixels(blob, budget) for blob in blobs])


def json_to_pixels(body: bytes, limits: Limits, budget: DecodeBudget | None = None) -> np.ndarray:
    """``{"pixels": ...}``, ``{"image": "<base64>"}`` or ``{"images": ["<base64>", ...]}``."""
    payload = _parse_json(body)
    if not isinstance(payload, dict):
        raise Unprocessable('expected a JSON object with "pixels", "image" or "images"')
    keys = [key for key in ("pixels", "image", "images") if key in payload]
    if len(keys) != 1:
        raise Unprocessable('expected exactly one of "pixels", "image" or "images"')
    if keys[0] == "pixels":
        return array_to_pixels(payload["pixels"], limits.max_images)
    encoded = [payload["image"]] if keys[0] == "image" else payload["images"]
    if not isinstance(encoded, list):
        raise Unprocessable('"images" must be a list of base64 strings')
    if len(encoded) > limits.max_images:
        raise PayloadTooLarge(f"{len(encoded)} images in one request; the limit is {limits.max_images}")
    return images_to_pixels([_decode_base64(text, i) for i, text in enumerate(encoded)], limits, budget)


def predictions_body(
    probabilities: np.ndarray, model: dict[str, str], pixels: np.ndarray | None = None
) -> bytes:
    """The /predict answer; with ``pixels`` ([N, 1, 28, 28] uint8), each prediction also carries the
    28 rows of 28 values its image became after preprocessing."""
    predictions: list[dict[str, Any]] = []
    for row in probabilities.tolist():  # per row in Python: numpy's reductions cost more on 10 values
        confidence = max(row)
        predictions.append({"digit": row.index(confidence), "confidence": confidence, "probabilities": row})
    if pixels is not None:
        for prediction, image in zip(predictions, pixels[:, 0].tolist(), strict=True):
            prediction["pixels"] = image
    return orjson.dumps({"predictions": predictions, "model": model})


# --- Open Inference Protocol v2 -------------------------------------------------------------------


class V2Request(NamedTuple):  # a tuple: built for every request (a frozen dataclass costs more)
    pixels: np.ndarray
    id: str | None
    binary_output: bool


def _parameters(holder: dict[str, Any]) -> dict[str, Any]:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest('"parameters" must be an object')
    return parameters


def _v2_tensor(spec: dict[str, Any], binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    datatype = spec.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise Unprocessable(f"datatype {datatype!r} is not supported; send UINT8 or FP32")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise Unprocessable("shape must be a list of non-negative integers")
    batch_shape(shape)  # before any reshape: numpy fails on some shapes a client can send
    count = math.prod(shape)
    dtype = V2_DATATYPES[datatype]
    size = _parameters(spec).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise BadRequest("binary_data_size does not match the binary data sent")
        if size != count * dtype.itemsize:
            raise Unprocessable(
                f"binary data holds {size} bytes; shape {shape} of {datatype} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape), offset + size
    if "data" not in spec:
        raise BadRequest("input has neither data nor binary_data_size")
    as_bytes = byte_lists(spec["data"])  # the common case: (nested) lists of ints 0..255, checked in C
    if as_bytes is not None:
        if as_bytes.size != count:
            raise Unprocessable(f"data holds {as_bytes.size} values but shape {shape} needs {count}")
        return as_bytes.reshape(shape), offset
    if contains_booleans(spec["data"]):  # numpy would take true and false as 1 and 0
        raise Unprocessable("data must be numbers, not true or false")
    try:
        values = np.asarray(spec["data"])
        if values.dtype.kind in "USV":  # numpy would parse "7" as a number; JSON strings are not numbers
            raise TypeError("strings")
        values = values.astype(np.float64).reshape(-1)
    except (ValueError, TypeError) as error:
        raise Unprocessable("data must be numbers") from error
    if values.size != count:
        raise Unprocessable(f"data holds {values.size} values but shape {shape} needs {count}")
    # Kept as float64 so that out-of-range UINT8 values are caught, not wrapped around.
    return values.reshape(shape), offset


class _BinaryPlan(NamedTuple):
    """What a binary request's JSON header says, once validated: clients send the same header with
    every request, so it is parsed and checked once and only the tensor bytes are read after that."""

    dtype: np.dtype[Any]
    size: int  # bytes of binary data
    shape: tuple[int, ...]  # UINT8: the pixels' [N, 1, 28, 28]; FP32: the tensor's, as sent
    is_pixels: bool  # UINT8: the bytes are the pixels; FP32 values still need their checks
    binary_output: bool
    id: str | None

    def request(self, body: bytes, start: int, max_images: int) -> V2Request:
        if start + self.size > len(body):
            raise BadRequest("binary_data_size does not match the binary data sent")
        tensor = np.ndarray(self.shape, self.dtype, body, start)  # a view of the body, as frombuffer gives
        if not self.is_pixels:
            tensor = tensor_to_pixels(tensor, max_images, whole_numbers=False)
        return V2Request(tensor, self.id, self.binary_output)


# (JSON header, input name, output name, image limit) -> plan. A client's header is a few hundred bytes;
# one with an id in every request makes each header new, and then nothing is worth keeping.
MAX_BINARY_PLANS = 64
MAX_PLANNED_HEADER_BYTES = 16 * 1024
_binary_plans: BoundedCache[tuple[bytes, str, str, int], _BinaryPlan] = BoundedCache(
    MAX_BINARY_PLANS, MAX_PLANNED_HEADER_BYTES
)


def parse_v2_infer(
    body: bytes, headers: Mapping[str, str], input_name: str, output_name: str, limits: Limits
) -> V2Request:
    header_length = headers.get(BINARY_HEADER)
    if header_length is None:
        return _parse_v2(body, memoryview(b""), input_name, output_name, limits)[0]
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise BadRequest("Inference-Header-Content-Length does not fit the body")
    start = int(header_length)
    json_part = body[:start]
    key = (json_part, input_name, output_name, limits.max_images)
    plan = _binary_plans.get(key)
    if plan is not None:
        return plan.request(body, start, limits.max_images)
    request, tensor, size = _parse_v2(json_part, memoryview(body)[start:], input_name, output_name, limits)
    if size:  # the tensor came as binary data: what the header says holds for the next request too
        is_pixels = tensor.dtype == np.uint8
        shape = request.pixels.shape if is_pixels else tensor.shape
        plan = _BinaryPlan(tensor.dtype, size, shape, is_pixels, request.binary_output, request.id)
        _binary_plans.put(key, len(json_part), plan)
    return request


def _parse_v2(
    json_part: bytes, binary: memoryview, input_name: str, output_name: str, limits: Limits
) -> tuple[V2Request, np.ndarray, int]:
    """The request, its input tensor as sent, and how many bytes of binary data that took (0: its
    data was JSON)."""
    payload = _parse_json(json_part)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequest('expected a JSON object with an "inputs" list')
    inputs = payload["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"expected exactly one input, {input_name!r}")
    if inputs[0].get("name") != input_name:
        raise BadRequest(f"unknown input {inputs[0].get('name')!r}; this model takes {input_name!r}")
    tensor, binary_size = _v2_tensor(inputs[0], binary, 0)
    pixels = tensor_to_pixels(tensor, limits.max_images, whole_numbers=inputs[0]["datatype"] == "UINT8")
    binary_output = bool(_parameters(payload).get("binary_data_output", False))
    outputs = payload.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest('"outputs" must be a list')
        for output in outputs:
            if not isinstance(output, dict) or output.get("name") != output_name:
                raise BadRequest(f"unknown output; this model returns {output_name!r}")
            binary_output = bool(_parameters(output).get("binary_data", binary_output))
    request_id = payload.get("id")
    request = V2Request(
        pixels=pixels, id=str(request_id) if request_id is not None else None, binary_output=binary_output
    )
    return request, tensor, binary_size


_DATA_AND_AFTER = b"null}]}"


@functools.lru_cache(maxsize=1024)  # one per model version and answer shape: bounded, shapes vary
def _v2_json_prefix(model_name: str, model_version: str, output_name: str, shape: tuple[int, ...]) -> bytes:
    """The JSON answer up to its ``"data":``, the same for every answer of one shape and version."""
    output = {"name": output_name, "datatype": "FP32", "shape": list(shape), "data": None}
    whole = orjson.dumps({"model_name": model_name, "model_version": model_version, "outputs": [output]})
    return whole[: -len(_DATA_AND_AFTER)]


def v2_infer_body(
    probabilities: np.ndarray, request: V2Request, model_name: str, model_version: str, output_name: str
) -> tuple[bytes, Mapping[str, str]]:
    """The v2 response; with binary output, JSON header + raw little-endian float32 bytes."""
    if not request.binary_output:
        # Everything before the numbers is the same for every answer of one shape and version: written
        # once, the same bytes orjson gives for the whole dict (2.3 µs less per answer).
        prefix = _v2_json_prefix(model_name, model_version, output_name, probabilities.shape)
        data = orjson.dumps(probabilities.ravel().tolist())
        if request.id is None:
            return b"".join((prefix, data, b"}]}")), JSON_HEADERS
        return b"".join((prefix, data, b'}],"id":', orjson.dumps(request.id), b"}")), JSON_HEADERS
    raw = np.ascontiguousarray(probabilities, dtype="<f4").tobytes()
    output = {
        "name": output_name,
        "datatype": "FP32",
        "shape": list(probabilities.shape),
        "parameters": {"binary_data_size": len(raw)},
    }
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": [output]}
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response)
    return header + raw, {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
