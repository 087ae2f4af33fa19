"""API-server scaling: mnist-serve with 1, 2, 4, ... API server processes under single-image load.

Starts one mnist-serve per --api-servers count, all at once on their own ports (an idle server costs
nothing), drives them with one body through Debian's `wrk` at each concurrency in alternation (one run
each per round, so the machine's drift falls on all counts alike) and prints req/s, p50, p99, the mean
number of requests per batch (from /metrics) and the ratio to the first count in the list, medians of
--runs rounds. This is the curve issue #6 asks for on a
GPU machine, where the API servers, not the model, are the limit:

    .venv/bin/python benchmarks/scaling.py                                  # 1,2 API servers, CPU
    .venv/bin/python benchmarks/scaling.py --api-servers 1,2,4,8,16 --concurrency 64,256,1024 \\
        --server-args "--backend torchscript --device cuda" --wrk-threads 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-servers", default="1,2", help="comma-separated API-server counts")
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--body", default="json-pixels")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--server-args", default="", help="extra mnist-serve flags, e.g. '--device cuda'")
    parser.add_argument("--wrk-threads", type=int, default=max(2, (os.cpu_count() or 2) // 4))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    counts = [int(n) for n in args.api_servers.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    body = next(b for b in bodies(mnist_test_images()) if b.name == args.body)
    targets = [Target(str(count), free_port(), batches=True) for count in counts]
    results: dict[int, dict[int, dict[str, float]]] = {count: {} for count in counts}
    with tempfile.TemporaryDirectory(prefix="mnist-scaling-") as scratch, contextlib.ExitStack() as running:
        body_file = Path(scratch) / "body"
        body_file.write_bytes(body.data)
        for count, target in zip(counts, targets, strict=True):
            flags = ["--api-servers", str(count), *shlex.split(args.server_args)]
            running.callback(stop, start(mnist_serve_command(target.port, *flags), target.port))
        for connections in levels:
            cell = measure_interleaved(
                targets, body, body_file, connections, args.runs, args.seconds, args.wrk_threads
            )
            for count in counts:
                results[count][connections] = cell[str(count)]
    print(
        f"{args.body}, wrk -t{args.wrk_threads}, {args.seconds:g} s per run, median of {args.runs}; "
        f"mnist-serve flags: {args.server_args or '(defaults)'}; {os.cpu_count()} cores"
    )
    print(
        f"{'API servers':>11} {'c':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'non-2xx':>8} {'batch':>6} ratio"
    )
    for count in counts:
        for connections in levels:
            m = results[count][connections]
            first = results[counts[0]][connections]["rps"]
            print(
                f"{count:>11} {connections:>5} {m['rps']:>8.0f} {m['p50_ms']:>8.1f} {m['p99_ms']:>8.1f} "
                f"{m['non2xx']:>8.0f} {m['batch']:>6.1f} {m['rps'] / first:.2f}x"
            )


if __name__ == "__main__":
    main()
