"""GET /metrics: Prometheus text, merged across the server's processes."""

from __future__ import annotations

import re
import threading
import time

import numpy as np

from training.data import MnistArrays

from .harness import RunningServer

EXPECTED = [
    "mnist_requests_total",
    "mnist_request_duration_seconds_bucket",
    "mnist_queue_wait_seconds_bucket",
    "mnist_inference_seconds_bucket",
    "mnist_batch_requests_bucket",
    "mnist_batch_images_bucket",
    "mnist_images_total",
    "mnist_predictions_total",
    "mnist_prediction_confidence_bucket",
    "mnist_low_confidence_predictions_total",
    "mnist_in_flight_requests",
    "mnist_rejected_requests_total",
    "mnist_model_info",
    "mnist_process_resident_memory_bytes",
    "mnist_process_cpu_seconds_total",
    "mnist_api_servers",
    "mnist_inference_workers_ready",
]


def test_metrics_count_images_predictions_and_requests(server: RunningServer, mnist: MnistArrays) -> None:
    before = server.scrape()
    images = mnist.test_images[:10].numpy()
    reply = server.post_json("/predict", {"pixels": images.tolist()})
    assert reply.status == 200
    digits = [p["digit"] for p in reply.json()["predictions"]]
    assert server.request("GET", "/metrics").headers["content-type"].startswith("text/plain")
    after = server.scrape()
    for name in EXPECTED:
        assert after.has(name), f"{name} missing from /metrics"
    assert after.value("mnist_images_total") == before.value("mnist_images_total") + 10
    for digit in set(digits):
        sample = f'mnist_predictions_total{{digit="{digit}"}}'
        assert after.value(sample) == before.value(sample) + digits.count(digit)
    ok = 'mnist_requests_total{code="200",method="POST",route="/predict"}'
    assert after.value(ok) >= before.value(ok) + 1
    info = re.search(r"^mnist_model_info\{(.*)\} 1\.0$", after.text, re.MULTILINE)
    assert info and 'name="mnist"' in info.group(1) and 'provider="CPUExecutionProvider"' in info.group(1)
    # One series per process slot, never per pid; CPU time is a counter.
    assert after.label_values("mnist_process_cpu_seconds_total", "process") >= {"main", "api-0", "worker-0"}
    assert "# TYPE mnist_process_cpu_seconds_total counter" in after.text
    assert "pid=" not in after.text
    assert after.value("mnist_in_flight_requests") == 0


def test_low_confidence_inputs_are_counted(server: RunningServer) -> None:
    before = server.scrape().value("mnist_low_confidence_predictions_total")
    noise = np.random.default_rng(0).integers(0, 256, (32, 784)).tolist()
    predictions = server.post_json("/predict", {"pixels": noise}).json()["predictions"]
    low = sum(p["confidence"] < 0.5 for p in predictions)
    after = server.scrape().value("mnist_low_confidence_predictions_total")
    assert after == before + low


def test_in_flight_counts_requests_being_served(server: RunningServer) -> None:
    """The gauge is read from the shared admission counter: busy while requests are served, 0 after."""
    noise = {"pixels": np.random.default_rng(1).integers(0, 256, (64, 784)).tolist()}
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            assert server.post_json("/predict", noise).status == 200

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        seen = 0.0
        while seen == 0 and time.monotonic() < deadline:
            seen = server.scrape().value("mnist_in_flight_requests")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert 1 <= seen <= 16
    assert server.scrape().value("mnist_in_flight_requests") == 0
