"""What Prometheus scrapers cost the inference requests: p99 and req/s with and without scrapers.

One mnist-serve, driven by Debian's wrk at one concurrency, alternating runs without scrapers and with
``--scrapers`` threads that each fetch /metrics in a loop (far more often than a Prometheus would: every
scrape renders the metrics of every process on an API server's event loop). Prints each pair of runs
and the medians' ratios.

    .venv/bin/python benchmarks/scrapers.py --scrapers 16 --runs 5
    .venv/bin/python benchmarks/scrapers.py --scrapers 5 --interval 1    # five Prometheus at 1 s
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.traffic import bodies, free_port, mnist_serve_command, mnist_test_images, run_wrk, start, stop  # noqa: E402


class Scrapers:
    """``count`` threads fetching /metrics until stopped, each ``interval`` seconds after its last
    scrape began (0: back to back)."""

    def __init__(self, port: int, count: int, interval: float) -> None:
        self.port = port
        self.interval = interval
        self.stopped = threading.Event()
        self.scrapes = 0
        self.threads = [threading.Thread(target=self._scrape, daemon=True) for _ in range(count)]

    def __enter__(self) -> Scrapers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()

    def _scrape(self) -> None:
        while not self.stopped.is_set():
            began = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as answer:
                answer.read()
            self.scrapes += 1
            self.stopped.wait(max(0.0, began + self.interval - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="v2-binary")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--scrapers", type=int, default=16)
    parser.add_argument("--interval", type=float, default=0, help="seconds between one scraper's scrapes")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    body = next(b for b in bodies(mnist_test_images()) if b.name == args.body)
    quiet: list[dict[str, float]] = []
    scraped: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="mnist-scrapers-") as scratch:
        body_file = Path(scratch) / "body"
        body_file.write_bytes(body.data)
        port = free_port()
        server = start(mnist_serve_command(port), port)
        try:
            run_wrk(port, body, body_file, args.concurrency, 2)  # warm-up
            for run in range(args.runs):
                quiet.append(run_wrk(port, body, body_file, args.concurrency, args.seconds))
                with Scrapers(port, args.scrapers, args.interval) as scrapers:
                    scraped.append(run_wrk(port, body, body_file, args.concurrency, args.seconds))
                rate = scrapers.scrapes / args.seconds
                print(
                    f"run {run + 1}: without {quiet[-1]['rps']:,.0f} req/s p99 {quiet[-1]['p99_ms']:.1f} ms; "
                    f"with {args.scrapers} scrapers ({rate:.0f} scrapes/s) {scraped[-1]['rps']:,.0f} req/s "
                    f"p99 {scraped[-1]['p99_ms']:.1f} ms"
                )
        finally:
            stop(server)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    print(
        f"{args.body} at c = {args.concurrency}, {args.scrapers} scrapers, median of {args.runs}: "
        f"req/s {median(scraped, 'rps') / median(quiet, 'rps'):.2f}x, "
        f"p99 {median(quiet, 'p99_ms'):.1f} -> {median(scraped, 'p99_ms'):.1f} ms"
    )


if __name__ == "__main__":
    main()
