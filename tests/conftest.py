"""Shared fixtures: the real MNIST files (fetched once into data/) and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import MnistArrays, ensure_mnist, load_mnist

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return ensure_mnist(ROOT / "data")


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> MnistArrays:
    return load_mnist(mnist_dir)
