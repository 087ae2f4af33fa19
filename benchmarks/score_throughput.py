"""Batch scoring throughput against the raw backend, measured in the same run.

Scores the 10,000 MNIST test images (a) from the IDX file and (b) from a directory of 10,000 PNG
files with `mnist-score`, and prints images/s next to the raw backend throughput at the same batch
size (the ratio is the figure). Medians of --runs runs.

    .venv/bin/python benchmarks/score_throughput.py [--runs 3] [--batch-size 1024] [--backend onnx]
        [--model-repository models --model-version latest]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.inputs.idx import read_idx  # noqa: E402
from service.model.backends import load_backend  # noqa: E402
from service.model.repository import resolve  # noqa: E402
from training.data import ensure_mnist  # noqa: E402

RATE = re.compile(r"\(([\d,]+) images/s[,)]")


def raw_backend(images: np.ndarray, args: argparse.Namespace) -> float:
    model = resolve(args.model_repository, "mnist", args.model_version, args.backend)
    backend = load_backend(model, args.backend, args.device)
    batch_size = args.batch_size
    pixels = np.ascontiguousarray(images[:, None])
    backend.predict(pixels[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        backend.predict(pixels[start : start + batch_size])
    return len(pixels) / (time.perf_counter() - started)


def mnist_score(inputs: list[str], out: Path, extra: list[str]) -> float:
    command = [str(Path(sys.executable).parent / "mnist-score"), *inputs, "--output", str(out), *extra]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    match = RATE.search(result.stdout)
    if not match:
        raise RuntimeError(result.stdout)
    return float(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model-version", default="latest")
    args = parser.parse_args()
    data = ensure_mnist(ROOT / "data")
    images = np.asarray(read_idx(data / "t10k-images-idx3-ubyte"))
    common = [
        "--batch-size",
        str(args.batch_size),
        "--backend",
        args.backend,
        "--device",
        args.device,
        "--model-repository",
        str(args.model_repository),
        "--model-version",
        args.model_version,
    ]
    with tempfile.TemporaryDirectory(prefix="mnist-score-bench-") as scratch:
        folder = Path(scratch) / "png"
        folder.mkdir()
        for i, pixels in enumerate(images):
            Image.fromarray(pixels).save(folder / f"{i:05d}.png")
        rows: dict[str, list[float]] = {"raw backend": [], "IDX file": [], "PNG directory": []}
        for _ in range(args.runs):
            rows["raw backend"].append(raw_backend(images, args))
            rows["IDX file"].append(
                mnist_score([str(data / "t10k-images-idx3-ubyte")], Path(scratch) / "a.csv", common)
            )
            rows["PNG directory"].append(mnist_score([str(folder)], Path(scratch) / "b.csv", common))
    baseline = statistics.median(rows["raw backend"])
    model = resolve(args.model_repository, "mnist", args.model_version, args.backend)
    print(
        f"10,000 MNIST test images, model {model.metadata['architecture']['arch']} v{model.version}, "
        f"batch {args.batch_size}, {args.backend} on {args.device}, median of {args.runs} runs"
    )
    print(f"{'path':<15} {'images/s':>10} {'vs raw backend':>15}   runs")
    for name, values in rows.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name:<15} {median:>10,.0f} {median / baseline:>14.0%}   {runs}")


if __name__ == "__main__":
    main()
