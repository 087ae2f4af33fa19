"""The serving benchmark compares like with like: every FastAPI baseline and Triton answer as
mnist-serve does, and the servers of one cell are measured in alternation."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from benchmarks import triton_server
from benchmarks.traffic import (
    Body,
    Target,
    batch_totals,
    bodies,
    free_port,
    measure_interleaved,
    mnist_test_images,
    start,
    stop,
)
from training.data import MnistArrays

from ..integration.harness import RunningServer
from ..integration.images import multipart, png

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _predict(port: int, image: np.ndarray, as_png: bool = False) -> dict[str, object]:
    body, content_type = json.dumps({"pixels": image.tolist()}).encode(), "application/json"
    if as_png:
        body, content_type = multipart([("digit.png", png(image), "image/png")])
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.parametrize(
    "script", [["fastapi_baseline.py"], ["fastapi_tutorial.py"], ["fastapi_tutorial.py", "--sync"]]
)
def test_baseline_answers_like_mnist_serve(
    script: list[str], server: RunningServer, mnist: MnistArrays
) -> None:
    port = free_port()
    process = start([sys.executable, str(BENCHMARKS / script[0]), "--port", str(port), *script[1:]], port)
    try:
        for image in mnist.test_images[:5]:
            ours = _predict(server.port, image)["predictions"][0]
            theirs = _predict(port, image)["predictions"][0]
            assert theirs["digit"] == ours["digit"]
            np.testing.assert_allclose(theirs["probabilities"], ours["probabilities"], atol=1e-5)
    finally:
        assert stop(process) is not None


def _v2_probabilities(port: int, body: Body) -> np.ndarray:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{body.path}", data=body.data, headers=body.headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        output = json.loads(response.read())["outputs"][0]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32"
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


@pytest.mark.skipif(
    not triton_server.has_libpython(),
    reason=f"Triton's Python backend needs the system's {triton_server.libpython()} (.ci/run installs it)",
)
def test_triton_answers_v2_requests_like_mnist_serve(server: RunningServer) -> None:
    """The real tritonserver (downloaded on first use into .cache/triton) with its Python backend."""
    port = free_port()
    process = start([sys.executable, str(BENCHMARKS / "triton_server.py"), "--port", str(port)], port)
    try:
        v2_bodies = [b for b in bodies(mnist_test_images()) if b.name.startswith("v2")]
        assert {b.name for b in v2_bodies} == {"v2-json", "v2-binary", "v2-binary-64-images"}
        for body in v2_bodies:
            ours, theirs = _v2_probabilities(server.port, body), _v2_probabilities(port, body)
            assert theirs.shape == ours.shape == (body.images, 10)
            assert (theirs.argmax(1) == ours.argmax(1)).all()
            np.testing.assert_allclose(theirs, ours, atol=1e-5)
    finally:
        assert stop(process) is not None


def test_strict_baseline_answers_png_uploads_like_mnist_serve(
    server: RunningServer, mnist: MnistArrays
) -> None:
    port = free_port()
    process = start([sys.executable, str(BENCHMARKS / "fastapi_baseline.py"), "--port", str(port)], port)
    try:
        for image in mnist.test_images[:3]:
            ours = _predict(server.port, image, as_png=True)["predictions"][0]
            theirs = _predict(port, image, as_png=True)["predictions"][0]
            assert theirs["digit"] == ours["digit"]
            np.testing.assert_allclose(theirs["probabilities"], ours["probabilities"], atol=1e-5)
    finally:
        assert stop(process) is not None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs Debian's wrk (.ci/run installs it)")
def test_servers_measured_in_alternation_each_get_every_round(server: RunningServer) -> None:
    port = free_port()
    process = start([sys.executable, str(BENCHMARKS / "fastapi_baseline.py"), "--port", str(port)], port)
    body = next(b for b in bodies(mnist_test_images()) if b.name == "json-pixels")
    targets = [Target("mnist-serve", server.port, batches=True), Target("fastapi", port)]
    try:
        with tempfile.TemporaryDirectory() as scratch:
            body_file = Path(scratch) / "body"
            body_file.write_bytes(body.data)
            before = batch_totals(server.port)
            cell = measure_interleaved(targets, body, body_file, connections=4, runs=2, seconds=1)
            after = batch_totals(server.port)
    finally:
        assert stop(process) is not None
    assert set(cell) == {"mnist-serve", "fastapi"}
    for medians in cell.values():
        assert medians["rps"] > 0 and medians["non2xx"] == 0
        assert 0 < medians["p50_ms"] <= medians["p99_ms"]
    assert 1.0 <= cell["mnist-serve"]["batch"] <= 4.0  # 4 connections: at most 4 requests per batch
    # warm-up and both runs reached mnist-serve: ~1 s each at hundreds of requests per second or more
    assert after[0] - before[0] >= 3 * 100
