"""Start-up refusals, API key, shedding, timeouts, the TorchScript backend, and draining on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest

from service.worker.batch_metrics import FLUSH_INTERVAL_S
from training.data import MnistArrays

from .harness import BIN, ROOT, RunningServer, start_server


def _refusal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mnist-serve"), "--port", "8999", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def repository_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "models" / "mnist" / "1", tmp_path / "repo" / "mnist" / "1")
    return tmp_path / "repo"


def test_serving_onnx_on_the_default_device_never_loads_torch(server: RunningServer) -> None:
    # torch is hundreds of MB and seconds of start-up in every process it reaches; the ONNX backend
    # needs none of it (LitServe's own device "auto" used to import it in the main process).
    tree = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    assert len(tree) >= 4  # main, LitServe's manager, API server(s), worker
    for process in tree:
        mapped = {Path(m.path).name for m in process.memory_maps() if "torch" in m.path}
        assert not mapped, f"{process.pid} {process.cmdline()[:3]} maps {sorted(mapped)[:3]}"


def test_missing_version_is_refused_in_one_line() -> None:
    result = _refusal("--model-version", "99")
    assert result.returncode == 2
    assert "refusing to start: model 'mnist' has no version 99" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_checksum_is_refused(repository_copy: Path) -> None:
    onnx_file = repository_copy / "mnist" / "1" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10] + b"tampered!!")
    result = _refusal("--model-repository", str(repository_copy))
    assert result.returncode == 2 and "checksum mismatch for model.onnx" in result.stderr


def test_contract_mismatch_is_refused(repository_copy: Path) -> None:
    metadata_file = repository_copy / "mnist" / "1" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["inputs"][0]["datatype"] = "FP32"
    metadata_file.write_text(json.dumps(metadata))
    result = _refusal("--model-repository", str(repository_copy))
    assert result.returncode == 2 and "contract mismatch" in result.stderr


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (("--host", "localhost"), "--host must be one of"),
        (("--port", "80"), "--port must be within"),
        (("--batch-timeout", "5", "--request-timeout", "1"), "--batch-timeout must be shorter"),
    ],
)
def test_bad_listen_settings_are_refused(flags: tuple[str, ...], fragment: str) -> None:
    result = _refusal(*flags)
    assert result.returncode == 2 and fragment in result.stderr


def test_path_traversal_in_model_name_is_refused() -> None:
    result = _refusal("--model-name", "../../etc")
    assert result.returncode == 2 and "invalid model name" in result.stderr


def test_cuda_without_a_gpu_is_refused() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the refusal only happens without one")
    result = _refusal("--device", "cuda")
    assert result.returncode == 2 and "cuda" in result.stderr.lower()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """TorchScript backend, an API key, a tiny queue and a short timeout."""
    running = start_server(
        tmp_path_factory.mktemp("strict"),
        "--backend",
        "torchscript",
        "--queue-limit",
        "4",
        "--request-timeout",
        "0.5",
        "--batch-timeout",
        "0.01",
        env={"MNIST_API_KEY": "s3cret"},
    )
    yield running
    assert running.stop() == 0, running.log()


def test_api_key_guards_predict_but_not_health_or_metrics(
    strict_server: RunningServer, mnist: MnistArrays
) -> None:
    pixels = {"pixels": mnist.test_images[0].tolist()}
    missing = strict_server.post_json("/predict", pixels)
    wrong = strict_server.post_json("/predict", pixels, {"x-api-key": "nope"})
    assert missing.status == wrong.status == 401 and "API key" in missing.json()["error"]
    assert strict_server.post_json("/v2/models/mnist/infer", {}).status == 401
    assert strict_server.request("GET", "/v2/health/ready").status == 200
    assert strict_server.request("GET", "/metrics").status == 200
    good = strict_server.post_json("/predict", pixels, {"x-api-key": "s3cret"})
    bearer = strict_server.post_json("/predict", pixels, {"authorization": "Bearer s3cret"})
    assert good.status == bearer.status == 200
    assert good.json()["model"]["backend"] == "torchscript"


def test_torchscript_server_agrees_with_onnx_server(
    strict_server: RunningServer, server: RunningServer, mnist: MnistArrays
) -> None:
    pixels = {"pixels": mnist.test_images[:32].numpy().tolist()}
    torchscript = strict_server.post_json("/predict", pixels, {"x-api-key": "s3cret"}).json()["predictions"]
    onnx = server.post_json("/predict", pixels).json()["predictions"]
    assert [p["digit"] for p in torchscript] == [p["digit"] for p in onnx]
    np.testing.assert_allclose(
        [p["probabilities"] for p in torchscript], [p["probabilities"] for p in onnx], atol=1e-5
    )


def test_overload_is_shed_with_503_and_retry_after(strict_server: RunningServer) -> None:
    big = {"pixels": np.zeros((256, 784), int).tolist()}

    def send(_: int):
        return strict_server.post_json("/predict", big, {"x-api-key": "s3cret"})

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(send, range(32)))
    statuses = {r.status for r in replies}
    assert statuses <= {200, 503, 504}, statuses
    shed = [r for r in replies if r.status == 503]
    assert shed, "a queue limit of 4 with 16 concurrent clients must shed some requests"
    assert shed[0].headers["retry-after"] == "1"
    assert "queue limit" in shed[0].json()["error"] or "request timeout" in shed[0].json()["error"]


def test_requests_waiting_past_the_timeout_get_504(tmp_path: Path) -> None:
    # 96 requests of 256 images arrive at once (binary v2 bodies cost the API server next to nothing to
    # parse, so the worker is the bottleneck) and are computed eight at a time: about 0.7 s of work, so
    # the later ones would wait longer than the 0.2 s timeout. Once the workers' rate is measured such
    # requests are refused at admission (503); those already queued get 504 and the worker skips them
    # instead of computing them for nobody.
    running = start_server(
        tmp_path, "--request-timeout", "0.2", "--max-batch-size", "8", "--batch-timeout", "0.01"
    )
    try:
        pixels = np.random.default_rng(0).integers(0, 256, (256, 784), dtype=np.uint8)
        spec = {"name": "pixels", "datatype": "UINT8", "shape": [256, 784]}
        header = json.dumps({"inputs": [{**spec, "parameters": {"binary_data_size": pixels.size}}]}).encode()
        headers = {"inference-header-content-length": str(len(header))}
        body = header + pixels.tobytes()

        def send(_: int) -> int:
            return running.request("POST", "/v2/models/mnist/infer", body, headers).status

        with ThreadPoolExecutor(48) as pool:
            statuses = list(pool.map(send, range(96)))
        assert set(statuses) <= {200, 503, 504} and 504 in statuses, statuses
        metrics = running.scrape()
        timeouts = metrics.value('mnist_rejected_requests_total{reason="timeout"}')
        assert timeouts == statuses.count(504), (timeouts, statuses)
        # Every answered request was computed; requests that had already timed out in the queue were not.
        # (A scrape waits 0.1 s at most for a busy worker's batch metrics; the worker writes them within
        # 0.5 s whatever happens.)
        deadline = time.monotonic() + 5
        computed = metrics.value("mnist_images_total")
        while computed < 256 * statuses.count(200) and time.monotonic() < deadline:
            time.sleep(0.2)
            computed = running.scrape().value("mnist_images_total")
        assert 256 * statuses.count(200) <= computed < 256 * len(statuses)
        # A 504 keeps its queue slot until the worker has skipped its job; then every slot is back.
        deadline = time.monotonic() + 10
        while running.scrape().value("mnist_in_flight_requests") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running.scrape().value("mnist_in_flight_requests") == 0, running.scrape().text
        # Logged as a rate-limited warning (a line per API server here), not a line per 504.
        log = running.log()
        assert "ERROR" not in log and 1 <= log.count("requests timed out (504)") <= 4, log
    finally:
        assert running.stop() == 0, running.log()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_signals_drain_in_flight_requests_and_leave_no_process(
    tmp_path: Path, mnist: MnistArrays, stop_signal: int
) -> None:
    running = start_server(tmp_path, "--batch-timeout", "0.05", "--api-servers", "2")
    assert len(running.children) >= 4  # manager, worker, two API servers
    pixels = {"pixels": mnist.test_images[:64].numpy().tolist()}

    # Metrics are merged across both API servers and the worker, whichever server answers the scrape.
    for _ in range(10):
        assert running.post_json("/predict", {"pixels": mnist.test_images[0].tolist()}).status == 200
    for _ in range(6):
        metrics = running.scrape()
        assert metrics.value("mnist_images_total") == 10
        assert metrics.value('mnist_requests_total{code="200",method="POST",route="/predict"}') == 10
    statuses: list[int | str] = []

    def client() -> None:
        for _ in range(50):
            try:
                statuses.append(running.post_json("/predict", pixels).status)
            except OSError as error:  # refused after the drain began: never an HTTP error
                statuses.append(type(error).__name__)
                return

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(statuses) < 16 and time.monotonic() < deadline:  # every client busy, some answered
        time.sleep(0.05)
    assert len(statuses) >= 16 and len(statuses) < 8 * 50, "the clients were not under way at the signal"
    signalled = time.monotonic()
    code = running.stop(stop_signal)
    assert time.monotonic() - signalled < 20 + 10  # within the grace period: drain timeout (20 s) + margin
    for thread in threads:
        thread.join(30)
    assert code == 0, running.log()
    http_statuses = [s for s in statuses if isinstance(s, int)]
    assert http_statuses and set(http_statuses) == {200}, statuses  # every admitted request was answered
    assert running.alive_children() == []


def test_a_killed_worker_is_reported_not_ready_then_replaced(tmp_path: Path, mnist: MnistArrays) -> None:
    metrics_dir = tmp_path / "metrics"
    running = start_server(tmp_path, "--metrics-dir", str(metrics_dir))
    try:
        pixels = {"pixels": mnist.test_images[0].tolist()}
        expected = running.post_json("/predict", pixels).json()["predictions"]
        (worker,) = [json.loads(record.read_text())["pid"] for record in metrics_dir.glob("runtime-*.json")]
        first = running.scrape()
        # Clients keep asking while the worker dies: each must get an answer, none may hang.
        answers: list[tuple[int, float, float]] = []  # (status, seconds, answered at)
        recovered = threading.Event()

        def keep_asking() -> None:
            while not recovered.is_set():
                started = time.monotonic()
                status = running.post_json("/predict", pixels).status
                answers.append((status, time.monotonic() - started, time.monotonic()))

        clients = [threading.Thread(target=keep_asking) for _ in range(4)]
        for client in clients:
            client.start()
        # Kill once a few answers are older than the window whose batch metrics the worker may still
        # hold in memory (so the bound below checks something).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            written_before = time.monotonic() - FLUSH_INTERVAL_S - 1.5
            if sum(at < written_before for _, _, at in answers) >= 3:
                break
            time.sleep(0.05)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        not_ready_after = None
        while time.monotonic() - killed_at < 90:
            reply = running.request("GET", "/v2/health/ready")
            if reply.status == 503 and not_ready_after is None:
                not_ready_after = time.monotonic() - killed_at
                assert reply.headers["retry-after"] == "1"
            if reply.status == 200 and not_ready_after is not None:
                break
            time.sleep(0.1)
        assert not_ready_after is not None and not_ready_after <= 5, "the dead worker was never reported"
        assert reply.status == 200, "no replacement worker became ready"
        recovered.set()
        for client in clients:
            client.join(60)
            assert not client.is_alive(), "a request hung"
        assert {status for status, _, _ in answers} <= {200, 503}, answers  # 503: on the dead worker, retry
        assert max(seconds for _, seconds, _ in answers) < 30
        assert running.post_json("/predict", pixels).json()["predictions"] == expected
        # The dead worker's live gauges (model_info, in-flight) are dropped; its counters are kept.
        assert list(metrics_dir.glob(f"gauge_live*_{worker}.db"))  # written before it died...
        metrics = running.scrape()
        assert not list(metrics_dir.glob(f"gauge_live*_{worker}.db"))  # ...and forgotten at the scrape
        assert metrics.text.count("mnist_model_info{") == 1
        answered = 2 + sum(status == 200 for status, _, _ in answers)
        computed = metrics.value("mnist_images_total")
        # The dead worker's written counts are kept; what it held in memory (batch_metrics: at most its
        # last FLUSH_INTERVAL_S of batches) died with it. Its replacement's are written at the scrape.
        held_when_killed = sum(
            status == 200 and killed_at - FLUSH_INTERVAL_S - 1.0 < at < killed_at + 0.25  # 1 s: a busy CI
            for status, _, at in answers
        )
        assert answered - held_when_killed <= computed <= answered + 4
        assert answered - held_when_killed > 2, "no answer outside that window: the bound checked nothing"
        # The replacement carries its slot's name: the same process series, no new one per restart.
        cpu = "mnist_process_cpu_seconds_total"
        assert metrics.label_values(cpu, "process") == first.label_values(cpu, "process")
        assert "worker-0" in first.label_values(cpu, "process")
        started = 'mnist_process_start_time_seconds{process="worker-0"}'
        assert metrics.value(started) > first.value(started)
    finally:
        running.stop_leaving_nothing()  # the replacement worker included


def test_repeated_signals_to_the_whole_process_group_still_drain(tmp_path: Path, mnist: MnistArrays) -> None:
    """`timeout`, systemd and shells signal every process of the group, often more than once: workers
    must not die before the drain, and a second signal must not deadlock the first one's handler."""
    running = start_server(tmp_path)
    pixels = {"pixels": mnist.test_images[0].tolist()}
    assert running.post_json("/predict", pixels).status == 200
    group = os.getpgid(running.process.pid)
    for _ in range(3):
        os.killpg(group, signal.SIGTERM)
    assert running.process.wait(40) == 0, running.log()
    assert running.alive_children() == []
