"""Assembly details of service.server that need no running server."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from service import server
from service.cpus import usable_cpus
from service.settings import Settings


def test_the_version_is_the_installed_package_or_marked_as_a_source_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert server._server_version() == metadata.version("mnist-serving")

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(server.package_metadata, "version", not_installed)
    assert server._server_version() == "0+source"


@pytest.mark.parametrize(
    ("listing", "visible", "expected"),
    [
        ("GPU 0: NVIDIA H200 (UUID: GPU-0b5f7a4e)\n", None, "cuda"),
        ("GPU 0: NVIDIA H200 (UUID: GPU-0b5f7a4e)\n", "3", "cpu"),  # hidden by CUDA_VISIBLE_DEVICES
        ("No devices were found\n", None, "cpu"),
        (None, None, "cpu"),
    ],
)
def test_auto_device_follows_nvidia_smi_and_the_server_imports_without_torch(
    listing: str | None, visible: str | None, expected: str, tmp_path: Path
) -> None:
    # Stands in for the driver's tool (none here, and CI has no GPU): what it lists decides. In a fresh
    # interpreter: this one has imported torch already (other tests), which would hide an import.
    if listing is not None:
        tool = tmp_path / "nvidia-smi"
        tool.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
        tool.chmod(0o755)
    environment = {"PATH": str(tmp_path)} | ({"CUDA_VISIBLE_DEVICES": visible} if visible else {})
    probe = (
        "import sys; import service.server; from service.processes import _accelerator; "
        "print(_accelerator('auto')[0], _accelerator('cuda:1'), _accelerator('cpu'), 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=environment, check=True
    )
    assert result.stdout.split(maxsplit=1)[0] == expected
    assert result.stdout.rstrip().endswith("('cuda', [1]) ('cpu', 'auto') False"), result.stdout


def test_worker_threads_share_the_usable_cpus_also_with_one_worker() -> None:
    cpus = usable_cpus()
    assert server.worker_threads(Settings(workers=1)) == cpus  # not ONNX Runtime's default: the node's cores
    assert server.worker_threads(Settings(workers=2)) == max(1, cpus // 2)
    assert server.worker_threads(Settings(workers=64)) == 1
