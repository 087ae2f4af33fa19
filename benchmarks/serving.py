"""Serving benchmark: mnist-serve against a plain FastAPI baseline, driven by wrk, in the same run.

For each server in turn (ours, then benchmarks/fastapi_baseline.py, then for JSON pixels the
tutorial endpoint benchmarks/fastapi_tutorial.py as ``async def`` and as ``def``), each request
body (JSON pixels, PNG upload, v2 JSON, v2 binary, 64 images as JSON and as v2 binary) and each
concurrency, runs Debian's `wrk` with benchmarks/wrk/post.lua and prints req/s, images/s, p50, p99,
non-2xx, our/baseline ratios and, for mnist-serve, the mean number of requests per batch (from its
/metrics). Medians of --runs runs. Also the raw backend throughput per batch size.

    .venv/bin/python benchmarks/serving.py                       # full: c = 1, 16, 64, 256; 3 runs of 5 s
    .venv/bin/python benchmarks/serving.py --quick               # c = 64, one run of 3 s per cell
    .venv/bin/python benchmarks/serving.py --server-args "--api-servers 2"
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.traffic import (  # noqa: E402
    bodies,
    free_port,
    measure_cell,
    mnist_serve_command,
    mnist_test_images,
    start,
    stop,
)
from service.backends import load_backend  # noqa: E402
from service.repository import resolve  # noqa: E402

TUTORIAL_BODIES = ("json-pixels",)
BASELINES = ("fastapi", "tutorial", "tutorial-def")  # the columns of ratios, in order


def raw_backend(images: np.ndarray, batch_sizes: list[int]) -> dict[int, float]:
    backend = load_backend(resolve(ROOT / "models", "mnist", "latest", "onnx"), "onnx", "cpu")
    pixels = np.ascontiguousarray(images[:, None])
    rates = {}
    for size in batch_sizes:
        batch = pixels[:size]
        backend.predict(batch)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < 1.0:
            backend.predict(batch)
            count += size
        rates[size] = count / (time.perf_counter() - started)
    return rates


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
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.concurrency = 1, 3, "64"
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    images = mnist_test_images()
    chosen = [b for b in bodies(images) if b.name in args.bodies.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    port = free_port()

    def baseline(script: str, *flags: str) -> list[str]:
        return [sys.executable, str(Path(__file__).parent / script), "--port", str(port), *flags]

    servers = {
        "mnist-serve": mnist_serve_command(port, *shlex.split(args.server_args)),
        "fastapi": baseline("fastapi_baseline.py"),
        "tutorial": baseline("fastapi_tutorial.py"),
        "tutorial-def": baseline("fastapi_tutorial.py", "--sync"),
    }
    # The tutorial endpoints take JSON pixels only (see their docstring).
    served = {
        name: [b for b in chosen if not name.startswith("tutorial") or b.name in TUTORIAL_BODIES]
        for name in servers
    }
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as scratch:
        files = {}
        for body in chosen:
            files[body.name] = Path(scratch) / f"{body.name}.body"
            files[body.name].write_bytes(body.data)
        for name, command in servers.items():
            if not served[name]:
                continue
            process = start(command, port)
            try:
                for body in served[name]:
                    for connections in levels:
                        results[(name, body.name, connections)] = measure_cell(
                            port,
                            body,
                            files[body.name],
                            connections,
                            args.runs,
                            args.seconds,
                            batches=name == "mnist-serve",
                        )
            finally:
                stop(process)
    print(
        f"wrk -t2, {args.seconds:g} s per run, median of {args.runs}; mnist-serve flags: "
        f"{args.server_args or '(defaults)'}; {os.cpu_count()} cores"
    )
    print(
        f"{'body':<19} {'c':>4} {'server':<12} {'req/s':>8} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'non-2xx':>8} {'batch':>6} {'vs fastapi':>10} {'vs tutorial':>11} {'vs tutorial-def':>15}"
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
                    f"{m['non2xx']:>8.0f} {batch:>6} {ratios[0]:>10} {ratios[1]:>11} {ratios[2]:>15}"
                )
    print(
        "raw backend (ONNX Runtime, this process):",
        ", ".join(f"batch {k}: {v:,.0f} images/s" for k, v in raw_backend(images, [1, 16, 64, 256]).items()),
    )


if __name__ == "__main__":
    main()
