"""Assembly details of service.server that need no running server."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from litserve.connector import check_cuda_with_nvidia_smi

from service import server


def test_the_version_is_the_installed_package_or_marked_as_a_source_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert server._server_version() == metadata.version("mnist-serving")

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(server.package_metadata, "version", not_installed)
    assert server._server_version() == "0+source"


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        ("GPU 0: NVIDIA H200 (UUID: GPU-0b5f7a4e)\n", "cuda"),
        ("No devices were found\n", "cpu"),
        (None, "cpu"),
    ],
)
def test_auto_device_follows_nvidia_smi_without_importing_torch(
    listing: str | None, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Stands in for the driver's tool (none here, and CI has no GPU): what it lists decides.
    if listing is not None:
        tool = tmp_path / "nvidia-smi"
        tool.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    check_cuda_with_nvidia_smi.cache_clear()
    imported_before = "torch" in sys.modules
    try:
        assert server._accelerator("auto") == (expected, "auto")
    finally:
        check_cuda_with_nvidia_smi.cache_clear()
    assert ("torch" in sys.modules) == imported_before
    assert server._accelerator("cuda:1") == ("cuda", [1])
    assert server._accelerator("cpu") == ("cpu", "auto")
