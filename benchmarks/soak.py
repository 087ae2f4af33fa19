"""Soak: minutes of mixed load against a real mnist-serve, with the server's memory over time.

Mixed traffic from 8 keep-alive clients: JSON pixels, PNG uploads, v2 binary tensors, 64-image
requests and malformed bodies (each kind in turn). Prints resident memory of the whole process tree
every --sample seconds and the growth after warm-up (the first minute). Not part of CI.

    .venv/bin/python benchmarks/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.traffic import (  # noqa: E402
    bodies,
    free_port,
    mnist_serve_command,
    mnist_test_images,
    start,
    stop,
)


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--sample", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    images = mnist_test_images()
    port = free_port()
    server = start(mnist_serve_command(port), port)
    statuses: Counter[int | str] = Counter()
    finished = threading.Event()
    malformed = ("/predict", b'{"pixels": [1, 2', {"content-type": "application/json"})
    kinds = [(body.path, body.data, body.headers) for body in bodies(images) if body.name != "v2-json"] + [
        malformed
    ]

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while not finished.is_set():
            path, body, headers = kinds[i % len(kinds)]
            i += 1
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                statuses[response.status] += 1
            except OSError as error:
                statuses[type(error).__name__] += 1
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    print(f"{'minute':>7} {'RSS MiB':>8} {'requests':>9}")
    while (elapsed := time.monotonic() - started) < args.minutes * 60:
        samples.append((elapsed, tree_rss(server.pid)))
        print(f"{elapsed / 60:7.1f} {samples[-1][1] / 2**20:8.0f} {sum(statuses.values()):9d}", flush=True)
        time.sleep(args.sample)
    samples.append((time.monotonic() - started, tree_rss(server.pid)))
    finished.set()
    for thread in threads:
        thread.join(10)
    code = stop(server)
    after_warmup = [rss for t, rss in samples if t >= 60] or [samples[-1][1]]
    growth = after_warmup[-1] / after_warmup[0] - 1
    total = sum(statuses.values())
    rate = total / (args.minutes * 60)
    print(f"{total} requests in {args.minutes:g} min ({rate:.0f}/s), statuses {dict(statuses)}")
    print(
        f"RSS after warm-up: {after_warmup[0] / 2**20:.0f} -> {after_warmup[-1] / 2**20:.0f} MiB "
        f"({growth:+.1%}); peak {max(r for _, r in samples) / 2**20:.0f} MiB; exit code {code}"
    )


if __name__ == "__main__":
    main()
