"""Export a trained network as TorchScript + ONNX, gate on parity, and publish a version atomically.

A version folder ``<repo>/<name>/<version>/`` holds ``model.onnx``, ``model.pt`` (TorchScript),
``checkpoint.pt`` (config + weights + metrics), the report pictures and ``metadata.json``, which is
the whole contract the service reads. The folder name is the version: ``metadata.json`` does not
repeat it, so publishing can choose the number at the very last moment, in one rename.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from training.data import MNIST_SHA256, sha256_file
from training.models import MNIST_MEAN, MNIST_STD, NUM_CLASSES, ServingModel

ONNX_OPSET = 18
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
PARITY_TOLERANCE = 1e-4
PARITY_SAMPLES = 256
METADATA_FORMAT = 1


class ParityError(RuntimeError):
    """The exported artifacts do not compute what the trained network computes."""


@dataclass(frozen=True)
class ParityReport:
    samples: int
    max_abs_diff_torchscript: float
    max_abs_diff_onnx: float
    argmax_identical: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "tolerance": PARITY_TOLERANCE,
            "max_abs_diff_torchscript": self.max_abs_diff_torchscript,
            "max_abs_diff_onnx": self.max_abs_diff_onnx,
            "argmax_identical": self.argmax_identical,
        }


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Keep TorchScript's deprecation warnings and the ONNX exporter's chatter out of users' faces."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*_check_is_size.*")
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")  # nn.LSTM's flat weights
        yield


def export_torchscript(model: ServingModel, path: Path) -> None:
    with quiet_exporters():
        torch.jit.save(torch.jit.script(model), str(path))


def export_onnx(model: ServingModel, path: Path) -> None:
    example = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    with quiet_exporters():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("the ONNX exporter returned no program")
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    # One self-contained file: the weights are tiny, and external data would break checksumming.
    onnx.save_model(proto, str(path), save_as_external_data=False)


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with quiet_exporters():
        return torch.jit.load(str(path), map_location="cpu")


def check_parity(
    eager: np.ndarray, torchscript: np.ndarray, onnx_out: np.ndarray, tolerance: float = PARITY_TOLERANCE
) -> ParityReport:
    """Compare three backends' probabilities; raise ParityError if they disagree."""
    report = ParityReport(
        samples=len(eager),
        max_abs_diff_torchscript=float(np.abs(eager - torchscript).max()),
        max_abs_diff_onnx=float(np.abs(eager - onnx_out).max()),
        argmax_identical=bool(
            (eager.argmax(1) == torchscript.argmax(1)).all() and (eager.argmax(1) == onnx_out.argmax(1)).all()
        ),
    )
    worst = max(report.max_abs_diff_torchscript, report.max_abs_diff_onnx)
    if worst > tolerance or not report.argmax_identical:
        raise ParityError(
            f"exported artifacts disagree with the trained network: max abs diff {worst:.2e} "
            f"(limit {tolerance:.0e}), argmax identical: {report.argmax_identical}"
        )
    return report


def verify_artifacts(model: ServingModel, folder: Path, pixels: torch.Tensor) -> ParityReport:
    """Run eager, the saved TorchScript and the saved ONNX (ONNX Runtime, CPU) on the same images."""
    with torch.no_grad():
        eager = model(pixels).numpy()
        scripted = load_torchscript(folder / "model.pt")(pixels).numpy()
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})[0]
    return check_parity(eager, scripted, onnx_out)


def build_metadata(
    folder: Path, description: dict[str, Any], training: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    onnx_model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    artifacts = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != "metadata.json"
    }
    return {
        "format": METADATA_FORMAT,
        "name": training["model_name"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": description,
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": "UINT8",
                "shape": [-1, 1, 28, 28],
                "layout": "NCHW",
                "description": "raw pixels 0-255, white digit on black background (MNIST convention)",
            }
        ],
        "outputs": [
            {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, NUM_CLASSES], "description": "softmax"}
        ],
        "labels": [str(digit) for digit in range(NUM_CLASSES)],
        "normalization": {"mean": MNIST_MEAN, "std": MNIST_STD, "scale": 1 / 255, "in_graph": True},
        "training": training,
        "dataset": {"name": "MNIST", "sha256": MNIST_SHA256},
        "metrics": metrics,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "opset": max(op.version for op in onnx_model.opset_import if op.domain in ("", "ai.onnx")),
        },
        "artifacts": artifacts,
    }


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def publish(repository: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a staging folder, then rename it to the next free version number.

    A crash or error inside ``write`` leaves no version folder behind; the staging folder sits
    beside the versions (same filesystem) so the final step is one atomic rename.
    """
    model_dir = Path(repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a version must be readable by the serving user
        write(staging)
        for path in staging.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        while True:
            target = model_dir / str(next_version(model_dir))
            try:
                staging.rename(target)  # fails if a concurrent publisher took the number first
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


def export_version(
    network: nn.Module,
    folder: Path,
    parity_pixels: torch.Tensor,
    description: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """Write model.pt + model.onnx into ``folder``, check parity, then write metadata.json."""
    model = ServingModel(network).eval()
    export_torchscript(model, folder / "model.pt")
    export_onnx(model, folder / "model.onnx")
    parity = verify_artifacts(model, folder, parity_pixels)
    metadata = build_metadata(folder, description, training, {**metrics, "parity": parity.as_json()})
    write_metadata(folder, metadata)
    return metadata
