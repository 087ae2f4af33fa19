"""Following the repository: a tampered new version is refused while the current one keeps serving;
a good one is swapped in without a failed request."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

from training.data import MnistArrays

from .harness import ROOT, start_server


def _wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_bad_versions_are_refused_and_good_ones_swapped_in(tmp_path: Path, mnist: MnistArrays) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(ROOT / "models" / "mnist" / "1", repository / "mnist" / "1")
    running = start_server(
        tmp_path, "--model-repository", str(repository), "--poll-interval", "0.3", "--log-level", "info"
    )
    pixels = {"pixels": mnist.test_images[:3].numpy().tolist()}
    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            statuses.append(running.post_json("/predict", pixels).status)

    client = threading.Thread(target=keep_asking)
    client.start()
    try:
        assert running.post_json("/predict", pixels).json()["model"]["version"] == "1"
        # The counter exists at 0 before any refusal, so the first refusal is an increase to alert on.
        assert running.scrape().has("mnist_model_reload_failures_total")
        assert running.scrape().value("mnist_model_reload_failures_total") == 0

        # Version 2: same metadata, but the ONNX file was changed after publishing.
        shutil.copytree(repository / "mnist" / "1", repository / "mnist" / ".incoming")
        onnx_file = repository / "mnist" / ".incoming" / "model.onnx"
        onnx_file.write_bytes(onnx_file.read_bytes()[:-4] + b"evil")
        (repository / "mnist" / ".incoming").rename(repository / "mnist" / "2")

        def refused() -> bool:
            metrics = running.request("GET", "/metrics").body.decode()
            return "mnist_model_reload_failures_total 1.0" in metrics

        assert _wait_for(refused), running.log()[-3000:]
        assert "checksum mismatch for model.onnx" in running.log()
        assert running.post_json("/predict", pixels).json()["model"]["version"] == "1"

        # Version 3: a faithful copy, published atomically.
        shutil.copytree(repository / "mnist" / "1", repository / "mnist" / ".incoming")
        (repository / "mnist" / ".incoming").rename(repository / "mnist" / "3")
        assert _wait_for(lambda: running.post_json("/predict", pixels).json()["model"]["version"] == "3")
        metrics = running.request("GET", "/metrics").body.decode()
        assert re.findall(r'mnist_model_info\{[^}]*version="(\d+)"[^}]*\} 1\.0', metrics) == ["3"]
        # Each API server caches what the workers serve for up to RUNTIME_CACHE_S (5 s), and the two
        # requests may reach different API servers: both answers settle within that.
        assert _wait_for(lambda: running.request("GET", "/v2/models/mnist").json()["versions"] == ["3"])
        assert _wait_for(lambda: running.request("GET", "/v2/models/mnist/versions/3/ready").status == 200)

        def version_1_gone() -> bool:
            reply = running.request("GET", "/v2/models/mnist/versions/1")
            return reply.status == 404 and "not served here" in json.loads(reply.body)["error"]

        assert _wait_for(version_1_gone)
    finally:
        stop.set()
        client.join(30)
        assert running.stop() == 0, running.log()
    assert statuses and set(statuses) == {200}, "a request failed while versions changed"
