"""IDX files, the format of the original MNIST distribution, read without trusting their headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def is_idx(path: Path) -> bool:
    """True if the file starts like an IDX file (two zero bytes, a known type, 1-4 dimensions)."""
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in IDX_DTYPES and 1 <= head[3] <= 4


def read_idx(path: Path) -> np.ndarray:
    """Map an IDX file into memory as a numpy array (read-only); raise ValueError if it is malformed."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_DTYPES:
            raise ValueError(f"{path} is not an IDX file")
        ndim = head[3]
        dims = handle.read(4 * ndim)
    if len(dims) != 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    dtype = np.dtype(IDX_DTYPES[head[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size - offset != expected:
        raise ValueError(
            f"{path}: header says {list(shape)} ({expected} bytes) but the file holds {size - offset}"
        )
    if expected == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
