from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from training.config import config_for
from training.data import MNIST_SHA256, MnistArrays, sha256_file
from training.export import (
    ParityError,
    check_parity,
    export_onnx,
    export_torchscript,
    load_torchscript,
    publish,
    verify_artifacts,
)
from training.models import ARCHITECTURES, ServingModel, build_network
from training.pipeline import run


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exported_artifacts_match_eager_for_any_batch_size(arch: str, tmp_path: Path) -> None:
    model = ServingModel(build_network(arch)).eval()
    export_torchscript(model, tmp_path / "model.pt")
    export_onnx(model, tmp_path / "model.onnx")
    for batch in (1, 7, 64):
        pixels = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
        report = verify_artifacts(model, tmp_path, pixels)
        assert report.argmax_identical and report.max_abs_diff_onnx <= 1e-4


def test_onnx_file_is_self_contained_with_named_dynamic_io(tmp_path: Path) -> None:
    export_onnx(ServingModel(build_network("cnn")).eval(), tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no external-data side files
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (input_,), (output,) = session.get_inputs(), session.get_outputs()
    assert (input_.name, input_.type) == ("pixels", "tensor(uint8)")
    assert isinstance(input_.shape[0], str) and input_.shape[1:] == [1, 28, 28]
    assert output.name == "probabilities" and output.shape[1] == 10


def test_torchscript_export_shows_users_no_deprecation_warning(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    model = ServingModel(build_network("mlp")).eval()
    export_torchscript(model, tmp_path / "model.pt")
    load_torchscript(tmp_path / "model.pt")
    assert [w for w in recwarn if issubclass(w.category, FutureWarning | DeprecationWarning)] == []


def test_parity_gate_refuses_disagreeing_outputs() -> None:
    eager = np.full((4, 10), 0.1, dtype=np.float32)
    eager[:, 3] = 0.2
    check_parity(eager, eager.copy(), eager + 5e-5)  # within tolerance
    with pytest.raises(ParityError, match="max abs diff"):
        check_parity(eager, eager.copy(), eager + 2e-4)
    flipped = eager.copy()
    flipped[0, 3], flipped[0, 5] = 0.1, 0.2
    with pytest.raises(ParityError, match="argmax identical: False"):
        check_parity(eager, eager, flipped, tolerance=1.0)


def test_a_failed_export_publishes_nothing(tmp_path: Path) -> None:
    def write(folder: Path) -> None:
        (folder / "model.onnx").write_bytes(b"half")
        raise ParityError("simulated disagreement")

    with pytest.raises(ParityError):
        publish(tmp_path, "mnist", write)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_publish_numbers_versions_and_skips_taken_ones(tmp_path: Path) -> None:
    def write(folder: Path) -> None:
        (folder / "metadata.json").write_text("{}")

    assert publish(tmp_path, "mnist", write).name == "1"
    (tmp_path / "mnist" / "5").mkdir()
    (tmp_path / "mnist" / "5" / "metadata.json").write_text("{}")
    assert publish(tmp_path, "mnist", write).name == "6"
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == ["1", "5", "6"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_tiny_training_run_publishes_a_complete_version(
    arch: str, tmp_path: Path, mnist: MnistArrays
) -> None:
    config = config_for(arch, epochs=1, dry_run=True, output=tmp_path, progress=False)
    folder, metadata = run(config, data=mnist)
    assert folder == tmp_path / "mnist" / "1"
    assert json.loads((folder / "metadata.json").read_text()) == metadata
    expected_files = {
        "model.onnx",
        "model.pt",
        "checkpoint.pt",
        "training_curves.png",
        "confusion_matrix.png",
    }
    assert set(metadata["artifacts"]) == expected_files
    for name, record in metadata["artifacts"].items():
        assert sha256_file(folder / name) == record["sha256"]
        assert (folder / name).stat().st_size == record["bytes"]
    assert metadata["inputs"] == [
        {
            "name": "pixels",
            "datatype": "UINT8",
            "shape": [-1, 1, 28, 28],
            "layout": "NCHW",
            "description": "raw pixels 0-255, white digit on black background (MNIST convention)",
        }
    ]
    assert metadata["outputs"][0]["name"] == "probabilities" and metadata["outputs"][0]["shape"] == [-1, 10]
    assert metadata["normalization"] == {"mean": 0.1307, "std": 0.3081, "scale": 1 / 255, "in_graph": True}
    assert metadata["dataset"]["sha256"] == MNIST_SHA256
    assert metadata["architecture"]["arch"] == arch and metadata["training"]["arch"] == arch
    assert len(metadata["metrics"]["test_per_class_accuracy"]) == 10
    assert 0 <= metadata["metrics"]["test_accuracy"] <= 1
    assert metadata["metrics"]["parity"]["samples"] == 256
    assert metadata["versions"]["torch"] == torch.__version__ and metadata["versions"]["opset"] >= 17
    checkpoint = torch.load(folder / "checkpoint.pt", weights_only=True)  # no pickle of arbitrary objects
    assert checkpoint["config"]["arch"] == arch and "state_dict" in checkpoint
    rebuilt = build_network(arch)
    rebuilt.load_state_dict(checkpoint["state_dict"])
