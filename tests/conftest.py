"""Shared fixtures: the real MNIST files (fetched once into data/) and the repository root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from training.data import MnistArrays, ensure_mnist, load_mnist

from .integration.harness import RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent
# Tests under these folders start real servers or benchmark scripts (each starts its own).
SERVER_FOLDERS = ("integration", "benchmarks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a server (``make check`` leaves them out)."""
    for item in items:
        folder = item.path.relative_to(ROOT / "tests").parts[0]
        if folder in SERVER_FOLDERS or "server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.starts_server)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return ensure_mnist(ROOT / "data")


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> MnistArrays:
    return load_mnist(mnist_dir)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default server, one per test session: committed model, ONNX backend, a batch timeout
    long enough that concurrent requests share batches."""
    running = start_server(tmp_path_factory.mktemp("server"), "--batch-timeout", "0.01")
    yield running
    code = running.stop()
    assert code == 0, running.log()
