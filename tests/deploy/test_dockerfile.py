"""The container image's Dockerfile, read as text and its shell and Python run here. test_image.py
builds and runs the image itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest

from service.settings import Settings, build_parser

from ..integration.harness import RunningServer, free_port
from .conftest import DEPLOY, ROOT

DOCKERFILE = (DEPLOY / "docker" / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _instructions(keyword: str) -> list[str]:
    text = DOCKERFILE.replace("\\\n", "")
    return [
        line.split(None, 1)[1].strip() for line in text.splitlines() if line.upper().startswith(keyword + " ")
    ]


def _run_step(containing: str) -> str:
    (step,) = [run for run in _instructions("RUN") if containing in run]
    return step


def _arg_default(name: str) -> str:
    (default,) = [arg.split("=", 1)[1] for arg in _instructions("ARG") if arg.startswith(f"{name}=")]
    return default


def test_the_base_is_an_argument_with_a_pinned_public_default() -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", _arg_default("BASE_IMAGE"))
    stages = _instructions("FROM")
    assert stages == ["${BASE_IMAGE} AS deps", "deps AS app", "${BASE_IMAGE} AS runtime"]


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_known_variants_pass_the_check(variant: str) -> None:
    check = subprocess.run(["sh", "-c", _run_step('case "$VARIANT"')], env={"VARIANT": variant})
    assert check.returncode == 0


@pytest.mark.parametrize("variant", ["GPU", "gpux", "cuda", "", "cpu gpu"])
def test_any_other_variant_fails_the_build_with_a_message(variant: str) -> None:
    check = subprocess.run(
        ["sh", "-c", _run_step('case "$VARIANT"')], env={"VARIANT": variant}, capture_output=True, text=True
    )
    assert check.returncode != 0
    assert check.stderr.strip() == f"VARIANT must be cpu or gpu, not '{variant}'"


def _requirements(variant: str) -> list[str]:
    """The requirement list the build installs, made by the Dockerfile's own Python from pyproject.toml."""
    code = re.search(r"python3 -c '([^']+)' \"\$VARIANT\"", _run_step("tomllib")).group(1)
    listing = subprocess.run(
        [sys.executable, "-c", code, variant], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [re.split(r"[\[<>=~! ;]", line, maxsplit=1)[0] for line in listing.stdout.splitlines()]


def test_the_cpu_image_installs_serving_and_plain_onnxruntime_only() -> None:
    names = _requirements("cpu")
    assert "onnxruntime" in names and "litserve" in names and "uvicorn" in names
    for heavy in ("torch", "torchvision", "onnxruntime-gpu", "onnx", "onnxscript", "matplotlib", "pytest"):
        assert heavy not in names, heavy


def test_the_gpu_image_adds_onnxruntime_gpu_and_torch_not_training() -> None:
    names = _requirements("gpu")
    assert {"onnxruntime-gpu", "torch", "litserve"} <= set(names) and "onnxruntime" not in names
    for training_only in ("torchvision", "onnx", "onnxscript", "matplotlib"):
        assert training_only not in names, training_only


def test_development_gets_the_gpu_build_never_beside_plain_onnxruntime() -> None:
    extras = PROJECT["optional-dependencies"]
    assert "mnist-serving[gpu,train]" in extras["dev"]
    everything = " ".join(extras["gpu"] + extras["train"] + extras["dev"])
    assert "onnxruntime-gpu" in everything and not re.search(r"onnxruntime(?!-gpu)", everything)


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    lines = [line for line in DOCKERFILE.replace("\\\n", "").splitlines() if line and line[0] != "#"]

    def first(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    assert first("COPY pyproject.toml") < first("pip install -r") < first("COPY service")
    assert first("COPY service") < first("pip install --no-deps --target /opt/app .")
    # The image takes the dependencies and the package as two layers: a code change replaces the small one.
    assert first("COPY --from=deps /opt/venv /opt/venv") < first("COPY --from=app /opt/app /opt/app")
    assert "COPY service" not in "".join(lines[first("FROM ${BASE_IMAGE} AS runtime") :])


def test_runs_as_a_non_root_user_who_cannot_change_the_model() -> None:
    (user,) = _instructions("USER")
    assert user == "10001:10001"
    (models,) = [line for line in _instructions("COPY") if line.endswith("/models")]
    assert models == "models /models"  # no --chown: root owns the model files, the server only reads them


def test_an_init_process_runs_the_server() -> None:
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert entrypoint == '["tini", "--", "mnist-serve"]'
    assert "apt-get install -y --no-install-recommends tini" in _run_step("tini")


def test_oci_labels_name_version_revision_and_source() -> None:
    (labels,) = _instructions("LABEL")
    for key, arg in [("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")]:
        assert f'org.opencontainers.image.{key}="${{{arg}}}"' in labels
    assert _arg_default("VERSION") == PROJECT["version"]


def test_no_secrets_are_baked_in() -> None:
    for line in _instructions("ENV") + _instructions("ARG"):
        assert not re.search(r"(API_KEY|PASSWORD|SECRET|TOKEN)\s*=\s*\S", line, re.IGNORECASE), line


def test_port_cmd_and_env_match_the_server() -> None:
    (exposed,) = _instructions("EXPOSE")
    assert int(exposed) == Settings().port
    (cmd,) = _instructions("CMD")
    build_parser({}).parse_args(re.findall(r'"([^"]+)"', cmd))  # the default flags are real flags
    env = " ".join(_instructions("ENV"))
    names = set(re.findall(r"\b(MNIST_[A-Z_]+)=", env))
    known = {f"MNIST_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert names and names <= known
    assert "MNIST_PORT=8000" in env and "MNIST_METRICS_DIR=/tmp/" in env
    assert "MNIST_MODEL_REPOSITORY=/models" in env
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]


def _healthcheck(port: int) -> int:
    (healthcheck,) = _instructions("HEALTHCHECK")
    program, flag, code = re.findall(r'"((?:[^"\\]|\\.)*)"', healthcheck.split("CMD", 1)[1])
    assert program == "python3" and flag == "-c"
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "MNIST_PORT": str(port)}
    ).returncode


def test_the_healthcheck_asks_the_server_on_mnist_port(server: RunningServer) -> None:
    assert _healthcheck(server.port) == 0
    assert _healthcheck(free_port()) != 0  # nothing listens there


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "data" in ignored and ".cache" in ignored and "models" not in ignored
