"""Assembly details of service.server that need no running server."""

from __future__ import annotations

from importlib import metadata

import pytest

from service import server


def test_the_version_is_the_installed_package_or_marked_as_a_source_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert server._server_version() == metadata.version("mnist-serving")

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(server.package_metadata, "version", not_installed)
    assert server._server_version() == "0+source"
