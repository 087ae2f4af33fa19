"""One training run from config to a published version: data -> model -> fit -> export -> publish."""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.config import DEFAULT_REPOSITORY, TrainConfig, resolve_device
from training.data import MnistArrays, load_mnist
from training.export import PARITY_SAMPLES, export_version, publish
from training.models import build_network, describe
from training.report import plot_confusion, plot_curves
from training.train import TrainResult, fit


def save_checkpoint(
    path: Path, result: TrainResult, config: TrainConfig, description: dict[str, Any]
) -> None:
    """A checkpoint that describes itself: load it with ``torch.load(path, weights_only=True)``."""
    torch.save(
        {
            "format": 1,
            "architecture": description,
            "config": config.to_json(),
            "state_dict": result.network.state_dict(),
            "metrics": {"test": result.test.summary(), "validation": result.validation.summary()},
            "history": result.history,
        },
        path,
    )


def run(config: TrainConfig, data: MnistArrays | None = None) -> tuple[Path, dict[str, Any]]:
    """Train per ``config`` and publish a new version under ``config.output``; return its folder."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = data if data is not None else load_mnist(config.data_dir)
    network = build_network(config.arch, config.hidden, config.activation)
    description = describe(
        config.arch,
        network,
        activation=config.activation,
        hidden=list(config.hidden) if config.hidden else None,
        module=type(network).__name__,
        summary=str(network),
    )
    print(f"training {config.arch} ({description['parameters']:,} parameters) on {device}", flush=True)
    result = fit(config, network, data, device)

    training_record = {
        **config.to_json(),
        "device_used": result.device,
        "host": platform.node(),
        "cpu_threads": torch.get_num_threads(),
        "wall_seconds": round(result.seconds, 1),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
    }
    metrics = {
        "test_accuracy": result.test.accuracy,
        "test_loss": result.test.loss,
        "test_per_class_accuracy": result.test.per_class_accuracy,
        "test_confusion": result.test.confusion,
        "val_accuracy": result.validation.accuracy,
        "val_loss": result.validation.loss,
        "test_samples": sum(map(sum, result.test.confusion)),
        "history": result.history,
    }
    title = f"{config.arch}: test accuracy {result.test.accuracy:.4%}"

    def write(folder: Path) -> None:
        save_checkpoint(folder / "checkpoint.pt", result, config, description)
        plot_curves(result.history, folder / "training_curves.png", title)
        plot_confusion(result.test.confusion, folder / "confusion_matrix.png", f"{title} (test set)")
        parity_pixels = data.test_images[:PARITY_SAMPLES].unsqueeze(1).contiguous()
        export_version(result.network, folder, parity_pixels, description, training_record, metrics)

    if config.dry_run and config.output is None:
        # A smoke test must not publish a barely trained model where the server serves "latest".
        with tempfile.TemporaryDirectory(prefix="mnist-dry-run-") as scratch:
            folder = publish(Path(scratch), config.model_name, write)
            metadata = json.loads((folder / "metadata.json").read_text())
            print(f"dry run: exported and verified in a scratch folder, not published ({folder.name})")
            return folder, metadata
    folder = publish(config.output or DEFAULT_REPOSITORY, config.model_name, write)
    return folder, json.loads((folder / "metadata.json").read_text())


def summarise(folder: Path, metadata: dict[str, Any]) -> str:
    metrics = metadata["metrics"]
    per_class = "  ".join(f"{d}:{a:.3f}" for d, a in enumerate(metrics["test_per_class_accuracy"]))
    return (
        f"test accuracy {metrics['test_accuracy']:.4%} on {metrics['test_samples']} images "
        f"(validation {metrics['val_accuracy']:.4%})\n"
        f"per class: {per_class}\n"
        f"published {folder} (parity: onnx {metrics['parity']['max_abs_diff_onnx']:.1e}, "
        f"torchscript {metrics['parity']['max_abs_diff_torchscript']:.1e})"
    )
