"""Follow the repository: switch a worker to a newer verified version, refuse a bad one.

With ``--model-version latest`` and ``--poll-interval`` > 0, each inference worker checks the
repository this often. A newer version is verified (SHA-256, contract) and loaded *beside* the one
in use, then swapped in between batches; one that fails is refused, counted and logged once, and
the current version keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Counter

from service.model.repository import ModelVersion, available_versions, resolve

log = logging.getLogger(__name__)


class ModelWatcher(threading.Thread):
    def __init__(
        self,
        repository: Path,
        name: str,
        backend: str,
        current: str,
        interval_s: float,
        switch: Callable[[ModelVersion], None],
        failures: Counter,
    ) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.repository, self.name, self.backend = repository, name, backend
        self.current = int(current)
        self.interval_s = interval_s
        self.switch = switch
        self.failures = failures
        self.refused: set[int] = set()
        self.stopped = threading.Event()

    def check_once(self) -> None:
        versions = available_versions(Path(self.repository) / self.name)
        if not versions or versions[-1] <= self.current or versions[-1] in self.refused:
            return
        newest = versions[-1]
        try:
            model = resolve(self.repository, self.name, str(newest), self.backend)
            self.switch(model)
        except Exception as error:  # any failure to verify or load leaves the current version serving
            self.refused.add(newest)
            self.failures.inc()
            log.warning(
                "refusing %s version %d (%s); still serving version %d",
                self.name,
                newest,
                error,
                self.current,
            )
            return
        log.info("now serving %s version %d (was %d)", self.name, newest, self.current)
        self.current = newest

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.check_once()
