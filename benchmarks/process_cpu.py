"""Where the CPU goes under load: CPU per request of every mnist-serve process and of wrk.

Starts mnist-serve (with any extra flags), drives one body with wrk at one concurrency and, over the
middle of the run, reads each process's user and system CPU time (psutil): the API servers, the
inference worker (its ONNX Runtime threads included), the main process and LitServe's manager, and
wrk itself. Divided by the requests answered in that window, this is what a request costs in each
process, the split a profile of one process cannot give. Rounds are repeated and printed one by one:
on a shared machine single rounds move by 10-30 %.

    .venv/bin/python benchmarks/process_cpu.py --body v2-json --concurrency 64
    .venv/bin/python benchmarks/process_cpu.py --body v2-binary --server-args "--api-servers 1"
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.traffic import (  # noqa: E402
    Body,
    bodies,
    free_port,
    mnist_serve_command,
    mnist_test_images,
    run_wrk,
    start,
    stop,
)

SETTLE_S = 0.5  # wrk's connections are open and busy after this


def role(process: psutil.Process, main_pid: int) -> str:
    command = " ".join(process.cmdline())
    if process.pid == main_pid:
        return "main"
    if "multiprocessing.spawn" in command:
        return "worker"
    if "resource_tracker" in command:
        return "resource tracker"
    return "API server / manager"


def one_round(
    main_pid: int, port: int, body: Body, body_file: Path, connections: int, seconds: float
) -> None:
    result: dict[str, float] = {}
    wrk = threading.Thread(target=lambda: result.update(run_wrk(port, body, body_file, connections, seconds)))
    wrk.start()
    time.sleep(SETTLE_S)
    server = psutil.Process(main_pid)
    labels = {p.pid: role(p, main_pid) for p in [server, *server.children(recursive=True)]}
    labels.update({p.pid: "wrk" for p in psutil.process_iter(["name"]) if p.info["name"] == "wrk"})
    processes = [psutil.Process(pid) for pid in labels]
    before = {p.pid: p.cpu_times() for p in processes}
    window_start = time.monotonic()
    time.sleep(seconds - 2 * SETTLE_S)
    after = {p.pid: p.cpu_times() for p in processes if p.is_running()}
    window = time.monotonic() - window_start
    wrk.join()
    rate = result["rps"]
    print(f"{body.name} c={connections}: {rate:,.0f} req/s, p99 {result['p99_ms']:.1f} ms")
    for process in processes:
        if process.pid not in after:
            continue
        user = (after[process.pid].user - before[process.pid].user) / window
        system = (after[process.pid].system - before[process.pid].system) / window
        if user + system < 0.01:  # idle: LitServe's manager, the tracker
            continue
        print(
            f"  {labels[process.pid]:<22} pid {process.pid:>7}  {user + system:4.2f} cores  "
            f"{(user + system) / rate * 1e6:6.1f} µs per request (user {user / rate * 1e6:5.1f}, "
            f"system {system / rate * 1e6:5.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="v2-json")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-args", default="", help="extra mnist-serve flags")
    args = parser.parse_args()
    body = next(b for b in bodies(mnist_test_images()) if b.name == args.body)
    port = free_port()
    server = start(mnist_serve_command(port, *shlex.split(args.server_args)), port)
    try:
        with tempfile.TemporaryDirectory() as folder:
            body_file = Path(folder) / "body"
            body_file.write_bytes(body.data)
            for _ in range(args.rounds):
                one_round(server.pid, port, body, body_file, args.concurrency, args.seconds)
    finally:
        stop(server)


if __name__ == "__main__":
    main()
