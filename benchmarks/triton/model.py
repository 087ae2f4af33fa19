"""Triton's Python backend running the default model with ONNX Runtime: the issue's Triton setup.

Triton's dynamic batcher hands ``execute`` every request it has queued; they become one ONNX Runtime
call, and each request gets its own rows back. Runs inside Triton's Python stub (a CPython embedded
by Triton, which ignores PYTHONPATH), hence the site-packages folder from the environment.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.environ["MNIST_TRITON_SITE_PACKAGES"])

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("MNIST_TRITON_ORT_THREADS", "1"))
        # As in mnist-serve's worker: idle ORT threads sleep instead of spinning on the shared cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = str(Path(__file__).parent / "model.onnx")
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(request, "pixels").as_numpy() for request in requests]
        pixels = np.concatenate(arrays).reshape(-1, 1, 28, 28)
        probabilities = self.session.run(None, {"pixels": pixels})[0]
        responses, start = [], 0
        for array in arrays:
            rows = probabilities[start : start + len(array)]
            start += len(array)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("probabilities", rows)]))
        return responses
