from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import RunningServer, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default server: committed model, ONNX backend, small batch timeout so batches form."""
    running = start_server(tmp_path_factory.mktemp("server"), "--batch-timeout", "0.01")
    yield running
    code = running.stop()
    assert code == 0, running.log()
