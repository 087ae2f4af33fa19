"""What each inference worker really runs (model version, backend, device, provider), for the API servers.

A worker writes its record when it starts serving a version; the API servers read the records of the
workers still alive to answer metadata requests and to label every answer with the version and device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_runtime_record(folder: Path, record: dict[str, Any]) -> None:
    """Record this process's runtime (replacing its previous record)."""
    (folder / f"runtime-{os.getpid()}.json").write_text(json.dumps({"pid": os.getpid(), **record}))


def runtime_records(folder: Path) -> list[dict[str, Any]]:
    """What each live worker reported about itself."""
    records = []
    for path in sorted(folder.glob("runtime-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(record.get("pid", 0))):
            records.append(record)
    return records


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    return pid > 0
