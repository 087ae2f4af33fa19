"""The committed default model: intact, as accurate as its metadata says, and the same in both formats."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from training.data import MnistArrays, sha256_file
from training.export import load_torchscript

from .integration.harness import DEFAULT_VERSION, ROOT

VERSION = ROOT / "models" / "mnist" / DEFAULT_VERSION


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((VERSION / "metadata.json").read_text())


def test_default_model_is_the_small_cnn_with_verified_artifacts(metadata: dict) -> None:
    assert metadata["architecture"]["arch"] == "cnn-small"
    assert {"model.onnx", "model.pt", "checkpoint.pt"} <= set(metadata["artifacts"])
    for name, record in metadata["artifacts"].items():
        assert sha256_file(VERSION / name) == record["sha256"], f"{name} does not match metadata.json"
    assert metadata["metrics"]["test_samples"] == 10000
    assert metadata["metrics"]["test_accuracy"] >= 0.995


def test_default_model_reproduces_its_recorded_accuracy(metadata: dict, mnist: MnistArrays) -> None:
    pixels = mnist.test_images.unsqueeze(1).numpy()
    session = onnxruntime.InferenceSession(str(VERSION / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probabilities = session.run(["probabilities"], {"pixels": pixels})[0]
    onnx_accuracy = float((onnx_probabilities.argmax(1) == mnist.test_labels.numpy()).mean())
    assert onnx_accuracy == pytest.approx(metadata["metrics"]["test_accuracy"], abs=1e-4)
    assert onnx_accuracy >= 0.995

    with torch.no_grad():
        script_probabilities = load_torchscript(VERSION / "model.pt")(torch.from_numpy(pixels)).numpy()
    assert np.abs(script_probabilities - onnx_probabilities).max() <= 1e-4
    assert (script_probabilities.argmax(1) == onnx_probabilities.argmax(1)).all()
