"""Serving benchmark: mnist-serve, plain FastAPI baselines and Triton, driven by wrk, in the same run.

Starts every server at once, each on its own port (ours, benchmarks/fastapi_baseline.py, for JSON
pixels the tutorial endpoint benchmarks/fastapi_tutorial.py as ``async def`` and as ``def``, and for
the v2 bodies NVIDIA Triton, benchmarks/triton_server.py); an idle server costs nothing. For each
request body (JSON pixels, PNG upload, v2 JSON, v2 binary, 64 images as JSON and as v2 binary) and
each concurrency, Debian's `wrk` (benchmarks/wrk/post.lua) drives them in alternation, one run each
per round, so that the machine's drift falls on all of them alike; prints the medians of --runs
rounds: req/s, images/s, p50, p99, non-2xx, our/baseline ratios and, for mnist-serve, the mean number
of requests per batch (from its /metrics). Also the raw backend throughput per batch size, before and
after the servers (medians of 3 runs of 1 s each).

    .venv/bin/python benchmarks/serving.py                       # full: c = 1, 16, 64, 256; 3 runs of 5 s
    .venv/bin/python benchmarks/serving.py --quick               # c = 64, one run of 3 s per cell
    .venv/bin/python benchmarks/serving.py --server-args "--api-servers 2"
    .venv/bin/python benchmarks/serving.py --no-triton              # without Triton (no download)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import triton_server  # noqa: E402
from benchmarks.traffic import (  # noqa: E402
    Target,
    bodies,
    free_port,
    measure_interleaved,
    mnist_serve_command,
    mnist_test_images,
    start,
    stop,
)
from service.model.backends import load_backend  # noqa: E402
from service.model.repository import resolve  # noqa: E402

# What each server other than mnist-serve and the strict FastAPI baseline can be sent.
ONLY_BODIES = {
    "tutorial": ("json-pixels",),
    "tutorial-def": ("json-pixels",),
    "triton": ("v2-json", "v2-binary", "v2-binary-64-images"),  # Triton speaks v2 only
}
BASELINES = ("fastapi", "tutorial", "tutorial-def", "triton")  # the columns of ratios, in order
RAW_BATCHES = [1, 16, 64, 256]


def raw_backend(images: np.ndarray, batch_sizes: list[int], runs: int = 3) -> dict[int, float]:
    """Images/s of the default model's ONNX Runtime session in this process: medians of ``runs``
    runs of 1 s per batch size."""
    backend = load_backend(resolve(ROOT / "models", "mnist", "latest", "onnx"), "onnx", "cpu")
    pixels = np.ascontiguousarray(images[:, None])
    rates = {}
    for size in batch_sizes:
        batch = pixels[:size]
        backend.predict(batch)
        measured = []
        for _ in range(runs):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                backend.predict(batch)
                count += size
            measured.append(count / (time.perf_counter() - started))
        rates[size] = statistics.median(measured)
    return rates


def _triton_installed() -> bool:
    """Triton downloaded and unpacked (first use), or why it will not be measured."""
    try:
        triton_server.install()
    except (OSError, SystemExit, subprocess.CalledProcessError) as error:
        print(f"Triton not measured: {error}", file=sys.stderr)
        return False
    return True


def _raw_line(when: str, rates: dict[int, float]) -> str:
    return f"raw backend (ONNX Runtime, this process) {when}: " + ", ".join(
        f"batch {size}: {rate:,.0f} images/s" for size, rate in rates.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument(
        "--bodies", default="json-pixels,png-upload,v2-json,v2-binary,json-64-images,v2-binary-64-images"
    )
    parser.add_argument("--server-args", default="", help="extra mnist-serve flags, e.g. '--api-servers 2'")
    parser.add_argument("--quick", action="store_true", help="concurrency 64, one run of 3 s per cell")
    parser.add_argument(
        "--triton",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure NVIDIA Triton on the v2 bodies (downloads it on first use)",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.concurrency = 1, 3, "64"
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    images = mnist_test_images()
    chosen = [b for b in bodies(images) if b.name in args.bodies.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]

    def baseline(script: str, port: int, *flags: str) -> list[str]:
        return [sys.executable, str(Path(__file__).parent / script), "--port", str(port), *flags]

    ports = {name: free_port() for name in ("mnist-serve", *BASELINES)}
    servers = {
        "mnist-serve": mnist_serve_command(ports["mnist-serve"], *shlex.split(args.server_args)),
        "fastapi": baseline("fastapi_baseline.py", ports["fastapi"]),
        "tutorial": baseline("fastapi_tutorial.py", ports["tutorial"]),
        "tutorial-def": baseline("fastapi_tutorial.py", ports["tutorial-def"], "--sync"),
    }
    if args.triton and _triton_installed():
        servers["triton"] = baseline("triton_server.py", ports["triton"])
    served = {name: [b for b in chosen if b.name in ONLY_BODIES.get(name, [b.name])] for name in servers}
    raw_before = raw_backend(images, RAW_BATCHES)
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as scratch, contextlib.ExitStack() as running:
        for name, command in servers.items():
            if served[name]:
                process = start(command, ports[name])
                running.callback(stop, process)
        for body in chosen:
            body_file = Path(scratch) / f"{body.name}.body"
            body_file.write_bytes(body.data)
            targets = [
                Target(name, ports[name], batches=name == "mnist-serve")
                for name in servers
                if body in served[name]
            ]
            for connections in levels:
                cell = measure_interleaved(targets, body, body_file, connections, args.runs, args.seconds)
                for name, medians in cell.items():
                    results[(name, body.name, connections)] = medians
    raw_after = raw_backend(images, RAW_BATCHES)
    print(
        f"wrk -t2, {args.seconds:g} s per run, median of {args.runs}; mnist-serve flags: "
        f"{args.server_args or '(defaults)'}; {os.cpu_count()} cores"
    )
    print(
        f"{'body':<19} {'c':>4} {'server':<12} {'req/s':>8} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'non-2xx':>8} {'batch':>6} {'vs fastapi':>10} {'vs tutorial':>11} {'vs tutorial-def':>15} "
        f"{'vs triton':>9}"
    )
    images_per = {b.name: b.images for b in chosen}
    for body in chosen:
        for connections in levels:
            medians = {
                name: results[(name, body.name, connections)]
                for name in servers
                if (name, body.name, connections) in results
            }
            for name, m in medians.items():
                batch = f"{m['batch']:.1f}" if name == "mnist-serve" else "-"
                ratios = [
                    f"{m['rps'] / medians[base]['rps']:.2f}x" if medians.get(base, {}).get("rps") else "-"
                    for base in BASELINES
                ]
                print(
                    f"{body.name:<19} {connections:>4} {name:<12} {m['rps']:>8.0f} "
                    f"{m['rps'] * images_per[body.name]:>9.0f} {m['p50_ms']:>8.1f} {m['p99_ms']:>8.1f} "
                    f"{m['non2xx']:>8.0f} {batch:>6} {ratios[0]:>10} {ratios[1]:>11} {ratios[2]:>15} "
                    f"{ratios[3]:>9}"
                )
    print(_raw_line("before the servers", raw_before))
    print(_raw_line("after the servers", raw_after))


if __name__ == "__main__":
    main()
