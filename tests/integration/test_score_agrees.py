"""Offline scoring and the HTTP server give the same answers for the same files."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from training.data import MnistArrays

from .harness import ROOT, RunningServer
from .images import encode, multipart, paper_photo


def test_mnist_score_matches_the_server_file_for_file(
    tmp_path: Path, server: RunningServer, mnist: MnistArrays
) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    files = []
    for i in range(24):
        digit = mnist.test_images[i].numpy()
        # Mixed formats and the full preprocessing path: scans as JPEG, MNIST-like PNGs as they are.
        data = encode(paper_photo(digit, seed=i), "JPEG") if i % 2 else encode(digit, "PNG")
        name = f"{i:02d}.{'jpg' if i % 2 else 'png'}"
        (folder / name).write_bytes(data)
        files.append((name, data, "image/jpeg" if i % 2 else "image/png"))
    body, content_type = multipart(files)
    served = server.request("POST", "/predict", body, {"content-type": content_type}).json()["predictions"]

    out = tmp_path / "scores.csv"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "mnist-score"),
            str(folder),
            "-o",
            str(out),
            "--probabilities",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["id"]).name for row in rows] == [name for name, _, _ in files]
    assert [int(row["digit"]) for row in rows] == [p["digit"] for p in served]
    offline = np.array([[float(row[f"p{d}"]) for d in range(10)] for row in rows], np.float32)
    online = np.array([p["probabilities"] for p in served], np.float32)
    np.testing.assert_array_equal(offline, online)
