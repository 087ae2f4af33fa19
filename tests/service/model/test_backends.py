from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks.traffic import mnist_test_images
from service.errors import StartupError
from service.model.backends import ONE_THREAD_MAX_IMAGES, load_backend
from service.model.repository import resolve
from training.data import MnistArrays

from ...conftest import ROOT


@pytest.fixture(scope="module")
def model():
    return resolve(ROOT / "models", "mnist", "latest", "onnx")


def test_onnx_and_torchscript_backends_agree_on_the_test_set(model, mnist: MnistArrays) -> None:
    pixels = mnist.test_images[:2000].numpy()[:, None]
    onnx = load_backend(model, "onnx", "cpu")
    torchscript = load_backend(model, "torchscript", "cpu")
    a, b = onnx.predict(pixels), torchscript.predict(pixels)
    assert a.shape == b.shape == (2000, 10) and a.dtype == b.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4
    assert (a.argmax(1) == b.argmax(1)).all()


def test_small_batches_on_the_one_thread_session_answer_as_full_batches(model, mnist: MnistArrays) -> None:
    pixels = mnist.test_images[:64].numpy()[:, None]
    backend = load_backend(model, "onnx", "cpu")
    assert backend.one_thread is not None and ONE_THREAD_MAX_IMAGES >= 1
    whole = backend.predict(pixels)  # the multi-thread session
    small = np.concatenate(
        [backend.predict(pixels[i : i + ONE_THREAD_MAX_IMAGES]) for i in range(0, 64, ONE_THREAD_MAX_IMAGES)]
    )
    np.testing.assert_allclose(small, whole, atol=1e-6)
    assert load_backend(model, "onnx", "cpu", threads=1).one_thread is None  # already one thread


def test_backends_report_what_they_really_use(model) -> None:
    onnx = load_backend(model, "onnx", "cpu")
    assert (onnx.device, onnx.provider) == ("cpu", "CPUExecutionProvider")
    torchscript = load_backend(model, "torchscript", "cpu")
    assert (torchscript.device, torchscript.provider) == ("cpu", "torch.jit")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")
def test_without_a_gpu_cuda_is_refused_or_falls_back(model) -> None:
    with pytest.raises(StartupError, match="cuda"):
        load_backend(model, "torchscript", "cuda", strict=True)
    assert load_backend(model, "torchscript", "cuda", strict=False).device == "cpu"
    onnx = load_backend(model, "onnx", "cuda", strict=False)  # onnxruntime-gpu falls back silently
    assert onnx.device == "cpu" and onnx.provider == "CPUExecutionProvider"
    with pytest.raises(StartupError, match="ONNX Runtime cannot use CUDA"):
        load_backend(model, "onnx", "cuda", strict=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchscript_on_the_gpu_matches_the_cpu(model) -> None:
    # The test images alone: what is carried to the GPU machine (benchmarks/gpu/prepare.sh).
    pixels = np.ascontiguousarray(mnist_test_images()[:512, None])
    gpu = load_backend(model, "torchscript", "cuda")
    assert gpu.device == "cuda:0"
    np.testing.assert_allclose(
        gpu.predict(pixels), load_backend(model, "torchscript", "cpu").predict(pixels), atol=1e-4
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_onnx_on_a_gpu_machine_reports_its_real_provider(model) -> None:
    backend = load_backend(model, "onnx", "cuda", strict=False)
    import onnxruntime

    assert backend.provider in onnxruntime.get_available_providers()
    assert (backend.device == "cuda:0") == (backend.provider == "CUDAExecutionProvider")


@pytest.mark.parametrize("backend,runtime", [("torchscript", "torch"), ("onnx", "onnxruntime")])
def test_a_backend_without_its_runtime_is_a_one_line_refusal(
    model, backend: str, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import` raise ImportError, as in an image built without that package.
    monkeypatch.setitem(sys.modules, runtime, None)
    with pytest.raises(StartupError, match=rf"the {backend} backend needs {runtime}, which is not installed"):
        load_backend(model, backend, "cpu")


def test_serving_imports_no_backend_runtime_until_one_is_chosen() -> None:
    # The CPU image has no torch: nothing on the serving path may import it (or onnx, or the ONNX
    # Runtime) at module level; each backend imports its own runtime when it is loaded.
    code = (
        "import sys, service.__main__, service.server, service.processes, service.scoring.cli;"
        "runtimes = {'torch', 'onnx', 'onnxruntime', 'matplotlib'};"
        "print(sorted({name.split('.')[0] for name in sys.modules} & runtimes))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
