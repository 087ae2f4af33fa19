"""Preprocessing cost per photo: this checkout's image preprocessing against a git revision's.

Renders --count photo-like test digits (benchmarks/photo_set.py) and times, in this process on one
core, image file -> 28x28 (decode_image + to_mnist) and to_mnist alone on the decoded images, for
service/inputs/images.py as checked out and as it was at --baseline (loaded from git). Rounds
alternate which goes first, so that the machine's drift falls on both alike; prints the medians
of the rounds' means and their ratios.

    .venv/bin/python benchmarks/preprocess_cost.py --baseline 8354085 [--count 300 --rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.photo_set import photo_set  # noqa: E402
from benchmarks.traffic import mnist_test_images  # noqa: E402
from service.errors import ServiceError  # noqa: E402
from service.inputs import images as current  # noqa: E402


def module_at(revision: str, folder: Path) -> ModuleType:
    """service/inputs/images.py as it was at ``revision``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:service/inputs/images.py"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    path = folder / "baseline_images.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_images", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ms_per_photo(module: ModuleType, files: list[bytes], grays: list[np.ndarray] | None) -> float:
    """Mean milliseconds per photo: file -> 28x28, or decoded image -> 28x28 when ``grays`` given."""
    started = time.perf_counter()
    for i, data in enumerate(files):
        with contextlib.suppress(ServiceError):  # a refused photo costs what it cost
            module.to_mnist(grays[i] if grays is not None else module.decode_image(data))
    return (time.perf_counter() - started) * 1000 / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = mnist_test_images()
    labels = np.zeros(len(images), np.int64)  # not needed for timing
    files = [photo.data for photo in photo_set(images, labels, args.count, args.seed)]
    grays = [current.decode_image(data) for data in files]
    with tempfile.TemporaryDirectory(prefix="mnist-preprocess-") as scratch:
        versions = {"baseline": module_at(args.baseline, Path(scratch)), "current": current}
        times: dict[str, list[float]] = {f"{n} {w}": [] for n in versions for w in ("file", "to_mnist")}
        for round_ in range(args.rounds):
            order = list(versions.items()) if round_ % 2 == 0 else list(versions.items())[::-1]
            for name, module in order:
                times[f"{name} file"].append(ms_per_photo(module, files, None))
                times[f"{name} to_mnist"].append(ms_per_photo(module, files, grays))
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"{args.count} photo-like test digits (seed {args.seed}), median of {args.rounds} rounds, one core")
    print(f"{'':<22} {args.baseline[:12]:>12} {'current':>10} {'ratio':>7}")
    for what, label in (("file", "file -> 28x28"), ("to_mnist", "to_mnist alone")):
        before, after = median[f"baseline {what}"], median[f"current {what}"]
        print(f"{label:<22} {before:>9.2f} ms {after:>7.2f} ms {after / before:>6.2f}x")


if __name__ == "__main__":
    main()
