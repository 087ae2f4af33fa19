"""This checkout's mnist-serve against another checkout's (a baseline commit), under the same load.

Both servers run at once on their own ports with the same flags and this virtual environment; the
baseline's code is imported from its folder (``python -m service`` there, so its own modules are the
ones loaded). Debian's ``wrk`` drives each body at each concurrency, the two alternating run by run so
the machine's drift falls on both alike; it prints req/s, p50, p99, batch size and the ratio to the
baseline, medians of --runs rounds. To compare with the commit before a change:

    git worktree add /tmp/baseline HEAD~3
    .venv/bin/python benchmarks/versus.py /tmp/baseline --bodies v2-json,v2-binary --concurrency 64,256
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("baseline", type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--bodies", default="v2-json,v2-binary")
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--server-args", default="", help="extra mnist-serve flags for both")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    baseline = args.baseline.resolve()
    if not (baseline / "service" / "__main__.py").is_file():
        sys.exit(f"{baseline} is not a checkout of this project")
    chosen = [b for b in bodies(mnist_test_images()) if b.name in args.bodies.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    flags = ["--model-repository", str(ROOT / "models"), *shlex.split(args.server_args)]
    targets = [Target("baseline", free_port(), batches=True), Target("this", free_port(), batches=True)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mnist-versus-") as scratch, contextlib.ExitStack() as running:
        command = mnist_serve_command(targets[0].port, *flags)
        base_command = [sys.executable, "-m", "service", *command[command.index("--host") :]]
        running.callback(
            stop, start(base_command, targets[0].port, cwd=baseline, env={"PYTHONPATH": str(baseline)})
        )
        running.callback(stop, start(mnist_serve_command(targets[1].port, *flags), targets[1].port))
        for body in chosen:
            body_file = Path(scratch) / "body"
            body_file.write_bytes(body.data)
            for connections in levels:
                cell = measure_interleaved(targets, body, body_file, connections, args.runs, args.seconds)
                rows.append((body.name, connections, cell["baseline"], cell["this"]))
    print(f"{ROOT} against {baseline}; {args.seconds:g} s per run, median of {args.runs}")
    print(f"{'body':<12} {'c':>4} {'req/s':>15} {'p99 ms':>13} {'batch':>11} {'ratio':>6}  non-2xx")
    for name, connections, base, this in rows:
        print(
            f"{name:<12} {connections:>4} {base['rps']:>7.0f} {this['rps']:>7.0f} "
            f"{base['p99_ms']:>6.1f} {this['p99_ms']:>6.1f} {base['batch']:>5.1f} {this['batch']:>5.1f} "
            f"{this['rps'] / base['rps']:>5.2f}x  {base['non2xx']:.0f} / {this['non2xx']:.0f}"
        )


if __name__ == "__main__":
    main()
