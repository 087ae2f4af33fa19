"""`mnist-train`: train an MNIST classifier and publish it to the model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from training.config import RECIPES, config_for
from training.data import DataUnavailableError
from training.export import ParityError
from training.models import ACTIVATIONS, ARCHITECTURES
from training.pipeline import run, summarise

EXIT_DATA, EXIT_PARITY, EXIT_USAGE = 2, 3, 64


def _recipes_help() -> str:
    lines = ["per-architecture defaults (any flag overrides them):"]
    for arch, recipe in RECIPES.items():
        lines.append(f"  {arch:9s} " + ", ".join(f"{k}={v}" for k, v in recipe.items()))
    return "\n".join(lines)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("hidden sizes must be positive")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-train",
        description="Train an MNIST classifier, export TorchScript + ONNX with metadata.json, and publish "
        "it as the next version in the model repository (<output>/<name>/<version>/).",
        epilog=_recipes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--arch", choices=ARCHITECTURES, default="mlp", help="network to train (default: mlp)")
    add("--epochs", type=int, help="passes over the training split (default: per recipe)")
    add("--batch-size", type=int, help="images per optimiser step (default: per recipe)")
    add(
        "--lr",
        type=float,
        help="learning rate; the peak rate with --lr-schedule onecycle (default: per recipe)",
    )
    add("--optimizer", choices=("adam", "sgd"), help="adam, or plain sgd: w = w - lr * grad (default: adam)")
    add(
        "--lr-schedule", choices=("constant", "onecycle"), help="learning-rate schedule (default: per recipe)"
    )
    add("--activation", choices=tuple(ACTIVATIONS), help="hidden-layer activation (default: relu)")
    add("--hidden", type=_hidden, help="hidden sizes, e.g. 256,128 for mlp; the first size for cnn/lstm")
    add("--loss", choices=("cross-entropy", "mse"), help="cross-entropy, or mse of softmax vs one-hot")
    add("--augment", action=argparse.BooleanOptionalAction, help="random small rotations/shifts/zooms")
    add(
        "--patience",
        type=int,
        help="stop after this many epochs without a better validation loss; keep the best",
    )
    add("--val-size", type=int, help="images held out of the 60,000 for validation (default: 5000)")
    add("--seed", type=int, help="seed for initialisation, split, shuffling and augmentation (default: 0)")
    add(
        "--split-seed",
        type=int,
        help="seed for the validation split alone, to compare seeds on the same held-out digits "
        "(default: --seed)",
    )
    add("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    add("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice)")
    add("--data-dir", type=Path, help="where MNIST IDX files are kept or fetched to (default: data)")
    add("--output", type=Path, help="model repository to publish into (default: models)")
    add("--name", dest="model_name", help="model name inside the repository (default: mnist)")
    add(
        "--dry-run",
        action="store_true",
        help="a few batches and a small evaluation; publishes only with --output",
    )
    add("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    options = vars(args)
    arch = options.pop("arch")
    if options.get("dry_run") and options.get("epochs") is None:
        options["epochs"] = 1
    try:
        config = config_for(arch, **options)
    except ValueError as error:
        print(f"mnist-train: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        folder, metadata = run(config)
    except DataUnavailableError as error:
        print(f"mnist-train: {error}", file=sys.stderr)
        return EXIT_DATA
    except ParityError as error:
        print(f"mnist-train: refusing to publish: {error}", file=sys.stderr)
        return EXIT_PARITY
    print(summarise(folder, metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
