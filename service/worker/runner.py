"""The model in each inference worker: batch already-validated pixels through a backend.

Requests are decoded and validated in the API server processes (``service.http.inference``) before they
are sent, so nothing that reaches a batch can fail for one request and take the others down with it.
``service.worker.loop`` collects the jobs and calls ``predict`` with every job's images in one array;
this class owns the model: loading, warm-up, hot reload, and the inference metrics.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.ipc.runtime_records import write_runtime_record
from service.memory_tuning import tune_for_serving
from service.metrics import Metrics
from service.model.backends import Backend, load_backend
from service.model.reload import ModelWatcher
from service.model.repository import ModelVersion
from service.process_metrics import name_process
from service.worker.batch_metrics import BatchMetrics

log = logging.getLogger(__name__)
GPU_SAMPLE_INTERVAL_S = 5.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerConfig:
    model: ModelVersion
    backend: str
    device: str  # the operator's request: auto, cpu, cuda, cuda:N
    warmup_images: int
    low_confidence: float
    runtime_dir: Path  # where each worker records the device and provider it really uses
    threads: int | None = None
    log_level: str = "info"
    poll_interval_s: float = 0.0  # > 0: follow the repository's latest version (service.model.reload)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent exits, so it can never be orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the main process's shutdown still stops workers
        pass


def gpu_memory_used(device: str) -> int:
    """Bytes in use on the worker's GPU (all processes), as the driver reports it."""
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    return int(total - free)


@dataclass(frozen=True)
class Serving:
    """The model version a worker answers with and its loaded backend; swapped as one reference."""

    model: ModelVersion
    backend: Backend


class ModelRunner:
    """Built in the main process, set up in each worker process (``setup``) with its device."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.serving: Serving | None = None
        self.metrics: Metrics | None = None
        self.batch_metrics: BatchMetrics | None = None
        self.device = "cpu"
        self._next_gpu_sample = 0.0

    def setup(self, device: str, worker_id: int = 0) -> None:
        # Ctrl+C, and SIGTERM from tools that signal the whole process group (timeout, systemd), reach
        # the workers too; the main process decides when they stop, after the API servers have drained,
        # so no admitted request loses its answer. If the main process dies, the workers die with it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _die_with_parent()
        logging.basicConfig(  # a spawned process starts with no logging configuration
            level=self.config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        self.device = device
        name_process(self.config.runtime_dir, os.getpid(), f"worker-{worker_id}")
        self.metrics = Metrics()
        self.batch_metrics = BatchMetrics(self.metrics, self.config.low_confidence)
        self._switch(self.config.model)
        tune_for_serving()
        if self.config.poll_interval_s > 0:
            ModelWatcher(
                self.config.model.folder.parent.parent,
                self.config.model.name,
                self.config.backend,
                self.config.model.version,
                self.config.poll_interval_s,
                self._switch,
                self.metrics.reload_failures,
            ).start()

    def _switch(self, model: ModelVersion) -> None:
        """Load ``model`` next to the current one, warm it up, then make it the one that answers."""
        # LitServe hands each worker "cpu" or "cuda:N"; with --device auto a GPU that the backend cannot
        # use (e.g. a CPU-only ONNX Runtime) falls back to CPU instead of failing.
        strict = self.config.device != "auto"
        backend = load_backend(model, self.config.backend, self.device, strict, self.config.threads)
        backend.predict(np.zeros((self.config.warmup_images, 1, 28, 28), dtype=np.uint8))  # warm-up
        previous, self.serving = self.serving, Serving(model, backend)
        assert self.metrics is not None
        if previous is not None:  # multiprocess files keep every label set: mark the old one as not served
            self.metrics.model_info.labels(*_info_labels(previous)).set(0)
        self.metrics.model_info.labels(*_info_labels(self.serving)).set(1)
        write_runtime_record(
            self.config.runtime_dir,
            {
                "version": model.version,
                "backend": backend.name,
                "device": backend.device,
                "provider": backend.provider,
            },
        )
        log.info(
            "worker %d serving %s v%s with %s on %s (%s)",
            os.getpid(),
            model.name,
            model.version,
            backend.name,
            backend.device,
            backend.provider,
        )

    def predict(
        self, pixels: np.ndarray, admitted_at: np.ndarray, images_per_job: np.ndarray
    ) -> tuple[np.ndarray, str]:
        """Probabilities for a batch of jobs' images (concatenated), and the version that computed them."""
        serving = self.serving  # one read: a reload between batches never splits a batch
        assert serving is not None and self.metrics is not None, "setup() has not run"
        started = time.monotonic()
        probabilities = serving.backend.predict(pixels)
        finished = time.monotonic()
        self._observe(admitted_at, started, finished, probabilities, serving.backend.device)
        return probabilities, serving.model.version

    def metrics_due_in(self) -> float | None:
        """Seconds until the held batch metrics are due to be written; None when none are held."""
        return None if self.batch_metrics is None else self.batch_metrics.due_in()

    def flush_metrics(self, force: bool) -> None:
        """Write the held batch metrics if asked to (``force``) or once they are due."""
        batch_metrics = self.batch_metrics
        if batch_metrics is not None and (force or batch_metrics.due_in() == 0.0):
            batch_metrics.flush()

    def _observe(
        self, admitted_at: np.ndarray, started: float, finished: float, probabilities: np.ndarray, device: str
    ) -> None:
        assert self.metrics is not None and self.batch_metrics is not None
        self.batch_metrics.add(started - admitted_at, finished - started, probabilities)
        if device.startswith("cuda") and finished >= self._next_gpu_sample:
            self._next_gpu_sample = finished + GPU_SAMPLE_INTERVAL_S
            self.metrics.gpu_memory.labels(device).set(gpu_memory_used(device))


def _info_labels(serving: Serving) -> tuple[str, str, str, str, str]:
    backend = serving.backend
    return serving.model.name, serving.model.version, backend.name, backend.device, backend.provider
