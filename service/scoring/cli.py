"""`mnist-score`: the served model over many images from files, fast, resumable and sharded.

Same repository, version selection, checksum verification, backends and preprocessing as the
server, so online and offline answers agree by construction. Image files are decoded by a pool of
worker processes a few batches ahead of inference; arrays (IDX, .npy, .npz) go straight in.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.cpus import usable_cpus
from service.errors import ServiceError, StartupError
from service.inputs.images import DEFAULT_MAX_PIXELS, DecodeBudget, image_to_pixels
from service.model.backends import Backend, auto_device, load_backend
from service.model.repository import resolve
from service.scoring.inputs import InputError, Inputs, Item, collect, shard
from service.scoring.output import FORMATS, ResultWriter, format_for, open_results

EXIT_OK, EXIT_ROW_ERRORS, EXIT_USAGE = 0, 1, 2
Decoded = tuple[np.ndarray, list[str | None]]


def decode_files(paths: list[Path], max_pixels: int) -> Decoded:
    """Runs in a worker process: image files -> uint8 [n, 28, 28], with a reason for each failure."""
    pixels = np.zeros((len(paths), 28, 28), dtype=np.uint8)
    errors: list[str | None] = [None] * len(paths)
    for i, path in enumerate(paths):
        try:
            pixels[i] = image_to_pixels(path.read_bytes(), DecodeBudget(max_pixels))
        except ServiceError as error:
            errors[i] = f"{error.status} {error.message}"
        except OSError as error:
            errors[i] = f"unreadable: {error.strerror or error}"
    return pixels, errors


@dataclass
class Summary:
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0
    decoders: int = 0
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((10, 10), dtype=np.int64))

    def report(self, labelled: bool, resumed: int, resumed_errors: int) -> str:
        rate = self.scored / self.seconds if self.seconds > 0 else 0.0
        processes = ""
        if self.decoders:
            processes = f", {self.decoders} decoding process" + ("es" if self.decoders > 1 else "")
        lines = [
            f"scored {self.scored} images in {self.seconds:.2f} s ({rate:,.0f} images/s{processes}), "
            f"{self.errors} errors"
            + (f"; {resumed} rows kept from before ({resumed_errors} errors)" if resumed else "")
        ]
        if labelled and self.confusion.sum():
            accuracy = np.trace(self.confusion) / self.confusion.sum()
            lines.append(f"accuracy {accuracy:.4%} on {self.confusion.sum()} labelled images")
            lines.append("confusion matrix (rows: label, columns: predicted)")
            lines.append("      " + " ".join(f"{d:>5}" for d in range(10)))
            lines += [f"  {t}:  " + " ".join(f"{v:>5}" for v in row) for t, row in enumerate(self.confusion)]
        return "\n".join(lines)


class BatchSource:
    """Yields (items, pixels for the good items, errors) per batch, decoding files ahead of time."""

    def __init__(
        self, inputs: Inputs, items: list[Item], batch_size: int, workers: int, max_pixels: int
    ) -> None:
        self.inputs = inputs
        self.items = items
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.workers = workers
        self.pool = (
            ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
            if workers > 0 and any(item.index is None for item in items)
            else None
        )

    def start(self) -> None:
        """Start the decoding processes now (imports take a moment), not inside the timed loop."""
        if self.pool is not None:
            for future in [self.pool.submit(decode_files, [], self.max_pixels) for _ in range(self.workers)]:
                future.result()

    def _submit(self, batch: list[Item]) -> list[Future[Decoded] | Decoded]:
        files = [item.path for item in batch if item.index is None]
        if not files:
            return []
        if self.pool is None:
            return [decode_files(files, self.max_pixels)]
        share = -(-len(files) // self.workers)
        return [
            self.pool.submit(decode_files, files[i : i + share], self.max_pixels)
            for i in range(0, len(files), share)
        ]

    def _assemble(
        self, batch: list[Item], parts: list[Future[Decoded] | Decoded]
    ) -> tuple[np.ndarray, list[str | None]]:
        decoded = [part.result() if isinstance(part, Future) else part for part in parts]
        file_pixels = np.concatenate([d[0] for d in decoded]) if decoded else np.empty((0, 28, 28), np.uint8)
        file_errors = [e for d in decoded for e in d[1]]
        pixels = np.empty((len(batch), 28, 28), dtype=np.uint8)
        errors: list[str | None] = [None] * len(batch)
        file_rows = [i for i, item in enumerate(batch) if item.index is None]
        pixels[file_rows] = file_pixels
        for row, error in zip(file_rows, file_errors, strict=True):
            errors[row] = error
        by_array: dict[Path, list[int]] = {}
        for i, item in enumerate(batch):
            if item.index is not None:
                by_array.setdefault(item.path, []).append(i)
        for path, rows in by_array.items():
            pixels[rows] = self.inputs.arrays[path][[batch[r].index or 0 for r in rows]]
        good = [i for i, error in enumerate(errors) if error is None]
        return pixels[good] if len(good) < len(batch) else pixels, errors

    def __iter__(self) -> Iterator[tuple[list[Item], np.ndarray, list[str | None]]]:
        batches = [self.items[i : i + self.batch_size] for i in range(0, len(self.items), self.batch_size)]
        ahead = max(2, self.workers)  # batches being decoded while the backend works on the current one
        pending: deque[tuple[list[Item], list[Future[Decoded] | Decoded]]] = deque()
        upcoming = iter(batches)
        try:
            for batch in upcoming:
                pending.append((batch, self._submit(batch)))
                if len(pending) > ahead:
                    batch_now, parts = pending.popleft()
                    yield (batch_now, *self._assemble(batch_now, parts))
            while pending:
                batch_now, parts = pending.popleft()
                yield (batch_now, *self._assemble(batch_now, parts))
        finally:
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)


def score(source: BatchSource, backend: Backend, writer: ResultWriter, progress: bool) -> Summary:
    summary = Summary(decoders=source.workers if source.pool is not None else 0)
    source.start()
    started = time.perf_counter()
    # Rows of one batch are formatted and written while the backend computes the next (it releases
    # the GIL); one batch in flight keeps the file in input order.
    written: Future[None] | None = None
    with (
        tqdm(total=len(source.items), unit="img", disable=not progress, smoothing=0.1) as bar,
        ThreadPoolExecutor(1, thread_name_prefix="results") as output,
    ):
        for batch, pixels, errors in source:
            probabilities = backend.predict(pixels[:, None]) if len(pixels) else None
            if written is not None:
                written.result()
            written = output.submit(writer.write, batch, probabilities, errors)
            summary.scored += len(batch)
            summary.errors += sum(error is not None for error in errors)
            if probabilities is not None:
                good = [item for item, error in zip(batch, errors, strict=True) if error is None]
                labels = [item.label for item in good]
                if all(label is not None for label in labels):
                    np.add.at(summary.confusion, (np.array(labels, dtype=int), probabilities.argmax(1)), 1)
            bar.update(len(batch))
        if written is not None:
            written.result()
    summary.seconds = time.perf_counter() - started
    return summary


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-score",
        description="Classify many digit images from files with the served model, writing one row per input "
        "(in input order) to CSV or JSON Lines. Exit code: 0 all scored, 1 some inputs became error rows "
        "(0 with --allow-error-rows), 2 the run could not start.",
    )
    add = parser.add_argument
    add(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, directories (recursive), globs ('imgs/**/*.png'), IDX files, .npy/.npz arrays",
    )
    add(
        "--output",
        "-o",
        type=Path,
        required=True,
        help="result file; .jsonl/.ndjson gives JSON Lines, else CSV",
    )
    add("--format", choices=FORMATS, help="csv or jsonl (default: from the --output extension)")
    add("--probabilities", action="store_true", help="also write the ten probabilities of each row")
    add("--labels", type=Path, help="IDX or .npy label file for an IDX/.npy image input: adds accuracy")
    add(
        "--label-from-parent",
        action="store_true",
        help="take an image's label from a one-digit parent folder",
    )
    add("--resume", action="store_true", help="keep the rows already in --output and score only the rest")
    add(
        "--allow-error-rows",
        action="store_true",
        help="exit 0 even when some inputs became error rows (each has its reason in the output): for batch "
        "jobs, where a retry would only write the same rows again",
    )
    add(
        "--num-shards",
        type=_count(1),
        default=1,
        help="split the inputs into this many disjoint shards (default: 1)",
    )
    add(
        "--shard-index",
        type=_count(0),
        default=None,
        help="which shard to score; default: $JOB_COMPLETION_INDEX (Kubernetes Indexed Job), else 0",
    )
    add("--model-repository", type=Path, default=Path("models"), help="model repository (default: models)")
    add("--model-name", default="mnist", help="model name (default: mnist)")
    add("--model-version", default="latest", help="version number or 'latest' (default: latest)")
    add(
        "--backend", choices=("onnx", "torchscript"), default="onnx", help="inference backend (default: onnx)"
    )
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--batch-size", type=int, default=1024, help="images per backend call (default: 1024)")
    add(
        "--workers",
        type=_count(0),
        default=None,
        help="processes decoding image files in parallel with inference; 0 decodes inline (default: one per "
        "CPU this process may use: affinity and cgroup CPU limit, e.g. a Kubernetes pod's)",
    )
    add("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="larger images become error rows")
    add("--quiet", "-q", action="store_true", help="no progress bar and no summary (for jobs)")
    return parser


def shard_from_environment(environ: Mapping[str, str]) -> int:
    """The shard of a Kubernetes Indexed Job's pod (``JOB_COMPLETION_INDEX``), else 0."""
    text = environ.get("JOB_COMPLETION_INDEX", "0")
    try:
        return _count(0)(text)
    except argparse.ArgumentTypeError as error:
        raise InputError(f"environment variable JOB_COMPLETION_INDEX={text!r}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cpus = usable_cpus()
    workers = cpus if args.workers is None else args.workers
    try:
        shard_index = shard_from_environment(os.environ) if args.shard_index is None else args.shard_index
        if args.batch_size < 1:
            raise InputError("--batch-size must be >= 1")
        model = resolve(args.model_repository, args.model_name, args.model_version, args.backend)
        inputs = collect(args.inputs, args.labels, args.label_from_parent)
        items = shard(inputs.items, args.num_shards, shard_index)
        labelled = bool(items) and all(item.label is not None for item in items)
        fmt = format_for(args.output, args.format)
        writer = open_results(args.output, fmt, items, args.probabilities, labelled, args.resume)
        device = auto_device() if args.device == "auto" else args.device
        # ONNX Runtime would size its thread pool from the machine's cores, not from a pod's CPU limit.
        backend = load_backend(model, args.backend, device, strict=args.device != "auto", threads=cpus)
    except (InputError, StartupError) as error:
        print(f"mnist-score: {error}", file=sys.stderr)
        return EXIT_USAGE
    source = BatchSource(inputs, items[writer.done :], args.batch_size, workers, args.max_image_pixels)
    try:
        summary = score(source, backend, writer, progress=not args.quiet)
    finally:
        writer.close()
    if not args.quiet:
        print(summary.report(labelled, writer.done, writer.errors_before))
    row_errors = summary.errors or writer.errors_before
    return EXIT_ROW_ERRORS if row_errors and not args.allow_error_rows else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
