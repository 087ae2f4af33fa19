"""The frames API servers and inference workers exchange over their Unix sockets.

Each frame carries every job one side has ready, so one system call moves a whole batch:

    request frame   u32 length | u32 jobs | jobs x (u64 id, u32 images, f64 admitted_at) | uint8 pixels
    answer frame    u32 length | u32 jobs | jobs x (u64 id, u32 images, u8 status) | u16 n | version (n
                    bytes, UTF-8) | float32 probabilities of the OK jobs, in job order

A request frame without jobs asks the worker to write the metrics it holds in memory
(``service.worker.batch_metrics``); it replies with an answer frame without jobs once they are written.

Fixed little-endian layouts read with numpy: no pickle crosses a process boundary.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

IMAGE_BYTES = 28 * 28
CLASSES = 10
LENGTH = struct.Struct("<I")
COUNT = struct.Struct("<I")
VERSION_LENGTH = struct.Struct("<H")
REQUEST_ENTRY = np.dtype([("id", "<u8"), ("images", "<u4"), ("admitted_at", "<f8")])
ANSWER_ENTRY = np.dtype([("id", "<u8"), ("images", "<u4"), ("status", "u1")])
PACKED_REQUEST_ENTRY = struct.Struct("<QId")  # REQUEST_ENTRY's layout, packed one job at a time
assert PACKED_REQUEST_ENTRY.size == REQUEST_ENTRY.itemsize


class Status(enum.IntEnum):
    OK = 0
    EXPIRED = 1  # waited longer than the request timeout: not computed, the client already gave up
    FAILED = 2  # the backend raised for this batch


@dataclass
class RequestFrame:
    entries: np.ndarray  # REQUEST_ENTRY records
    pixels: np.ndarray  # uint8 [sum(images), 1, 28, 28]


@dataclass
class AnswerFrame:
    entries: np.ndarray  # ANSWER_ENTRY records
    version: str
    probabilities: np.ndarray  # float32 [images of the OK entries, 10]


def encode_request(ids: list[int], pixels: list[np.ndarray], admitted_at: list[float]) -> bytes:
    # struct, not a numpy record array: an API server sends a frame per event-loop turn, which holds
    # only a few jobs under load, where numpy's fixed cost per call is most of the work.
    entries = b"".join(
        [PACKED_REQUEST_ENTRY.pack(*job) for job in zip(ids, map(len, pixels), admitted_at, strict=True)]
    )
    return _frame(COUNT.pack(len(ids)), entries, *(np.ascontiguousarray(p).data for p in pixels))


def request_parts(payload: memoryview) -> tuple[int, memoryview, memoryview]:
    """A request frame's job count, entry bytes and pixel bytes, unparsed: a worker joins the parts of
    many frames and reads them with one ``read_requests`` (numpy's cost is per call, not per byte)."""
    (count,) = COUNT.unpack_from(payload, 0)
    end = COUNT.size + count * REQUEST_ENTRY.itemsize
    return count, payload[COUNT.size : end], payload[end:]


def read_requests(entry_bytes: bytes | memoryview, pixel_bytes: bytes | memoryview) -> RequestFrame:
    """The jobs of one or more request frames, their parts joined in the same order."""
    entries = np.frombuffer(entry_bytes, REQUEST_ENTRY)
    pixels = np.frombuffer(pixel_bytes, np.uint8)
    if len(pixels) != sum(entries["images"].tolist()) * IMAGE_BYTES:
        raise ValueError("request frame: pixel count does not match its entries")
    return RequestFrame(entries, pixels.reshape(-1, 1, 28, 28))


def encode_answer(entries: np.ndarray, version: str, probabilities: np.ndarray) -> bytes:
    label = version.encode()
    return _frame(
        COUNT.pack(len(entries)),
        entries.tobytes(),
        VERSION_LENGTH.pack(len(label)),
        label,
        np.ascontiguousarray(probabilities, np.float32).data,
    )


def encode_flush_request() -> bytes:
    return encode_request([], [], [])


def encode_flushed() -> bytes:
    return encode_answer(np.zeros(0, ANSWER_ENTRY), "", np.zeros((0, CLASSES), np.float32))


def decode_answer(payload: memoryview) -> AnswerFrame:
    entries, offset = _entries(payload, ANSWER_ENTRY)
    (length,) = VERSION_LENGTH.unpack_from(payload, offset)
    offset += VERSION_LENGTH.size
    version = bytes(payload[offset : offset + length]).decode()
    probabilities = np.frombuffer(payload, np.float32, offset=offset + length).reshape(-1, CLASSES)
    return AnswerFrame(entries, version, probabilities)


def split_frames(buffer: bytearray) -> list[memoryview]:
    """Remove every complete frame from the front of ``buffer``; a partial one stays for the next read."""
    frames = []
    offset = 0
    while len(buffer) - offset >= LENGTH.size:
        (length,) = LENGTH.unpack_from(buffer, offset)
        end = offset + LENGTH.size + length
        if end > len(buffer):
            break
        frames.append(memoryview(buffer[offset + LENGTH.size : end]))  # a slice is already a copy
        offset = end
    del buffer[:offset]
    return frames


def _entries(payload: memoryview, dtype: np.dtype) -> tuple[np.ndarray, int]:
    (count,) = COUNT.unpack_from(payload, 0)
    end = COUNT.size + count * dtype.itemsize
    return np.frombuffer(payload[COUNT.size : end], dtype), end


def _frame(*parts: bytes | memoryview) -> bytes:
    body = b"".join(parts)
    return LENGTH.pack(len(body)) + body
