"""Inference backends behind one narrow interface: uint8 pixels ``[N,1,28,28]`` -> probabilities ``[N,10]``.

ONNX Runtime is the default (CUDA provider when asked for and really available, CPU otherwise);
TorchScript is the second backend. Both report the device and provider they actually use, read back
from the runtime rather than assumed from what was requested.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import warnings
from typing import Any, Protocol

import numpy as np

from service.errors import StartupError
from service.model.repository import ModelVersion

log = logging.getLogger(__name__)
ONE_THREAD_MAX_IMAGES = 4  # batches up to this size run on a one-thread session (OnnxBackend)


class Backend(Protocol):
    name: str
    device: str  # "cpu" or "cuda:N": where the computation really runs
    provider: str  # e.g. CUDAExecutionProvider, CPUExecutionProvider, torch.jit

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...


class OnnxBackend:
    name = "onnx"

    def __init__(self, model: ModelVersion, device: str, strict: bool, threads: int | None = None) -> None:
        onnxruntime = _import_runtime(
            "onnxruntime", "the onnx backend", "mnist-serving[cpu] or mnist-serving[gpu]"
        )
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # ORT's provider fallback warnings are reported by us, once
        if threads:
            options.intra_op_num_threads = threads
        # Idle ORT threads busy-wait by default; here they share the cores with decoding processes and
        # API servers, which that spinning would starve.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        device_id = _cuda_index(device)
        if device_id is not None:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
            _preload_cuda_libraries(onnxruntime)
        self.session = onnxruntime.InferenceSession(str(model.artifact("onnx")), options, providers=providers)
        # onnxruntime-gpu falls back to CPU silently; what it really uses is only known by asking.
        self.provider = self.session.get_providers()[0]
        on_gpu = self.provider == "CUDAExecutionProvider"
        if device_id is not None and not on_gpu:
            message = f"ONNX Runtime cannot use CUDA here (providers in use: {self.session.get_providers()})"
            if strict:
                raise StartupError(f"--device {device} was requested but {message}")
            log.warning("%s; serving on CPU", message)
        self.device = f"cuda:{device_id}" if on_gpu else "cpu"
        self.input_name, self.output_name = model.input_name, model.output_name
        # A batch of a few images is over before a second thread helps: waking ORT's pool cost more
        # than it saved (c = 1: 0.62 -> 0.54 ms per request), while full batches gain from it.
        self.one_thread: Any = None
        if not on_gpu and threads != 1:
            options.intra_op_num_threads = 1
            self.one_thread = onnxruntime.InferenceSession(
                str(model.artifact("onnx")), options, providers=["CPUExecutionProvider"]
            )

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        small = self.one_thread is not None and len(pixels) <= ONE_THREAD_MAX_IMAGES
        session = self.one_thread if small else self.session
        return session.run([self.output_name], {self.input_name: pixels})[0]


class TorchScriptBackend:
    name = "torchscript"
    provider = "torch.jit"

    def __init__(self, model: ModelVersion, device: str, strict: bool, threads: int | None = None) -> None:
        torch = _import_runtime("torch", "the torchscript backend", "mnist-serving[gpu]")
        if threads:
            torch.set_num_threads(threads)
        if device.startswith("cuda") and not torch.cuda.is_available():
            if strict:
                raise StartupError(f"--device {device} was requested but PyTorch sees no CUDA device")
            device = "cpu"
        self.torch = torch
        self.torch_device = torch.device(device)
        # torch.jit.load prints a deprecation FutureWarning in torch 2.14; operators need not see it.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(model.artifact("torchscript")), map_location=self.torch_device)
        self.module.eval()
        index = self.torch_device.index if self.torch_device.index is not None else 0
        self.device = f"cuda:{index}" if self.torch_device.type == "cuda" else "cpu"

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            tensor = self.torch.from_numpy(pixels).to(self.torch_device, non_blocking=True)
            return self.module(tensor).float().cpu().numpy()


def _import_runtime(module: str, needed_by: str, install: str) -> Any:
    """Import a backend's runtime when the backend is chosen, never before: the CPU image has no torch,
    and importing torch costs seconds and hundreds of MB in every process that inherits it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise StartupError(
            f"{needed_by} needs {module}, which is not installed here (install {install})"
        ) from error


def _preload_cuda_libraries(onnxruntime: Any) -> None:
    """Let ONNX Runtime find CUDA and cuDNN in the NVIDIA wheels PyTorch installs (no system CUDA)."""
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as error:  # missing libraries just mean the CPU provider will be used
        log.debug("ONNX Runtime could not preload CUDA libraries: %s", error)


def auto_device() -> str:
    """What ``--device auto`` means: ``cuda`` where ``nvidia-smi`` lists a GPU, else ``cpu``. Asked
    without importing torch (seconds of start-up, and hundreds of MB in every process that inherits
    it); with auto the backend is not strict, so a GPU it cannot use still falls back to the CPU."""
    return "cuda" if visible_gpus() else "cpu"


def visible_gpus() -> list[str]:
    """Indexes of the GPUs ``nvidia-smi -L`` lists, less those ``CUDA_VISIBLE_DEVICES`` hides."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):  # no driver, no GPU, or a hung driver
        return []
    gpus = [line.split(":")[0].split()[1] for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [gpu for gpu in gpus if gpu in visible.split(",")] if visible else gpus


def _cuda_index(device: str) -> int | None:
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def load_backend(
    model: ModelVersion, backend: str, device: str, strict: bool = True, threads: int | None = None
) -> Backend:
    """Load ``backend`` on ``device`` (cpu, cuda, cuda:N). Not strict: fall back to CPU without CUDA."""
    if device != "cpu" and _cuda_index(device) is None:
        raise StartupError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N")
    if backend == "onnx":
        return OnnxBackend(model, device, strict, threads)
    if backend == "torchscript":
        return TorchScriptBackend(model, device, strict, threads)
    raise StartupError(f"unknown backend {backend!r}; choose onnx or torchscript")
