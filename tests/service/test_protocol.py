"""The /predict answer body, with and without the preprocessed pixels."""

from __future__ import annotations

import numpy as np
import orjson

from service.protocol import predictions_body

MODEL = {"name": "mnist", "version": "1", "backend": "onnx", "device": "cpu"}


def test_predictions_carry_digit_confidence_and_probabilities_only_by_default() -> None:
    probabilities = np.eye(10, dtype=np.float32)[[3, 7]]
    body = orjson.loads(predictions_body(probabilities, MODEL))
    assert [p["digit"] for p in body["predictions"]] == [3, 7]
    assert [p["confidence"] for p in body["predictions"]] == [1.0, 1.0]
    assert all(set(p) == {"digit", "confidence", "probabilities"} for p in body["predictions"])
    assert body["model"] == MODEL


def test_pixels_become_28_rows_of_28_values_per_prediction() -> None:
    probabilities = np.eye(10, dtype=np.float32)[[3, 7]]
    pixels = np.arange(2 * 784, dtype=np.int64).reshape(2, 1, 28, 28).astype(np.uint8)
    body = orjson.loads(predictions_body(probabilities, MODEL, pixels))
    for prediction, image in zip(body["predictions"], pixels[:, 0], strict=True):
        assert np.array_equal(np.array(prediction["pixels"], dtype=np.uint8), image)
        assert len(prediction["pixels"]) == 28 and all(len(row) == 28 for row in prediction["pixels"])


def test_digit_and_confidence_agree_with_argmax_and_max_including_ties() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.random((64, 10), dtype=np.float32)
    probabilities[0] = [0.1, 0.3, 0.3, 0.0, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0]  # a tie: the first index wins
    predictions = orjson.loads(predictions_body(probabilities, MODEL))["predictions"]
    assert [p["digit"] for p in predictions] == probabilities.argmax(1).tolist()
    assert [p["confidence"] for p in predictions] == probabilities.max(1).tolist()
    assert [p["probabilities"] for p in predictions] == probabilities.tolist()
    assert predictions[0]["digit"] == 1
