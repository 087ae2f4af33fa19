"""NVIDIA Triton Inference Server serving the default model, for the serving benchmark: the issue's
"Triton 2.51 server (C++ HTTP front end), Python backend running ONNX Runtime, dynamic batching".

Triton itself comes from PyPI: the nvidia-pytriton wheel carries a complete tritonserver 2.51 binary
with its Python backend. On first use this script downloads that wheel (pinned, checked by SHA-256)
and, for Triton's embedded Python, numpy < 2 (what that backend was built against) and the same
ONNX Runtime version as mnist-serve's, all into .cache/triton/ (git-ignored). Needs the system's
libpython of this Python version (Debian: ``apt-get install libpython3.11``) for Triton's Python stub.

    .venv/bin/python benchmarks/triton_server.py --port 8300
    .venv/bin/python benchmarks/triton_server.py --port 8300 --instances 1 --ort-threads 2

Requests are Open Inference Protocol v2 (JSON or binary tensors) on /v2/models/mnist/infer, input
``pixels`` (UINT8, [n, 784]). The defaults (2 instances of 1 ONNX Runtime thread, the dynamic batcher
waiting up to 500 µs) were Triton's fastest of nine configurations on the 2-core machine, measured in
alternation (docs/performance.md).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.model.repository import resolve  # noqa: E402

WHEEL = "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl"  # tritonserver 2.51.0
WHEEL_SHA256 = "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"
NUMPY = "numpy==1.26.4"  # Triton 2.51's Python backend misreads numpy 2 arrays
CACHE = ROOT / ".cache" / "triton"
MODEL_FILE = Path(__file__).resolve().parent / "triton" / "model.py"


def install(cache: Path = CACHE) -> Path:
    """The unpacked Triton (``<cache>/<wheel stem>``), downloading and checking it on first use."""
    home = cache / WHEEL.removesuffix(".whl")
    if (home / "complete").exists():
        return home
    with tempfile.TemporaryDirectory(dir=_made(cache)) as scratch:
        staging = Path(scratch)
        _pip("download", "--no-deps", "--dest", str(staging), f"nvidia-pytriton=={WHEEL.split('-')[1]}")
        wheel = staging / WHEEL
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise SystemExit(f"{WHEEL}: SHA-256 {digest}, expected {WHEEL_SHA256}")
        unpacked = staging / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            wanted = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")
            archive.extractall(unpacked, [m for m in archive.namelist() if m.startswith(wanted)])
        for member in unpacked.rglob("*"):  # zip files keep no permissions
            if member.parent.name in ("bin", "nvidia_pytriton.libs") or "stub" in member.name:
                member.chmod(0o755)
        onnxruntime = importlib.metadata.version("onnxruntime-gpu")
        # Plain onnxruntime (CPU), separate from the venv's onnxruntime-gpu, which it would overwrite.
        packages = [NUMPY, f"onnxruntime=={onnxruntime}"]
        target = str(unpacked / "site-packages")
        _pip("install", "--quiet", "--no-warn-conflicts", "--target", target, *packages)
        shutil.rmtree(home, ignore_errors=True)
        unpacked.rename(home)
    (home / "complete").touch()
    return home


def model_repository(
    home: Path, instances: int, ort_threads: int, max_batch: int, queue_delay_us: int
) -> Path:
    """A Triton model repository for the default model: its ONNX file and the Python-backend model."""
    model = resolve(ROOT / "models", "mnist", "latest", "onnx")
    repository = home.parent / f"repository-{instances}x{ort_threads}-{max_batch}-{queue_delay_us}"
    version = repository / "mnist" / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model.artifact("onnx"), version / "model.onnx")
    shutil.copyfile(MODEL_FILE, version / "model.py")
    (repository / "mnist" / "config.pbtxt").write_text(
        f"""name: "mnist"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "pixels" data_type: TYPE_UINT8 dims: [ 784 ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
"""
    )
    return repository


def libpython() -> str:
    """The shared libpython Triton's Python stub for this Python version links against."""
    return f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"


def has_libpython() -> bool:
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    listed = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    return f"{libpython()} " in listed


def command(home: Path, repository: Path, port: int, http_threads: int | None) -> list[str]:
    server = home / "pytriton" / "tritonserver"
    # Triton looks for the Python stub beside the backend; the wheel ships one per Python version.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    placed = server / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemExit(f"the Triton wheel has no Python backend stub for Python {version}")
    if not placed.exists():
        shutil.copy2(stub, placed)
    missing = [line.strip() for line in _ldd(placed) if "not found" in line]
    if missing:
        hint = f"Debian: apt-get install libpython{version}"
        raise SystemExit(f"Triton's Python stub cannot load {missing} ({hint})")
    return [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={server / 'backends'}",
        f"--http-port={port}",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--log-info=false",
        "--exit-timeout-secs=5",
        *([f"--http-thread-count={http_threads}"] if http_threads else []),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--instances", type=int, default=2, help="model instances (Python stub processes)")
    parser.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime threads per instance")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=500, help="dynamic batcher's wait")
    parser.add_argument("--http-threads", type=int, default=None, help="Triton's default when unset")
    args = parser.parse_args()
    home = install()
    repository = model_repository(
        home, args.instances, args.ort_threads, args.max_batch_size, args.max_queue_delay_us
    )
    environment = {
        **os.environ,
        "MNIST_TRITON_SITE_PACKAGES": str(home / "site-packages"),
        "MNIST_TRITON_ORT_THREADS": str(args.ort_threads),
    }
    argv = command(home, repository, args.port, args.http_threads)
    os.execve(argv[0], argv, environment)  # the benchmark stops servers by signalling their process


def _pip(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *arguments, "--disable-pip-version-check"], check=True)


def _ldd(binary: Path) -> list[str]:
    found = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    return found.stdout.splitlines()


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


if __name__ == "__main__":
    main()
