"""Result files of `mnist-score`: CSV or JSON Lines, one row per input, resumable.

Rows are appended a batch at a time and flushed, so a killed run leaves at most one partial last
line; ``open_results(..., resume=True)`` cuts that line off, checks that the rows already there are
exactly the first inputs of this run, and reports how many to skip.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from service.scoring.inputs import InputError, Item

FORMATS = ("csv", "jsonl")


def format_for(path: Path, requested: str | None) -> str:
    if requested:
        return requested
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


@dataclass
class ResultWriter:
    handle: IO[str]
    fmt: str
    probabilities: bool
    labelled: bool
    done: int = 0  # rows already in the file when this run started
    errors_before: int = 0
    columns: list[str] = field(default_factory=list)

    def write(self, items: list[Item], probabilities: np.ndarray | None, errors: list[str | None]) -> None:
        """One row per item, in order; ``probabilities`` has a row for each item whose error is None."""
        columns = self._column_values(items, probabilities, errors)
        buffer = io.StringIO()
        if self.fmt == "csv":
            csv.writer(buffer, lineterminator="\n").writerows(zip(*columns.values(), strict=True))
        else:
            names = list(columns)
            for values in zip(*columns.values(), strict=True):
                row = {k: v for k, v in zip(names, values, strict=True) if v is not None}
                buffer.write(json.dumps(row) + "\n")
        self.handle.write(buffer.getvalue())  # a batch at a time: a kill leaves at most one partial line
        self.handle.flush()

    def _column_values(
        self, items: list[Item], probabilities: np.ndarray | None, errors: list[str | None]
    ) -> dict[str, list[object]]:
        """Every column of the batch as one list (vectorised: this runs for every image scored)."""
        good = [i for i, error in enumerate(errors) if error is None]
        text = self.fmt == "csv"  # csv writes None as "" and ints as digits; floats need 9 digits (float32)

        def spread(values: list[object]) -> list[object]:
            if len(good) == len(items):
                return values
            full: list[object] = [None] * len(items)
            for row, value in zip(good, values, strict=True):
                full[row] = value
            return full

        def floats(values: np.ndarray) -> list[object]:
            return [format(v, ".9g") for v in values.tolist()] if text else values.tolist()

        values: dict[str, list[object]] = {"id": [item.id for item in items]}
        scored = probabilities if probabilities is not None else np.zeros((0, 10), np.float32)
        values["digit"] = spread(scored.argmax(1).tolist())
        values["confidence"] = spread(floats(scored.max(1)))
        if self.probabilities:
            for digit in range(10):
                values[f"p{digit}"] = spread(floats(scored[:, digit]))
        if self.labelled:
            values["label"] = [item.label for item in items]
        values["error"] = list(errors)
        return values

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def _columns(probabilities: bool, labelled: bool) -> list[str]:
    return [
        "id",
        "digit",
        "confidence",
        *([f"p{d}" for d in range(10)] if probabilities else []),
        *(["label"] if labelled else []),
        "error",
    ]


def _complete_lines(path: Path) -> list[str]:
    """The file's complete lines; a partial last line (a kill mid-write) is cut off the file."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
    return data[:end].decode().splitlines()


def _existing_rows(path: Path, fmt: str, columns: list[str]) -> list[tuple[str, bool]] | None:
    """(id, had an error) per row already written; None if nothing usable is there (not even a header)."""
    lines = _complete_lines(path)
    if not lines:
        return None
    if fmt == "jsonl":
        rows = [json.loads(line) for line in lines if line]
        return [(row["id"], bool(row.get("error"))) for row in rows]
    header, *body = list(csv.reader(lines))
    if header != columns:
        raise InputError(f"{path} has columns {header}, this run writes {columns}; use another --output")
    return [(row[0], bool(row[-1])) for row in body]


def open_results(
    path: Path, fmt: str, items: list[Item], probabilities: bool, labelled: bool, resume: bool
) -> ResultWriter:
    columns = _columns(probabilities, labelled)
    done, errors = 0, 0
    rows = _existing_rows(path, fmt, columns) if resume and path.exists() else None
    if rows is not None:
        if len(rows) > len(items) or any(
            row_id != item.id for (row_id, _), item in zip(rows, items, strict=False)
        ):
            raise InputError(f"{path} does not hold the first rows of these inputs; cannot resume into it")
        done, errors = len(rows), sum(error for _, error in rows)
        handle = path.open("a", newline="")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("w", newline="")
        if fmt == "csv":
            handle.write(",".join(columns) + "\n")
    return ResultWriter(handle, fmt, probabilities, labelled, done, errors, columns)
