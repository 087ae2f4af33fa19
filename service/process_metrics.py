"""Memory, CPU and open files of every process of the server, labelled by the process's slot.

A scrape is answered by whichever API server got it, so these are read from the kernel (psutil) for
the whole tree under the main process, at each scrape. Processes are named by slot (``main``,
``api-<index>``, ``worker-<id>``), never by pid: a replacement continues its predecessor's series.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

PROCESS_NAME_PREFIX = "process-name-"  # + pid, in the metrics folder: see name_process
HELPERS = "helpers"  # the children no one named, summed


def name_process(folder: Path, pid: int, name: str) -> None:
    """Give a server process the name its process metrics carry (``process="worker-0"``).

    The name is the process's slot, not its pid: a replacement takes its predecessor's name, so a
    restart continues the same series (a counter reset, which ``rate()`` handles) instead of starting
    new ones forever. Written by whoever knows the slot: the main process for the API servers it
    starts, each inference worker for itself.
    """
    (folder / f"{PROCESS_NAME_PREFIX}{pid}").write_text(name)


def _process_names(folder: Path) -> dict[int, str]:
    names = {}
    for path in folder.glob(f"{PROCESS_NAME_PREFIX}*"):
        try:
            names[int(path.name.removeprefix(PROCESS_NAME_PREFIX))] = path.read_text().strip()
        except (OSError, ValueError):
            continue
    return names


@dataclass(frozen=True)
class _ProcessSample:
    rss: float
    cpu: float
    fds: float
    start: float

    def __add__(self, other: _ProcessSample) -> _ProcessSample:
        return _ProcessSample(
            self.rss + other.rss, self.cpu + other.cpu, self.fds + other.fds, max(self.start, other.start)
        )


class ProcessTreeCollector:
    """Process metrics for the main process and all of its children (API servers, workers).

    prometheus_client's own process collector only describes the process that was scraped, which in
    a multi-process server is whichever API server answered. Each process is labelled by its name
    (``main``, ``api-<slot>``, ``worker-<id>``); unnamed children (LitServe's queue manager,
    multiprocessing's resource tracker) are summed as ``helpers``. CPU time is read from the kernel at
    each scrape, so it is a counter per process, not a multiprocess file.
    """

    def __init__(self, root_pid: int, folder: Path) -> None:
        self.root_pid = root_pid
        self.folder = folder

    def _processes(self) -> Iterator[tuple[psutil.Process, str]]:
        names = _process_names(self.folder)
        try:
            root = psutil.Process(self.root_pid)
            yield root, "main"
            for child in root.children(recursive=True):
                yield child, names.get(child.pid, HELPERS)
        except psutil.Error:
            return

    def _samples(self) -> dict[str, _ProcessSample]:
        samples: dict[str, _ProcessSample] = {}
        for process, name in self._processes():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    sample = _ProcessSample(
                        process.memory_info().rss,
                        times.user + times.system,
                        process.num_fds(),
                        process.create_time(),
                    )
            except psutil.Error:
                continue
            seen = samples.get(name)
            if seen is not None and name == HELPERS:
                samples[name] = seen + sample
            elif seen is None or sample.start > seen.start:  # a slot's predecessor may linger as a zombie
                samples[name] = sample
        return samples

    def collect(self) -> Iterable[Metric]:
        labels = ["process"]
        rss = GaugeMetricFamily("mnist_process_resident_memory_bytes", "Resident memory.", labels=labels)
        cpu = CounterMetricFamily(
            "mnist_process_cpu_seconds",
            "User and system CPU time; starts again from 0 when the process is replaced.",
            labels=labels,
        )
        fds = GaugeMetricFamily("mnist_process_open_fds", "Open file descriptors.", labels=labels)
        start = GaugeMetricFamily(
            "mnist_process_start_time_seconds", "Start time since the Unix epoch.", labels=labels
        )
        for name, sample in sorted(self._samples().items()):
            rss.add_metric([name], sample.rss)
            cpu.add_metric([name], sample.cpu)
            fds.add_metric([name], sample.fds)
            start.add_metric([name], sample.start)
        return [rss, cpu, fds, start]


def forget_dead_process_names(folder: Path) -> None:
    for pid in _process_names(folder):
        if not psutil.pid_exists(pid):
            (folder / f"{PROCESS_NAME_PREFIX}{pid}").unlink(missing_ok=True)
