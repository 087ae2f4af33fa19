"""The frames between API servers and workers: exact round trips, and reads split anywhere."""

from __future__ import annotations

import numpy as np
import pytest

from service.ipc import frames


def _decode(payload: memoryview) -> frames.RequestFrame:
    _, entry_bytes, pixel_bytes = frames.request_parts(payload)
    return frames.read_requests(entry_bytes, pixel_bytes)


def _pixels(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 1, 28, 28), dtype=np.uint8)


def test_request_frame_round_trip_keeps_every_job_and_pixel() -> None:
    jobs = [_pixels(1, 0), _pixels(3, 1), _pixels(2, 2)]
    frame = frames.encode_request([7, 8, 2**40], jobs, [1.5, 2.5, 3.25])
    (payload,) = frames.split_frames(bytearray(frame))
    decoded = _decode(payload)
    assert decoded.entries["id"].tolist() == [7, 8, 2**40]
    assert decoded.entries["images"].tolist() == [1, 3, 2]
    assert decoded.entries["admitted_at"].tolist() == [1.5, 2.5, 3.25]
    np.testing.assert_array_equal(decoded.pixels, np.concatenate(jobs))


def test_answer_frame_round_trip_with_a_failed_job() -> None:
    entries = np.zeros(3, frames.ANSWER_ENTRY)
    entries["id"] = [1, 2, 3]
    entries["images"] = [2, 1, 1]
    entries["status"] = [frames.Status.OK, frames.Status.EXPIRED, frames.Status.OK]
    probabilities = np.random.default_rng(0).random((3, 10), dtype=np.float32)  # only the OK jobs' rows
    (payload,) = frames.split_frames(bytearray(frames.encode_answer(entries, "12", probabilities)))
    decoded = frames.decode_answer(payload)
    assert decoded.version == "12"
    assert decoded.entries.tolist() == entries.tolist()
    np.testing.assert_array_equal(decoded.probabilities, probabilities)


@pytest.mark.parametrize("chunk", [1, 7, 100, 5000])
def test_frames_arriving_in_pieces_are_reassembled_in_order(chunk: int) -> None:
    encoded = [frames.encode_request([i], [_pixels(i % 3 + 1, i)], [float(i)]) for i in range(5)]
    stream = b"".join(encoded)
    buffer = bytearray()
    decoded = []
    for start in range(0, len(stream), chunk):
        buffer += stream[start : start + chunk]
        decoded += [_decode(p) for p in frames.split_frames(buffer)]
    assert not buffer
    assert [int(d.entries["id"][0]) for d in decoded] == [0, 1, 2, 3, 4]
    assert [len(d.pixels) for d in decoded] == [1, 2, 3, 1, 2]


def test_a_frame_whose_pixels_do_not_match_its_entries_is_refused() -> None:
    frame = bytearray(frames.encode_request([1], [_pixels(2, 0)], [0.0]))
    frame[4 + 4 + 8 : 4 + 4 + 8 + 4] = (3).to_bytes(4, "little")  # claim 3 images, carry 2
    (payload,) = frames.split_frames(frame)
    with pytest.raises(ValueError, match="pixel count"):
        _decode(payload)
