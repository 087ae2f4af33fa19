"""A worker's per-batch metrics, gathered in memory and written to Prometheus's files in one go.

In multiprocess mode every counter or histogram update is a locked write to a memory-mapped file. A
worker that wrote each batch's dozen or so updates as it went spent a fifth of its busy time there at
c = 64 (py-spy, docs/performance.md). ``BatchMetrics`` keeps the batches' raw numbers instead and
``flush`` turns all of them into one write per counter and histogram bucket touched. The worker loop
flushes when an API server asks, which it does before rendering /metrics (so a scrape, or a client
that reads /metrics after its answer, sees every batch computed so far), and otherwise once the held
metrics are ``FLUSH_INTERVAL_S`` old, under load or not.
"""

from __future__ import annotations

import time

import numpy as np

from service.metrics import Metrics, observe_many

FLUSH_INTERVAL_S = 0.5
MAX_HELD_BATCHES = 4096  # bounds the memory held if nobody flushes (a caller that never goes idle)


class BatchMetrics:
    def __init__(self, metrics: Metrics, low_confidence: float) -> None:
        self.metrics = metrics
        self.low_confidence = low_confidence
        self._queue_waits: list[np.ndarray] = []
        self._inference_seconds: list[float] = []
        self._jobs: list[int] = []
        self._probabilities: list[np.ndarray] = []
        self._flushed_at = time.monotonic()

    def add(self, queue_waits: np.ndarray, inference_seconds: float, probabilities: np.ndarray) -> None:
        """One computed batch: each job's wait in the queue, the backend's time, every image's answer."""
        self._queue_waits.append(queue_waits)
        self._inference_seconds.append(inference_seconds)
        self._jobs.append(len(queue_waits))
        self._probabilities.append(probabilities)
        if len(self._jobs) >= MAX_HELD_BATCHES:
            self.flush()

    def due_in(self) -> float | None:
        """Seconds until the held metrics are due to be written (0: now); None when nothing is held."""
        if not self._jobs:
            return None
        return max(0.0, self._flushed_at + FLUSH_INTERVAL_S - time.monotonic())

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if not self._jobs:
            return
        metrics = self.metrics
        images_per_batch = np.array([len(batch) for batch in self._probabilities])
        probabilities = np.concatenate(self._probabilities)
        observe_many(metrics.queue_wait, np.concatenate(self._queue_waits))
        observe_many(metrics.inference, np.array(self._inference_seconds))
        observe_many(metrics.batch_requests, np.array(self._jobs))
        observe_many(metrics.batch_images, images_per_batch)
        self._queue_waits, self._inference_seconds, self._jobs, self._probabilities = [], [], [], []
        if not len(probabilities):
            return
        metrics.images.inc(len(probabilities))
        per_digit = np.bincount(probabilities.argmax(1), minlength=len(metrics.predicted_digits))
        for digit in np.flatnonzero(per_digit).tolist():
            metrics.predicted_digits[digit].inc(int(per_digit[digit]))
        confidence = probabilities.max(1)
        observe_many(metrics.confidence, confidence)
        low = int((confidence < self.low_confidence).sum())
        if low:
            metrics.low_confidence.inc(low)
