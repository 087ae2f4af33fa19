"""The CPU image, built from this repository by the real buildah and served from, as an operator would:
on a Debian bookworm base made here with debootstrap (no registry is reachable), started as user 10001
on the host's loopback, asked over HTTP, stopped with SIGTERM. The build time and the image size are
written to the test report. The base image is kept in buildah's storage for later runs on this machine."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from training.data import MnistArrays

from ..integration.harness import RunningServer, free_port
from ..integration.images import png
from . import buildah as bh

pytestmark = [pytest.mark.image, pytest.mark.starts_server, pytest.mark.timeout(1800)]

IMAGE = "localhost/mnist-serving:image-test-cpu"
MAX_CPU_IMAGE_BYTES = 600 * 10**6
USER = "10001"
# How these machines run a container: as root, chroot isolation, on the host's network.
RUN_AS_USER = ["buildah", "run", "--isolation", "chroot", "--network", "host", "--user", USER]
LABELS = {"REVISION": "test-revision", "SOURCE": "https://example.org/mnist-serving"}
CUDA_LIBRARY = re.compile(r"lib(cuda|cudart|cublas|cudnn|cufft|curand|cusparse|cusolver|nccl|nvrtc)\b")


def report(config: pytest.Config, line: str) -> None:
    """A line in pytest's output whatever the capture mode: CI's log shows the image's numbers."""
    with config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        config.pluginmanager.get_plugin("terminalreporter").write_line(line)


@pytest.fixture(scope="module")
def base() -> str:
    reason = bh.unusable_reason()
    if reason:
        pytest.skip(reason)
    return bh.base_image()


@pytest.fixture(scope="module")
def image(base: str, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[str]:
    started = time.monotonic()
    result = bh.build_image(base, "cpu", IMAGE, LABELS, tmp_path_factory.mktemp("build"))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    report(pytestconfig, f"CPU image built in {time.monotonic() - started:.0f} s")
    yield IMAGE
    subprocess.run(["buildah", "rmi", IMAGE], capture_output=True)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = bh.buildah("from", "--pull-never", image)
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True)


def test_an_unknown_variant_stops_the_build(base: str, tmp_path: Path) -> None:
    result = bh.build_image(base, "gpux", "localhost/mnist-serving:image-test-never", LABELS, tmp_path)
    assert result.returncode != 0
    assert "VARIANT must be cpu or gpu, not 'gpux'" in result.stderr
    assert not bh.image_exists("localhost/mnist-serving:image-test-never")


def test_the_cpu_image_is_small_with_neither_torch_nor_cuda(
    image: str, container: str, pytestconfig: pytest.Config
) -> None:
    size = bh.image_size(image)
    report(pytestconfig, f"CPU image: {size / 1e6:.0f} MB uncompressed")
    assert size <= MAX_CPU_IMAGE_BYTES
    root = Path(bh.buildah("mount", container))
    try:
        site = next((root / "opt/venv/lib").glob("python3.*/site-packages"))
        assert (site / "onnxruntime").is_dir() and (root / "opt/app/service").is_dir()
        for absent in ("torch", "torchvision", "onnx", "matplotlib", "nvidia", "pip"):
            assert not (site / absent).exists(), absent
        assert not [path for path in root.rglob("lib*.so*") if CUDA_LIBRARY.match(path.name)]
    finally:
        bh.buildah("umount", container)


def test_labels_user_and_a_read_only_model(image: str, container: str) -> None:
    config = bh.image_config(image)
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] == "test-revision"
    assert labels["org.opencontainers.image.source"] == "https://example.org/mnist-serving"
    assert config["User"] == f"{USER}:{USER}"
    assert config["Entrypoint"][:2] == ["tini", "--"]
    root = Path(bh.buildah("mount", container))
    try:
        files = [path for path in (root / "models").rglob("*") if not path.is_symlink()]
        assert any(path.name == "model.onnx" for path in files)
        for path in files:  # root's, and writable by nobody else: the server can read, never change them
            assert path.stat().st_uid == 0 and path.stat().st_mode & 0o022 == 0, path
    finally:
        bh.buildah("umount", container)


def test_the_commands_the_manifests_run_are_on_the_path(container: str) -> None:
    for command in ("mnist-serve", "mnist-score"):  # the Deployment's entrypoint, the scoring Job's command
        help_run = subprocess.run([*RUN_AS_USER, container, "--", command, "--help"], capture_output=True)
        assert help_run.returncode == 0, help_run.stderr


@pytest.fixture
def served(image: str, container: str, tmp_path: Path) -> Iterator[tuple[RunningServer, str]]:
    """The image's own entrypoint as user 10001 on the host's network, listening on loopback at the
    port MNIST_PORT names (set in the container's configuration, as `docker run -e` would)."""
    port = free_port()
    bh.buildah("config", "--env", f"MNIST_PORT={port}", container)
    entrypoint = bh.image_config(image)["Entrypoint"]
    log_path = tmp_path / "container.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*RUN_AS_USER, container, "--", *entrypoint, "--host", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(process, port, log_path)
    try:
        deadline = time.monotonic() + 180
        while not _ready(server):
            assert process.poll() is None, f"the container exited with {process.returncode}:\n{server.log()}"
            assert time.monotonic() < deadline, f"not ready within 180 s:\n{server.log()}"
            time.sleep(0.5)
        yield server, container
    finally:
        if process.poll() is None:  # the test failed before it stopped the container
            for proc in container_processes(process):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def container_processes(run: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """What `buildah run` started: chroot isolation has no PID namespace, so these are tini and its
    descendants, below buildah's own helper processes."""
    helpers = psutil.Process(run.pid).children(recursive=True)
    inits = [proc for proc in helpers if proc.name() == "tini"]
    return [proc for init in inits for proc in [init, *init.children(recursive=True)]]


def _ready(server: RunningServer) -> bool:
    try:
        return server.request("GET", "/v2/health/ready", timeout=2).status == 200
    except OSError:
        return False


def test_the_image_serves_as_user_10001_and_stops_cleanly_on_sigterm(
    served: tuple[RunningServer, str], mnist: MnistArrays
) -> None:
    server, container = served
    pixels, labels = mnist.test_images[:2].numpy(), mnist.test_labels[:2].tolist()

    tensor = {
        "name": "pixels",
        "shape": [1, 1, 28, 28],
        "datatype": "UINT8",
        "data": pixels[0].ravel().tolist(),
    }
    reply = server.post_json("/v2/models/mnist/infer", {"inputs": [tensor]})
    assert reply.status == 200, reply.body
    (output,) = reply.json()["outputs"]
    assert output["name"] == "probabilities" and int(np.argmax(output["data"])) == labels[0]

    reply = server.request("POST", "/predict", png(pixels[1]), {"content-type": "image/png"})
    assert reply.status == 200, reply.body
    assert reply.json()["predictions"][0]["digit"] == labels[1]

    scrape = server.scrape()
    assert scrape.has("mnist_requests_total") and scrape.has("mnist_model_info")
    assert 'backend="onnx"' in scrape.text and 'provider="CPUExecutionProvider"' in scrape.text

    # The image's HEALTHCHECK, run inside the container, finds the server on MNIST_PORT.
    healthcheck = bh.image_healthcheck(IMAGE)
    check = subprocess.run([*RUN_AS_USER, container, "--", *healthcheck], capture_output=True, timeout=60)
    assert check.returncode == 0, check.stderr

    # `docker stop` signals the container's init; here that is tini (buildah run would SIGKILL it).
    init, *serving = inside = container_processes(server.process)
    assert init.name() == "tini" and serving
    assert {proc.uids().real for proc in inside} == {int(USER)}
    assert any("mnist-serve" in " ".join(proc.cmdline()) for proc in inside)

    init.send_signal(signal.SIGTERM)
    assert server.process.wait(90) == 0, server.log()
    assert "stopped (normal)" in server.log()
    assert not [proc for proc in inside if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE]
