"""Preprocessing cost per photo: this checkout's image preprocessing against a git revision's.

Renders --count photo-like test digits (benchmarks/photo_set/) and times, on one core, image file
-> 28x28 (decode_image + to_mnist) and to_mnist alone on each version's own decoded images. Each
version runs in its own process with its whole `service` package (the revision's is extracted with
`git archive`), so everything the preprocessing imports is that version's. Rounds alternate which
goes first, so that the machine's drift falls on both alike; prints the medians of the rounds' means
and their ratios.

    .venv/bin/python benchmarks/preprocess_cost.py --baseline 8354085 [--count 300 --rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pickle
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TIMINGS = ("file", "to_mnist")


def extract_service(revision: str, folder: Path) -> Path:
    """The `service` package as it was at ``revision``, under ``folder``; returns ``folder``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "service"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def time_version(source: Path, files_path: Path) -> dict[str, float]:
    """Mean milliseconds per photo of the preprocessing under ``source``, in a fresh process."""
    result = subprocess.run(
        [sys.executable, __file__, "--time-one", str(source), str(files_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def time_here(files_path: Path) -> dict[str, float]:
    """In the child: file -> 28x28, then to_mnist alone on the decoded images, mean ms per photo."""
    from service.errors import ServiceError
    from service.inputs import images

    files: list[bytes] = pickle.loads(files_path.read_bytes())

    def decoded(data: bytes) -> object:
        with contextlib.suppress(ServiceError):
            return images.decode_image(data)
        return None

    grays = [decoded(data) for data in files]
    with contextlib.suppress(ServiceError):  # warm-up: imports, OpenCV's first calls
        images.to_mnist(images.decode_image(files[0]))

    def ms_per_photo(step: Callable[[int], object]) -> float:
        started = time.perf_counter()
        for i in range(len(files)):
            with contextlib.suppress(ServiceError):  # a refused photo costs what it cost
                step(i)
        return (time.perf_counter() - started) * 1000 / len(files)

    return {
        "file": ms_per_photo(lambda i: images.to_mnist(images.decode_image(files[i]))),
        "to_mnist": ms_per_photo(lambda i: grays[i] is not None and images.to_mnist(grays[i])),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--time-one":
        sys.path.insert(0, sys.argv[2])
        print(json.dumps(time_here(Path(sys.argv[3]))))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.photo_set import photo_set
    from benchmarks.traffic import mnist_test_images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = mnist_test_images()
    labels = np.zeros(len(images), np.int64)  # not needed for timing
    files = [photo.data for photo in photo_set(images, labels, args.count, args.seed)]
    with tempfile.TemporaryDirectory(prefix="mnist-preprocess-") as scratch:
        files_path = Path(scratch) / "files.pickle"
        files_path.write_bytes(pickle.dumps(files))
        versions = {"baseline": extract_service(args.baseline, Path(scratch) / "baseline"), "current": ROOT}
        times: dict[str, list[float]] = {f"{n} {w}": [] for n in versions for w in TIMINGS}
        for round_ in range(args.rounds):
            order = list(versions.items()) if round_ % 2 == 0 else list(versions.items())[::-1]
            for name, source in order:
                for what, ms in time_version(source, files_path).items():
                    times[f"{name} {what}"].append(ms)
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"{args.count} photo-like test digits (seed {args.seed}), median of {args.rounds} rounds, one core")
    print(f"{'':<22} {args.baseline[:12]:>12} {'current':>10} {'ratio':>7}")
    for what, label in (("file", "file -> 28x28"), ("to_mnist", "to_mnist alone")):
        before, after = median[f"baseline {what}"], median[f"current {what}"]
        print(f"{label:<22} {before:>9.2f} ms {after:>7.2f} ms {after / before:>6.2f}x")


if __name__ == "__main__":
    main()
