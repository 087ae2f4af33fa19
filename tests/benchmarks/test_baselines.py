"""The serving benchmark compares like with like: every FastAPI baseline answers as mnist-serve does."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from benchmarks.traffic import free_port, start, stop
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
