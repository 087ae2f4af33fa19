from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from training import data
from training.data import (
    MNIST_SHA256,
    DataUnavailableError,
    MnistArrays,
    Source,
    checksum_problems,
    ensure_mnist,
    split_train_val,
)


def _copy_from(folder: Path, corrupt: str | None = None) -> Source:
    def fetch(staging: Path) -> None:
        for name in MNIST_SHA256:
            payload = (folder / name).read_bytes()
            if name == corrupt:
                payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
            (staging / name).write_bytes(payload)

    return Source(f"copy of {folder}" + (" (corrupted)" if corrupt else ""), fetch)


def _failing(message: str) -> Source:
    def fetch(staging: Path) -> None:
        (staging / "train-images-idx3-ubyte").write_bytes(b"partial")  # a half-written file
        raise ConnectionError(message)

    return Source(f"failing source ({message})", fetch)


def test_the_real_files_match_the_published_checksums(mnist_dir: Path) -> None:
    assert checksum_problems(mnist_dir) == []
    for name, expected in MNIST_SHA256.items():
        assert hashlib.sha256((mnist_dir / name).read_bytes()).hexdigest() == expected


def test_real_mnist_has_60000_train_and_10000_test_images(mnist: MnistArrays) -> None:
    assert tuple(mnist.train_images.shape) == (60000, 28, 28)
    assert tuple(mnist.test_images.shape) == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    assert set(mnist.test_labels.unique().tolist()) == set(range(10))
    assert mnist.train_images.dtype.is_floating_point is False and int(mnist.train_images.max()) == 255


def test_a_corrupt_source_is_rejected_and_the_next_one_used(tmp_path: Path, mnist_dir: Path) -> None:
    target = tmp_path / "data"
    ensure_mnist(target, [_copy_from(mnist_dir, corrupt="t10k-labels-idx1-ubyte"), _copy_from(mnist_dir)])
    assert checksum_problems(target) == []


def test_no_good_source_names_every_attempt_and_leaves_nothing(tmp_path: Path, mnist_dir: Path) -> None:
    target = tmp_path / "data"
    sources = [_failing("network unreachable"), _copy_from(mnist_dir, corrupt="train-labels-idx1-ubyte")]
    with pytest.raises(DataUnavailableError) as caught:
        ensure_mnist(target, sources)
    message = str(caught.value)
    assert "network unreachable" in message
    assert "checksum verification failed" in message and "train-labels-idx1-ubyte" in message
    assert list(target.iterdir()) == []  # no staging folder, no half-written file


def test_local_files_with_a_wrong_checksum_are_reported(tmp_path: Path, mnist_dir: Path) -> None:
    for name in MNIST_SHA256:
        (tmp_path / name).write_bytes((mnist_dir / name).read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\0")
    problems = checksum_problems(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("t10k-images-idx3-ubyte has SHA-256")
    local_only = data.default_sources(tmp_path)[:1]
    with pytest.raises(DataUnavailableError, match="IDX files in"):
        ensure_mnist(tmp_path, local_only)


def test_validation_split_is_fixed_by_seed_and_disjoint() -> None:
    train_a, val_a = split_train_val(60000, 5000, seed=7)
    train_b, val_b = split_train_val(60000, 5000, seed=7)
    _, val_c = split_train_val(60000, 5000, seed=8)
    assert len(train_a) == 55000 and len(val_a) == 5000
    assert train_a.equal(train_b) and val_a.equal(val_b)
    assert not val_a.equal(val_c)
    assert len(set(train_a.tolist()) | set(val_a.tolist())) == 60000
