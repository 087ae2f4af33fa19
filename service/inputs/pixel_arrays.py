"""Pixel arrays (JSON lists or v2 tensors) -> the model's input, uint8 ``[N, 1, 28, 28]``.

Arrays are raw model input by contract: no image recipe, only shape, type and range checks. Values
must be whole numbers in 0..255: floats like 0.5 usually mean the client normalised the image
already, and silently rounding them would give confident nonsense.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np

from service.errors import PayloadTooLarge, Unprocessable

SIDE = 28
MAX_DEPTH = 4  # [N, 1, 28, 28]


def array_to_pixels(values: object, max_images: int, json_text: bytes | None = None) -> np.ndarray:
    """Pixel values (nested lists or an array) -> uint8 [N, 1, 28, 28]; 28x28, 784 or N of either.
    ``json_text``: the JSON ``values`` were parsed from, if any (see ``byte_lists``)."""
    as_bytes = byte_lists(values, json_text)
    if as_bytes is not None:
        return _validated_pixels(as_bytes, max_images, integral=True)
    try:  # JSON integers become an integer array: no float conversion or rounding checks needed
        array = np.array(values)
    except (ValueError, TypeError):
        array = None
    if array is not None and array.dtype.kind in "USV":
        raise Unprocessable("pixels must be numbers, not strings")
    if contains_booleans(values):  # numpy would take true and false as 1 and 0
        raise Unprocessable("pixels must be numbers, not true or false")
    if array is None or array.dtype.kind not in "iubf":  # e.g. integers too big for int64
        try:
            array = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError) as error:
            raise Unprocessable("pixels must be a rectangular array of numbers") from error
    return _validated_pixels(array, max_images, integral=True)


def contains_booleans(values: object) -> bool:
    """Whether nested lists hold a JSON true or false (a Python loop: ``byte_lists`` avoids it)."""
    stack = [values]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is bool:
            return True
    return False


def byte_lists(values: object, json_text: bytes | None = None) -> np.ndarray | None:
    """The common case, fast: rectangular nested lists of ints 0..255 -> a uint8 array; else None.

    ``bytes(row)`` checks every value's type and range in C, so this costs about a third of
    ``np.array`` on the same lists plus the range check after it (docs/performance.md). Anything it
    does not accept goes the general way, which also words the error. It takes true and false as 1
    and 0, though: they are looked for value by value only where ``json_text``, the JSON the lists
    were parsed from, holds either word (or is not given).
    """
    shape: list[int] = []
    item = values
    while type(item) is list and item and len(shape) <= MAX_DEPTH:
        shape.append(len(item))
        item = item[0]
    if not 1 <= len(shape) <= MAX_DEPTH or type(item) is not int:
        return None
    rows: list[object] = [values]
    try:
        for length in shape[1:]:  # one level down: every list there must be equally long
            rows = list(chain.from_iterable(rows))  # type: ignore[arg-type]
            if set(map(len, rows)) != {length}:  # type: ignore[arg-type]
                return None
        # bytes(5) would be five zero bytes, not an error: the rows must really be lists.
        if set(map(type, rows)) != {list}:
            return None
        data = b"".join(map(bytes, rows))  # type: ignore[arg-type]
    except (TypeError, ValueError):  # not iterable, no len(), not an int, or outside 0..255
        return None
    if (json_text is None or b"true" in json_text or b"false" in json_text) and contains_booleans(values):
        return None
    return np.frombuffer(data, np.uint8).reshape(shape)


def batch_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """The ``[N, 1, 28, 28]`` an array of ``shape`` holds; any other shape is a 422."""
    shape = tuple(shape)
    if shape in ((SIDE, SIDE), (SIDE * SIDE,)):
        return 1, 1, SIDE, SIDE
    if (
        (len(shape) == 2 and shape[1] == SIDE * SIDE)
        or (len(shape) == 3 and shape[1:] == (SIDE, SIDE))
        or (len(shape) == 4 and shape[1:] == (1, SIDE, SIDE))
    ):
        return shape[0], 1, SIDE, SIDE
    raise Unprocessable(
        f"pixels have shape {list(shape)[:8]}; expected [28,28], [784], [N,28,28], [N,784] or [N,1,28,28]"
    )


def _validated_pixels(array: np.ndarray, max_images: int, integral: bool) -> np.ndarray:
    array = array.reshape(batch_shape(array.shape))
    if array.shape[0] == 0:
        raise Unprocessable("no images in the request")
    if array.shape[0] > max_images:
        raise PayloadTooLarge(f"{array.shape[0]} images in one request; the limit is {max_images}")
    if array.dtype == np.uint8:  # every value is a pixel value
        return np.ascontiguousarray(array)
    if array.dtype.kind in "iub":
        if array.min() < 0 or array.max() > 255:
            raise Unprocessable("pixel values must be within 0..255")
        return np.ascontiguousarray(array, dtype=np.uint8)
    if not np.isfinite(array).all():
        raise Unprocessable("pixels contain NaN or infinity")
    if array.min() < 0 or array.max() > 255:
        raise Unprocessable("pixel values must be within 0..255")
    if integral and not np.array_equal(array, np.rint(array)):
        raise Unprocessable("pixel values must be whole numbers 0..255 (raw pixels, not normalised)")
    return np.ascontiguousarray(np.rint(array), dtype=np.uint8)


def tensor_to_pixels(array: np.ndarray, max_images: int, whole_numbers: bool) -> np.ndarray:
    """A v2 tensor -> uint8 [N, 1, 28, 28]. UINT8 must hold whole numbers; FP32 values are rounded."""
    return _validated_pixels(array, max_images, integral=whole_numbers)
