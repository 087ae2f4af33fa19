"""Accuracy on photos and scans of digits, through the real HTTP server and through `mnist-score`.

Renders --count MNIST *test* digits as photos and scans (benchmarks/photo_set/, reproducible from
--seed) and --non-digits images of blank pages, letters and scribbles with the same damage, writes
them as files (<out>/<label>/<index>.jpg|png), and classifies every digit file twice: one
`POST /predict` upload per file to a fresh mnist-serve, and one `mnist-score --label-from-parent` run
over the folder. Prints accuracy overall and per kind of damage next to what the drawings cost
without the damage (the same drawings in black on white, through mnist-score) and the model's MNIST
test accuracy (mnist-score over the IDX file), what the server's low-confidence counter in /metrics counted
on digits and on non-digits, the preprocessing cost per photo (decode + to_mnist, in this process,
one core) and the digits both paths got wrong.

    .venv/bin/python benchmarks/photos.py                          # 5,000 digits, 150 non-digits, seed 0
    .venv/bin/python benchmarks/photos.py --conditions harsh       # notebook lines, dust, faded pencil...
    .venv/bin/python benchmarks/photos.py --conditions mnist-strokes   # no pens of ours, no shadows
    .venv/bin/python benchmarks/photos.py --count 1000             # quicker, 0.3 points less precise
    .venv/bin/python benchmarks/photos.py --count 200 --out /tmp/photos   # keep the files to look at
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.photo_set import CONDITIONS, KINDS, NON_DIGITS, Photo, non_digit_set, photo_set  # noqa: E402
from benchmarks.traffic import file_upload, free_port, mnist_serve_command, start, stop  # noqa: E402
from service.errors import ServiceError  # noqa: E402
from service.inputs.idx import read_idx  # noqa: E402
from service.inputs.images import image_to_pixels  # noqa: E402
from training.data import ensure_mnist  # noqa: E402

LOW_CONFIDENCE = 0.5  # mnist-serve's default --low-confidence
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


@dataclass(frozen=True)
class Answer:
    """What one path answered for one file: a digit and its confidence, or the HTTP status refusing it."""

    digit: int | None
    confidence: float
    status: int = 200


def write_files(photos: Sequence[Photo], folder: Path) -> list[Path]:
    """<folder>/<label>/<name> for digits (mnist-score takes the label from the parent folder),
    <folder>/none/<kind>-<name> for non-digits."""
    paths = []
    for photo in photos:
        parent = folder / (str(photo.label) if photo.label >= 0 else "none")
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / (photo.name if photo.label >= 0 else f"{photo.kinds[0]}-{photo.name}")
        path.write_bytes(photo.data)
        paths.append(path)
    return paths


def post(port: int, photo: Photo) -> Answer:
    """One multipart upload of the file to POST /predict, as curl -F file=@... sends it."""
    body, headers = file_upload(photo.name, CONTENT_TYPES[photo.extension], photo.data)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            prediction = json.loads(response.read())["predictions"][0]
    except urllib.error.HTTPError as error:
        if error.code in (400, 422):  # refused this image (422: no digit found), not a failure of the run
            return Answer(None, 0.0, error.code)
        raise
    return Answer(int(prediction["digit"]), float(prediction["confidence"]))


def low_confidence_total(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("mnist_low_confidence_predictions_total "):
                return float(line.split()[1])
    return 0.0


def through_http(photos: Sequence[Photo], server_args: list[str], clients: int) -> tuple[list[Answer], float]:
    """Every photo uploaded to a fresh mnist-serve; also the low-confidence count its /metrics added."""
    port = free_port()
    server = start(mnist_serve_command(port, *server_args), port)
    try:
        before = low_confidence_total(port)
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda photo: post(port, photo), photos))
        time.sleep(1.0)  # the workers write their counters at most 0.5 s late
        counted = low_confidence_total(port) - before
    finally:
        stop(server)
    return answers, counted


def mnist_score(inputs: list[str], out: Path, *flags: str) -> list[dict[str, str]]:
    """The rows of one `mnist-score` run (exit code 1, some error rows, is an answer too)."""
    command = [str(Path(sys.executable).parent / "mnist-score"), *inputs, "--output", str(out), "-q", *flags]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode not in (0, 1):
        raise RuntimeError(result.stderr)
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def through_score(paths: Sequence[Path], scratch: Path) -> list[Answer]:
    rows = mnist_score([str(path) for path in paths], scratch / "photos.csv")
    return [
        Answer(None, 0.0, int(row["error"].split()[0]))
        if row["error"]
        else Answer(int(row["digit"]), float(row["confidence"]))
        for row in rows
    ]


def mnist_test_right(scratch: Path) -> list[bool]:
    """Whether mnist-score reads each of the 10,000 MNIST test images right, in their order."""
    data = ensure_mnist(ROOT / "data")
    rows = mnist_score(
        [str(data / "t10k-images-idx3-ubyte")],
        scratch / "mnist.csv",
        "--labels",
        str(data / "t10k-labels-idx1-ubyte"),
    )
    return [row["digit"] == row["label"] for row in rows]


def preprocessing_ms(photos: Sequence[Photo]) -> tuple[float, float]:
    """Median and mean milliseconds of decode + to_mnist per photo, in this process (one core)."""
    times = []
    for photo in photos:
        started = time.perf_counter()
        with contextlib.suppress(ServiceError):  # a refused image costs what it cost
            image_to_pixels(photo.data)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), statistics.fmean(times)


def accuracy(answers: Sequence[Answer], photos: Sequence[Photo]) -> float:
    return sum(a.digit == p.label for a, p in zip(answers, photos, strict=True)) / max(1, len(photos))


def per_kind_table(photos: Sequence[Photo], http: Sequence[Answer], scored: Sequence[Answer]) -> list[str]:
    lines = [f"{'kind':<15} {'images':>6} {'HTTP':>8} {'mnist-score':>12} {'wrong':>6}"]
    for kind in ("all", *KINDS):
        chosen = [i for i, photo in enumerate(photos) if kind == "all" or kind in photo.kinds]
        if not chosen:
            continue
        mine = [photos[i] for i in chosen]
        http_accuracy = accuracy([http[i] for i in chosen], mine)
        score_accuracy = accuracy([scored[i] for i in chosen], mine)
        wrong = sum(http[i].digit != photos[i].label for i in chosen)
        lines.append(f"{kind:<15} {len(chosen):>6} {http_accuracy:>8.2%} {score_accuracy:>12.2%} {wrong:>6}")
    return lines


def low_confidence_lines(
    photos: Sequence[Photo], answers: Sequence[Answer], digits: int, counted: float
) -> list[str]:
    """What share of each group the server's low-confidence counter counts, and how many it refused."""

    def share(group: list[int]) -> str:
        refused = sum(answers[i].status != 200 for i in group)
        low = sum(answers[i].status == 200 and answers[i].confidence < LOW_CONFIDENCE for i in group)
        low_share = low / max(1, len(group))
        return f"{len(group):>5} images: {low_share:>6.1%} low-confidence, {refused:>4} refused (4xx)"

    right = [i for i in range(digits) if answers[i].digit == photos[i].label]
    wrong = [i for i in range(digits) if answers[i].digit != photos[i].label]
    lines = [
        f"  digits read right {share(right)}",
        f"  digits read wrong {share(wrong)}",
    ]
    for what in NON_DIGITS:
        group = [i for i in range(digits, len(photos)) if photos[i].kinds[0] == what]
        lines.append(f"  {what + ' pages' if what == 'blank' else what + 's':<17} {share(group)}")
    expected = sum(a.status == 200 and a.confidence < LOW_CONFIDENCE for a in answers)
    lines.append(
        f"  mnist_low_confidence_predictions_total grew by {counted:.0f} "
        f"(answers below {LOW_CONFIDENCE}: {expected})"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="digits (distinct MNIST test images)")
    parser.add_argument("--non-digits", type=int, default=150, help="blank pages, letters and scribbles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--conditions",
        choices=tuple(CONDITIONS),
        default="everyday",
        help="everyday photos and scans, harsh ones (notebook lines, dust, faded pencil, ...), or MNIST's "
        "own strokes under the everyday light without shadows",
    )
    parser.add_argument("--out", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP uploads")
    parser.add_argument("--server-args", default="", help="extra mnist-serve flags")
    parser.add_argument("--show-failures", type=int, default=40, help="list at most this many misread digits")
    args = parser.parse_args()

    data = ensure_mnist(ROOT / "data")
    images = np.asarray(read_idx(data / "t10k-images-idx3-ubyte"))
    labels = np.asarray(read_idx(data / "t10k-labels-idx1-ubyte"))
    started = time.perf_counter()
    conditions = CONDITIONS[args.conditions]
    digits = photo_set(images, labels, args.count, args.seed, conditions)
    undamaged = photo_set(images, labels, args.count, args.seed, conditions, damaged=False)
    photos = [*digits, *non_digit_set(args.non_digits, args.seed, conditions)]
    print(
        f"rendered {len(digits)} digits and {args.non_digits} non-digits "
        f"in {time.perf_counter() - started:.0f} s"
    )

    with tempfile.TemporaryDirectory(prefix="mnist-photos-") as temporary:
        scratch = Path(temporary)
        folder = args.out or scratch / "photos"
        paths = write_files(photos, folder)
        http, counted = through_http(photos, args.server_args.split(), args.clients)
        scored = through_score(paths[: len(digits)], scratch)
        drawn = through_score(write_files(undamaged, scratch / "undamaged"), scratch)
        mnist = mnist_test_right(scratch)
    median_ms, mean_ms = preprocessing_ms(digits)
    http_digits = http[: len(digits)]

    print(
        f"{len(digits)} photo-like MNIST test digits ({args.conditions}, seed {args.seed}): "
        f"POST /predict {accuracy(http_digits, digits):.2%}, "
        f"mnist-score {accuracy(scored, digits):.2%}; MNIST test (10,000, mnist-score) "
        f"{sum(mnist) / len(mnist):.2%}"
    )
    print(
        f"the same drawings without damage (mnist-score) {accuracy(drawn, undamaged):.2%}; "
        f"these digits as MNIST has them {sum(mnist[p.index] for p in digits) / len(digits):.2%}"
    )
    print(f"preprocessing (decode + to_mnist) per photo: median {median_ms:.1f} ms, mean {mean_ms:.1f} ms")
    print("\n".join(per_kind_table(digits, http_digits, scored)))
    print(f"low-confidence (confidence < {LOW_CONFIDENCE}) through POST /predict:")
    print("\n".join(low_confidence_lines(photos, http, len(digits), counted)))
    failures = [i for i, photo in enumerate(digits) if http_digits[i].digit != photo.label]
    if failures and args.show_failures:
        print(f"misread through POST /predict (first {min(len(failures), args.show_failures)}):")
    for i in failures[: args.show_failures]:
        answer = http[i]
        said = (
            f"{answer.digit} ({answer.confidence:.2f})" if answer.status == 200 else f"HTTP {answer.status}"
        )
        print(f"  {paths[i].relative_to(folder)}: read {said}; {', '.join(digits[i].kinds)}")


if __name__ == "__main__":
    main()
