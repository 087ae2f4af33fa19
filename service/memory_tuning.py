"""Garbage-collector and allocator settings for the long-running server processes."""

from __future__ import annotations

import ctypes
import gc

# CPython collects its youngest generation every 700 net allocations. At thousands of requests per
# second that is a collection every few requests, and the older generations' collections that follow
# walk every object the process holds (modules, the app, the model): py-spy showed these pauses as the
# p99 (124 ms vs 33 ms with this setting, JSON pixels at concurrency 64, docs/performance.md).
YOUNG_THRESHOLD = 50_000
# glibc gives each allocation of at least this size its own mmap, which free() hands back to the
# system. By default glibc raises the threshold to the size of each such block freed (up to 32 MiB):
# after the first large image, its successors' pixels came from the heap, which is not given back, and
# two 5000x5000 images decoded at once left an API server 85 MB larger for good. Fixing it disables
# the raising.
MMAP_THRESHOLD_BYTES = 256 * 1024
M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def tune_for_serving() -> None:
    """Exempt everything alive now (start-up objects) from collection, and collect less often."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def give_large_buffers_back() -> None:
    """In an API server, whose large buffers (bodies, decoded images) are sized by clients. Not in an
    inference worker: its batches reuse the same sizes, and mmap plus page faults for each of them
    would cost it on every batch."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc's; musl and macOS have none
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
