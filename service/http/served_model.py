"""The model this server answers for, as the API servers see it: its name, and what the workers run.

The workers may follow the repository to a newer version (``--poll-interval``) and decide their own
device, so the versions, device and provider really in use come from the records the workers write
(``service.ipc.runtime_records``), read at most every ``RUNTIME_CACHE_S``.
"""

from __future__ import annotations

import time
from pathlib import Path

from service.errors import NotFound
from service.ipc.runtime_records import runtime_records
from service.model.repository import ModelVersion

RUNTIME_CACHE_S = 5.0


class ServedModel:
    def __init__(self, model: ModelVersion, backend: str, runtime_dir: Path) -> None:
        self.model = model
        self.backend = backend
        self.runtime_dir = runtime_dir
        self._runtime: tuple[float, dict[str, str]] | None = None
        # The "model" object of /predict answers, one per version and device: a handful over the
        # server's life.
        self._payloads: dict[tuple[str, str], dict[str, str]] = {}

    def check(self, name: str, version: str | None) -> None:
        """Raise NotFound unless this server serves ``name`` (and ``version``, when given)."""
        if version is None and name == self.model.name:  # every inference request without a version
            return
        served = self.versions()
        if name != self.model.name or (version is not None and version not in served):
            raise NotFound(
                f"model {name!r}{f' version {version!r}' if version else ''} is not served here "
                f"(serving {self.model.name} version {', '.join(served)})"
            )

    def versions(self) -> list[str]:
        return self.runtime()["version"].split(",")

    def runtime(self) -> dict[str, str]:
        """Versions, devices and providers the live workers use, each joined with commas."""
        now = time.monotonic()
        if self._runtime is None or now - self._runtime[0] > RUNTIME_CACHE_S:
            records = runtime_records(self.runtime_dir)

            def joined(key: str, default: str) -> str:
                return ",".join(sorted({str(r[key]) for r in records}, key=_natural)) or default

            self._runtime = (
                now,
                {
                    "version": joined("version", self.model.version),
                    "device": joined("device", "unknown"),
                    "provider": joined("provider", "unknown"),
                },
            )
        return self._runtime[1]

    def payload(self, version: str) -> dict[str, str]:
        """The ``model`` object a /predict answer computed by ``version`` carries."""
        device = self.runtime()["device"]
        payload = self._payloads.get((version, device))
        if payload is None:
            payload = self._payloads[version, device] = {
                "name": self.model.name,
                "version": version,
                "backend": self.backend,
                "device": device,
            }
        return payload


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (0, text)
