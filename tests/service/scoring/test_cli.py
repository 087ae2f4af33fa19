"""`mnist-score` end to end: IDX, npy/npz and PNG-directory inputs, bad files, resume, shards."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cpus import usable_cpus
from service.model.backends import load_backend
from service.model.repository import resolve
from training.data import MnistArrays

from ...conftest import ROOT

BIN = Path(sys.executable).parent


def _score(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mnist-score"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def _write_idx(path: Path, array: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def offline():
    return load_backend(resolve(ROOT / "models", "mnist", "latest", "onnx"), "onnx", "cpu")


def test_idx_with_labels_reports_accuracy_and_confusion(tmp_path: Path, mnist: MnistArrays, offline) -> None:
    images = _write_idx(tmp_path / "images-idx3-ubyte", mnist.test_images[:3000].numpy())
    labels = _write_idx(tmp_path / "labels-idx1-ubyte", mnist.test_labels[:3000].numpy())
    result = _score(
        str(images),
        "--labels",
        str(labels),
        "--output",
        str(tmp_path / "out.csv"),
        "--batch-size",
        "512",
        "--probabilities",
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "out.csv")
    assert [row["id"] for row in rows] == [f"{images}:{i}" for i in range(3000)]
    expected = offline.predict(mnist.test_images[:3000].numpy()[:, None])
    probabilities = np.array([[float(row[f"p{d}"]) for d in range(10)] for row in rows], np.float32)
    np.testing.assert_array_equal(probabilities, expected)  # float32 written exactly
    assert [int(row["digit"]) for row in rows] == expected.argmax(1).tolist()
    accuracy = (expected.argmax(1) == mnist.test_labels[:3000].numpy()).mean()
    assert f"accuracy {accuracy:.4%} on 3000 labelled images" in result.stdout
    assert "confusion matrix" in result.stdout and "scored 3000 images" in result.stdout


def test_npy_and_npz_arrays(tmp_path: Path, mnist: MnistArrays, offline) -> None:
    images = mnist.test_images[:100].numpy()
    np.save(tmp_path / "flat.npy", images.reshape(100, 784))
    np.savez(tmp_path / "set.npz", images=images, labels=mnist.test_labels[:100].numpy())
    result = _score(str(tmp_path / "flat.npy"), str(tmp_path / "set.npz"), "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "out.jsonl")
    assert len(rows) == 200 and rows[0]["id"].endswith("flat.npy:0") and rows[100]["id"].endswith("set.npz:0")
    digits = offline.predict(images[:, None]).argmax(1).tolist()
    assert [row["digit"] for row in rows] == digits * 2


def test_unpicklable_object_arrays_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    result = _score(str(tmp_path / "evil.npy"), "-o", str(tmp_path / "out.csv"))
    assert result.returncode == 2 and "cannot read array" in result.stderr


def test_png_directory_with_bad_files_keeps_going(tmp_path: Path, mnist: MnistArrays, offline) -> None:
    folder = tmp_path / "pngs"
    for i in range(40):
        sub = folder / str(int(mnist.test_labels[i]))
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mnist.test_images[i].numpy()).save(sub / f"{i:03d}.png")
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "3" / "blank.png").write_bytes(_png_bytes(np.full((60, 60), 255, np.uint8)))
    (folder / "notes.txt").write_text("ignored: not an image")
    result = _score(str(folder), "-o", str(tmp_path / "out.csv"), "--label-from-parent", "--workers", "2")
    assert result.returncode == 1, result.stderr  # some rows are errors
    rows = _rows(tmp_path / "out.csv")
    assert len(rows) == 42 and [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    errors = {Path(row["id"]).name: row["error"] for row in rows if row["error"]}
    assert set(errors) == {"broken.png", "blank.png"}
    assert errors["broken.png"].startswith("400 cannot decode") and errors["blank.png"].startswith("422")
    assert "2 errors" in result.stdout and "accuracy" in result.stdout
    good = [row for row in rows if not row["error"]]
    for row in good:
        assert row["label"] == Path(row["id"]).parent.name


def _png_bytes(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_shards_partition_the_input_exactly(tmp_path: Path, mnist: MnistArrays) -> None:
    np.save(tmp_path / "x.npy", mnist.test_images[:1000].numpy())
    whole = _score(str(tmp_path / "x.npy"), "-o", str(tmp_path / "all.csv"))
    assert whole.returncode == 0
    shard_rows = []
    for index in range(3):
        result = _score(
            str(tmp_path / "x.npy"),
            "-o",
            str(tmp_path / f"s{index}.csv"),
            "--num-shards",
            "3",
            env={"JOB_COMPLETION_INDEX": str(index)},
        )
        assert result.returncode == 0, result.stderr
        shard_rows += _rows(tmp_path / f"s{index}.csv")
    ids = [row["id"] for row in shard_rows]
    assert len(ids) == len(set(ids)) == 1000
    by_id = {row["id"]: row for row in _rows(tmp_path / "all.csv")}
    assert set(ids) == set(by_id) and all(row == by_id[row["id"]] for row in shard_rows)
    bad = _score(
        str(tmp_path / "x.npy"), "-o", str(tmp_path / "bad.csv"), "--num-shards", "3", "--shard-index", "3"
    )
    assert bad.returncode == 2 and "shard index 3" in bad.stderr


def test_resume_cuts_a_partial_row_and_scores_only_the_rest(tmp_path: Path, mnist: MnistArrays) -> None:
    np.save(tmp_path / "x.npy", mnist.test_images[:2000].numpy())
    reference = tmp_path / "reference.csv"
    assert _score(str(tmp_path / "x.npy"), "-o", str(reference)).returncode == 0
    lines = reference.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(lines[:1235]) + lines[1235][:9])  # header + 1234 rows + half a row
    result = _score(str(tmp_path / "x.npy"), "-o", str(partial), "--resume")
    assert result.returncode == 0, result.stderr
    assert "scored 766 images" in result.stdout and "1234 rows kept" in result.stdout
    assert partial.read_text() == reference.read_text()
    other = _score(str(tmp_path / "x.npy"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.csv"))
    assert other.returncode == 0
    mismatch = _score(str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.csv"), "--resume", "--num-shards", "2")
    assert mismatch.returncode == 2 and "cannot resume" in mismatch.stderr


def test_a_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path, mnist: MnistArrays) -> None:
    images = _write_idx(tmp_path / "train-idx3-ubyte", mnist.train_images.numpy())
    out = tmp_path / "out.csv"
    command = [str(BIN / "mnist-score"), str(images), "-o", str(out), "--batch-size", "256", "--quiet"]
    process = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 120
    while (not out.exists() or out.stat().st_size < 200_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows_at_kill = len(_rows(out))
    assert 0 < rows_at_kill < 60000, "the run must be killed part-way"
    result = _score(str(images), "-o", str(out), "--resume", "--batch-size", "256")
    assert result.returncode == 0, result.stderr
    ids = [row["id"] for row in _rows(out)]
    assert ids == [f"{images}:{i}" for i in range(60000)]  # every input once, in order


def _png_folder(folder: Path, mnist: MnistArrays, count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(mnist.test_images[i].numpy()).save(folder / f"{i:03d}.png")
    return folder


def test_allow_error_rows_exits_zero_and_still_writes_the_error_rows(
    tmp_path: Path, mnist: MnistArrays
) -> None:
    folder = _png_folder(tmp_path / "pngs", mnist, 8)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out.csv"
    result = _score(str(folder), "-o", str(out), "--allow-error-rows", "--workers", "0", "--quiet")
    assert result.returncode == 0, result.stderr  # a Kubernetes Job counts this index as done
    errors = [row for row in _rows(out) if row["error"]]
    assert len(_rows(out)) == 9 and [Path(row["id"]).name for row in errors] == ["corrupt.png"]


def test_decoding_processes_default_to_the_cpus_the_process_may_use(
    tmp_path: Path, mnist: MnistArrays
) -> None:
    folder = _png_folder(tmp_path / "pngs", mnist, 16)
    whole = _score(str(folder), "-o", str(tmp_path / "all.csv"))
    assert whole.returncode == 0, whole.stderr
    cpus = usable_cpus()
    assert f"{cpus} decoding process{'es' if cpus > 1 else ''})" in whole.stdout
    # One CPU by affinity (as taskset or a cpuset would give): one decoder, not os.cpu_count().
    pinned = subprocess.run(
        [str(BIN / "mnist-score"), str(folder), "-o", str(tmp_path / "pinned.csv")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    assert pinned.returncode == 0, pinned.stderr
    assert "1 decoding process)" in pinned.stdout


@pytest.mark.parametrize("index", ["abc", "1.5", "-1", ""])
def test_a_bad_job_completion_index_is_a_one_line_error(tmp_path: Path, index: str) -> None:
    np.save(tmp_path / "x.npy", np.zeros((4, 28, 28), np.uint8))
    result = _score(
        str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.csv"), env={"JOB_COMPLETION_INDEX": index}
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"mnist-score: environment variable JOB_COMPLETION_INDEX={index!r}: ")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("flag", [["--shard-index", "-1"], ["--workers", "-2"], ["--num-shards", "0"]])
def test_negative_counts_are_usage_errors(tmp_path: Path, flag: list[str]) -> None:
    result = _score(str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.csv"), *flag)
    assert result.returncode == 2 and f"argument {flag[0]}" in result.stderr
