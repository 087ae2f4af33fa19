"""With the default settings (no batch timer), concurrent requests still share batches: jobs that arrive
while a batch is computed form the next one. Access logging is opt-in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.data import MnistArrays

from .harness import RunningServer, start_server
from .load import run_load

ACCESS_LINE = re.compile(r'"POST /predict HTTP/1\.1" 200')


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Default flags, logging at info (the harness's default is warning, which hides access lines)."""
    running = start_server(tmp_path_factory.mktemp("batching"), "--log-level", "info")
    yield running
    assert running.stop() == 0, running.log()


def test_concurrent_requests_share_batches_without_a_timer(
    default_server: RunningServer, mnist: MnistArrays
) -> None:
    before = default_server.scrape()
    load = run_load(default_server.port, {"pixels": mnist.test_images[0].tolist()}, clients=32, seconds=3)
    assert set(load.statuses) == {200}, load.statuses
    after = default_server.scrape()
    requests = after.value("mnist_batch_requests_sum") - before.value("mnist_batch_requests_sum")
    batches = after.value("mnist_batch_requests_count") - before.value("mnist_batch_requests_count")
    assert requests == load.total
    assert requests / batches > 2, f"{requests:.0f} requests in {batches:.0f} batches"


def test_access_log_lines_only_when_asked_for(
    default_server: RunningServer, tmp_path: Path, mnist: MnistArrays
) -> None:
    body = {"pixels": mnist.test_images[0].tolist()}
    assert default_server.post_json("/predict", body).status == 200
    assert "Uvicorn running" in default_server.log() or "Application startup" in default_server.log()
    assert not ACCESS_LINE.search(default_server.log())
    logging = start_server(tmp_path, "--log-level", "info", "--access-log", "true")
    try:
        assert logging.post_json("/predict", body).status == 200
        assert ACCESS_LINE.search(logging.log())
    finally:
        assert logging.stop() == 0, logging.log()


def test_unknown_routes_still_go_through_the_full_app(server: RunningServer) -> None:
    # /predict and the v2 infer routes skip FastAPI's router (service.http.direct, service.http.asgi);
    # every other method and path must still get the answers FastAPI would give.
    assert server.request("GET", "/predict").status == 405
    assert server.request("POST", "/v2/models/mnist/nope").status in (404, 405)
    assert server.request("POST", "/v2/models//infer", b"{}").status in (404, 405)
    assert server.request("GET", "/v2/health/live").status == 200
