"""Where the inference workers listen: one Unix socket per worker process, in the server's socket folder.

A worker publishes its socket only once it accepts connections (``service.worker.loop``); the API
servers find the workers by listing the folder (``service.ipc.client``).
"""

from __future__ import annotations

from pathlib import Path

SOCKET_PREFIX = "worker-"


def socket_path(folder: Path, worker_id: int, pid: int) -> Path:
    return folder / f"{SOCKET_PREFIX}{worker_id}-{pid}.sock"


def worker_sockets(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{SOCKET_PREFIX}*.sock"))


def stale_sockets(folder: Path, worker_id: int) -> list[Path]:
    """A previous worker's sockets for this slot (it died; its replacement removes them)."""
    return list(folder.glob(f"{SOCKET_PREFIX}{worker_id}-*.sock"))
